"""One progress stream over a whole sweep: training steps and pictures weighed into one fraction, with an ETA
from the pace of the work actually done in this invocation (reused runs finish at once and say nothing
about the pace)."""

from __future__ import annotations

import time
from typing import Callable

#: (fraction done 0..1, message, seconds left or None) -> None
SweepProgressCallback = Callable[[float, str, "float | None"], None]
MIN_INTERVAL = 1.0  # seconds between two lines about the same kind of step


class SweepProgress:
    def __init__(self, total_units: float, report: SweepProgressCallback | None, clock=time.monotonic):
        self.total = max(float(total_units), 1.0)
        self.report = report
        self.clock = clock
        self.done = 0.0  # units finished, reused or worked
        self.worked = 0.0  # units worked in this invocation
        self.started = clock()
        self.last_line = -MIN_INTERVAL

    def skip(self, units: float, message: str) -> None:
        """Work found finished (a reused run): counted as done, not as pace."""
        self.done += units
        self._emit(message, force=True)

    def advance(self, units: float, message: str, force: bool = False) -> None:
        self.done += units
        self.worked += units
        self._emit(message, force)

    def note(self, message: str) -> None:
        self._emit(message, force=True)

    def eta(self) -> float | None:
        if self.worked <= 0:
            return None
        elapsed = self.clock() - self.started
        return max(0.0, elapsed / self.worked * (self.total - self.done))

    def _emit(self, message: str, force: bool) -> None:
        now = self.clock()
        if self.report is None or (not force and now - self.last_line < MIN_INTERVAL):
            return
        self.last_line = now
        self.report(min(1.0, self.done / self.total), message, self.eta())


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "eta --"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"eta {hours}h{rest // 60:02d}m" if hours else f"eta {rest // 60}m{rest % 60:02d}s"
