"""rnn_jax.cells: GRU and LSTM against a float64 NumPy loop of PyTorch's equations.

The references: ``ref_gated`` of ``tests/reference.py`` (the equations written out, one example, one-hot
vectors built literally for token ids), a Python loop over :func:`cell_step`, and (in
``test_interop.py``) ``torch.nn.GRU``/``torch.nn.LSTM`` and Flax's cells.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError
from reference import biases_of, ref_gated, ref_step

from rnn_jax.cells import (
    GATED_CELLS,
    GRULayerParams,
    LSTMLayerParams,
    carry_zeros,
    cell_step,
    init_gated_layer,
    layer_unroll,
    num_gates,
)

ATOL = 1e-5


# --------------------------------------------------------------------------- reference


# --------------------------------------------------------------------------- helpers


def random_layer(cell, D, H, seed, dtype=np.float32):
    """A layer with every array (biases included) drawn at random, NumPy-drawn."""
    rng = np.random.default_rng(seed)
    G = num_gates(cell)

    def draw(*shape):
        return jnp.asarray((0.5 * rng.normal(size=shape)).astype(dtype))

    if cell == "gru":
        return GRULayerParams(draw(G * H, H + D), draw(G * H), draw(G * H))
    return LSTMLayerParams(draw(G * H, H + D), draw(G * H))


def random_carry(cell, B, H, seed):
    rng = np.random.default_rng(seed)
    h = jnp.asarray(rng.normal(size=(B, H)).astype(np.float32))
    if cell == "gru":
        return h
    return h, jnp.asarray(rng.normal(size=(B, H)).astype(np.float32))


def padded_batch(seed, T, B, D, lengths, *, ids=False, pad="nan"):
    """Time-major inputs with garbage (NaN/inf/huge or out-of-range ids) at padding."""
    rng = np.random.default_rng(seed)
    valid = np.arange(T)[:, None] < np.asarray(lengths)[None, :]  # (T, B)
    if ids:
        xs = rng.integers(0, D, size=(T, B))
        garbage = rng.integers(-5, 3 * D + 5, size=(T, B))  # includes out-of-range ids
        xs = np.where(valid, xs, garbage)
        return jnp.asarray(xs, jnp.int32), jnp.asarray(valid)
    xs = rng.normal(size=(T, B, D)).astype(np.float32)
    if pad == "nan":
        garbage = np.where(rng.random((T, B, D)) < 0.5, np.nan, np.inf).astype(np.float32)
    else:
        garbage = (1e3 * rng.normal(size=(T, B, D))).astype(np.float32)
    xs = np.where(valid[:, :, None], xs, garbage)
    return jnp.asarray(xs), jnp.asarray(valid)


def raises_shape_error(match):
    """The ``ValueError`` naming the argument, or jaxtyping's ``TypeCheckError`` when the
    test run enforces the annotations (``--jaxtyping-packages``): they catch the same
    wrong shapes first."""
    return pytest.raises((ValueError, TypeCheckError), match=f"{match}|Type-check error")


def carry_at(carry, b):
    return jax.tree.map(lambda a: a[b], carry)


def assert_carry_close(got, expected, atol=ATOL):
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol)


# --------------------------------------------------------------------------- registry


def test_registry():
    assert GATED_CELLS == ("gru", "lstm")
    assert (num_gates("gru"), num_gates("lstm")) == (3, 4)
    assert carry_zeros("gru", 2, 3).shape == (2, 3)
    h0, c0 = carry_zeros("lstm", 2, 3, jnp.bfloat16)
    assert h0.shape == c0.shape == (2, 3) and h0.dtype == jnp.bfloat16
    for fn in (num_gates, partial(carry_zeros, B=1, H=1)):
        with pytest.raises(ValueError, match=r"`cell` must be one of \('gru', 'lstm'\), got 'rnn'"):
            fn("rnn")


# --------------------------------------------------------------------------- init


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_init_torch_scheme_shapes_and_bounds(cell):
    D, H = 5, 16
    G = num_gates(cell)
    p = init_gated_layer(cell, D, H, key=jax.random.key(0))
    assert isinstance(p, GRULayerParams if cell == "gru" else LSTMLayerParams)
    assert p.W_a.shape == (G * H, H + D) and p.W_a.dtype == jnp.float32
    assert (p.hidden_size, p.input_size) == (H, D)
    assert p.W_h.shape == (G * H, H) and p.W_x.shape == (G * H, D)
    bound = 1 / np.sqrt(H)
    assert np.abs(np.asarray(p.W_a)).max() <= bound
    assert np.abs(np.asarray(p.W_a)).max() > 0.9 * bound  # really U(-1/sqrt(H), 1/sqrt(H))
    for b in biases_of(cell, p):
        assert b.shape == (G * H,)
        # the LSTM's b_a is b_ih + b_hh: two draws summed
        assert np.abs(np.asarray(b)).max() <= (bound if cell == "gru" else 2 * bound)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_init_keras_scheme(cell):
    D, H = 3, 4
    p = init_gated_layer(cell, D, H, key=jax.random.key(1), scheme="keras")
    G = num_gates(cell)
    for g in range(G):
        block = np.asarray(p.W_h[g * H : (g + 1) * H])
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-5)  # orthogonal
    if cell == "gru":
        assert np.all(np.asarray(p.b_x) == 0) and np.all(np.asarray(p.b_h) == 0)
    else:
        expected = np.zeros(4 * H)
        expected[H : 2 * H] = 1.0  # forget gate bias one
        np.testing.assert_array_equal(p.b_a, expected)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_init_is_traceable_and_casts_low_precision(cell):
    keys = jax.random.split(jax.random.key(2), 4)
    batched = jax.jit(jax.vmap(lambda k: init_gated_layer(cell, 3, 4, key=k)))(keys)
    assert batched.W_a.shape == (4, num_gates(cell) * 4, 7)
    for i in range(4):  # vmap over keys equals separate calls
        one = init_gated_layer(cell, 3, 4, key=keys[i])
        np.testing.assert_array_equal(batched.W_a[i], one.W_a)
    low = init_gated_layer(cell, 3, 4, key=keys[0], dtype=jnp.bfloat16)
    full = init_gated_layer(cell, 3, 4, key=keys[0])
    assert all(x.dtype == jnp.bfloat16 for x in low)
    np.testing.assert_array_equal(low.W_a, full.W_a.astype(jnp.bfloat16))


def test_init_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"`cell` must be one of"):
        init_gated_layer("rnn", 3, 4, key=key)
    with pytest.raises(ValueError, match=r"`hidden_size` must be a positive int, got 0"):
        init_gated_layer("gru", 3, 0, key=key)
    with pytest.raises(ValueError, match=r"`dtype` must be a floating dtype, got int32"):
        init_gated_layer("gru", 3, 4, key=key, dtype=jnp.int32)
    with pytest.raises(ValueError, match=r"`scheme` must be one of \('torch', 'keras'\)"):
        init_gated_layer("lstm", 3, 4, key=key, scheme="xavier")
    with pytest.raises(TypeError):
        init_gated_layer("gru", 3, 4, key)  # key is keyword-only


# --------------------------------------------------------------------------- cell_step


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_cell_step_matches_the_equations_dense_and_ids(cell):
    D, H = 6, 5
    layer = random_layer(cell, D, H, 0)
    carry = carry_at(random_carry(cell, 1, H, 1), 0)
    x = np.random.default_rng(2).normal(size=D).astype(np.float32)
    got_carry, got_h = cell_step(cell, layer, carry, jnp.asarray(x))
    ref_carry, ref_h = ref_step(cell, layer.W_a, biases_of(cell, layer), carry, x)
    np.testing.assert_allclose(got_h, ref_h, atol=ATOL)
    assert_carry_close(got_carry, ref_carry)
    # a token id is the one-hot vector
    got_carry, got_h = cell_step(cell, layer, carry, jnp.array(3))
    ref_carry, ref_h = ref_step(cell, layer.W_a, biases_of(cell, layer), carry, np.eye(D)[3])
    np.testing.assert_allclose(got_h, ref_h, atol=ATOL)
    assert_carry_close(got_carry, ref_carry)


@pytest.mark.parametrize("cell", GATED_CELLS)
@pytest.mark.parametrize("bad_id", [-1, 6, 10**6])
def test_cell_step_out_of_range_id_is_nan(cell, bad_id):
    layer = random_layer(cell, 6, 3, 0)
    carry = carry_zeros(cell, 1, 3)
    carry = carry_at(carry, 0)
    _, h = jax.jit(partial(cell_step, cell))(layer, carry, jnp.array(bad_id))
    assert np.all(np.isnan(np.asarray(h)))


def test_cell_step_errors():
    layer = random_layer("gru", 3, 2, 0)
    with pytest.raises(ValueError, match=r"`x_t` must have shape \(D,\) = \(3,\), got \(4,\)"):
        cell_step("gru", layer, jnp.zeros(2), jnp.zeros(4))
    with raises_shape_error(r"token id must be a scalar, got shape \(2,\)"):
        cell_step("gru", layer, jnp.zeros(2), jnp.array([1, 2]))
    with pytest.raises(ValueError, match=r"`cell` must be one of"):
        cell_step("rnn", layer, jnp.zeros(2), jnp.zeros(3))


# --------------------------------------------------------------------------- layer_unroll


def loop_over_cell_step(cell, layer, xs, carry0, mask_tb, *, reverse=False):
    """The Python loop layer_unroll replaces, one example at a time, over valid steps."""
    T, B = xs.shape[:2]
    H = layer.hidden_size
    h_seq = np.zeros((T, B, H), np.float32)
    finals = []
    for b in range(B):
        carry = carry_at(carry0, b)
        steps = [t for t in range(T) if bool(mask_tb[t, b])]
        for t in reversed(steps) if reverse else steps:
            carry, h = cell_step(cell, layer, carry, xs[t, b])
            h_seq[t, b] = h
        finals.append(carry)
    carry_last = jax.tree.map(lambda *a: np.stack(a), *finals)
    return h_seq, carry_last


@pytest.mark.parametrize("cell", GATED_CELLS)
@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_layer_unroll_matches_references_on_padded_batches(cell, ids, reverse):
    T, B, D, H = 7, 5, 6, 4
    lengths = np.array([7, 3, 0, 1, 5])  # a length-0 example keeps carry0
    layer = random_layer(cell, D, H, 1)
    carry0 = random_carry(cell, B, H, 2)
    xs, mask = padded_batch(3, T, B, D, lengths, ids=ids)

    run = jax.jit(partial(layer_unroll, cell, reverse=reverse))
    h_seq, carry_last = run(layer, xs, carry0, mask)
    assert h_seq.shape == (T, B, H) and h_seq.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(h_seq)))
    assert np.all(np.asarray(h_seq)[~np.asarray(mask)] == 0)  # exactly zero at padding

    for b in range(B):  # the float64 reference, valid steps only
        ref_seq, ref_carry = ref_gated(
            cell, layer, np.asarray(xs[:, b]), lengths[b], carry_at(carry0, b), reverse=reverse
        )
        np.testing.assert_allclose(h_seq[:, b], ref_seq, atol=ATOL)
        assert_carry_close(carry_at(carry_last, b), ref_carry)

    loop_seq, loop_carry = loop_over_cell_step(cell, layer, xs, carry0, mask, reverse=reverse)
    np.testing.assert_allclose(h_seq, loop_seq, atol=1e-6)
    assert_carry_close(carry_last, loop_carry, atol=1e-6)
    assert_carry_close(carry_at(carry_last, 2), carry_at(carry0, 2), atol=0)  # length 0


@pytest.mark.parametrize("cell", GATED_CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_carry_last_is_bitwise_the_last_valid_output(optimized, cell, reverse):
    """As users compile it, the carry's ``h`` is the very output of each example's last
    valid step, bit for bit (the ``layer_unroll`` doctest shows it with ``allclose``: with
    XLA's optimisation passes off the two copies may round differently)."""
    T, B, D, H = 7, 5, 6, 4
    lengths = np.array([7, 3, 0, 1, 5])
    layer = random_layer(cell, D, H, 1)
    carry0 = random_carry(cell, B, H, 2)
    xs, mask = padded_batch(3, T, B, D, lengths, ids=False)
    unroll = partial(layer_unroll, cell, reverse=reverse)
    for run in (unroll, jax.jit(unroll)):
        h_seq, carry_last = run(layer, xs, carry0, mask)
        h_last = np.asarray(carry_last if cell == "gru" else carry_last[0])
        for b, n in enumerate(lengths):
            if n:
                step = 0 if reverse else n - 1
                np.testing.assert_array_equal(h_last[b], np.asarray(h_seq[step, b]))


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_layer_unroll_without_mask_and_unroll_and_jit_agree(cell):
    T, B, D, H = 6, 3, 4, 5
    layer = random_layer(cell, D, H, 4)
    xs, _ = padded_batch(5, T, B, D, [T] * B)
    carry0 = carry_zeros(cell, B, H)
    eager = layer_unroll(cell, layer, xs, carry0, None)
    jitted = jax.jit(partial(layer_unroll, cell, unroll=3))(layer, xs, carry0, None)
    all_true = layer_unroll(cell, layer, xs, carry0, jnp.ones((T, B), bool))
    for other in (jitted, all_true):
        for u, v in zip(jax.tree.leaves(eager), jax.tree.leaves(other), strict=True):
            np.testing.assert_allclose(u, v, atol=1e-6)
    if cell == "lstm":  # the LSTM's output is h, the first part of the carry
        np.testing.assert_array_equal(eager[0][-1], eager[1][0])
    else:
        np.testing.assert_array_equal(eager[0][-1], eager[1])


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_layer_unroll_hoists_the_input_projection(cell):
    """The scan body has exactly one matmul (the recurrent one); the input term is one
    matmul (dense) or one gather (ids) before the loop, never a one-hot."""
    T, B, D, H = 5, 2, 4, 3
    layer = random_layer(cell, D, H, 0)
    carry0 = carry_zeros(cell, B, H)

    def count(jaxpr, name):
        n = 0
        for eqn in jaxpr.eqns:
            n += eqn.primitive.name == name
            for value in eqn.params.values():
                sub = getattr(value, "jaxpr", value)  # a ClosedJaxpr or a Jaxpr
                if hasattr(sub, "eqns"):
                    n += count(sub, name)
        return n

    def scan_body(jaxpr):
        (eqn,) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
        return eqn.params["jaxpr"].jaxpr

    dense = jax.make_jaxpr(partial(layer_unroll, cell))(
        layer, jnp.ones((T, B, D)), carry0, jnp.ones((T, B), bool)
    ).jaxpr
    assert count(dense, "dot_general") == 2
    assert count(scan_body(dense), "dot_general") == 1
    for lookup in ("sorted", "take"):
        ids = jax.make_jaxpr(partial(layer_unroll, cell, lookup=lookup))(
            layer, jnp.ones((T, B), jnp.int32), carry0, None
        ).jaxpr
        assert count(ids, "dot_general") == 1 and count(scan_body(ids), "gather") == 0
        assert count(ids, "gather") == 1


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_no_whole_matrix_work_inside_the_loops(cell):
    """Forward and backward loops touch only (G·H, H)-sized weights: no step builds or
    accumulates an array of W_a's (G·H, H + V) shape (with V = 10,000 token ids that would
    be O(V) work per step)."""
    T, B, V, H = 4, 2, 300, 3
    layer = random_layer(cell, V, H, 0)
    args = (jnp.ones((T, B), jnp.int32), carry_zeros(cell, B, H), jnp.ones((T, B), bool))

    def loss(layer, lookup):
        h_seq, _ = layer_unroll(cell, layer, *args, lookup=lookup)
        return jnp.sum(h_seq)

    def shapes_in_loops(jaxpr, inside=False):
        found = set()
        for eqn in jaxpr.eqns:
            if inside:
                found |= {tuple(v.aval.shape) for v in eqn.outvars}
            for value in eqn.params.values():
                sub = getattr(value, "jaxpr", value)
                if hasattr(sub, "eqns"):
                    found |= shapes_in_loops(sub, inside or eqn.primitive.name == "scan")
        return found

    for lookup in ("sorted", "take"):
        for fn in (loss, jax.grad(loss)):
            shapes = shapes_in_loops(jax.make_jaxpr(partial(fn, lookup=lookup))(layer).jaxpr)
            assert shapes and tuple(layer.W_a.shape) not in shapes


@pytest.mark.parametrize("cell", GATED_CELLS)
@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
def test_gradients_are_finite_and_padding_invariant(cell, ids):
    T, B, D, H = 6, 4, 5, 3
    lengths = np.array([6, 2, 4, 1])
    layer = random_layer(cell, D, H, 6)
    carry0 = random_carry(cell, B, H, 7)
    w = jnp.asarray(np.random.default_rng(8).normal(size=(T, B, H)).astype(np.float32))

    def loss(layer, xs, carry0, mask, reverse):
        h_seq, carry = layer_unroll(cell, layer, xs, carry0, mask, reverse=reverse)
        return jnp.sum(w * h_seq) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))

    argnums = (0, 2) if ids else (0, 1, 2)
    grad = jax.jit(jax.grad(loss, argnums=argnums), static_argnums=4)
    for reverse in (False, True):
        xs_nan, mask = padded_batch(9, T, B, D, lengths, ids=ids, pad="nan")
        xs_big, _ = padded_batch(9, T, B, D, lengths, ids=ids, pad="big")
        if ids:  # different garbage ids at padding
            xs_big = jnp.where(mask, xs_nan, 10 * D)
        g_nan = grad(layer, xs_nan, carry0, mask, reverse)
        g_big = grad(layer, xs_big, carry0, mask, reverse)
        for u, v in zip(jax.tree.leaves(g_nan), jax.tree.leaves(g_big), strict=True):
            assert np.all(np.isfinite(np.asarray(u)))
            np.testing.assert_array_equal(u, v)
        if not ids:  # the input gradient is zero at padding
            dxs = np.asarray(g_nan[1])
            assert np.all(dxs[~np.asarray(mask)] == 0)
            assert np.any(dxs[np.asarray(mask)] != 0)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_gradients_match_the_python_loop(cell):
    T, B, D, H = 5, 3, 4, 3
    lengths = np.array([5, 2, 3])
    layer = random_layer(cell, D, H, 10)
    carry0 = random_carry(cell, B, H, 11)
    xs, mask = padded_batch(12, T, B, D, lengths, pad="big")

    def loss_unroll(layer, xs):
        h_seq, carry = layer_unroll(cell, layer, xs, carry0, mask, reverse=True)
        return jnp.sum(jnp.sin(h_seq)) + jnp.sum(jax.tree.leaves(carry)[-1])

    def loss_loop(layer, xs):
        total = 0.0
        for b in range(B):
            carry = carry_at(carry0, b)
            for t in reversed(range(int(lengths[b]))):
                carry, h = cell_step(cell, layer, carry, xs[t, b])
                total = total + jnp.sum(jnp.sin(h))
            total = total + jnp.sum(jax.tree.leaves(carry)[-1])
        return total

    g = jax.grad(loss_unroll, argnums=(0, 1))(layer, xs)
    g_ref = jax.grad(loss_loop, argnums=(0, 1))(layer, xs)
    for u, v in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(u, v, atol=1e-5)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_vmap_over_layers_is_an_ensemble(cell):
    T, B, D, H = 4, 2, 3, 5
    keys = jax.random.split(jax.random.key(3), 3)
    layers = jax.vmap(lambda k: init_gated_layer(cell, D, H, key=k))(keys)
    xs, mask = padded_batch(13, T, B, D, [4, 2])
    carry0 = carry_zeros(cell, B, H)
    run = jax.jit(jax.vmap(partial(layer_unroll, cell), in_axes=(0, None, None, None)))
    h_all, _ = run(layers, xs, carry0, mask)
    for i in range(3):
        layer = jax.tree.map(lambda a, i=i: a[i], layers)
        h_i, _ = layer_unroll(cell, layer, xs, carry0, mask)
        np.testing.assert_allclose(h_all[i], h_i, atol=1e-6)


