"""Reading kohya sd-scripts' console output: tqdm bars, checkpoint lines, errors, as events.

Facts about sd-scripts' output (kohya-ss/sd-scripts at 48d368fa, Feb 2026): progress is a tqdm bar
with desc "steps" and postfix `avr_loss=`; checkpoints are announced with
`accelerator.print(f"\\nsaving checkpoint: {path}")`; step checkpoints are named
`<output_name>-step00000005.safetensors`, the last one `<output_name>.safetensors`. A resumed run's
bar counts from 0 to max_train_steps minus the steps already done (train_network.py `progress_bar`).
"""

from __future__ import annotations

import codecs
import queue
import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# tqdm's default bar: "steps:  30%|###       | 3/10 [00:05<00:12,  1.73s/it, avr_loss=0.123]"
_TQDM = re.compile(
    r"^(?:(?P<desc>.*?):\s*)?(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:]+|\?),\s*(?P<rate>\?|[\d.]+(?:e[+-]?\d+)?)\s*(?P<unit>s/it|it/s)"
    r"(?:,\s*(?P<postfix>.*?))?\]\s*$"
)
_CHECKPOINT = re.compile(r"saving checkpoint:\s*(?P<path>.+?)\s*$")
_STEP_NAME = re.compile(r"-step(\d+)\.[A-Za-z]+$")
_RICH_SUFFIX = re.compile(r"\s{2,}[\w.\-]+\.py:\d+\s*$")  # rich's "   train_util.py:1234" column
_EPOCH = re.compile(r"^epoch (?P<epoch>\d+)/(?P<total>\d+)\s*$")
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*(?P<name>\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(?P<msg>.*))?\s*$")
_LOG_ERROR = re.compile(r"^(?:\[?[\d\-/: ]+\]?\s+)?(?:ERROR|CRITICAL)\s+(?P<msg>\S.*)$")


def _seconds(clock: str) -> float | None:
    if not clock or clock == "?":
        return None
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text.strip()


def _postfix(text: str | None) -> dict:
    values = {}
    for item in (text or "").split(","):
        if "=" in item:
            key, value = item.split("=", 1)
            values[key.strip()] = _number(value.strip())
    return values


def parse_progress(line: str) -> dict | None:
    """One line of sd-scripts output (already split on \\r and \\n) as an event, or None.

    {"type": "step", "step", "total", "loss", "it_per_s", "s_per_it", "eta_s", "elapsed_s"} for the
    training bar; {"type": "progress", "label", "n", "total", ...} for other bars (latent caching,
    validation); {"type": "checkpoint", "path", "step"?}; {"type": "epoch", "epoch", "total"};
    {"type": "error", "message"} for an exception line ("ValueError: …", the end of a traceback) or a
    line logged at ERROR. tqdm redraws a step when its postfix changes, so a step may come twice.
    """
    if not line:
        return None
    text = _ANSI.sub("", line).rstrip()
    if not text.strip():
        return None
    # a chunk may still hold several \r-separated redraws: the last complete one counts
    if "\r" in text or "\n" in text:
        for part in reversed(re.split(r"[\r\n]+", text)):
            event = parse_progress(part)
            if event is not None:
                return event
        return None

    bar = _TQDM.match(text.strip())
    if bar:
        n, total = int(bar["n"]), int(bar["total"])
        rate = None if bar["rate"] == "?" else float(bar["rate"])
        if rate is None or rate == 0:
            it_per_s = s_per_it = None
        elif bar["unit"] == "it/s":
            it_per_s, s_per_it = rate, 1.0 / rate
        else:
            it_per_s, s_per_it = 1.0 / rate, rate
        post = _postfix(bar["postfix"])
        loss = post.get("avr_loss", post.get("loss"))
        desc = (bar["desc"] or "").strip()
        common = {
            "total": total,
            "it_per_s": it_per_s,
            "s_per_it": s_per_it,
            "eta_s": _seconds(bar["remaining"]),
            "elapsed_s": _seconds(bar["elapsed"]),
        }
        if desc == "steps":
            return {"type": "step", "step": n, **common, "loss": loss if isinstance(loss, float) else None}
        return {"type": "progress", "label": desc, "n": n, **common, **({"postfix": post} if post else {})}

    checkpoint = _CHECKPOINT.search(text)
    if checkpoint:
        path = _RICH_SUFFIX.sub("", checkpoint["path"]).strip()
        event = {"type": "checkpoint", "path": path}
        step = _STEP_NAME.search(path)
        if step:
            event["step"] = int(step.group(1))
        return event

    epoch = _EPOCH.match(text.strip())
    if epoch:
        return {"type": "epoch", "epoch": int(epoch["epoch"]), "total": int(epoch["total"])}

    exception = _EXCEPTION.match(text)
    if exception and not exception["name"].endswith("Warning"):
        return {"type": "error", "message": text.strip()}
    logged = _LOG_ERROR.match(text.strip())
    if logged:
        return {"type": "error", "message": _RICH_SUFFIX.sub("", logged["msg"]).strip()}
    return None


class _LineSplitter:
    """Bytes in, lines out: splits on \\r and \\n (tqdm redraws with \\r) and decodes UTF-8 safely."""

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(data)
        parts = re.split(r"\r\n|\r|\n", text)
        self._pending = parts.pop()
        # tqdm writes "\r" + bar in one write and the next redraw only comes with the next step:
        # a complete bar at the end of a chunk is a line now, not when the next step starts
        if self._pending and _TQDM.match(self._pending.strip()):
            parts.append(self._pending)
            self._pending = ""
        return [p for p in parts if p.strip()]

    def close(self) -> list[str]:
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return [text] if text.strip() else []


def _read_lines(stream, out: queue.Queue) -> None:
    splitter = _LineSplitter()
    read = getattr(stream, "read1", None) or stream.read
    try:
        while True:
            try:
                data = read(65536)
            except (OSError, ValueError):
                break
            if not data:
                break
            for line in splitter.feed(data):
                out.put(line)
        for line in splitter.close():
            out.put(line)
    finally:
        out.put(None)
