"""The runs of a hyper-parameter sweep: comma lists on the command line form a grid, or a --runs file
(TOML or JSON) lists exact combinations. Every value is checked here, before any model loads.

A run's settings are the training settings the study compares (lr, rank, alpha, steps) and the trigger
word (the prompt token); a setting left out takes the training preset's value.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
from pathlib import Path

from ..errors import HeadshotError
from ..outputs import parse_toml, safe_name

#: the settings a sweep varies, in the order runs are listed and named
SETTING_KEYS = ("lr", "rank", "alpha", "steps", "trigger")
#: how people name each one on the command line
OPTION = {"lr": "--lr", "rank": "--rank", "alpha": "--alpha", "steps": "--steps", "trigger": "--trigger-variants"}
MAX_RUNS = 256  # more is a typo in a comma list, not a study one machine finishes
SHORT = {"lr": "lr", "rank": "r", "alpha": "a", "steps": "s", "trigger": "t"}


def check_setting(key: str, value, where: str) -> int | float | str:
    """One run's value of `key`, checked and normalised; `where` names the option or file entry."""

    def bad(why: str) -> HeadshotError:
        return HeadshotError(f"{where} {value!r}: {why}", "bad_option")

    if key == "trigger":
        if not isinstance(value, str) or len(value.split()) != 1:
            raise HeadshotError(
                f"{where} {value!r}: a trigger variant is one word (e.g. ohwx or sks)", "invalid_trigger"
            )
        return safe_name(value.strip(), where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad("must be a number")
    if key in ("rank", "steps"):
        if value != int(value):
            raise bad("must be a whole number")
        value = int(value)
        if key == "rank" and not 1 <= value <= 1024:
            raise bad("must be from 1 to 1024")
        if key == "steps" and value < 1:
            raise bad("must be at least 1")
        return value
    value = float(value)
    if key == "lr" and not 0 < value <= 10:
        raise bad("must be above 0 and at most 10 (learning rates are like 1e-4)")
    if key == "alpha" and value <= 0:
        raise bad("must be above 0")
    return value


def parse_values(text: str | None, key: str) -> list:
    """`--lr 1e-4,5e-4` -> [0.0001, 0.0005]: each value checked, repeats refused."""
    if text is None:
        return []
    option = OPTION[key]
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise HeadshotError(f"{option} {text!r}: an empty value between commas; write e.g. 1e-4,5e-4", "bad_option")
        if key == "trigger":
            value = check_setting(key, part, option)
        else:
            try:
                number = float(part)
            except ValueError:
                raise HeadshotError(
                    f"{option} {part!r}: not a number; write e.g. {option} 1e-4,5e-4", "bad_option"
                ) from None
            value = check_setting(key, number, option)
        if value in values:
            raise HeadshotError(f"{option} {text!r}: {part} is listed twice; list each value once", "bad_option")
        values.append(value)
    return values


def expand_grid(lists: dict[str, list]) -> list[dict]:
    """Every combination of the given lists (a key with no values is left to the preset)."""
    keys = [k for k in SETTING_KEYS if lists.get(k)]
    runs = [dict(zip(keys, combo)) for combo in itertools.product(*(lists[k] for k in keys))]
    _check_count(runs, "the grid")
    return runs


def read_runs_file(path: str | Path) -> list[dict]:
    """The exact combinations of a --runs file: TOML `[[runs]]` tables, or JSON (a list, or {"runs": [...]})."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HeadshotError(f"--runs {path}: no such file; give a TOML or JSON list of runs", "not_found")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            data = parse_toml(text)
        else:
            data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # a TOML syntax error is a ValueError
        raise HeadshotError(
            f"--runs {path} cannot be read ({exc}); write it as TOML or JSON", "invalid_runs_file"
        ) from None
    entries = data.get("runs") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise HeadshotError(
            f"--runs {path}: expected a non-empty list of runs ([[runs]] tables in TOML, or a JSON list of "
            'objects such as {"lr": 1e-4, "rank": 16})',
            "invalid_runs_file",
        )
    runs = []
    for number, entry in enumerate(entries, 1):
        run = {}
        for key, value in entry.items():
            if key not in SETTING_KEYS:
                close = difflib.get_close_matches(str(key), SETTING_KEYS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise HeadshotError(
                    f"--runs {path}, run {number}: unknown setting {key!r}; {hint}a run sets "
                    + ", ".join(SETTING_KEYS),
                    "invalid_runs_file",
                )
            run[key] = check_setting(key, value, f"--runs {path}, run {number}, {key}")
        if run in runs:
            raise HeadshotError(
                f"--runs {path}, run {number}: the same settings as an earlier run", "invalid_runs_file"
            )
        runs.append(run)
    _check_count(runs, f"--runs {path}")
    return runs


def _check_count(runs: list[dict], what: str) -> None:
    if len(runs) > MAX_RUNS:
        raise HeadshotError(f"{what} makes {len(runs)} runs; a sweep takes at most {MAX_RUNS}", "bad_option")


def run_label(settings: dict) -> str:
    """A readable folder-name part: lr0.0001-r16-a8-s500-tsks."""
    parts = []
    for key in SETTING_KEYS:
        if key in settings and settings[key] is not None:
            value = settings[key]
            text = f"{value:g}" if isinstance(value, float) else str(value)
            parts.append(SHORT[key] + text)
    return safe_name("-".join(parts) or "preset", "run name")
