"""Prepare's options: what each one means, and the checks that run before any photo is read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from ..errors import HeadshotError
from ..options import Field, Number, OptionModel, PathValue, Text, WholeNumber
from ..outputs import safe_name

#: the face's share of the crop width that framing can make (faces.framing.frame_headshot's range)
FACE_SHARE_RANGE = (0.05, 0.9)


class PrepareSettings(OptionModel):
    OPTION_NAMES: ClassVar[dict[str, str]] = {
        "trigger": "--trigger",
        "class_word": "--class",
        "resolution": "--resolution",
        "face_share": "--face-share",
        "face_backend": "--face-backend",
        "face_model_dirs": "--face-models",
        "tagger": "--tagger",
        "tagger_dirs": "--tagger-models",
        "tag_rules": "--tag-rules",
        "repeats": "--repeats",
        "keep": "--keep",
        "reference": "--reference",
        "min_face_px": "--min-face",
    }
    VALUE_HINTS: ClassVar[dict[str, str]] = {"resolution": "must be a multiple of 64 between 256 and 2048"}
    ABOUT: ClassVar[str] = "prepare"

    trigger: Text = "ohwx"
    class_word: Text | None = None  # None: detected where a model allows, else "person"
    resolution: WholeNumber = 512
    face_share: Number = 1 / 3
    face_backend: Text = "auto"
    face_model_dirs: list[PathValue] = Field(default_factory=list)
    tagger: Text = "auto"
    tagger_dirs: list[PathValue] = Field(default_factory=list)
    tag_rules: PathValue | None = None
    repeats: WholeNumber | None = None
    # file names to keep even when screening rejects them (a list or tuple is taken as a set)
    keep: set[Text] = Field(default_factory=set)
    reference: list[PathValue] = Field(default_factory=list)  # photos that define the identity
    min_face_px: WholeNumber | None = None
    detect_side: WholeNumber = 1024

    def check_values(self) -> None:
        """The checks on the values alone (building settings runs them; `validate` adds the files)."""

        def bad(message: str) -> HeadshotError:
            return HeadshotError(message, "bad_option")

        safe_name(self.trigger, "--trigger")  # it becomes part of the kohya folder name
        if not re.fullmatch(r"[\w\-]+", self.trigger):
            raise bad(f"--trigger {self.trigger!r} must be one word (letters, digits, - or _)")
        if self.class_word is not None:
            safe_name(self.class_word, "--class")
        if (
            isinstance(self.resolution, bool)
            or not isinstance(self.resolution, int)
            or self.resolution % 64
            or not 256 <= self.resolution <= 2048
        ):
            raise bad(f"--resolution {self.resolution} must be a multiple of 64 between 256 and 2048")
        low, high = FACE_SHARE_RANGE
        if not low <= self.face_share <= high:  # also refuses NaN
            raise bad(
                f"--face-share {self.face_share} must be between {low} and {high} (the face's width as a "
                "share of the crop; 1/3 is a classic headshot)"
            )
        if self.repeats is not None and self.repeats < 1:
            raise bad(f"--repeats {self.repeats} must be at least 1 (or leave it out to choose from the photo count)")
        if self.min_face_px is not None and self.min_face_px < 1:
            raise bad(f"--min-face {self.min_face_px} must be at least 1 pixel")

    def validate(self) -> None:  # type: ignore[override]  # pydantic's classmethod: only nested models use it
        """Every option checked before any photo is read or model loaded; the error names the option."""
        self.check_values()
        for reference in self.reference:
            reference = Path(reference)
            if not reference.exists():
                raise HeadshotError(
                    f"--reference {reference}: not found; give the path of a photo of the person", "not_found"
                )
            if reference.is_dir():
                raise HeadshotError(
                    f"--reference {reference} is a folder; give one photo (repeat --reference for more)", "bad_option"
                )
