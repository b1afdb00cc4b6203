"""What a request may ask for: body size, photos (count, bytes, pixels), names, and each user's share."""

from __future__ import annotations

import base64
import binascii
import io
import re
import time

from ..errors import HeadshotError
from .config import Limits
from .db import Store

PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
#: what Pillow reports for the formats we store, and the extension the file gets
PHOTO_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
DAY_S = 24 * 3600


class ServiceError(HeadshotError):
    """A HeadshotError with the HTTP status (and headers, e.g. Retry-After) the API answers it with."""

    def __init__(self, message: str, code: str, status: int = 422, headers: dict[str, str] | None = None):
        super().__init__(message, code)
        self.status, self.headers = status, headers or {}


def check_plain_name(value: str, what: str) -> str:
    if not PLAIN_NAME.fullmatch(value):
        raise ServiceError(
            f"{what} {value[:70]!r} must be a plain name: 1–64 letters, digits, '_' or '-', starting with a letter "
            "or digit (no spaces, dots or slashes)",
            "bad_name",
        )
    return value


def decode_photos(images: list[str], limits: Limits) -> list[tuple[bytes, str]]:
    """Each base64 photo as (bytes, file extension), refused before anything is written when there are too few
    or too many, or one is not base64, not a picture, too large in bytes, or too many pixels once decoded
    (its header is read, never the pixels: a decompression bomb costs nothing)."""
    if len(images) < limits.min_photos:
        raise ServiceError(
            f"{len(images)} photo(s) sent; send {limits.min_photos}–{limits.max_photos} photos of the person",
            "too_few_photos",
        )
    if len(images) > limits.max_photos:
        raise ServiceError(
            f"{len(images)} photos sent; send at most {limits.max_photos} (the best ones: varied light and angles)",
            "too_many_photos",
        )
    return [_decode_photo(f"photo {number}", text, limits) for number, text in enumerate(images, 1)]


def decode_reference(text: str, limits: Limits) -> tuple[bytes, str]:
    """The one-photo mode's reference_image, under the same limits as a training photo."""
    return _decode_photo("reference_image", text, limits)


def _decode_photo(what: str, text: str, limits: Limits) -> tuple[bytes, str]:
    from PIL import UnidentifiedImageError

    from ..photos import TooManyPixels, open_image

    if text.startswith("data:") and "," in text:  # a data URL, as browsers make them
        text = text.split(",", 1)[1]
    megabytes = limits.max_photo_bytes // (1024 * 1024)
    if len(text) * 3 // 4 > limits.max_photo_bytes + 3:
        raise ServiceError(f"{what} is over {megabytes} MB; send a smaller JPEG", "photo_too_large", 413)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(
            f"{what} is not valid base64; send each photo's bytes base64-encoded", "bad_base64"
        ) from None
    if len(data) > limits.max_photo_bytes:
        raise ServiceError(f"{what} is over {megabytes} MB; send a smaller JPEG", "photo_too_large", 413)
    try:
        with open_image(io.BytesIO(data), limits.max_photo_pixels) as img:  # reads the header only
            kind = img.format
    except TooManyPixels as exc:
        size = f"is {exc.size[0]}x{exc.size[1]}" if exc.size else "claims far too many pixels"
        raise ServiceError(
            f"{what} {size}: over {limits.max_photo_pixels / 1e6:.0f} megapixels; resize it",
            "photo_too_large",
            413,
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ServiceError(f"{what} is not a picture we can read; send JPEG, PNG or WebP", "not_an_image") from None
    if kind not in PHOTO_FORMATS:
        raise ServiceError(f"{what} is {kind or 'an unknown format'}; send JPEG, PNG or WebP", "not_an_image")
    return data, PHOTO_FORMATS[kind]


def check_share(store: Store, user_id: str, limits: Limits) -> None:
    """429 with Retry-After when the user has too many jobs waiting or running, or has used today's quota."""
    if store.active_count(user_id) >= limits.max_concurrent_jobs:
        raise ServiceError(
            f"you have {limits.max_concurrent_jobs} job(s) queued or running; wait for one to finish",
            "too_many_jobs",
            429,
            {"Retry-After": "30"},
        )
    now = time.time()
    started = store.started_since(user_id, now - DAY_S)
    if len(started) >= limits.daily_jobs:
        wait = max(1, int(started[0] + DAY_S - now) + 1)  # until the oldest leaves the 24-hour window
        raise ServiceError(
            f"you have started {len(started)} jobs in 24 hours (the limit is {limits.daily_jobs}); try again in "
            f"{wait // 3600} h {wait % 3600 // 60} min",
            "quota_exceeded",
            429,
            {"Retry-After": str(wait)},
        )


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before the app parses it, whether its
    Content-Length says so or it streams in chunks."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._refuse(send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        import json

        megabytes = self.limit / (1024 * 1024)
        body = json.dumps(
            {
                "error": {
                    "code": "body_too_large",
                    "message": f"the request is over {megabytes:g} MB; send fewer or smaller photos",
                }
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
