"""The package's shape: data flows one way through the layers below, and nothing imports upwards.

The allowed direction is written down once, in ``LAYERS``: a module may import from its own layer
or any layer listed before it. Benchmarks use the package's public names only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "indexer"

LAYERS: list[tuple[str, list[str]]] = [
    ("core", ["indexer.prices", "indexer.config", "indexer.schema", "indexer.ids", "indexer.storage", "indexer.quantize",
              "indexer.fusion", "indexer.analysis", "indexer.layout"]),
    ("sources", ["indexer.sources"]),
    ("encoders", ["indexer.encoders"]),
    ("stores", ["indexer.stores"]),
    ("stages", ["indexer.stages"]),
    ("query", ["indexer.search", "indexer.eval"]),
    ("run", ["indexer.run"]),
    ("tools", ["indexer.sweep", "indexer.estimate", "indexer.compare", "indexer.sample_corpus",
               "indexer.config_doc"]),
    ("cli", ["indexer.cli", "indexer.cli_output", "indexer.cli_progress"]),
]


def layer_of(module: str) -> int:
    for n, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return n
    raise AssertionError(f"module {module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of every import of the indexer package in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "indexer"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "indexer":
                continue
            names = [a.name for a in node.names]
            if node.module is None or target in ("indexer",):
                # `from . import schema`: each name is a module of the package
                out += [(node.lineno, f"{target}.{n}", []) for n in names]
            else:
                out.append((node.lineno, target, names))
    return out


def package_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / "indexer").rglob("*.py") if "__pycache__" not in p.parts)


def backward_edges(root: Path = ROOT) -> list[str]:
    """Every import in the package that goes from a layer to a later one."""
    backward = []
    for path in package_files(root):
        me = module_name(path, root)
        if me == "indexer":
            continue
        mine = layer_of(me)
        for line, target, _ in imported_modules(path, root):
            if target == "indexer":
                continue
            theirs = layer_of(target)
            if theirs > mine:
                backward.append(f"{path.relative_to(root)}:{line}: {LAYERS[mine][0]} module {me} imports "
                                f"{target} ({LAYERS[theirs][0]})")
    return backward


def test_every_module_has_a_layer():
    for path in package_files():
        name = module_name(path)
        if name != "indexer":
            layer_of(name)


def test_no_import_points_back_up_the_flow():
    backward = backward_edges()
    assert not backward, "imports against the flow:\n" + "\n".join(backward)


@pytest.mark.parametrize("folder", ["benchmarks", "jobs"])
def test_scripts_use_public_names_only(folder):
    private = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, target, names in imported_modules(path):
            bad = [n for n in names if n.startswith("_")] + (
                [target] if any(part.startswith("_") for part in target.split(".")[1:]) else [])
            if bad:
                private.append(f"{path.relative_to(ROOT)}:{line}: {target} {bad}")
    assert not private, "private names used outside the package:\n" + "\n".join(private)


def test_the_checker_reports_a_backward_edge(tmp_path):
    """The check above can fail: a core module importing the run layer, lazily inside a function, is found."""
    pkg = tmp_path / "indexer"
    (pkg / "run").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "run" / "__init__.py").write_text("")
    (pkg / "run" / "pipeline.py").write_text("from ..quantize import calibrate\n")
    (pkg / "quantize.py").write_text("def f():\n    from .run.pipeline import run\n    return run\n")
    edges = backward_edges(tmp_path)
    assert len(edges) == 1 and "indexer/quantize.py:2" in edges[0] and "indexer.run.pipeline" in edges[0]
