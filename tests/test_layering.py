"""The package is a one-way stack of layers (DESIGN.md; README "Architecture").

Every ``import`` in every module of ``src/tinysr`` -- at the top or inside a function -- is read
with ``ast`` and must point to the same layer or one below. The module graph must also be free
of cycles, and no module may hide an import behind a module-level ``__getattr__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tinysr"

# Bottom to top. A module belongs to the longest prefix listed; the top-level package (the public
# API) and the CLI are the top layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaf", ("tinysr._version", "tinysr.errors", "tinysr.files", "tinysr.plugins", "tinysr.progress", "tinysr.runtime", "tinysr.kernels")),
    (
        "files",
        (
            "tinysr.io",
            "tinysr.resize",
            "tinysr.metrics",
            "tinysr.data",
            "tinysr.inference",
            "tinysr.evaluate",
            "tinysr.zoo",
            "tinysr.datasets",
        ),
    ),
    ("nn", ("tinysr.nn",)),
    ("models", ("tinysr.models",)),
    ("compress", ("tinysr.profile", "tinysr.compress")),
    ("model files", ("tinysr.model_file", "tinysr.export", "tinysr.convert")),
    ("train", ("tinysr.train",)),
    ("workflows", ("tinysr.workflows", "tinysr.bench")),
    ("cli", ("tinysr.cli", "tinysr.__main__", "tinysr")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """``(imported tinysr module, line, inside a function)`` for every import of ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import name``: the submodule pkg.name when it is one, else pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found += [(t, node.lineno, id(node) in in_function) for t in targets if t == "tinysr" or t.startswith("tinysr.")]
    return found


def test_every_module_imports_only_its_own_layer_or_below():
    upward = []
    for module in MODULES:
        for target, line, _ in imports_of(module):
            if layer_of(target) > layer_of(module):
                upward.append(
                    f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {module} ({LAYERS[layer_of(module)][0]}) "
                    f"imports {target} ({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_module_graph_has_no_cycle():
    graph = {m: {t if t in MODULES else t.rpartition(".")[0] for t, _, _ in imports_of(m)} - {m} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if t not in graph:
                continue
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t) :] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_tinysr_import_hides_inside_a_function_or_a_module_getattr():
    hidden = [f"{m}:{line} imports {t}" for m in MODULES for t, line, inside in imports_of(m) if inside]
    assert not hidden, "imports inside functions (a sign of a cycle being dodged):\n" + "\n".join(hidden)
    lazy = [
        m
        for m, p in MODULES.items()
        if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in ast.parse(p.read_text()).body)
    ]
    assert not lazy, f"module-level __getattr__ in {lazy}"


def test_the_layer_table_knows_every_module():
    for module in MODULES:
        layer_of(module)
