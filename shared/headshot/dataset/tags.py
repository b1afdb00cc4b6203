"""What a caption tag is: `Tag`, the `Tagger` protocol, the booru name rule, and a host's own tagger.

Every tagger turns one PIL image into `Tag`s sorted by score, highest first. Cleaning those tags
for an identity LoRA is `headshot.dataset.captions`' job; reading tagger models is `tagging`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Protocol, runtime_checkable

from PIL import Image

from ..errors import HeadshotError

GENERAL, CHARACTER, RATING = "general", "character", "rating"

# Tags whose underscore is part of the face drawn, so "_" -> " " would break them
# (the same list the SmilingWolf WD taggers keep).
KAOMOJI = frozenset(
    {
        "0_0",
        "(o)_(o)",
        "+_+",
        "+_-",
        "._.",
        "<o>_<o>",
        "<|>_<|>",
        "=_=",
        ">_<",
        "3_3",
        "6_9",
        ">_o",
        "@_@",
        "^_^",
        "o_o",
        "u_u",
        "x_x",
        "|_|",
        "||_||",
    }
)


@dataclass(frozen=True)
class Tag:
    name: str  # spaces, not underscores (kaomoji excepted)
    score: float  # the model's probability, 0..1
    category: str  # "general", "character" or "rating"


@runtime_checkable
class Tagger(Protocol):
    name: str

    def tag(self, image: Image.Image) -> list[Tag]:
        """Tags for one image, highest score first."""


def tag_display_name(raw: str) -> str:
    """Booru tag -> caption form: "blue_eyes" -> "blue eyes", but "^_^" stays."""
    raw = raw.strip()
    return raw if raw in KAOMOJI else raw.replace("_", " ")


def _by_score(tags: Iterable[Tag]) -> list[Tag]:
    return sorted(tags, key=lambda t: t.score, reverse=True)  # stable: ties keep model order


# --- host-provided tagger -------------------------------------------------------------------

TagFunction = Callable[[Image.Image], Mapping[str, float] | str]

# A1111's deepbooru output: "tag", "(tag:0.953)" when ranks are on, "\(" when escaping is on.
_RANKED = re.compile(r"^\((.*):(\d+(?:\.\d+)?)\)$")
_ESCAPED = re.compile(r"\\([\\()])")


def _parse_tag_string(text: str) -> list[tuple[str, float]]:
    parsed = []
    for i, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            continue
        ranked = _RANKED.match(part)
        # Unranked tags come in the host's order (best first); keep it with falling scores.
        name, score = (ranked.group(1), float(ranked.group(2))) if ranked else (part, 1.0 - i * 1e-6)
        parsed.append((_ESCAPED.sub(r"\1", name), score))
    return parsed


class CallableTagger:
    """Wraps a host's tagger, e.g. A1111's DeepDanbooru: `fn(image)` returns {tag: score} or
    a comma-separated tag string."""

    def __init__(self, name: str, fn: TagFunction):
        self.name = name
        self._fn = fn

    def tag(self, image: Image.Image) -> list[Tag]:
        result = self._fn(image)
        if isinstance(result, str):
            pairs = _parse_tag_string(result)
        elif isinstance(result, Mapping):
            pairs = [(str(k), float(v)) for k, v in result.items()]
        else:
            raise HeadshotError(
                f"Tagger {self.name!r} returned {type(result).__name__}; expected a dict of "
                "tag -> score or a comma-separated string.",
                code="tagger_failed",
            )
        return _by_score(
            Tag(tag_display_name(n), s, RATING if n.strip().startswith("rating:") else GENERAL)
            for n, s in pairs
            if n.strip()
        )
