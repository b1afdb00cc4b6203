"""API keys: made once, shown once, stored only as a salted scrypt hash.

A key reads `hsk_<key id>_<secret>`: the key id finds the record without scanning every user, the secret
is what the hash proves. Verified keys are remembered for a minute in this process (by a SHA-256 of the
key), so polling clients do not pay scrypt's cost on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time

from ..errors import HeadshotError
from .db import ApiKey, Store, User

USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_REMEMBER_S = 60.0


def _digest(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT).hex()


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        raise HeadshotError(
            f"user id {user_id!r}: use 1–64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit",
            "bad_name",
        )
    return user_id


def add_user(store: Store, user_id: str) -> tuple[str, str]:
    """A new key for `user_id` (the user is created on first use); returns (api key, webhook secret).
    Both are shown once: only the key's hash is stored, the webhook secret is kept to sign webhooks."""
    check_user_id(user_id)
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    with store.session() as s:
        user = s.get(User, user_id)
        if user is None:
            user = User(id=user_id, webhook_secret=secrets.token_urlsafe(32))
            s.add(user)
            s.flush()  # the user row first: PostgreSQL checks the key's foreign key (SQLite does not)
        s.add(ApiKey(key_id=key_id, user_id=user_id, salt=salt.hex(), digest=_digest(secret, salt)))
        webhook_secret = user.webhook_secret
    return f"hsk_{key_id}_{secret}", webhook_secret


class KeyChecker:
    def __init__(self, store: Store):
        self.store = store
        self._known: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def user_for(self, key: str) -> str | None:
        """The user whose key this is, or None."""
        fingerprint = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        now = time.monotonic()
        with self._lock:
            known = self._known.get(fingerprint)
        if known and now - known[1] < _REMEMBER_S:
            return known[0]
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "hsk" or not re.fullmatch(r"[0-9a-f]{12}", parts[1]):
            return None
        with self.store.session() as s:
            record = s.get(ApiKey, parts[1])
        if record is None or not hmac.compare_digest(_digest(parts[2], bytes.fromhex(record.salt)), record.digest):
            return None
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[fingerprint] = (record.user_id, now)
        return record.user_id
