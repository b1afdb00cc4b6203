"""Captions for an identity LoRA: tagger tags, cleaned by rules, behind the trigger word.

"ohwx man, smile, white shirt, outdoors": the trigger and class word come first as one
comma-separated token (what kohya's keep_tokens=1 holds in place when it shuffles captions).
Which tags to drop is data, in tag_rules.toml, each rule with its reason; this module only
applies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import HeadshotError
from ..outputs import parse_toml
from .tags import Tag

DEFAULT_RULES_PATH = Path(__file__).with_name("tag_rules.toml")

_CATEGORIES = frozenset({"general", "character", "rating"})
_RULE_KEYS = frozenset({"reason", "tags", "patterns", "categories"})


def canonical(tag: str) -> str:
    """The form rules match on: lower case, "_" as space, single spaces."""
    return " ".join(tag.replace("_", " ").lower().split())


@dataclass(frozen=True)
class Rule:
    reason: str
    tags: frozenset[str] = frozenset()  # canonical names
    patterns: tuple[re.Pattern[str], ...] = ()
    categories: frozenset[str] = frozenset()

    def matches(self, tag: Tag) -> bool:
        name = canonical(tag.name)
        return name in self.tags or tag.category in self.categories or any(p.fullmatch(name) for p in self.patterns)


@dataclass(frozen=True)
class TagRules:
    remove: tuple[Rule, ...]
    keep: tuple[Rule, ...]
    source: Path | None = None

    def removal_reason(self, tag: Tag) -> str | None:
        """Why `tag` leaves the caption, or None when it stays. Keep rules win."""
        if any(rule.matches(tag) for rule in self.keep):
            return None
        return next((rule.reason for rule in self.remove if rule.matches(tag)), None)


# --- loading the rules file -----------------------------------------------------------------


def _invalid(path: Path, detail: str) -> HeadshotError:
    return HeadshotError(f"Tag rules file {path}: {detail}", code="invalid_tag_rules")


def _string_list(path: Path, where: str, entry: dict, key: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(path, f"{where}: `{key}` must be a list of strings.")
    return value


def _parse_rule(path: Path, where: str, entry: object) -> Rule:
    if not isinstance(entry, dict):
        raise _invalid(path, f"{where} must be a table.")
    unknown = sorted(set(entry) - _RULE_KEYS)
    if unknown:  # most likely a typo ("tag" for "tags") that would silently match nothing
        raise _invalid(path, f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_RULE_KEYS))}.")
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise _invalid(path, f"{where} has no `reason`; every rule must say why.")
    tags = _string_list(path, where, entry, "tags")
    categories = _string_list(path, where, entry, "categories")
    bad = sorted(set(categories) - _CATEGORIES)
    if bad:
        raise _invalid(path, f"{where}: unknown categor(y/ies) {', '.join(bad)}; use {', '.join(sorted(_CATEGORIES))}.")
    patterns = []
    for text in _string_list(path, where, entry, "patterns"):
        try:
            patterns.append(re.compile(text, re.IGNORECASE))
        except re.error as e:
            raise _invalid(path, f"{where}: pattern {text!r} is not a valid regex ({e}).") from e
    if not (tags or patterns or categories):
        raise _invalid(path, f"{where} ({reason!r}) lists no tags, patterns or categories.")
    return Rule(reason.strip(), frozenset(canonical(t) for t in tags), tuple(patterns), frozenset(categories))


def load_tag_rules(path: str | Path | None = None) -> TagRules:
    """Rules from `path`, or the packaged tag_rules.toml. A bad file raises HeadshotError
    naming it (and, for TOML syntax errors, the line)."""
    path = Path(path) if path is not None else DEFAULT_RULES_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _invalid(path, f"cannot be read ({e}).") from e
    try:
        data = parse_toml(text)
    except ValueError as e:  # bad TOML: its message ends "(at line N, column M)"
        raise _invalid(path, f"is not valid TOML: {e}") from e
    unknown = sorted(set(data) - {"remove", "keep"})
    if unknown:
        raise _invalid(path, f"unknown section(s) {', '.join(unknown)}; use [[remove]] and [[keep]].")
    sections = {}
    for section in ("remove", "keep"):
        entries = data.get(section, [])
        if not isinstance(entries, list):
            raise _invalid(path, f"`{section}` must be written [[{section}]] (an array of tables).")
        sections[section] = tuple(_parse_rule(path, f"[[{section}]] #{i}", entry) for i, entry in enumerate(entries, 1))
    return TagRules(remove=sections["remove"], keep=sections["keep"], source=path)


# --- applying them --------------------------------------------------------------------------


def clean_tags(tags: Iterable[Tag], rules: TagRules) -> tuple[list[str], list[tuple[str, str]]]:
    """(kept tag names in their order, (removed tag, reason) pairs); repeats are dropped."""
    kept: list[str] = []
    removed: list[tuple[str, str]] = []
    seen: set[str] = set()
    for tag in tags:
        key = canonical(tag.name)
        if not key or key in seen:
            continue
        seen.add(key)
        reason = rules.removal_reason(tag)
        if reason is None:
            kept.append(tag.name)
        else:
            removed.append((tag.name, reason))
    return kept, removed


def _caption_part(text: str) -> str:
    # A comma inside a tag would split it into two caption tokens, so it goes.
    return " ".join(text.replace(",", " ").split())


def build_caption(trigger: str, class_word: str, tags: Iterable[str]) -> str:
    """ "ohwx man, smile, white shirt": trigger and class word first as one token, then the
    tags, without repeats and without tags that merely repeat the trigger or class word."""
    trigger, class_word = _caption_part(trigger), _caption_part(class_word)
    if not trigger:
        raise HeadshotError("The trigger word is empty; captions need one (e.g. 'ohwx').", code="invalid_trigger")
    head = f"{trigger} {class_word}".strip()
    seen = {canonical(trigger), canonical(class_word), canonical(head)} - {""}
    parts = [head]
    for tag in tags:
        tag = _caption_part(tag)
        if tag and canonical(tag) not in seen:
            seen.add(canonical(tag))
            parts.append(tag)
    return ", ".join(parts)