def test_out_of_range_id_at_a_valid_step_gives_nan():
    layer = random_layer("gru", 4, 3, 0)
    xs = jnp.array([[1], [7], [2]], jnp.int32)  # (T=3, B=1), id 7 >= D = 4
    h_seq, h_last = layer_unroll("gru", layer, xs, carry_zeros("gru", 1, 3), None)
    assert np.all(np.isfinite(np.asarray(h_seq[0])))
    assert np.all(np.isnan(np.asarray(h_seq[1:]))) and np.all(np.isnan(np.asarray(h_last)))


def test_float64_layer_matches_the_reference_tightly(x64):
    T, B, D, H = 6, 3, 4, 5
    for cell in GATED_CELLS:
        layer = random_layer(cell, D, H, 14, dtype=np.float64)
        lengths = np.array([6, 4, 1])
        xs, mask = padded_batch(15, T, B, D, lengths)
        carry0 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), random_carry(cell, B, H, 16))
        h_seq, carry = layer_unroll(cell, layer, xs.astype(jnp.float64), carry0, mask)
        assert h_seq.dtype == jnp.float64
        for b in range(B):
            ref_seq, ref_carry = ref_gated(
                cell, layer, np.asarray(xs[:, b]), lengths[b], carry_at(carry0, b)
            )
            np.testing.assert_allclose(h_seq[:, b], ref_seq, atol=1e-12)
            assert_carry_close(carry_at(carry, b), ref_carry, atol=1e-12)


