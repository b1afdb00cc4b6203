"""The style file schema as pydantic models: every key of a style file, checked, and nothing else.

Keys (anything else is refused as a likely typo, with a "did you mean" hint when one is close):

    name        = "linkedin_corporate"  # optional; when given it must equal the file stem
    title       = "LinkedIn / corporate headshot"       # required, shown in UIs
    category    = "professional"        # required: "professional" | "portrait" | "avatar"
    prompt      = "corporate headshot of {subject}, ..."  # required; "{subject}" becomes
                                        # "<trigger> <class>" (at most once; when absent the
                                        # subject goes first, before the prompt)
    negative    = "blurry, ..."         # optional, default ""
    width       = 512                   # required, pixels, a positive multiple of 8
    height      = 640                   # required, idem
    sampler     = "dpmpp_2m_karras"     # required: one of SAMPLERS
    cfg         = 7.0                   # required, > 0
    steps       = 30                    # required, whole number > 0
    lora_weight = 0.9                   # optional, default 1.0: the identity LoRA's weight, 0..2
    pose        = "headshot_front"      # optional: a name in headshot.generate.pose_presets.POSE_PRESETS

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

`Style.for_family("sd1" | "sd2" | "sdxl")` applies that family's table (SD 2.x uses [sd2], or
[sd1] when there is none). Prompt text must be in the syntax both hosts read alike
(`prompt_syntax.prompt_syntax_problem`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..errors import HeadshotError
from ..families import get_family
from ..options import BaseModel, Extra, PrivateAttr, validator
from ..sampling.schedulers import SAMPLERS, SamplerSpec
from .pose_presets import POSE_PRESETS
from .prompt_syntax import prompt_syntax_problem

# the per-family tables a style file may have; a family without one uses the top-level values
# the per-family keys of the style file format (a family without one uses its style_fallback, then the top level)
FAMILY_TABLES = ("sd1", "sd2", "sdxl")
CATEGORIES = ("professional", "portrait", "avatar")
OVERRIDABLE = ("prompt", "negative", "width", "height", "steps", "cfg")
SNAKE_CASE = re.compile(r"[a-z0-9][a-z0-9_]*")


# --- field checks: each raises ValueError with the sentence the person reads -------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(v: Any, *, placeholder: bool) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be text (a quoted string), not {type(v).__name__}.")
    count = v.count("{subject}")
    if count and not placeholder:
        raise ValueError("cannot contain {subject}; only the prompt can.")
    if count > 1:
        raise ValueError("has {subject} more than once; the person goes in one place.")
    problem = prompt_syntax_problem(v.replace("{subject}", "subject"))
    if problem:
        raise ValueError(f"{problem}.")
    return v


def _size(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"must be a whole number of pixels, not {v!r}.")
    if v <= 0:
        raise ValueError(f"must be positive (got {v}).")
    if v % 8:
        lower, upper = v - v % 8, v - v % 8 + 8
        raise ValueError(
            f"{v} is not a multiple of 8 (the latent is 1/8 of the image); use {lower or upper} or {upper}."
        )
    return v


def _steps(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"must be a whole number, not {v!r}.")
    if v <= 0:
        raise ValueError(f"must be positive (got {v}).")
    return v


def _cfg(v: Any) -> float:
    if not _is_number(v):
        raise ValueError(f"must be a number, not {v!r}.")
    if v <= 0:
        raise ValueError(f"must be positive (got {v}).")
    return float(v)


def _size_pair(v: Any) -> tuple[int, int]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"must be [width, height], not {v!r}.")
    return _size(v[0]), _size(v[1])


def _family(family: str) -> str:
    """The registered family's name (aliases such as "sd15" accepted); unknown names are refused there."""
    return get_family(family).name


class _Strict(BaseModel):
    class Config:
        extra = Extra.forbid
        frozen = True


