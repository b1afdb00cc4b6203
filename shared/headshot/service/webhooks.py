"""Calling a client's webhook when its job ends, signed so the client can tell the call is ours.

Headers: `X-Headshot-Timestamp: <unix seconds>` and `X-Headshot-Signature: sha256=<hex>`, the HMAC-SHA256
of `<timestamp>.<body>` under the user's webhook secret (printed by `headshot user add`). Checking the
timestamp too stops an old call being replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from .limits import ServiceError

SIGNATURE_HEADER = "X-Headshot-Signature"
TIMESTAMP_HEADER = "X-Headshot-Timestamp"


def check_webhook_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceError(f"webhook_url {url[:100]!r} must be an http:// or https:// URL", "bad_webhook_url")
    return url


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def deliver(url: str, secret: str, payload: dict, tries: int = 3, timeout: float = 10.0) -> bool:
    """POST the payload; a few tries with a pause between. True when the client answered 2xx."""
    body = json.dumps(payload).encode()
    for attempt in range(tries):
        timestamp = str(int(time.time()))
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: signature(secret, timestamp, body),
                "User-Agent": "headshot-service",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) checked)
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if attempt + 1 < tries:
            time.sleep(2**attempt)
    return False