def test_layer_unroll_errors():
    gru = random_layer("gru", 3, 2, 0)
    lstm = random_layer("lstm", 3, 2, 0)
    xs = jnp.zeros((4, 2, 3))
    with pytest.raises(ValueError, match=r"`layer` must be LSTMLayerParams for cell 'lstm'"):
        layer_unroll("lstm", gru, xs, carry_zeros("lstm", 2, 2), None)
    with pytest.raises(ValueError, match=r"`xs` must have shape \(T, B, D\) with D = 3"):
        layer_unroll("gru", gru, jnp.zeros((4, 2, 5)), carry_zeros("gru", 2, 2), None)
    with raises_shape_error(r"`xs` must have shape \(T, B\) token ids"):
        layer_unroll("gru", gru, jnp.zeros((4, 2, 3), jnp.int32), carry_zeros("gru", 2, 2), None)
    with pytest.raises(ValueError, match=r"`carry0` must be a tuple \(h0, c0\) of \(B, H\)"):
        layer_unroll("lstm", lstm, xs, jnp.zeros((2, 2)), None)
    with pytest.raises(ValueError, match=r"`carry0` must be \(B, H\) with B = 2, H = 2"):
        layer_unroll("gru", gru, xs, jnp.zeros((3, 2)), None)
    with raises_shape_error(r"`mask_tb` must be a boolean \(T, B\) = \(4, 2\)"):
        layer_unroll("gru", gru, xs, carry_zeros("gru", 2, 2), jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"`layer.W_a` must have shape \(3H, H \+ D\)"):
        layer_unroll("gru", gru._replace(W_a=gru.W_a[:5]), xs, carry_zeros("gru", 2, 2), None)


