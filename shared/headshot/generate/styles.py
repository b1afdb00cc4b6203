"""Style templates as data: one TOML file per style, packaged here and droppable by people.

Schema (every key of a style file; anything else is refused as a likely typo):

    name        = "linkedin_corporate"  # optional; when given it must equal the file stem
    title       = "LinkedIn / corporate headshot"       # required, shown in UIs
    category    = "professional"        # required: "professional" | "portrait" | "avatar"
    prompt      = "corporate headshot of {subject}, ..."  # required; "{subject}" becomes
                                        # "<trigger> <class>" (at most once; when absent the
                                        # subject goes first, before the prompt)
    negative    = "blurry, ..."         # optional, default ""
    width       = 512                   # required, pixels, a positive multiple of 8
    height      = 640                   # required, idem
    sampler     = "dpmpp_2m_karras"     # required: one of SAMPLERS (euler, euler_a, dpmpp_2m,
                                        # dpmpp_2m_karras, ddim, unipc)
    cfg         = 7.0                   # required, > 0
    steps       = 30                    # required, whole number > 0
    lora_weight = 0.9                   # optional, default 1.0: the identity LoRA's weight, 0..2
    pose        = "headshot_front"      # optional: a name in headshot.generate.pose.POSE_PRESETS
    style_lora  = { file = "film_grain.safetensors", weight = 0.6 }  # optional: a style LoRA the
                                        # host loads from its own LoRA folder

    [size_presets.passport_35x45]       # optional, for ID photos: one table per print size
    title        = "Passport, 35 x 45 mm"
    print_width  = 35                   # print size in `unit`
    print_height = 45
    unit         = "mm"                 # "mm" | "in"
    head_height  = [32, 36]             # optional: chin-to-crown range in `unit`
    sd1          = [512, 656]           # generation size per family (sdxl required too;
    sdxl         = [896, 1152]          # sd2 optional, defaults to sd1)

    [sd1]                               # optional per-family overrides of prompt, negative,
    negative = "lowres, ..."            # width, height, steps, cfg
    [sdxl]
    width = 896
    height = 1152

The top-level values are the defaults; `Style.for_family("sd1" | "sd2" | "sdxl")` applies that
family's table (SD 2.x uses [sd2], or [sd1] when there is none). Packaged styles keep SD1.5
sizes at the top level and give SDXL sizes (around 1024) in [sdxl].

Prompt text uses only the weight form both hosts parse the same way, `(text:1.2)`; no `[...]`,
no `<lora:...>` tags (LoRAs go through the hosts' own loaders; the A1111 adapter adds its tag
itself), no `{...}` other than `{subject}` (ComfyUI's frontend would read it as a random
choice), and no upper-case AND / BREAK (A1111-only keywords). `\\(` and `\\)` are literal
parentheses in both.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (A1111)
    import tomli as tomllib

from ..errors import HeadshotError
from .pose import POSE_PRESETS
# samplers and prompt syntax live in their own modules; these names stay importable from here
from .prompt_syntax import build_prompt, escape_prompt_text, prompt_syntax_problem  # noqa: F401
from ..sampling.schedulers import SAMPLERS, SamplerSpec, a1111_sampler, comfy_sampler, sampler_spec  # noqa: F401

PACKAGED_DIR = Path(__file__).with_name("styles")
FAMILIES = ("sd1", "sd2", "sdxl")  # as headshot.train.models.FAMILIES
CATEGORIES = ("professional", "portrait", "avatar")


# --- the data classes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleLora:
    file: str  # as the host lists it in its LoRA folder
    weight: float = 1.0


@dataclass(frozen=True)
class SizePreset:
    """A print size for ID photos: generate at `generation_size(family)`, crop to `crop_aspect`."""

    name: str
    title: str
    print_width: float
    print_height: float
    unit: str  # "mm" | "in"
    sizes: Mapping[str, tuple[int, int]]  # family -> (width, height) to generate at
    head_height: tuple[float, float] | None = None  # chin to crown, in `unit`

    @property
    def crop_aspect(self) -> float:
        """Final width / height."""
        return self.print_width / self.print_height

    def generation_size(self, family: str) -> tuple[int, int]:
        _check_family(family)
        if family in self.sizes:
            return self.sizes[family]
        return self.sizes["sd1"]  # sd2 without its own size

    def print_pixels(self, dpi: int = 300) -> tuple[int, int]:
        """The final picture's pixel size at `dpi`."""
        per_unit = dpi / 25.4 if self.unit == "mm" else dpi
        return round(self.print_width * per_unit), round(self.print_height * per_unit)


