"""Style templates as data: one TOML file per style, packaged here and droppable by people.

The schema (every key, its checks) is `style_schema.Style`; this module reads the files, turns a
schema violation into one sentence naming the file and the field, and finds styles by name.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import HeadshotError
from ..options import ValidationError
from ..outputs import parse_toml
from .style_schema import FAMILY_TABLES, OVERRIDABLE, PRESET_KEYS, REQUIRED_KEYS, SNAKE_CASE, STYLE_KEYS, Style

PACKAGED_DIR = Path(__file__).with_name("styles")


def _invalid(path: Path, key: str | None, detail: str) -> HeadshotError:
    where = f"field `{key}`: " if key else ""
    return HeadshotError(f"Style file {path}: {where}{detail}", code="invalid_style")


def _explain(path: Path, error: ValidationError) -> HeadshotError:
    """The first problem pydantic found, in the words a person reads: unknown keys first (with a
    "did you mean"), then missing ones, then wrong values."""
    errors = error.errors()
    rank = {"value_error.extra": 0, "value_error.missing": 1}
    # unknown keys by name: pydantic 1 reports them in no fixed order
    first = min(errors, key=lambda e: (rank.get(e["type"], 2), e["loc"] if e["type"] == "value_error.extra" else ()))
    loc = [str(part) for part in first["loc"]]
    key = ".".join(loc)
    if first["type"] == "value_error.extra":
        if len(loc) == 1:
            close = difflib.get_close_matches(loc[0], sorted(STYLE_KEYS), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            return _invalid(path, key, f"unknown key{hint}; allowed: {', '.join(sorted(STYLE_KEYS))}.")
        if loc[0] in FAMILY_TABLES:
            return _invalid(path, key, f"cannot be overridden per family; [{loc[0]}] takes {', '.join(OVERRIDABLE)}.")
        return _invalid(path, key, f"unknown key; allowed: {', '.join(sorted(PRESET_KEYS))}.")
    if first["type"] == "value_error.missing":
        if len(loc) == 1:
            absent = {e["loc"] for e in errors if e["type"] == "value_error.missing"}
            missing = [k for k in REQUIRED_KEYS if (k,) in absent]
            also = f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""
            return _invalid(path, missing[0], f"is required{also}.")
        return _invalid(path, key, "is required.")
    message = first["msg"]
    if first["type"] == "type_error.dict":
        message = f"must be a table ([{key}])."
    return _invalid(path, key, message if message.endswith(".") else f"{message}.")


def parse_style(data: Mapping[str, Any], path: Path) -> Style:
    """A Style from one file's parsed TOML; raises HeadshotError naming `path` and the field."""
    stem = path.stem
    if not SNAKE_CASE.fullmatch(stem):
        suggestion = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "my_style"
        raise _invalid(
            path,
            None,
            f"the file name {path.name!r} must be snake_case (lower-case letters, digits, "
            f"underscores), e.g. {suggestion}.toml.",
        )
    name = data.get("name", stem)
    if name != stem:
        raise _invalid(path, "name", f"is {name!r} but the file is {path.name}; the name is the file stem.")
    try:
        style = Style.parse_obj({**data, "name": stem})
    except ValidationError as e:
        raise _explain(path, e) from None
    style._source = path
    return style


def load_style_file(path: str | Path) -> Style:
    """One style file, validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _invalid(path, None, f"cannot be read ({e}).") from e
    try:
        data = parse_toml(text)
    except ValueError as e:  # bad TOML: its message ends "(at line N, column M)"
        raise _invalid(path, None, f"is not valid TOML: {e}") from e
    return parse_style(data, path)


def load_styles(
    extra_dirs: Iterable[str | Path] = (),
    *,
    missing_ok: bool = False,
    on_error: Callable[[HeadshotError], None] | None = None,
) -> dict[str, Style]:
    """Every style by name: the packaged ones, then each `*.toml` in `extra_dirs` in order (a
    file with a packaged style's name replaces it). A bad file raises HeadshotError naming it and
    the field, unless `on_error` is given: then it is reported there and skipped (for hosts that
    list styles). A missing extra folder is an error unless `missing_ok`."""
    if isinstance(extra_dirs, (str, Path)):
        extra_dirs = [extra_dirs]
    styles: dict[str, Style] = {}
    for folder in [PACKAGED_DIR, *map(Path, extra_dirs)]:
        if not folder.is_dir():
            if missing_ok and not folder.exists():
                continue
            raise HeadshotError(
                f"Style folder {folder} does not exist or is not a folder; create it or fix the path.",
                code="style_dir_missing",
            )
        for path in sorted(folder.glob("*.toml")):
            try:
                style = load_style_file(path)
            except HeadshotError as e:
                if on_error is None:
                    raise
                on_error(e)
                continue
            styles[style.name] = style
    return styles


def get_style(name: str, extra_dirs: Iterable[str | Path] = ()) -> Style:
    """The style called `name`; an unknown name raises HeadshotError listing close matches."""
    styles = load_styles(extra_dirs)
    if name in styles:
        return styles[name]
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key in styles:
        return styles[key]
    close = difflib.get_close_matches(key, list(styles), n=3, cutoff=0.5)
    close += [n for n in styles if key and key in n and n not in close][:3]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise HeadshotError(f"Unknown style {name!r}.{hint} Styles: {', '.join(sorted(styles))}.", code="unknown_style")
