"""Calling a client's webhook when its job ends, signed so the client can tell the call is ours.

Headers: `X-Headshot-Timestamp: <unix seconds>` and `X-Headshot-Signature: sha256=<hex>`, the HMAC-SHA256
of `<timestamp>.<body>` under the user's webhook secret (printed by `headshot user add`). Checking the
timestamp too stops an old call being replayed.

A webhook is a request the server makes on a client's behalf, so by default it only goes to public
addresses: not loopback, private, link-local (cloud metadata) or reserved ones, checked again at delivery on
every address the name resolves to, and redirects are not followed. `--allow-private-webhooks` lifts this for
a service on a private network.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from .limits import ServiceError

SIGNATURE_HEADER = "X-Headshot-Signature"
TIMESTAMP_HEADER = "X-Headshot-Timestamp"
PRIVATE_HINT = "webhooks go to public addresses only (start the service with --allow-private-webhooks to lift this)"

log = logging.getLogger("headshot.service")


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def private_address(host: str, port: int | None) -> str | None:
    """The first address of `host` that is not public (or the failure to resolve it), else None."""
    try:
        return None if _is_public(host) else host
    except ValueError:
        pass  # a name, not an address
    if host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        return host
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return f"{host} (does not resolve: {exc.strerror or exc})"
    for info in infos:
        address = str(info[4][0])
        if not _is_public(address):
            return f"{host} ({address})"
    return None


def check_webhook_url(url: str | None, allow_private: bool = False) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceError(f"webhook_url {url[:100]!r} must be an http:// or https:// URL", "bad_webhook_url")
    if not allow_private:
        try:  # a literal address or localhost is refused at once; names are checked again when called
            literal = None if _is_public(parts.hostname) else parts.hostname
        except ValueError:
            literal = parts.hostname if parts.hostname.lower().rstrip(".") == "localhost" else None
        if literal is not None:
            raise ServiceError(
                f"webhook_url {url[:100]!r}: {literal} is not a public address; {PRIVATE_HINT}", "bad_webhook_url"
            )
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # a redirect could lead anywhere, past the address check


_opener = urllib.request.build_opener(_NoRedirects)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def deliver(
    url: str, secret: str, payload: dict, tries: int = 3, timeout: float = 10.0, allow_private: bool = False
) -> bool:
    """POST the payload; a few tries with a pause between. True when the client answered 2xx."""
    body = json.dumps(payload).encode()
    for attempt in range(tries):
        parts = urlsplit(url)
        refused = None if allow_private else private_address(parts.hostname or "", parts.port)
        if refused is not None:
            log.warning("webhook %s not called: %s is not a public address; %s", url, refused, PRIVATE_HINT)
            return False
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
            with _opener.open(request, timeout=timeout) as response:  # http(s) and address checked above
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if attempt + 1 < tries:
            time.sleep(2**attempt)
    return False
