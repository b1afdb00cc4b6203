"""`headshot user add USER_ID --data DIR`: a new API key, printed once (only its hash is stored)."""

from __future__ import annotations

from pathlib import Path


def _user_add(args) -> int:
    from ..service.auth import add_user
    from ..service.config import ServiceConfig, check_config
    from ..service.db import Store

    config = check_config(ServiceConfig(data_dir=args.data, database_url=args.database), needs_model=False)
    key, webhook_secret = add_user(Store(config.database), args.user_id)
    print(f"API key for {args.user_id} (shown once; only its hash is kept):\n  {key}")
    print(f"webhook secret (checks the X-Headshot-Signature of webhook calls):\n  {webhook_secret}")
    return 0


def add_user_command(sub) -> None:
    user = sub.add_parser("user", help="API users of `headshot serve`")
    actions = user.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="make an API key for a user (printed once)")
    add.add_argument("user_id", help="letters, digits, '.', '_', '-' or '@'")
    add.add_argument("--data", required=True, type=Path, help="the --data folder of `headshot serve`")
    add.add_argument("--database", help="the --database URL of `headshot serve`, when it has one")
    add.set_defaults(run=_user_add)
