"""The seams of the codebase: import graph without cycles, layers respected, specs that match the networks.

Static checks (``ast``, nothing imported but the specs and the networks), so they never need reference data.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("denoise_models", "denoise")

# Every module of denoise/ stays within this many lines (a module past it holds more than one concern).
MAX_LINES = 450
SIZE_ALLOWED: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere (module level, functions, ``TYPE_CHECKING`` blocks excluded).

    ``from pkg import x`` counts as importing ``pkg.x`` when that is a module, else ``pkg``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports pkg.mod; ``from pkg import name`` imports pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            # the longest known module that ``target`` names or lies inside
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph = {name: imported_modules(path, name, known) for name, path in modules.items()}
    # a package's __init__ runs before any of its modules: importing ``a.b`` imports ``a`` too, but that
    # edge is not a cycle the code can create, so parent packages are not added.
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_import_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import hidden\n"
        "def f():\n    from pkg.sub import thing\n"
        "from . import sibling\n"
        "from pkg import CONSTANT\n"
    )
    known = {"pkg", "pkg.sub", "pkg.hidden", "pkg.sibling", "pkg.m"}
    assert imported_modules(path, "pkg.m", known) == {"pkg", "pkg.sub", "pkg.sibling"}


# Cycles another slice is removing on its branch; each entry goes at merge (the test then says so).
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    new = [c for c in cycles if c not in KNOWN_CYCLES]
    assert not new, "import cycles: " + "; ".join(" <-> ".join(c) for c in new)
    gone = [c for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"cycles fixed: delete them from KNOWN_CYCLES: {gone}"


def test_networks_never_import_the_application() -> None:
    graph = import_graph()
    offending = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == "denoise_models"
        for target in targets
        if target.split(".")[0] == "denoise"
    }
    assert not offending, f"denoise_models must not import denoise: {sorted(offending)}"


def test_backends_never_export() -> None:
    graph = import_graph()
    backends = [m for m in graph if m.startswith("denoise.backends")]
    assert backends
    offending = {f"{m} -> {t}" for m in backends for t in graph[m] if t == "denoise.export"}
    assert not offending, f"a backend runs a given graph and never exports: {sorted(offending)}"


def test_report_does_not_import_the_evaluator() -> None:
    assert "denoise.evaluate" not in import_graph()["denoise.report"]


def test_one_place_finds_the_reference_data() -> None:
    """Only denoise.tutorial reads ``$DENOISE_SHARED``; the library takes paths, tests go through it too."""
    readers = set()
    for path in [
        *(REPO / "denoise").rglob("*.py"),
        *(REPO / "benchmarks").glob("*.py"),
        REPO / "tests/conftest.py",
    ]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.Constant) and n.value == "DENOISE_SHARED" for n in ast.walk(tree)):
            readers.add(path.relative_to(REPO).as_posix())
    assert readers == {"denoise/tutorial.py"}


def test_application_modules_stay_small() -> None:
    too_long = {}
    for path in sorted((REPO / "denoise").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and rel not in SIZE_ALLOWED:
            too_long[rel] = lines
    assert not too_long, f"modules over {MAX_LINES} lines (split them by concern): {too_long}"


# ------------------------------------------------------------------------- specs match the networks


# Constructor parameters that carry a fact under the reference implementation's name (FRCRN: ModelScope's).
CONSTRUCTOR_NAMES = {"n_fft": "fft_len", "win_length": "win_len", "hop_length": "win_inc"}
FACTS = ("sample_rate", "hop_length", "win_length", "n_fft", "min_samples")


def network_facts(network: type) -> dict[str, object]:
    """Each fact as the class states it, and, where the constructor takes it, as its default builds it."""
    params = inspect.signature(network).parameters
    stated: dict[str, object] = {}
    for fact in FACTS:
        values = [getattr(network, fact)] if hasattr(network, fact) else []
        if (arg := CONSTRUCTOR_NAMES.get(fact)) in params:
            values.append(params[arg].default)
        assert values, f"{network.__name__} states no {fact}"
        assert len(set(values)) == 1, (
            f"{network.__name__}.{fact}: class says {values[0]}, constructor {values[1]}"
        )
        stated[fact] = values[0]
    return stated


@pytest.mark.parametrize("arch", ["frcrn", "gtcrn"])
def test_spec_matches_the_network_class(arch: str) -> None:
    from denoise_models.registry import architecture_class
    from denoise_models.spec import SPECS

    spec = SPECS[arch]
    assert network_facts(architecture_class(arch)) == {fact: getattr(spec, fact) for fact in FACTS}


def test_every_registered_network_has_a_spec() -> None:
    from denoise_models.registry import ARCHITECTURES
    from denoise_models.spec import SPECS

    assert set(ARCHITECTURES) == set(SPECS)
