"""The house rules of docs/ARCHITECTURE.md ("Layout"), checked on the source: layers import only downward, no file
imports itself through others (a cycle), and the command-line packages stay out of the library.

Every import counts, including those inside functions: a cycle hidden in a function body is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("generator", "projector", "detectors", "sgproject")
# Floors from the ground up; a file may import files of its own floor or below, never above.
FLOORS = ("generator.util", "generator", "projector", "detectors", "sgproject")
CLI_ONLY = ("rich", "typer")  # third-party packages only the CLI may import


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    files = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            files[module_of(p)] = p
    return files


def imported_modules(path: Path, module: str, known: dict[str, Path]) -> set[str]:
    """The modules (project ones resolved to files, others by top-level name) that `path` imports anywhere."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            for alias in node.names:  # `from pkg import submodule` imports the submodule's file
                if f"{name}.{alias.name}" in known:
                    found.add(f"{name}.{alias.name}")
    return found


def floor_of(module: str) -> int:
    """The floor of a module: that of the longest prefix in FLOORS that names it or a package above it."""
    matches = [i for i, prefix in enumerate(FLOORS) if module == prefix or module.startswith(prefix + ".")]
    assert matches, module
    return max(matches, key=lambda i: len(FLOORS[i]))


def graph() -> dict[str, set[str]]:
    known = project_files()
    edges: dict[str, set[str]] = {}
    for mod, path in known.items():
        targets = set()
        for name in imported_modules(path, mod, known):
            # resolve `a.b.c` (maybe a name inside module a.b) to the deepest project module
            parts = name.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != mod:
                targets.add(".".join(parts))
        edges[mod] = targets
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {m: WHITE for m in edges}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = GREY
        stack.append(m)
        for n in sorted(edges[m]):
            if colour.get(n) == GREY:
                return stack[stack.index(n):] + [n]
            if colour.get(n) == WHITE:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        colour[m] = BLACK
        return None

    for m in sorted(edges):
        if colour[m] == WHITE:
            found = visit(m)
            if found:
                return found
    return None


def test_floor_of():
    assert floor_of("generator.util.files") == 0
    assert floor_of("generator.networks") == 1
    assert floor_of("generator") == 1
    assert floor_of("projector.project") == 2
    assert floor_of("sgproject.cmd_detect") == 4


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_only_downward():
    upward = []
    for mod, targets in graph().items():
        for t in targets:
            if floor_of(t) > floor_of(mod):
                upward.append(f"{mod} ({FLOORS[floor_of(mod)]}) imports {t} ({FLOORS[floor_of(t)]})")
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("package", ["generator", "projector", "detectors"])
def test_library_never_imports_the_cli_or_its_toolkits(package):
    known = project_files()
    offenders = []
    for mod, path in known.items():
        if not mod.startswith(package):
            continue
        for name in imported_modules(path, mod, known):
            top = name.split(".")[0]
            if top in CLI_ONLY or top == "sgproject":
                offenders.append(f"{mod} imports {name}")
    assert not offenders, "\n".join(offenders)