# --------------------------------------------------------------------------- properties


#: layer_unroll compiled once per cell, direction and shapes, shared by the examples of the
#: property below (each eager call would trace and compile its scan again).
_unroll = jax.jit(layer_unroll, static_argnums=0, static_argnames="reverse")


# A few sizes only, the edge cases among them (B = 1, T = 1, H = 1): each new shape is a
# compile; the lengths (0 .. T), contents, cell, ids and direction vary freely.
@settings(max_examples=20, deadline=None)
@given(
    cell=st.sampled_from(GATED_CELLS),
    B=st.sampled_from([1, 4]),
    T=st.sampled_from([1, 6]),
    H=st.sampled_from([1, 4]),
    ids=st.booleans(),
    reverse=st.booleans(),
    data=st.data(),
)
def test_property_unroll_is_the_per_example_reference(cell, B, T, H, ids, reverse, data):
    """For any sizes and lengths: outputs equal the float64 reference at valid steps and
    are zero at padding; the final carry is the reference's; garbage at padding changes
    nothing; a reversed run equals a forward run over each example's flipped valid part."""
    D = 3
    lengths = np.array(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    seed = data.draw(st.integers(0, 2**16))
    layer = random_layer(cell, D, H, seed)
    carry0 = random_carry(cell, B, H, seed + 1)
    xs, mask = padded_batch(seed + 2, T, B, D, lengths, ids=ids)
    h_seq, carry = _unroll(cell, layer, xs, carry0, mask, reverse=reverse)
    h_seq = np.asarray(h_seq)
    assert np.all(h_seq[~np.asarray(mask)] == 0)
    for b in range(B):
        ref_seq, ref_carry = ref_gated(
            cell, layer, np.asarray(xs[:, b]), lengths[b], carry_at(carry0, b), reverse=reverse
        )
        np.testing.assert_allclose(h_seq[:, b], ref_seq, atol=ATOL)
        assert_carry_close(carry_at(carry, b), ref_carry)
        # reverse == forward over the flipped valid part
        n = int(lengths[b])
        flipped = jnp.flip(xs[:n, b : b + 1], axis=0)
        fwd_seq, fwd_carry = _unroll(
            cell, layer, flipped, carry_at_keep(carry0, b), None, reverse=not reverse
        )
        np.testing.assert_allclose(np.asarray(fwd_seq)[::-1, 0], h_seq[:n, b], atol=1e-6)
        assert_carry_close(fwd_carry, carry_at_keep(carry, b), atol=1e-6)


def carry_at_keep(carry, b):
    """Example ``b`` of a batched carry, keeping a batch axis of one."""
    return jax.tree.map(lambda a: a[b : b + 1], carry)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_low_precision_layer_casts_inputs_and_carry(cell):
    T, B, D, H = 5, 3, 4, 6
    layer = init_gated_layer(cell, D, H, key=jax.random.key(4))
    low = jax.tree.map(lambda a: a.astype(jnp.bfloat16), layer)
    xs, mask = padded_batch(17, T, B, D, [5, 3, 1])
    carry0 = carry_zeros(cell, B, H)  # float32, cast to the layer's dtype
    h_low, carry_low = jax.jit(partial(layer_unroll, cell))(low, xs, carry0, mask)
    h_full, _ = layer_unroll(cell, layer, xs, carry0, mask)
    assert h_low.dtype == jnp.bfloat16
    assert all(c.dtype == jnp.bfloat16 for c in jax.tree.leaves(carry_low))
    np.testing.assert_allclose(np.asarray(h_low, np.float32), h_full, atol=3e-2)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_export_with_a_symbolic_batch_and_length(cell):
    """Dense inputs export with symbolic (T, B), values and gradients alike."""
    from jax import export

    D, H = 3, 4
    layer = init_gated_layer(cell, D, H, key=jax.random.key(5))
    T, B = export.symbolic_shape("t, b")
    h0 = jax.ShapeDtypeStruct((B, H), jnp.float32)
    specs = (
        jax.ShapeDtypeStruct((T, B, D), jnp.float32),
        h0 if cell == "gru" else (h0, h0),
        jax.ShapeDtypeStruct((T, B), jnp.bool_),
    )

    def loss(layer, xs, carry0, mask):
        return jnp.sum(layer_unroll(cell, layer, xs, carry0, mask)[0])

    run = export.export(jax.jit(partial(layer_unroll, cell)))(layer, *specs)
    grad = export.export(jax.jit(jax.grad(loss)))(layer, *specs)
    xs, mask = padded_batch(18, 6, 2, D, [6, 3])
    carry0 = carry_zeros(cell, 2, H)
    for got, expected in (
        (run.call(layer, xs, carry0, mask), layer_unroll(cell, layer, xs, carry0, mask)),
        (grad.call(layer, xs, carry0, mask), jax.grad(loss)(layer, xs, carry0, mask)),
    ):
        for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(u, v, atol=1e-6)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_forward_mode_autodiff_on_dense_inputs(cell):
    """jvp / jacfwd work (no custom_vjp on the dense path) and agree with reverse mode."""
    T, B, D, H = 4, 2, 3, 3
    layer = random_layer(cell, D, H, 19)
    xs, mask = padded_batch(20, T, B, D, [4, 2], pad="big")
    carry0 = carry_zeros(cell, B, H)

    def f(xs):
        return layer_unroll(cell, layer, xs, carry0, mask)[0]

    J_fwd = jax.jacfwd(f)(xs)
    J_rev = jax.jacrev(f)(xs)
    np.testing.assert_allclose(J_fwd, J_rev, atol=1e-6)
    tangent = jnp.ones_like(xs)
    _, jvp_out = jax.jvp(f, (xs,), (tangent,))
    np.testing.assert_allclose(jvp_out, jnp.einsum("tbhsce,sce->tbh", J_rev, tangent), atol=1e-5)


@pytest.mark.parametrize("cell", GATED_CELLS)
@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
def test_vmap_of_scan_over_cell_step_is_layer_unroll(cell, ids):
    """The reference form of the issue: vmap over the batch of lax.scan(partial(cell, ...))."""
    T, B, D, H = 5, 3, 4, 3
    layer = random_layer(cell, D, H, 21)
    carry0 = random_carry(cell, B, H, 22)
    xs, _ = padded_batch(23, T, B, D, [T] * B, ids=ids)

    def one(x_seq, c0):  # one example: (T, D) or (T,)
        return jax.lax.scan(partial(cell_step, cell, layer), c0, x_seq)

    carry_ref, h_ref = jax.vmap(one, in_axes=(1, 0), out_axes=(0, 1))(xs, carry0)
    h_seq, carry = layer_unroll(cell, layer, xs, carry0, None)
    np.testing.assert_allclose(h_seq, h_ref, atol=1e-6)
    assert_carry_close(carry, carry_ref, atol=1e-6)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_take_lookup_equals_the_sorted_lookup_and_composes(cell):
    """lookup="take": same values and gradients as the default; forward-mode autodiff and
    jax.export with a symbolic (T, B) work for token ids."""
    from jax import export

    T, B, V, H = 6, 4, 9, 3
    lengths = np.array([6, 2, 0, 4])
    layer = random_layer(cell, V, H, 24)
    carry0 = random_carry(cell, B, H, 25)
    ids, mask = padded_batch(26, T, B, V, lengths, ids=True)  # out-of-range ids at padding

    def loss(layer, lookup, reverse):
        h_seq, carry = layer_unroll(cell, layer, ids, carry0, mask, reverse=reverse, lookup=lookup)
        return jnp.sum(jnp.sin(h_seq)) + jnp.sum(jax.tree.leaves(carry)[-1])

    # reversed here; the forward direction is checked by the jvp and export below
    for f in (loss, jax.grad(loss)):
        f = jax.jit(f, static_argnums=(1, 2))
        got, expected = f(layer, "take", True), f(layer, "sorted", True)
        for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(u, v, atol=1e-6)

    tangent = jax.tree.map(jnp.ones_like, layer)
    _, dloss = jax.jvp(lambda p: loss(p, "take", False), (layer,), (tangent,))
    g = jax.grad(loss)(layer, "take", False)
    expected = sum(jnp.sum(a) for a in jax.tree.leaves(g))
    np.testing.assert_allclose(dloss, expected, rtol=1e-5)

    T_, B_ = export.symbolic_shape("t, b")
    h0 = jax.ShapeDtypeStruct((B_, H), jnp.float32)
    specs = (
        jax.ShapeDtypeStruct((T_, B_), jnp.int32),
        h0 if cell == "gru" else (h0, h0),
        jax.ShapeDtypeStruct((T_, B_), jnp.bool_),
    )
    run = export.export(jax.jit(partial(layer_unroll, cell, lookup="take")))(layer, *specs)
    got = run.call(layer, ids, carry0, mask)
    expected = layer_unroll(cell, layer, ids, carry0, mask)
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(u, v, atol=1e-6)

    with pytest.raises(ValueError, match=r"`lookup` must be one of \('sorted', 'take'\)"):
        layer_unroll(cell, layer, ids, carry0, mask, lookup="onehot")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_layer_unroll_dropout_hooks(cell):
    """input_scale multiplies W_x x before the bias; state_mask multiplies h where it enters
    W_h only: all-ones hooks change nothing, a zero state mask removes the recurrent term."""
    layer = init_gated_layer(cell, 3, 4, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (5, 2, 3))
    carry0 = carry_zeros(cell, 2, 4)
    h_ref, _ = layer_unroll(cell, layer, xs, carry0, None)
    h_one, _ = layer_unroll(
        cell, layer, xs, carry0, None, input_scale=jnp.ones((5, 2, 1)), state_mask=jnp.ones((2, 4))
    )
    np.testing.assert_array_equal(h_one, h_ref)
    h_scaled, _ = layer_unroll(cell, layer, xs, carry0, None, input_scale=jnp.full((5, 2, 1), 2.0))
    h_double, _ = layer_unroll(cell, layer, 2.0 * xs, carry0, None)
    np.testing.assert_allclose(h_scaled, h_double, atol=1e-6)
    no_rec = layer._replace(W_a=layer.W_a.at[:, :4].set(0.0))
    h_zero, _ = layer_unroll(cell, layer, xs, carry0, None, state_mask=jnp.zeros((2, 4)))
    h_norec, _ = layer_unroll(cell, no_rec, xs, carry0, None)
    np.testing.assert_allclose(h_zero, h_norec, atol=1e-6)
