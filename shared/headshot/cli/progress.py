"""Progress lines on stderr, with the seconds since the command started."""

from __future__ import annotations

import sys
import time


def progress_printer(stream=sys.stderr):
    started = time.monotonic()

    def show(done: int, total: int, message: str) -> None:
        stream.write(f"[{time.monotonic() - started:6.1f}s] {done}/{total} {message}\n")
        stream.flush()

    return show
