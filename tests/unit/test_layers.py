"""The package layering of src/crishim (see crishim/__init__.py): no import runs up the
layers, and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "crishim"

# What each part may import, bottom up (the package itself always).
BELOW: dict[str, set[str]] = {"common": set(), "config": {"common"}}
BELOW["network"] = BELOW["config"] | {"config"}
BELOW["engine"] = BELOW["network"] | {"network"}
BELOW["images"] = BELOW["engine"] | {"engine"}
BELOW["logs"] = BELOW["engine"] | {"engine"}
BELOW["pods"] = BELOW["images"] | {"images", "logs"}
BELOW["stats"] = BELOW["pods"] | {"pods"}
BELOW["streaming"] = BELOW["pods"] | {"pods"}
BELOW["server"] = BELOW["stats"] | {"stats", "streaming", "api"}
BELOW["preflight"] = BELOW["server"] | {"server"}
BELOW["daemon"] = BELOW["server"] | {"server"}
BELOW["cli"] = BELOW["daemon"] | {"daemon", "preflight"}
BELOW["__main__"] = {"cli"}
ROOT = "__init__"  # crishim itself (its version): below everything


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[1] == "api":
            continue  # generated
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The crishim modules a file imports (a name imported from a package, if a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("crishim"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crishim"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if sub in MODULES else node.module)
    return names


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def test_every_part_of_crishim_is_placed_in_the_layers() -> None:
    parts = {_part(m) for m in MODULES} - {ROOT}
    assert parts <= set(BELOW), f"not in the layering: {parts - set(BELOW)}"


def test_no_import_runs_up_the_layers() -> None:
    upward = []
    for module, path in MODULES.items():
        here = _part(module)
        for target in _imports(path):
            there = _part(target)
            if there in (here, ROOT) or there in BELOW.get(here, set()):
                continue
            upward.append(f"{module} imports {target}")
    assert upward == []


def test_no_module_imports_itself_back() -> None:
    graph = {m: {t for t in _imports(p) if t in MODULES} for m, p in MODULES.items()}
    cycles = []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for target in graph[module]:
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target, [*path, target], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module], done)
    assert cycles == []


def test_each_package_says_what_it_owns() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        if "api" in init.relative_to(PACKAGE).parts:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(SRC)} has no docstring"


def test_only_the_entry_points_and_wiring_sit_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top