_OVERRIDABLE = ("prompt", "negative", "width", "height", "steps", "cfg")


@dataclass(frozen=True)
class Style:
    name: str
    title: str
    category: str
    prompt: str
    negative: str
    width: int
    height: int
    sampler: str
    cfg: float
    steps: int
    lora_weight: float = 1.0
    pose: str | None = None
    style_lora: StyleLora | None = None
    size_presets: Mapping[str, SizePreset] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # family -> values
    family: str | None = None  # set by for_family
    source: Path | None = None  # the file it came from
    _defaults: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def for_family(self, family: str) -> "Style":
        """This style with the [sd1] / [sd2] / [sdxl] table applied (sd2 falls back to [sd1])."""
        _check_family(family)
        table = self.overrides.get(family)
        if table is None and family == "sd2":
            table = self.overrides.get("sd1")
        values = dict(self._defaults or {k: getattr(self, k) for k in _OVERRIDABLE})
        values.update(table or {})
        return dataclasses.replace(self, family=family, **values)

    @property
    def sampler_spec(self) -> SamplerSpec:
        return SAMPLERS[self.sampler]

    def size_preset(self, name: str) -> SizePreset:
        if name not in self.size_presets:
            have = ", ".join(self.size_presets) or "none"
            raise HeadshotError(f"Style {self.name!r} has no size preset {name!r} (it has: {have}).",
                                code="unknown_size_preset")
        return self.size_presets[name]


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise HeadshotError(f"Unknown model family {family!r}; use one of {', '.join(FAMILIES)}.",
                            code="bad_family")



# --- loading ------------------------------------------------------------------------------------

_REQUIRED = ("title", "category", "prompt", "width", "height", "sampler", "cfg", "steps")
_OPTIONAL = ("name", "negative", "lora_weight", "pose", "style_lora", "size_presets") + FAMILIES
_KEYS = frozenset(_REQUIRED + _OPTIONAL)
_PRESET_REQUIRED = ("title", "print_width", "print_height", "unit", "sd1", "sdxl")
_PRESET_KEYS = frozenset(_PRESET_REQUIRED + ("head_height", "sd2"))
_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")


def _invalid(path: Path, key: str | None, detail: str) -> HeadshotError:
    where = f"field `{key}`: " if key else ""
    return HeadshotError(f"Style file {path}: {where}{detail}", code="invalid_style")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(path: Path, key: str, v: Any, *, placeholder: bool) -> str:
    if not isinstance(v, str):
        raise _invalid(path, key, f"must be text (a quoted string), not {type(v).__name__}.")
    count = v.count("{subject}")
    if count and not placeholder:
        raise _invalid(path, key, "cannot contain {subject}; only the prompt can.")
    if count > 1:
        raise _invalid(path, key, "has {subject} more than once; the person goes in one place.")
    problem = prompt_syntax_problem(v.replace("{subject}", "subject"))
    if problem:
        raise _invalid(path, key, f"{problem}.")
    return v


