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
    "_activations", "_checks", "_optim", "_projection", "_sharding", "bptt", "cell", "cells", "ctc",
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


def _checked(fn):
    """``fn`` with its jaxtyping annotations enforced (beartype), as the inner modules are in
    the whole test run (``--jaxtyping-packages``)."""
    from beartype import beartype
    from jaxtyping import jaxtyped

    return jaxtyped(typechecker=beartype)(fn)


def test_public_annotations_accept_numpy_arrays_and_integer_masks():
    """The annotations of network, losses and metrics are true on valid calls: NumPy arrays
    (not only jax.Array), integer 0/1 masks, bool labels for the binary metrics.

    The whole package is in ``--jaxtyping-packages`` (see
    :func:`test_the_test_run_checks_annotations_and_dtype_promotion`); this test pins
    the valid calls that matter most explicitly, wrapped once more so that it holds under
    any test configuration.
    """
    import jax
    import numpy as np

    from rnn_jax import losses, metrics, network

    B, T, D, H, C = 3, 5, 4, 6, 2
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(B, T, D)).astype(np.float32)
    ids = rng.integers(0, 9, size=(B, T))
    lengths = np.array([5, 3, 0])
    mask01 = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int32)
    params = rj.init_rnn(jax.random.key(0), D, H, C, num_layers=2, bidirectional=True)
    tok = rj.init_rnn(jax.random.key(0), 9, H, C, token_inputs=True, cell="lstm")
    a0 = np.zeros((4, B, H), np.float32)
    for kw in (dict(), dict(mask=mask01), dict(mask=mask01.astype(bool), a0=a0)):
        args = (xs,) if "mask" in kw else (xs, lengths)
        _checked(network.rnn_layers)(params, *args, **kw)
        _checked(network.rnn_apply)(params, *args, **kw)
        _checked(network.rnn_classify)(params, *args, pool="mean", **kw)
    _checked(network.rnn_layers)(tok, ids, lengths, c0=np.zeros((1, B, H)), return_cell_state=True)

    logits = rng.normal(size=(B, T, C)).astype(np.float32)
    labels = rng.integers(0, C, size=(B, T))
    for kw in (dict(), dict(mask=mask01), dict(mask=mask01.astype(bool))):
        args = (logits, labels) if kw else (logits, labels, lengths)
        _checked(losses.masked_softmax_cross_entropy)(*args, **kw)
        _checked(losses.masked_softmax_cross_entropy)(*args, reduction="none", **kw)
        _checked(metrics.masked_accuracy)(*args, from_logits=True, **kw)
        _checked(metrics.accuracy_counts)(labels, *args[1:], **kw)
        binary = (logits[..., 0], labels.astype(bool)) + args[2:]
        _checked(losses.masked_sigmoid_binary_cross_entropy)(*binary, **kw)
        _checked(losses.masked_mean_squared_error)(logits[..., 0], logits[..., 1], *args[2:], **kw)
        _checked(metrics.binary_confusion_counts)(*binary, from_logits=True, **kw)
        _checked(metrics.binary_confusion_counts)(labels.astype(bool), *binary[1:], **kw)
        _checked(metrics.binary_precision_recall_f1)(labels, *args[1:], **kw)


def test_the_test_run_checks_annotations_and_dtype_promotion():
    """Issue 10, item 9: every annotated function of rnn_jax is type-checked at run time
    in the tests, and the library's tests run with strict dtype promotion."""
    import tomllib

    import jax
    import jax.numpy as jnp
    import jaxtyping

    from rnn_jax.cell import rnn_cell

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    addopts = pyproject["tool"]["pytest"]["ini_options"]["addopts"].split()
    assert "--jaxtyping-packages=rnn_jax,beartype.beartype" in addopts
    layer = rj.init_layer(5, 4, key=jax.random.key(0))
    try:  # a module outside the four checked before: a wrong shape meets the checker
        rnn_cell(layer, jnp.zeros((1, 4)), jnp.ones(5))
    except jaxtyping.TypeCheckError as e:
        assert "a_prev" in str(e)
    else:
        raise AssertionError("rnn_jax.cell.rnn_cell is not type-checked in the test run")
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    try:
        jnp.ones(2, jnp.int32) * 0.5
    except jax.dtypes.TypePromotionError:
        pass
    else:
        raise AssertionError("dtype promotion is not strict in the test run")
