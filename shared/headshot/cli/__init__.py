"""The `headshot` command: one module per stage builds its options and runs it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import HeadshotError
from .evaluate import add_evaluate_command
from .generate import _add_finishing_options, _add_generate_options, _finish, _generate, _styles
from .prepare import _add_prepare_options, _demo, _prepare, add_single_photo_option
from .report import add_report_command
from .serve import add_serve_commands
from .sweep import add_sweep_command
from .train import _add_train_options, _train
from .user import add_user_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headshot", description="Headshot Studio: personalised headshots from selfies"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="screen, frame and caption selfies into a kohya dataset")
    prepare.add_argument(
        "input_dir", type=Path, help="folder of 3–20 photos of one person (or one with --single-photo)"
    )
    add_single_photo_option(prepare)
    _add_prepare_options(prepare)
    prepare.set_defaults(run=_prepare)
    demo = sub.add_parser(
        "demo",
        help="prepare a dataset from sample photos that ship with installed packages "
        "(and train on it with --base-model)",
    )
    _add_prepare_options(demo)
    demo.add_argument("--base-model", help="also train a LoRA on the sample dataset with this checkpoint")
    demo.add_argument("--vae", metavar="FILE", help="the VAE for a --base-model saved without one")
    demo.set_defaults(run=_demo, class_word="woman")
    train = sub.add_parser("train", help="train an identity LoRA (kohya format) from a prepared dataset")
    _add_train_options(train)
    train.set_defaults(run=_train)
    styles = sub.add_parser("styles", help="list the style templates")
    styles.add_argument("--styles", action="append", default=[], type=Path, metavar="DIR", help="your own style folder")
    styles.set_defaults(run=_styles)
    gen = sub.add_parser("generate", help="draw styled pictures with an identity LoRA, finished and ranked")
    _add_finishing_options(gen)
    _add_generate_options(gen)
    gen.set_defaults(run=_generate)
    fin = sub.add_parser("finish", help="detail, restore and rank pictures you already have")
    fin.add_argument("images", help="a picture or a folder of pictures")
    _add_finishing_options(fin)
    fin.set_defaults(run=_finish)
    add_evaluate_command(sub)
    add_report_command(sub)
    add_sweep_command(sub)
    add_serve_commands(sub)
    add_user_command(sub)
    return parser


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("headshot-studio")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed: pip install -e .)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except HeadshotError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
