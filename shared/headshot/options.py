"""Checks on options every stage shares (seeds, counts, LoRA files, settings models): one wording, one error code."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping

# The pydantic 1.10 API, because every host has it: AUTOMATIC1111 1.10 pins pydantic 1.10 itself (and we never
# upgrade what a host pins), while pydantic 2 (Forge, ComfyUI) ships the same API as pydantic.v1.
# Every settings model imports pydantic through here and nowhere else.
import pydantic as _installed

from .errors import HeadshotError

if TYPE_CHECKING:  # the type checker sees the 1.10 API as pydantic 2 ships it
    import pydantic.v1 as pydantic_api
    import pydantic.v1.fields as pydantic_fields
elif _installed.VERSION.startswith("1."):  # pydantic 1.10 (A1111); its own `pydantic.v1` re-exports names only
    import pydantic as pydantic_api
    import pydantic.fields as pydantic_fields
else:
    import pydantic.v1 as pydantic_api
    import pydantic.v1.fields as pydantic_fields

BaseModel = pydantic_api.BaseModel
Extra = pydantic_api.Extra
Field = pydantic_api.Field
PrivateAttr = pydantic_api.PrivateAttr
StrictBool = pydantic_api.StrictBool
StrictInt = pydantic_api.StrictInt
StrictStr = pydantic_api.StrictStr
ValidationError = pydantic_api.ValidationError
validator = pydantic_api.validator

MAX_SEED = 2**32 - 1


def bad_option(message: str) -> HeadshotError:
    return HeadshotError(message, "bad_option")


def check_seeds(seed: int, count: int = 1, option: str = "--seed") -> None:
    """Every seed used (seed .. seed + count - 1) fits the 32-bit range hosts and samplers accept."""
    if not 0 <= seed <= MAX_SEED:
        raise bad_option(f"{option} {seed} is out of range: use a whole number from 0 to {MAX_SEED}")
    if seed + count - 1 > MAX_SEED:
        raise bad_option(
            f"{option} {seed} with {count} pictures goes past {MAX_SEED}: use a seed of at most {MAX_SEED - count + 1}"
        )


def check_positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise bad_option(f"{option} {value}: must be at least 1")


def check_lora_files(paths: Iterable[str | Path], option: str = "--lora") -> None:
    """Every LoRA exists and is a readable .safetensors file."""
    from safetensors import safe_open

    for path in map(Path, paths):
        if not path.is_file():
            what = "is a folder, not a LoRA file" if path.is_dir() else "not found"
            raise HeadshotError(
                f"{option} {path}: {what}; give the .safetensors file `headshot train` wrote", "lora_missing"
            )
        try:
            with safe_open(str(path), "pt") as f:
                f.metadata()
        except Exception:
            raise HeadshotError(
                f"{option} {path}: not a readable .safetensors LoRA (damaged, or another format)", "lora_unreadable"
            ) from None


class OptionModel(BaseModel):
    """Settings a person chooses, as validated data (pydantic): an unknown key or a value of the wrong type
    is refused with one sentence that names the option as people write it, never with pydantic's report.
    Fields use strict types (WholeNumber, Number, Flag, Text, PathText, PathValue): nothing is coerced."""

    class Config:
        extra = Extra.forbid

    #: field -> how people name it (its CLI flag); a field not listed is named as it is spelled
    OPTION_NAMES: ClassVar[dict[str, str]] = {}
    #: field -> what its value must be, where the type alone would say it badly
    VALUE_HINTS: ClassVar[dict[str, str]] = {}
    #: what the settings are for, in "unknown setting for ..." messages
    ABOUT: ClassVar[str] = "these settings"

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self.refusal(exc, data) from None
        self.check_values()

    def check_values(self) -> None:
        """Checks across values, after the types are right; building settings runs them."""

    @validator("*", pre=True)
    def _lists_are_lists(cls, value: Any, field: Any) -> Any:
        # pydantic 1 would take a tuple (or a set) for a list: settings want exactly what a JSON record holds
        if field.shape == pydantic_fields.SHAPE_LIST and value is not None and not isinstance(value, list):
            raise pydantic_api.errors.ListError()
        return value

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(cls.__fields__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Settings from a dict (a job record, a parsed file); every key must be a setting."""
        if not isinstance(data, Mapping):
            raise bad_option(f"{cls.ABOUT} must be a table of settings, not {type(data).__name__}")
        return cls(**{str(key): value for key, value in data.items()})

    def to_dict(self) -> dict:
        return self.dict()

    def copied(self):
        """A deep copy, not validated again (change fields, then check them)."""
        return self.copy(deep=True)

    @classmethod
    def option_name(cls, field: str) -> str:
        return cls.OPTION_NAMES.get(field, field)

    @classmethod
    def refusal(cls, exc: ValidationError, data: Mapping[str, Any]) -> HeadshotError:
        """The first problem pydantic found, as one sentence with the option's name and the fix: a wrong value
        (in field order) before an unknown key (in the order given)."""
        problems = exc.errors()
        wrong = [p for p in problems if p["type"] != "value_error.extra"]
        order = {key: i for i, key in enumerate(data)}
        problem = wrong[0] if wrong else min(problems, key=lambda p: order.get(str(p["loc"][0]), 0))
        field = str(problem["loc"][0]) if problem["loc"] else ""
        if problem["type"] == "value_error.extra":
            close = difflib.get_close_matches(field, list(cls.__fields__), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "known settings: " + ", ".join(cls.__fields__)
            return HeadshotError(f"unknown setting {field!r} for {cls.ABOUT} ({hint})", "unknown_option")
        name = cls.option_name(field)
        if problem["type"] == "value_error.missing":
            return bad_option(f"{name} must be given")
        kind = problem["type"].rpartition(".")[2]
        if problem["type"] == "type_error.none.not_allowed":  # None where None is no choice: say what fits
            kind = _expected_kind(cls.__fields__[field])
        why = cls.VALUE_HINTS.get(field) or _TYPE_WORDS.get(kind, problem["msg"])
        return bad_option(f"{name} {data.get(field)!r}: {why}")


#: the end of pydantic's error type ("type_error.integer" -> "integer") -> what the value must be
_TYPE_WORDS = {
    "integer": "must be a whole number",
    "float": "must be a number",
    "strictbool": "must be true or false",
    "bool": "must be true or false",
    "str": "must be text",
    "list": "must be a list",
    "set": "must be a list",
    "path": "must be a path",
    "const": "is not one of the choices",
}


class _Number:
    """A strict number field: an int or a float (kept as a float), never a bool or text."""

    @classmethod
    def __get_validators__(cls):
        yield cls.checked

    @staticmethod
    def checked(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise pydantic_api.errors.FloatError()
        return float(value)


class _PathText:
    """A path kept as text, what JSON records hold (a str or a path is accepted)."""

    @classmethod
    def __get_validators__(cls):
        yield cls.checked

    @staticmethod
    def checked(value: Any) -> str:
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        if not isinstance(value, str):
            raise pydantic_api.errors.StrError()
        return value


class _PathValue:
    """A path kept as a Path (a str or a path is accepted)."""

    @classmethod
    def __get_validators__(cls):
        yield cls.checked

    @staticmethod
    def checked(value: Any) -> Path:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str):
            raise pydantic_api.errors.PathError()
        return Path(value)


if TYPE_CHECKING:  # what the fields hold
    Number = float
    PathText = str
    PathValue = Path
else:
    Number, PathText, PathValue = _Number, _PathText, _PathValue

#: strict scalar fields under the names the settings read best with
WholeNumber = StrictInt
Flag = StrictBool
Text = StrictStr


def _expected_kind(field: Any) -> str:
    """The kind of value a field takes, as the end of the error type its type refuses with."""
    if field.shape in (pydantic_fields.SHAPE_LIST, pydantic_api.fields.SHAPE_SET):
        return "list"
    kinds = {
        WholeNumber: "integer",
        _Number: "float",
        Flag: "strictbool",
        Text: "str",
        _PathText: "str",
        _PathValue: "path",
    }
    return kinds.get(field.type_, "")
