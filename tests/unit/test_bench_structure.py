"""The shape of the benchmark code (bench/): no import cycles, context managers entered with ``with``, no dead helpers.

Static checks on the source (ast); nothing is run.
"""

from __future__ import annotations

import ast
import doctest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def _modules() -> dict[str, ast.Module]:
    return {f"bench.{p.stem}" if p.stem != "__init__" else "bench": ast.parse(p.read_text(), str(p))
            for p in sorted(BENCH.glob("*.py"))}


def _bench_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The bench modules ``name`` imports anywhere (top level or inside functions)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else "bench." + node.module
            if base == "bench":  # from bench import quality, service
                out |= {f"bench.{a.name}" for a in node.names if f"bench.{a.name}" in known}
            elif base in known:
                out.add(base)
    return out - {name, "bench"}


def test_bench_modules_import_no_cycle():
    modules = _modules()
    graph = {name: _bench_imports(name, tree, set(modules)) for name, tree in modules.items()}
    assert "bench.__main__" not in graph["bench.service"], "bench.service must not import the CLI that imports it"
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_context_managers_are_entered_with_with():
    by_hand = [
        f"bench/{name.split('.')[-1]}.py:{node.lineno}"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("__enter__", "__exit__")
    ]
    assert not by_hand, f"__enter__/__exit__ called by hand (use `with` or contextlib.ExitStack): {by_hand}"


def test_every_bench_function_and_class_is_used():
    # Used: named in code of bench/ or tests/, or in a doctest of another object (a doctest helper).
    used: set[str] = set()
    for path in [*BENCH.glob("*.py"), *(REPO / "tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name.split(".")[-1])
    parser = doctest.DocTestParser()
    examples: dict[str, str] = {}  # owner -> the source of its docstring examples
    for tree in _modules().values():
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef) and ast.get_docstring(node):
                owner = getattr(node, "name", "<module>")
                code = "\n".join(ex.source for ex in parser.get_examples(ast.get_docstring(node)))
                examples[owner] = examples.get(owner, "") + code
    unused = []
    for name, tree in _modules().items():
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.ClassDef) or node.decorator_list:
                continue  # decorated: registered (a typer command, a context manager factory used by name)
            in_docs = any(node.name in code for owner, code in examples.items() if owner != node.name)
            if node.name not in used and not in_docs:
                unused.append(f"{name}.{node.name}")
    assert not unused, f"dead code in bench/: {unused}"
