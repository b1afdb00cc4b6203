"""One error vocabulary: every code the core raises is in headshot.errors.CODES, and no two names mean the same."""

from __future__ import annotations

import ast
from pathlib import Path

from headshot.errors import CODES

CORE = Path(__file__).resolve().parents[1] / "shared" / "headshot"
#: names that meant the same as another code (now merged into the one on the right)
MERGED = {
    "invalid_option": "bad_option",
    "bad_training_config": "bad_option",
    "lora_bad_family": "unknown_family",
    "bad_family": "unknown_family",
}


def _text(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def codes_in_source() -> dict[str, list[str]]:
    """code -> where: HeadshotError (or a subclass)(message, "code"), any call's code="...", a photo's
    .reject("code", …), `code = "..."` and `error_code="..."`."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in CORE.rglob("*.py")}
    errors = {"HeadshotError"}
    grew = True
    while grew:  # subclasses, wherever they are defined (PhotoRejected, FolderBusy, …)
        grew = False
        for tree in trees.values():
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ClassDef)
                    and node.name not in errors
                    and any(
                        (base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)) in errors
                        for base in node.bases
                    )
                ):
                    errors.add(node.name)
                    grew = True
    found: dict[str, list[str]] = {}
    for path, tree in trees.items():
        where = str(path.relative_to(CORE))
        for node in ast.walk(tree):
            codes = []
            if isinstance(node, ast.Call):
                name = _called_name(node)
                if name in errors and len(node.args) >= 2:
                    codes.append(_text(node.args[1]))
                if name == "reject" and node.args:
                    codes.append(_text(node.args[0]))
                codes += [_text(k.value) for k in node.keywords if k.arg in ("code", "error_code")]
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "code" for t in node.targets):
                codes.append(_text(node.value))
            for code in filter(None, codes):
                found.setdefault(code, []).append(f"{where}:{node.lineno}")
    return found


def test_every_code_the_core_uses_is_in_the_table():
    found = codes_in_source()
    assert len(found) > 40, "the scan finds the codes"  # a scan that finds nothing would pass below
    unknown = {code: places for code, places in found.items() if code not in CODES}
    assert not unknown, f"add these to headshot.errors.CODES (or use an existing code): {unknown}"


def test_merged_names_are_gone_and_each_code_says_what_it_means():
    found = codes_in_source()
    assert not {old: found[old] for old in MERGED if old in found}
    assert not set(MERGED) & set(CODES)
    assert all(code.isidentifier() and code == code.lower() and meaning.strip() for code, meaning in CODES.items())
