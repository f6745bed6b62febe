"""The house rules of docs/architecture.md, read from the source: floors, circles, sizes."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mola_ts"

# room -> the rooms it may import (its own room always)
ALLOWED = {
    "nn": set(),
    "training": set(),
    "data": set(),
    "metrics": set(),
    "persistence": {"training"},
    "plotting": {"data"},
    "uncertainty": {"training", "metrics", "data"},
    "forecast": {"nn", "training", "data", "metrics", "uncertainty", "persistence"},
    "monitor": {"nn", "training", "data", "metrics", "uncertainty", "persistence"},
    "bench": {"forecast", "monitor", "nn", "training", "data", "metrics", "uncertainty",
              "persistence", "plotting"},
    "serve": {"monitor", "persistence", "data", "plotting", "metrics"},
    "cli": {"bench", "data"},
    "__init__": set(),
}
MAX_LINES = 500
MAX_PARAMETERS = 10


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path) -> set[str]:
    """Every mola_ts module ``module`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mola_ts")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("mola_ts"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}
    return found


MODULES = dict(_modules())


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


GRAPH = {m: {r for r in (_resolve(i) for i in _imports(m, p)) if r and r != m}
         for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_only(module):
    room = _room(module)
    allowed = ALLOWED[room] | {room, "__init__"}
    upward = sorted(t for t in GRAPH[module] if _room(t) not in allowed)
    assert not upward, f"{module} ({room}) imports {upward}"


def test_no_import_circle():
    """No cycle among the package's modules, deferred (function-level) imports included;
    a package's ``__init__`` re-exporting its own modules is not a cycle."""
    def edges(m):
        # a package __init__ importing its children, and children importing their package's
        # __init__ (to reach a sibling's re-export), would make every package a circle; the
        # rule is about modules that need each other
        return {t for t in GRAPH[m] if not (t.startswith(m + ".") or m.startswith(t + "."))}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in edges(m):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError(f"import circle: {' -> '.join(cycle)}")
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_the_size_limit(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines"


def _too_many_parameters(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    offenders = []
    for cls in [None, *[n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]]:
        body = tree.body if cls is None else cls.body
        for node in body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if cls is not None and node.name == "__init__":
                continue  # estimator __init__s mirror their parameters (scikit-learn)
            if any(ast.unparse(d).endswith("jit") for d in node.decorator_list):
                continue  # a Triton kernel takes one argument per pointer, stride and block
            args = node.args
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            names = [n for n in names if n not in ("self", "cls")]
            if len(names) > MAX_PARAMETERS:
                owner = f"{cls.name}." if cls is not None else ""
                offenders.append(f"{owner}{node.name} ({len(names)})")
    return offenders


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_takes_more_than_ten_parameters(module):
    offenders = _too_many_parameters(MODULES[module])
    assert not offenders, f"{module}: {offenders}"
