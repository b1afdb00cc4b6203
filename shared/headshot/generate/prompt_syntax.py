"""Prompt text both hosts read alike: the syntax check, escaping user text, building a style's prompt."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from ..errors import HeadshotError

if TYPE_CHECKING:
    from .styles import Style


_WEIGHT_GROUP = re.compile(r"(?:[^():\\]|\\[()])+:\s*\d+(?:\.\d+)?\s*", re.S)


def prompt_syntax_problem(text: str) -> str | None:
    """Why `text` is not in the syntax A1111 and ComfyUI read alike, or None when it is.

    Allowed: plain text, `\\(` / `\\)` literals, and `(text:1.2)` groups (not nested)."""
    depth_start = None
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 < len(text) and text[i + 1] in "()":
                i += 2
                continue
            return f"a backslash not followed by ( or ) at character {i + 1}"
        if c == "(":
            if depth_start is not None:
                return f"a nested '(' at character {i + 1}; use one (text:weight) group"
            depth_start = i
        elif c == ")":
            if depth_start is None:
                return f"an unmatched ')' at character {i + 1}"
            inner = text[depth_start + 1 : i]
            if not _WEIGHT_GROUP.fullmatch(inner):
                return (
                    f"'({inner})' is not a (text:weight) group; write (text:1.1) for emphasis or "
                    f"\\( \\) for literal parentheses"
                )
            depth_start = None
        elif c in "[]":
            return f"'{c}' at character {i + 1}: A1111 reads [..] as less weight, ComfyUI as text; use (text:0.9)"
        elif c in "<>":
            return f"'{c}' at character {i + 1}: no <lora:...> tags; LoRAs are loaded by the host"
        elif c in "{}":
            return f"'{c}' at character {i + 1}: only {{subject}} may use braces"
        i += 1
    if depth_start is not None:
        return f"an unclosed '(' at character {depth_start + 1}"
    keyword = re.search(r"\b(AND|BREAK)\b", text)
    if keyword:
        return f"the upper-case keyword {keyword.group(1)} means something only to A1111; write it in lower case"
    return None


def escape_prompt_text(text: str) -> str:
    """User text made literal for both hosts: parentheses escaped, brackets turned into escaped
    parentheses, <>, {} and backslashes dropped, AND / BREAK lower-cased, whitespace collapsed."""
    text = text.replace("\\", "")
    text = re.sub(r"[<>{}]", "", text)
    text = text.replace("[", "(").replace("]", ")")
    text = text.replace("(", r"\(").replace(")", r"\)")
    text = re.sub(r"\b(AND|BREAK)\b", lambda m: m.group(1).lower(), text)
    return " ".join(text.split())


def _weight_text(weight: float) -> str:
    text = f"{weight:.2f}".rstrip("0").rstrip(".")
    return text if "." in text else text + ".0"


def build_prompt(
    style: Style,
    trigger: str,
    class_word: str,
    *,
    extra: str = "",
    subject_weight: float | None = None,
    extra_negative: str = "",
) -> tuple[str, str]:
    """(positive, negative) for `style`: "<trigger> <class>" in place of {subject} (or first),
    `extra` appended; user text is escaped so both hosts read it literally. With
    `subject_weight`, the subject is written `(ohwx man:1.2)`."""
    trigger, class_word = escape_prompt_text(trigger), escape_prompt_text(class_word)
    if not trigger:
        raise HeadshotError(
            "The trigger word is empty; the prompt needs the LoRA's trigger (e.g. 'ohwx').", code="invalid_trigger"
        )
    subject = f"{trigger} {class_word}".strip()
    if subject_weight is not None:
        if not (isinstance(subject_weight, (int, float)) and math.isfinite(subject_weight) and subject_weight > 0):
            raise HeadshotError(
                f"subject_weight must be a positive number (got {subject_weight!r}).", code="invalid_weight"
            )
        subject = f"({subject}:{_weight_text(float(subject_weight))})"
    prompt = style.prompt.strip()
    if "{subject}" in prompt:
        positive = prompt.replace("{subject}", subject)
    else:
        positive = f"{subject}, {prompt}" if prompt else subject
    extra = escape_prompt_text(extra)
    if extra:
        positive = f"{positive}, {extra}"
    negative = style.negative.strip()
    extra_negative = escape_prompt_text(extra_negative)
    if extra_negative:
        negative = f"{negative}, {extra_negative}" if negative else extra_negative
    return positive, negative
