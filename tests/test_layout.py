"""The repository's shape: what pytest relies on, and imports that flow one way through trainer/."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAINER = ROOT / "trainer"
# Lowest first: a unit may import from the units before it, never from one after it.
LAYERS = [
    {"errors", "units", "settings", "judgement"},
    {"cache"},
    {"models"},
    {"behavior"},
    {"experiment"},
    {"training"},
    {"memory"},
    {"runs"},
    {"stats"},
    {"studies"},
    {"ledger"},
    {"report"},
    {"__init__", "__main__"},
]


def test_test_modules_have_unique_basenames_across_tests_and_behaviors():
    # Without __init__.py files pytest imports test modules by basename: a duplicate breaks collection.
    names = Counter(p.name for folder in ("tests", "behaviors") for p in (ROOT / folder).glob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """trainer modules `path` imports (at any depth of the file, lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "trainer":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                sub = TRAINER.parent / (candidate.replace(".", "/") + ".py")
                found.add(candidate if sub.exists() or (TRAINER.parent / candidate.replace(".", "/")).is_dir()
                          else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "trainer"}
    return found


def _graph() -> dict[str, set[str]]:
    return {_module(path): _imports(path) for path in TRAINER.rglob("*.py")}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def test_every_part_of_trainer_has_a_place_in_the_layers():
    units = {_unit(m) for m in _graph()}
    assert units <= set().union(*LAYERS), f"place {sorted(units - set().union(*LAYERS))} in LAYERS"


def test_no_module_imports_upward():
    upward = sorted(f"{module} -> {target}" for module, targets in _graph().items() for target in targets
                    if target != "trainer" and _rank(_unit(target)) > _rank(_unit(module)))
    assert upward == []


def test_no_modules_import_each_other_in_a_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target in graph and target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_library_does_not_import_pytest():
    assert [str(p.relative_to(ROOT)) for p in TRAINER.rglob("*.py") if "pytest" in _imports_of_any(p)] == []


def _imports_of_any(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names
