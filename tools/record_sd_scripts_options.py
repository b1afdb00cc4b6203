"""Record kohya sd-scripts' real option names and dataset-config keys into tests/sd_scripts_options.json.

    python tools/record_sd_scripts_options.py SD_SCRIPTS_DIR [--python PY] [--commit SHA] [--out FILE]

Two ways, as test_workflows records ComfyUI's nodes:
  import  run SD_SCRIPTS_DIR's own `train_network.setup_parser()` / `sdxl_train_network.setup_parser()`
          and `library.config_util.ConfigSanitizer` with PY (the checkout's Python, which has its
          requirements); authoritative.
  ast     read the `add_argument` calls reached from `setup_parser()` and the schema dicts of
          `ConfigSanitizer` from the source, without importing anything (no dependencies needed).
The import is used when it works; the ast reading always runs and the file says whether both agree.
The tests check our TOML keys against the recorded file (tests/test_sd_scripts.py).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = ("train_network.py", "sdxl_train_network.py")
# ConfigSanitizer(support_dreambooth=True, support_finetuning=True, support_controlnet=False,
# support_dropout=True), as train_network.py builds it for a LoRA without masked loss
_SCHEMAS = {
    "general": (
        "DATASET_ASCENDABLE_SCHEMA",
        "SUBSET_ASCENDABLE_SCHEMA",
        "DB_SUBSET_ASCENDABLE_SCHEMA",
        "DO_SUBSET_ASCENDABLE_SCHEMA",
    ),
    "datasets": (
        "DATASET_ASCENDABLE_SCHEMA",
        "SUBSET_ASCENDABLE_SCHEMA",
        "DB_SUBSET_ASCENDABLE_SCHEMA",
        "DO_SUBSET_ASCENDABLE_SCHEMA",
    ),
    "subsets": (
        "SUBSET_ASCENDABLE_SCHEMA",
        "DB_SUBSET_DISTINCT_SCHEMA",
        "DB_SUBSET_ASCENDABLE_SCHEMA",
        "DO_SUBSET_ASCENDABLE_SCHEMA",
    ),
}

_IMPORT_PROBE = r"""
import json, sys
sys.path.insert(0, ".")
import importlib
out = {"scripts": {}}
for script in %r:
    parser = importlib.import_module(script[:-3]).setup_parser()
    out["scripts"][script] = sorted({a.dest for a in parser._actions if a.dest != "help"})
