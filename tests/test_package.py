"""The package's shape: a light top-level import, lazy heavy submodules, an acyclic import graph.

These pin the layering of issue 10: core maths never imports training, text, interop or
experiment code; no module reaches into another's underscore names; and the module-level
imports form a DAG (a cycle would mean two concepts that cannot be read apart).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import rnn_jax as rj

PACKAGE = Path(rj.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
CORE = {
    "_activations", "_checks", "_projection", "_sharding", "bptt", "cell", "cells", "ctc",
    "generate", "long", "lookup", "losses", "metrics", "network", "params", "recurrence",
    "seq2seq", "stack",
}  # fmt: skip
NOT_FOR_CORE = {"train", "checkpoint", "progress", "parallel", "interop", "vocab", "batching"}


def _module_level_imports(name: str) -> list[tuple[str, list[str]]]:
    """``(imported rnn_jax module, names)`` for every import at module level (not in functions)."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnn_jax"):
            target = node.module.removeprefix("rnn_jax").lstrip(".")
            if target:
                found.append((target, [a.name for a in node.names]))
            else:  # from rnn_jax import x
                found.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("rnn_jax."):
                    found.append((a.name.removeprefix("rnn_jax."), []))
    return found


GRAPH = {m: sorted({t for t, _ in _module_level_imports(m) if t in MODULES}) for m in MODULES}


def test_import_graph_is_acyclic():
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError(f"import cycle: {' -> '.join([*path, m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for t in GRAPH[m]:
            visit(t, [*path, m])
        state[m] = 2

    for m in MODULES:
        visit(m, [])


@pytest.mark.parametrize("module", sorted(CORE & set(MODULES)))
def test_core_modules_never_import_training_text_or_interop(module):
    assert not set(GRAPH[module]) & NOT_FOR_CORE, (module, GRAPH[module])


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_another_modules_underscore_names(module):
    for target, names in _module_level_imports(module):
        private = [n for n in names if n.startswith("_")]
        assert not private, f"rnn_jax.{module} imports {private} from rnn_jax.{target}"


def test_top_level_import_is_light_and_heavy_submodules_are_lazy():
    code = (
        "import sys, rnn_jax as rj\n"
        "heavy = [m for m in ('orbax', 'tqdm', 'matplotlib', 'flax', 'torch', 'faker', 'babel')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert rj.train.fit and rj.checkpoint.Checkpointer and rj.parallel.batch_mesh\n"
        "assert 'train' in dir(rj)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        rj.nothing  # noqa: B018