def _size(path: Path, key: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _invalid(path, key, f"must be a whole number of pixels, not {v!r}.")
    if v <= 0:
        raise _invalid(path, key, f"must be positive (got {v}).")
    if v % 8:
        lower, upper = v - v % 8, v - v % 8 + 8
        raise _invalid(path, key, f"{v} is not a multiple of 8 (the latent is 1/8 of the image); "
                                  f"use {lower or upper} or {upper}.")
    return v


def _steps(path: Path, key: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _invalid(path, key, f"must be a whole number, not {v!r}.")
    if v <= 0:
        raise _invalid(path, key, f"must be positive (got {v}).")
    return v


def _cfg(path: Path, key: str, v: Any) -> float:
    if not _is_number(v):
        raise _invalid(path, key, f"must be a number, not {v!r}.")
    if v <= 0:
        raise _invalid(path, key, f"must be positive (got {v}).")
    return float(v)


_FIELD_CHECKS: dict[str, Callable[[Path, str, Any], Any]] = {
    "prompt": lambda p, k, v: _text(p, k, v, placeholder=True),
    "negative": lambda p, k, v: _text(p, k, v, placeholder=False),
    "width": _size,
    "height": _size,
    "steps": _steps,
    "cfg": _cfg,
}


def _size_pair(path: Path, key: str, v: Any) -> tuple[int, int]:
    if not isinstance(v, list) or len(v) != 2:
        raise _invalid(path, key, f"must be [width, height], not {v!r}.")
    return _size(path, key, v[0]), _size(path, key, v[1])


def _parse_size_preset(path: Path, name: str, table: Any) -> SizePreset:
    where = f"size_presets.{name}"
    if not isinstance(table, dict):
        raise _invalid(path, where, "must be a table ([size_presets.NAME]).")
    unknown = sorted(set(table) - _PRESET_KEYS)
    if unknown:
        raise _invalid(path, f"{where}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(_PRESET_KEYS))}.")
    missing = [k for k in _PRESET_REQUIRED if k not in table]
    if missing:
        raise _invalid(path, f"{where}.{missing[0]}", "is required.")
    if not isinstance(table["title"], str) or not table["title"].strip():
        raise _invalid(path, f"{where}.title", "must be non-empty text.")
    for key in ("print_width", "print_height"):
        if not _is_number(table[key]) or table[key] <= 0:
            raise _invalid(path, f"{where}.{key}", f"must be a positive number, not {table[key]!r}.")
    if table["unit"] not in ("mm", "in"):
        raise _invalid(path, f"{where}.unit", f"must be \"mm\" or \"in\", not {table['unit']!r}.")
    head = table.get("head_height")
    if head is not None:
        if (not isinstance(head, list) or len(head) != 2 or not all(_is_number(h) and h > 0 for h in head)
                or head[0] > head[1]):
            raise _invalid(path, f"{where}.head_height", f"must be [min, max] in the unit, not {head!r}.")
        head = (float(head[0]), float(head[1]))
    sizes = {fam: _size_pair(path, f"{where}.{fam}", table[fam]) for fam in FAMILIES if fam in table}
    return SizePreset(name, table["title"].strip(), float(table["print_width"]), float(table["print_height"]),
                      table["unit"], sizes, head)


def parse_style(data: Mapping[str, Any], path: Path) -> Style:
    """A Style from one file's parsed TOML; raises HeadshotError naming `path` and the field."""
    stem = path.stem
    if not _NAME.fullmatch(stem):
        raise _invalid(path, None, f"the file name {path.name!r} must be snake_case (lower-case letters, digits, "
                                   f"underscores), e.g. {re.sub(r'[^a-z0-9]+', '_', stem.lower()).strip('_') or 'my_style'}.toml.")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(_KEYS), n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise _invalid(path, key, f"unknown key{hint}; allowed: {', '.join(sorted(_KEYS))}.")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise _invalid(path, missing[0], "is required" + (f" (also missing: {', '.join(missing[1:])})"
                                                          if missing[1:] else "") + ".")
    name = data.get("name", stem)
    if name != stem:
        raise _invalid(path, "name", f"is {name!r} but the file is {path.name}; the name is the file stem.")
    title = data["title"]
    if not isinstance(title, str) or not title.strip():
        raise _invalid(path, "title", "must be non-empty text.")
    if data["category"] not in CATEGORIES:
        raise _invalid(path, "category", f"is {data['category']!r}; use one of {', '.join(CATEGORIES)}.")
    if data["sampler"] not in SAMPLERS:
        raise _invalid(path, "sampler", f"is {data['sampler']!r}, not a known sampler; use one of "
                                        f"{', '.join(SAMPLERS)}.")
    values = {k: _FIELD_CHECKS[k](path, k, data[k]) for k in _OVERRIDABLE if k in data}
    values.setdefault("negative", "")
    lora_weight = data.get("lora_weight", 1.0)
    if not _is_number(lora_weight) or not 0 <= lora_weight <= 2:
        raise _invalid(path, "lora_weight", f"must be a number from 0 to 2, not {lora_weight!r}.")
    pose = data.get("pose")
    if pose is not None:
        if not isinstance(pose, str) or pose not in POSE_PRESETS:
            close = difflib.get_close_matches(str(pose), list(POSE_PRESETS), n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise _invalid(path, "pose", f"{pose!r} is not a pose preset.{hint} Presets: {', '.join(POSE_PRESETS)}.")
    style_lora = data.get("style_lora")
    if style_lora is not None:
        if not isinstance(style_lora, dict):
            raise _invalid(path, "style_lora", "must be a table: { file = \"name.safetensors\", weight = 0.7 }.")
        extra = sorted(set(style_lora) - {"file", "weight"})
        if extra:
            raise _invalid(path, f"style_lora.{extra[0]}", "unknown key; allowed: file, weight.")
        if not isinstance(style_lora.get("file"), str) or not style_lora["file"].strip():
            raise _invalid(path, "style_lora.file", "is required: the LoRA's file name in the host's LoRA folder.")
        weight = style_lora.get("weight", 1.0)
        if not _is_number(weight) or not -2 <= weight <= 2:
            raise _invalid(path, "style_lora.weight", f"must be a number from -2 to 2, not {weight!r}.")
        style_lora = StyleLora(style_lora["file"].strip(), float(weight))
    presets = data.get("size_presets", {})
    if not isinstance(presets, dict):
        raise _invalid(path, "size_presets", "must be tables: [size_presets.NAME].")
    size_presets = {}
    for preset_name, table in presets.items():
        if not _NAME.fullmatch(preset_name):
            raise _invalid(path, f"size_presets.{preset_name}", "the preset name must be snake_case.")
        size_presets[preset_name] = _parse_size_preset(path, preset_name, table)
    overrides = {}
    for fam in FAMILIES:
        if fam not in data:
            continue
        table = data[fam]
        if not isinstance(table, dict):
            raise _invalid(path, fam, f"must be a table ([{fam}]).")
        bad = sorted(set(table) - set(_OVERRIDABLE))
        if bad:
            raise _invalid(path, f"{fam}.{bad[0]}", f"cannot be overridden per family; [{fam}] takes "
                                                    f"{', '.join(_OVERRIDABLE)}.")
        overrides[fam] = {k: _FIELD_CHECKS[k](path, f"{fam}.{k}", v) for k, v in table.items()}
    return Style(name=name, title=title.strip(), category=data["category"], sampler=data["sampler"],
                 lora_weight=float(lora_weight), pose=pose, style_lora=style_lora, size_presets=size_presets,
                 overrides=overrides, source=path, _defaults=dict(values), **values)


def load_style_file(path: str | Path) -> Style:
    """One style file, validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _invalid(path, None, f"cannot be read ({e}).") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message ends "(at line N, column M)"
        raise _invalid(path, None, f"is not valid TOML: {e}") from e
    return parse_style(data, path)


def load_styles(extra_dirs: Iterable[str | Path] = (), *, missing_ok: bool = False,
                on_error: Callable[[HeadshotError], None] | None = None) -> dict[str, Style]:
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
            raise HeadshotError(f"Style folder {folder} does not exist or is not a folder; create it or fix the "
                                f"path.", code="style_dir_missing")
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
    raise HeadshotError(f"Unknown style {name!r}.{hint} Styles: {', '.join(sorted(styles))}.",
                        code="unknown_style")