from library.config_util import ConfigSanitizer
s = ConfigSanitizer(True, True, False, True)
out["dataset_config"] = {
    "general": sorted(str(k) for k in s.general_schema),
    "datasets": sorted(str(k) for k in s.db_dataset_schema if str(k) != "subsets"),
    "subsets": sorted(str(k) for k in s.db_subset_schema),
}
print("RECORDED " + json.dumps(out))
"""


def by_import(repo: Path, python: str) -> dict | None:
    try:
        run = subprocess.run(
            [python, "-c", _IMPORT_PROBE % (SCRIPTS,)], cwd=repo, capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"import: could not run {python}: {exc}", file=sys.stderr)
        return None
    for line in run.stdout.splitlines():
        if line.startswith("RECORDED "):
            return json.loads(line[len("RECORDED ") :])
    print("import: failed, using the ast reading:\n" + (run.stderr.strip().splitlines() or ["?"])[-1], file=sys.stderr)
    return None


# --- ast -----------------------------------------------------------------------------------------


class _Source:
    def __init__(self, repo: Path):
        self.repo, self._trees = repo, {}

    def tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            path = self.repo / (module.replace(".", "/") + ".py")
            self._trees[module] = ast.parse(path.read_text(encoding="utf-8")) if path.is_file() else None
        return self._trees[module]

    def function(self, module: str, name: str) -> ast.FunctionDef | None:
        tree = self.tree(module)
        for node in tree.body if tree else []:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
        return None

    def imports(self, module: str) -> dict[str, tuple[str, str | None]]:
        """Local name -> (module, attribute or None for a module)."""
        names = {}
        for node in ast.walk(self.tree(module) or ast.Module(body=[], type_ignores=[])):
            if isinstance(node, ast.Import):
                for a in node.names:
                    names[a.asname or a.name] = (a.name, None)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    is_module = (self.repo / (sub.replace(".", "/") + ".py")).is_file()
                    names[a.asname or a.name] = (sub, None) if is_module else (node.module, a.name)
        return names


def _dest(call: ast.Call) -> str | None:
    for kw in call.keywords:
        if kw.arg == "dest" and isinstance(kw.value, ast.Constant):
            return kw.value.value
    flags = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    long = [f for f in flags if f.startswith("--")] or [f for f in flags if f.startswith("-")] or flags
    return long[0].lstrip("-").replace("-", "_") if long else None


def _truth(test: ast.expr, bound: dict) -> bool | None:
    if isinstance(test, ast.Name) and test.id in bound:
        return bool(bound[test.id])
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _truth(test.operand, bound)
        return None if inner is None else not inner
    return None


def _collect(src: _Source, module: str, func: ast.FunctionDef, bound: dict, found: set, depth: int = 0) -> None:
    if depth > 8:
        return
    imports = src.imports(module)

    def walk(statements):
        for stmt in statements:
            if isinstance(stmt, ast.If):
                truth = _truth(stmt.test, bound)
                if truth is not False:
                    walk(stmt.body)
                if truth is not True:
                    walk(stmt.orelse)
                continue
            for node in ast.walk(stmt):
                if isinstance(node, ast.Call):
                    visit(node)

    def visit(call: ast.Call):
        f = call.func
        if isinstance(f, ast.Attribute) and f.attr == "add_argument":
            dest = _dest(call)
            if dest:
                found.add(dest)
            return
        target = None
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in imports:
            mod, attr = imports[f.value.id]
            target = (mod if attr is None else f"{mod}.{attr}", f.attr)
        elif isinstance(f, ast.Name):
            if f.id in imports and imports[f.id][1]:
                target = imports[f.id]
            elif src.function(module, f.id):
                target = (module, f.id)
        if target is None or (target[1] != "setup_parser" and not target[1].startswith("add_")):
            return
        callee = src.function(*target)
        if callee is None:
            return
        params = [a.arg for a in callee.args.args]
        values = {}
        for name, arg in zip(params, call.args):
            if isinstance(arg, ast.Constant):
                values[name] = arg.value
        for kw in call.keywords:
            if kw.arg and isinstance(kw.value, ast.Constant):
                values[kw.arg] = kw.value.value
        _collect(src, target[0], callee, values, found, depth + 1)

    walk(func.body)


def by_ast(repo: Path) -> dict:
    src = _Source(repo)
    scripts = {}
    for script in SCRIPTS:
        found: set = set()
        func = src.function(script[:-3], "setup_parser")
        if func is None:
            raise SystemExit(f"{repo / script} has no setup_parser()")
        _collect(src, script[:-3], func, {}, found)
        scripts[script] = sorted(found)
    schemas = {}
    tree = src.tree("library.config_util")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "ConfigSanitizer":
            for item in node.body:
                if isinstance(item, ast.Assign) and isinstance(item.value, ast.Dict):
                    keys = []
                    for key in item.value.keys:
                        if isinstance(key, ast.Constant):
                            keys.append(key.value)
                        elif isinstance(key, ast.Call) and key.args and isinstance(key.args[0], ast.Constant):
                            keys.append(key.args[0].value)  # Required("image_dir")
                    schemas[item.targets[0].id] = keys
    config = {part: sorted({k for name in names for k in schemas[name]}) for part, names in _SCHEMAS.items()}
    return {"scripts": scripts, "dataset_config": config}


def _commit(repo: Path) -> str | None:
    try:
        run = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path, help="an sd-scripts checkout")
    ap.add_argument("--python", help="the Python that has sd-scripts' requirements (try the import way)")
    ap.add_argument("--commit", help="the checkout's commit, when it is not a git clone")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "sd_scripts_options.json"
    )
    args = ap.parse_args(argv)
    repo = args.repo.resolve()
    read = by_ast(repo)
    imported = by_import(repo, args.python) if args.python else None
    record = {
        "source": "kohya-ss/sd-scripts",
        "commit": args.commit or _commit(repo),
        "method": "import" if imported else "ast",
        "ast_agrees": (imported == read) if imported else None,
        **(imported or read),
        "recorded_with": "tools/record_sd_scripts_options.py",
    }
    if imported and imported != read:
        for script in SCRIPTS:
            a, b = set(imported["scripts"][script]), set(read["scripts"][script])
            print(f"{script}: import only {sorted(a - b)}, ast only {sorted(b - a)}", file=sys.stderr)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({record['method']}; {len(record['scripts']['train_network.py'])} options)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
