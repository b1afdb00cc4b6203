"""The registry of base-model families: one line per family, looked up by name or alias."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import HeadshotError
from .family import Family
from .sd1 import SD1
from .sd2 import SD2
from .sdxl import SDXL

_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family; its name and aliases must be new."""
    taken = {_key(n) for f in _FAMILIES.values() for n in (f.name, *f.aliases)}
    clash = [n for n in (family.name, *family.aliases) if _key(n) in taken]
    if clash:
        raise HeadshotError(
            f"family name {clash[0]!r} is already registered; give the new family its own name.", "unknown_family"
        )
    _FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    _FAMILIES.pop(get_family(name).name)


def families() -> Iterator[Family]:
    """The registered families, in registration order."""
    return iter(list(_FAMILIES.values()))


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def get_family(name: str | Family) -> Family:
    """The family called `name` or one of its aliases ("sd15", "SD-XL", ...); a Family is returned as is."""
    if isinstance(name, Family):
        return name
    key = _key(name)
    for family in _FAMILIES.values():
        if key == _key(family.name) or key in {_key(a) for a in family.aliases}:
            return family
    raise HeadshotError(f"unknown model family {name!r}; use one of {', '.join(_FAMILIES)}.", "unknown_family")


def family_for_comfyui_config(class_name: str, default: str = "sd1") -> Family:
    """The family of a ComfyUI MODEL from its config class name (comfy.supported_models: SD15, SD20, SDXL...)."""
    for family in _FAMILIES.values():
        if any(class_name.startswith(prefix) for prefix in family.comfyui_model_configs):
            return family
    return get_family(default)


def _key(name: str) -> str:
    return str(name).strip().lower().replace("-", "").replace(" ", "")


for _family in (SD1, SD2, SDXL):
    register_family(_family)