class _Values(_Strict):
    """The values a [sd1] / [sd2] / [sdxl] table may override, with their checks."""

    @validator("prompt", pre=True, check_fields=False)
    def _prompt(cls, v):
        return _text(v, placeholder=True)

    @validator("negative", pre=True, check_fields=False)
    def _negative(cls, v):
        return _text(v, placeholder=False)

    @validator("width", "height", pre=True, check_fields=False)
    def _pixels(cls, v):
        return _size(v)

    @validator("steps", pre=True, check_fields=False)
    def _steps(cls, v):
        return _steps(v)

    @validator("cfg", pre=True, check_fields=False)
    def _cfg(cls, v):
        return _cfg(v)


class FamilyOverrides(_Values):
    prompt: str | None = None
    negative: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None

    def values(self) -> dict[str, Any]:
        return {k: v for k, v in self.dict().items() if v is not None}


class SizePreset(_Strict):
    """A print size for ID photos: generate at `generation_size(family)`, crop to `crop_aspect`,
    scale to `print_pixels(dpi)`; the head (chin to crown) fills `head_height` of the print."""

    name: str  # the table's name, [size_presets.NAME]
    title: str
    print_width: float
    print_height: float
    unit: str  # "mm" | "in"
    head_height: tuple[float, float] | None = None  # chin to crown, in `unit`
    sd1: tuple[int, int]
    sd2: tuple[int, int] | None = None
    sdxl: tuple[int, int]

    @validator("title", pre=True)
    def _title(cls, v):
        if not isinstance(v, str) or not v.strip():
            raise ValueError("must be non-empty text.")
        return v.strip()

    @validator("print_width", "print_height", pre=True)
    def _print_side(cls, v):
        if not _is_number(v) or v <= 0:
            raise ValueError(f"must be a positive number, not {v!r}.")
        return float(v)

    @validator("unit", pre=True)
    def _unit(cls, v):
        if v not in ("mm", "in"):
            raise ValueError(f'must be "mm" or "in", not {v!r}.')
        return v

    @validator("head_height", pre=True)
    def _head(cls, v):
        if v is None:
            return v
        if (
            not isinstance(v, (list, tuple))
            or len(v) != 2
            or not all(_is_number(h) and h > 0 for h in v)
            or v[0] > v[1]
        ):
            raise ValueError(f"must be [min, max] in the unit, not {v!r}.")
        return float(v[0]), float(v[1])

    @validator("sd1", "sd2", "sdxl", pre=True)
    def _generation_size(cls, v):
        return None if v is None else _size_pair(v)

    @property
    def sizes(self) -> dict[str, tuple[int, int]]:
        return {f: getattr(self, f) for f in FAMILY_TABLES if getattr(self, f) is not None}

    @property
    def crop_aspect(self) -> float:
        """Final width / height."""
        return self.print_width / self.print_height

    @property
    def head_share(self) -> float | None:
        """The head's height (chin to crown) as a share of the print's height: the middle of the allowed range."""
        if self.head_height is None:
            return None
        return (self.head_height[0] + self.head_height[1]) / 2 / self.print_height

    def generation_size(self, family: str) -> tuple[int, int]:
        fam = get_family(family)
        return self.sizes.get(fam.name) or self.sizes.get(fam.style_fallback or "") or self.sd1

    def print_pixels(self, dpi: int = 300) -> tuple[int, int]:
        """The final picture's pixel size at `dpi`."""
        per_unit = dpi / 25.4 if self.unit == "mm" else dpi
        return round(self.print_width * per_unit), round(self.print_height * per_unit)


