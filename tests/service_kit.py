"""Helpers shared by the service tests: photos as the API takes them, a client, polling, a webhook receiver."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
from PIL import Image


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def noise_photo(seed: int) -> str:
    pixels = (np.random.default_rng(seed).random((200, 200, 3)) * 255).astype(np.uint8)
    return b64_png(Image.fromarray(pixels))


def png_claiming(width: int, height: int) -> str:
    """A PNG whose header claims width x height with no pixel data behind it: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 16)
    data += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return base64.b64encode(data).decode()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def wait_for(client, job_id: str, key: str, states=("succeeded", "failed", "cancelled"), timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"/v1/jobs/{job_id}", headers=bearer(key)).json()
        if view["status"] in states or time.monotonic() > deadline:
            return view
        time.sleep(0.5)


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records each call's headers and body."""

    def __init__(self):
        calls = self.calls = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                calls.append({"headers": dict(self.headers), "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.calls

    @staticmethod
    def payload(call: dict) -> dict:
        return json.loads(call["body"])
