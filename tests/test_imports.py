"""The package's import graph, read from the source (ast; nothing is imported): no cycles, no upward
imports between layers, and no imports of samkit modules inside functions (a hidden cycle or a hidden
upward import). Third-party packages may be imported inside a function only when they are optional or
slow dependencies listed in ``LAZY_THIRD_PARTY``."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "samkit"

# Layers, lowest first: a module may import its own layer's modules and lower layers' ones, never a higher
# layer's. Keys are the first name under ``samkit`` (a subpackage or a top-level module).
LAYERS: dict[str, int] = {
    "errors": 0, "runtime": 0, "io_utils": 0, "_optional": 0,  # plain helpers
    "data": 1,  # images, masks, samples, dataset readers, mask formats
    "models": 2,  # architectures, registry, checkpoints
    "predict": 3,  # Predictor, everything mode, transforms
    "eval": 4, "refine": 4,  # benchmarks, the mask refiner
    "train": 5, "export": 5,  # trainers, ONNX export
    "engine": 6, "server": 6,  # batch jobs and the data engine (it retrains with train), the annotation server
    "cli": 7,  # the command line may import anything
    "__init__": 8,  # samkit/__init__.py: the public API
}

# Names any module may import from the package root: metadata, not the public API's modules.
ROOT_METADATA = {"__version__"}

# Third-party packages imported inside functions on purpose: optional extras or slow imports only some
# code paths need (name -> why).
LAZY_THIRD_PARTY = {
    "scipy": "BSDS .mat files and edge matching only (slow to import)",
    "matplotlib": "optional plots",
    "sentencepiece": "text tokenizers only",
    "ray": "optional distributed everything-mode",
    "yaml": "optional YAML configs",
    "onnx": "optional ONNX export",
    "onnxruntime": "optional ONNX inference",
    "pycocotools": "COCO evaluation (cocoeval) only in the boxes benchmark",
}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute dotted names an import statement refers to (``from a import b``: ``a.b``, which resolves to the
    module ``a.b`` or, when ``b`` is a name defined in ``a``, to ``a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative import
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    if base == "samkit" and all(alias.name in ROOT_METADATA for alias in node.names):
        return []
    return [f"{base}.{alias.name}" for alias in node.names]


def _imports(path: Path, module: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module, with whether it sits inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from walk(child, inner)

    yield from walk(tree, False)


def import_graph() -> tuple[dict[str, set[str]], list[str], list[str]]:
    """(module -> samkit modules it imports at module level, function-level samkit imports,
    function-level third-party imports not in LAZY_THIRD_PARTY), as "module:line target" strings."""
    mods = modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    inner_samkit, inner_other = [], []
    for name, path in mods.items():
        for node, in_function in _imports(path, name):
            for target in _imported_names(node, name, path.name == "__init__.py"):
                if target.split(".")[0] != "samkit":
                    top = target.split(".")[0]
                    if in_function and top not in LAZY_THIRD_PARTY and top and not _is_stdlib(top):
                        inner_other.append(f"{name}:{node.lineno} {top}")
                    continue
                while target not in mods and "." in target:  # ``from samkit.x import name``: the module
                    target = target.rsplit(".", 1)[0]
                if target == name or target not in mods:
                    continue
                if in_function:
                    inner_samkit.append(f"{name}:{node.lineno} {target}")
                else:
                    graph[name].add(target)
    return graph, sorted(set(inner_samkit)), sorted(set(inner_other))


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names


def layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    assert key in LAYERS, f"{module}: give samkit.{key} a layer in tests/test_imports.py LAYERS"
    return LAYERS[key]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _is_ancestor_package(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def test_no_import_cycles() -> None:
    graph, _, _ = import_graph()
    # A package's __init__ importing its own submodules is how packages re-export; a submodule importing its
    # package's __init__ back would be the cycle, and is kept in the graph.
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_upward_imports() -> None:
    graph, _, _ = import_graph()
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, targets in sorted(graph.items()) for b in sorted(targets) if layer(b) > layer(a)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_samkit_imports_inside_functions() -> None:
    _, inner_samkit, inner_other = import_graph()
    assert not inner_samkit, "samkit modules imported inside functions (import them at the top):\n" + "\n".join(
        inner_samkit)
    assert not inner_other, ("third-party imports inside functions that are not listed optional dependencies "
                             "(LAZY_THIRD_PARTY):\n" + "\n".join(inner_other))


def test_the_checker_sees_cycles_and_layers() -> None:
    """The checks above would catch what they look for."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer("samkit.data.readers.base") < layer("samkit.models.sam") < layer("samkit.predict.predictor")
    assert layer("samkit.predict.predictor") < layer("samkit.eval.interactive") < layer("samkit.train.trainer")
    graph, _, _ = import_graph()
    assert "samkit.data.readers.base" in graph["samkit.data.refer"]  # the graph is really read
    assert len(graph) > 50