class Style(_Values):
    name: str
    title: str
    category: str
    prompt: str
    negative: str = ""
    width: int
    height: int
    sampler: str
    cfg: float
    steps: int
    lora_weight: float = 1.0
    pose: str | None = None
    size_presets: dict[str, SizePreset] = {}
    sd1: FamilyOverrides | None = None
    sd2: FamilyOverrides | None = None
    sdxl: FamilyOverrides | None = None
    # not keys of a file: where it came from, and the family for_family applied
    _source: Path | None = PrivateAttr(default=None)
    _family: str | None = PrivateAttr(default=None)
    _defaults: dict = PrivateAttr(default_factory=dict)

    def __init__(self, **data: Any):
        super().__init__(**data)
        self._defaults = {k: getattr(self, k) for k in OVERRIDABLE}

    @validator("title", pre=True)
    def _title(cls, v):
        if not isinstance(v, str) or not v.strip():
            raise ValueError("must be non-empty text.")
        return v.strip()

    @validator("category", pre=True)
    def _category(cls, v):
        if v not in CATEGORIES:
            raise ValueError(f"is {v!r}; use one of {', '.join(CATEGORIES)}.")
        return v

    @validator("sampler", pre=True)
    def _sampler(cls, v):
        if v not in SAMPLERS:
            raise ValueError(f"is {v!r}, not a known sampler; use one of {', '.join(SAMPLERS)}.")
        return v

    @validator("lora_weight", pre=True)
    def _lora_weight(cls, v):
        if not _is_number(v) or not 0 <= v <= 2:
            raise ValueError(f"must be a number from 0 to 2, not {v!r}.")
        return float(v)

    @validator("pose", pre=True)
    def _pose(cls, v):
        if v is not None and (not isinstance(v, str) or v not in POSE_PRESETS):
            import difflib

            close = difflib.get_close_matches(str(v), list(POSE_PRESETS), n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"{v!r} is not a pose preset.{hint} Presets: {', '.join(POSE_PRESETS)}.")
        return v

    @validator("size_presets", pre=True)
    def _presets(cls, v):
        if not isinstance(v, dict):
            raise ValueError("must be tables: [size_presets.NAME].")
        out = {}
        for name, table in v.items():
            if not SNAKE_CASE.fullmatch(name):
                raise ValueError(f"the preset name {name!r} must be snake_case.")
            # the table's own keys are checked by SizePreset; its name comes from the heading
            out[name] = {**table, "name": name} if isinstance(table, dict) and "name" not in table else table
        return out

    @validator("sd1", "sd2", "sdxl", pre=True)
    def _family_table(cls, v, field):
        if v is not None and not isinstance(v, dict):
            raise ValueError(f"must be a table ([{field.name}]).")
        return v

    @property
    def source(self) -> Path | None:
        """The file the style came from."""
        return self._source

    @property
    def family(self) -> str | None:
        """The family `for_family` resolved this style for (None: the file's top-level values)."""
        return self._family

    @property
    def overrides(self) -> dict[str, dict[str, Any]]:
        return {f: getattr(self, f).values() for f in FAMILY_TABLES if getattr(self, f) is not None}

    def for_family(self, family: str) -> Style:
        """This style with the [sd1] / [sd2] / [sdxl] table applied (sd2 falls back to [sd1])."""
        family = _family(family)
        table = self.overrides.get(family)
        if table is None:  # a family without its own table borrows its near relative's (SD 2.x: [sd1])
            table = self.overrides.get(get_family(family).style_fallback or "")
        resolved = self.copy(update={**self._defaults, **(table or {})})
        resolved._family = family
        return resolved

    @property
    def sampler_spec(self) -> SamplerSpec:
        return SAMPLERS[self.sampler]

    def size_preset(self, name: str) -> SizePreset:
        if name not in self.size_presets:
            have = ", ".join(self.size_presets) or "none"
            raise HeadshotError(
                f"Style {self.name!r} has no size preset {name!r} (it has: {have}).", code="unknown_size_preset"
            )
        return self.size_presets[name]


STYLE_KEYS = tuple(Style.__fields__)
REQUIRED_KEYS = tuple(k for k, f in Style.__fields__.items() if f.required and k != "name")
PRESET_KEYS = tuple(k for k in SizePreset.__fields__ if k != "name")
