"""The hand-written backward pass through time equals jax.grad of the plain scan."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_jax import bptt, init_rnn, rnn_apply
from rnn_jax.bptt import carried_states, scan_reference
from rnn_jax.recurrence import recurrence


def _problem(T, B, H, seed, masked, kind="lengths"):
    k = jax.random.split(jax.random.key(seed), 5)
    W_aa = jax.random.normal(k[0], (H, H)) / np.sqrt(H)
    z = jax.random.normal(k[1], (T, B, H))
    a0 = 0.5 * jax.random.normal(k[2], (B, H))
    mask = None
    if masked and kind == "lengths":
        lengths = jax.random.randint(k[3], (B,), 0, T + 1)
        mask = jnp.arange(T)[:, None] < lengths[None, :]
    elif masked:  # arbitrary holes, not only trailing padding
        mask = jax.random.bernoulli(k[3], 0.7, (T, B))
    w = jax.random.normal(k[4], (T, B, H))  # a random linear read-out of the states
    return W_aa, z, a0, mask, w


def _loss(backward, activation, reverse, mask, w):
    def loss(W_aa, z, a0):
        a_seq, a_last = recurrence(
            W_aa, z, a0, mask, activation=activation, reverse=reverse, backward=backward
        )
        return jnp.sum(w * a_seq) + jnp.sum(jnp.sin(a_last))

    return loss


@partial(jax.jit, static_argnums=(0, 1, 2))
def _grads(backward, activation, reverse, W_aa, z, a0, mask, w):
    """jax.grad of _loss, compiled once per (backward, activation, reverse, shapes); eagerly
    every call traces and compiles the scans again. Not for tests that patch the module
    at trace time (test_weight_gradient_blocks_and_remainder runs eagerly)."""
    return jax.grad(_loss(backward, activation, reverse, mask, w), argnums=(0, 1, 2))(W_aa, z, a0)


def _assert_grads_close(g_new, g_ref, rtol=2e-5, atol=2e-5):
    for name, a, b in zip(("W_aa", "z", "a0"), g_new, g_ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "lengths", "holes"])
def test_gradients_equal_autodiff(activation, reverse, mask_kind):
    W_aa, z, a0, mask, w = _problem(7, 3, 5, seed=1, masked=mask_kind is not None, kind=mask_kind)
    g_new = _grads("bptt", activation, reverse, W_aa, z, a0, mask, w)
    g_ref = _grads("autodiff", activation, reverse, W_aa, z, a0, mask, w)
    _assert_grads_close(g_new, g_ref)


def test_forward_values_equal_autodiff_path():
    W_aa, z, a0, mask, _ = _problem(9, 4, 6, seed=2, masked=True)
    for reverse in (False, True):
        new = recurrence(W_aa, z, a0, mask, reverse=reverse, backward="bptt")
        ref = recurrence(W_aa, z, a0, mask, reverse=reverse, backward="autodiff")
        for a, b in zip(new, ref, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_gradients_in_float64_match_to_rounding(x64):
    W_aa, z, a0, mask, w = (
        x.astype(jnp.float64) if x is not None and x.dtype == jnp.float32 else x
        for x in _problem(11, 3, 4, seed=3, masked=True)
    )
    args = (W_aa, z, a0)
    g_new = jax.grad(_loss("bptt", "tanh", False, mask, w), argnums=(0, 1, 2))(*args)
    g_ref = jax.grad(_loss("autodiff", "tanh", False, mask, w), argnums=(0, 1, 2))(*args)
    _assert_grads_close(g_new, g_ref, rtol=1e-12, atol=1e-12)


def test_jit_and_vmap():
    W_aa, z, a0, mask, w = _problem(6, 2, 4, seed=4, masked=True)
    loss_new = _loss("bptt", "tanh", True, mask, w)
    loss_ref = _loss("autodiff", "tanh", True, mask, w)
    g_jit = jax.jit(jax.grad(loss_new, argnums=(0, 1, 2)))(W_aa, z, a0)
    g_ref = jax.grad(loss_ref, argnums=(0, 1, 2))(W_aa, z, a0)
    _assert_grads_close(g_jit, g_ref)

    # vmap over a leading "model" axis of stacked recurrent matrices.
    Ws = jnp.stack([W_aa, 0.5 * W_aa, -W_aa])
    per_model = jax.vmap(jax.grad(loss_new), in_axes=(0, None, None))(Ws, z, a0)
    loop = jnp.stack([jax.grad(loss_ref)(W, z, a0) for W in Ws])
    np.testing.assert_allclose(np.asarray(per_model), np.asarray(loop), rtol=2e-5, atol=2e-5)


def test_masked_steps_pass_the_gradient_through_unchanged():
    # With every step masked, a_last = a0 and dL/da0 = dL/da_last exactly; nothing reaches W or z.
    W_aa, z, a0, _, _ = _problem(5, 2, 3, seed=5, masked=False)
    mask = jnp.zeros((5, 2), bool)

    def loss(W_aa, z, a0):
        _, a_last = recurrence(W_aa, z, a0, mask)
        return jnp.sum(3.0 * a_last)

    dW, dz, da0 = jax.grad(loss, argnums=(0, 1, 2))(W_aa, z, a0)
    assert np.all(np.asarray(dW) == 0) and np.all(np.asarray(dz) == 0)
    np.testing.assert_array_equal(np.asarray(da0), np.full((2, 3), 3.0, np.float32))


def test_callable_activation_falls_back_to_autodiff():
    W_aa, z, a0, _, _ = _problem(4, 2, 3, seed=6, masked=False)
    h = carried_states(W_aa, z, a0, None, activation=jnp.sin)
    np.testing.assert_array_equal(
        np.asarray(h), np.asarray(scan_reference(W_aa, z, a0, None, activation=jnp.sin))
    )
    assert jax.grad(lambda W: carried_states(W, z, a0, None, activation=jnp.sin).sum())(
        W_aa
    ).shape == (3, 3)


def test_backward_name_is_checked():
    W_aa, z, a0, _, _ = _problem(2, 1, 2, seed=7, masked=False)
    with pytest.raises(ValueError, match="`backward` must be 'bptt' or 'autodiff'"):
        recurrence(W_aa, z, a0, None, backward="magic")


def test_saves_less_than_autodiff(optimized):
    # The hand-written backward keeps only the states: XLA's temporary buffers shrink.
    W_aa, z, a0, mask, w = _problem(200, 8, 32, seed=8, masked=True)

    def temp_bytes(backward):
        f = jax.jit(jax.grad(_loss(backward, "tanh", False, mask, w), argnums=(0, 1, 2)))
        return f.lower(W_aa, z, a0).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes("bptt") < temp_bytes("autodiff")


@pytest.mark.parametrize(("B", "H"), [(1, 6), (3, 1), (1, 1), (4, 6)])
@pytest.mark.parametrize("masked", [False, True])
def test_degenerate_batch_or_width_no_per_step_buffer_copy(B, H, masked, optimized):
    # With B = 1 (or H = 1) XLA once copied the whole (T, B, H) gradient buffer on every
    # step of the backward loop (10x slower at B = 1, T = 1,000). Gradients must still
    # equal autodiff, and no loop body of the compiled gradient may copy a state-sized
    # buffer.
    import re

    T = 23
    W_aa, z, a0, mask, w = _problem(T, B, H, seed=11, masked=masked)
    args = (W_aa, z, a0)
    grad = jax.grad(_loss("bptt", "tanh", True, mask, w), argnums=(0, 1, 2))
    g_ref = jax.jit(jax.grad(_loss("autodiff", "tanh", True, mask, w), argnums=(0, 1, 2)))(*args)
    # the values come from the very program whose HLO is checked below (one compile)
    compiled = jax.jit(grad).lower(*args).compile()
    _assert_grads_close(compiled(*args), g_ref)
    hlo = compiled.as_text()
    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    assert bodies, "no while loop in the compiled gradient"
    for comp in re.split(r"\n(?=\S)", hlo):
        if comp.split(" ", 1)[0].lstrip("%") in bodies:
            copies = re.findall(rf"= f32\[{T},{B},{H}\]\S* copy\(", comp)
            assert not copies, comp[:2000]


@pytest.mark.slow
@given(
    T=st.integers(1, 6),
    B=st.integers(1, 3),
    H=st.integers(1, 4),
    D=st.integers(1, 3),
    bidirectional=st.booleans(),
    token_ids=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=5, deadline=None)
def test_network_gradients_equal_autodiff(T, B, H, D, bidirectional, token_ids, seed):
    """End to end through rnn_apply: the library path against backward="autodiff"."""
    k_p, k_x, k_l = jax.random.split(jax.random.key(seed), 3)
    params = init_rnn(
        k_p, D, H, 2, num_layers=2, bidirectional=bidirectional, token_inputs=token_ids
    )
    if token_ids:
        xs = jax.random.randint(k_x, (B, T), 0, D)
    else:
        xs = jax.random.normal(k_x, (B, T, D))
    lengths = jax.random.randint(k_l, (B,), 0, T + 1)

    def loss(params, backward, lookup):
        return jnp.sum(jnp.tanh(rnn_apply(params, xs, lengths, backward=backward, lookup=lookup)))

    g_new = jax.grad(loss)(params, "bptt", "sorted")
    g_ref = jax.grad(loss)(params, "autodiff", "take")
    for a, b in zip(
        jax.tree_util.tree_leaves(g_new), jax.tree_util.tree_leaves(g_ref), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=5e-5, atol=5e-5)


@pytest.mark.parametrize("T", [1, 2, 7, 8])
@pytest.mark.parametrize("reverse", [False, True])
def test_weight_gradient_blocks_and_remainder(monkeypatch, T, reverse):
    # Blocks of 6 rows with B = 2: three steps per block, so T = 8 (7 pairs) has two
    # blocks and a remainder, T = 7 exactly two blocks, T <= 2 no full block.
    monkeypatch.setattr(bptt, "_BLOCK_ROWS", 6)
    W_aa, z, a0, mask, w = _problem(T, 2, 4, seed=T, masked=True)
    args = (W_aa, z, a0)
    g_new = jax.grad(_loss("bptt", "tanh", reverse, mask, w), argnums=(0, 1, 2))(*args)
    g_ref = jax.grad(_loss("autodiff", "tanh", reverse, mask, w), argnums=(0, 1, 2))(*args)
    _assert_grads_close(g_new, g_ref)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_bias_inside_the_loop_equals_bias_added_to_z(reverse, masked):
    W_aa, z, a0, mask, w = _problem(6, 3, 4, seed=11, masked=masked, kind="holes")
    b = jax.random.normal(jax.random.key(5), (4,))

    def loss(backward, inside):
        def f(W_aa, z, a0, b):
            if inside:
                a_seq, a_last = recurrence(
                    W_aa, z, a0, mask, bias=b, reverse=reverse, backward=backward
                )
            else:
                a_seq, a_last = recurrence(
                    W_aa, z + b[None, None, :], a0, mask, reverse=reverse, backward=backward
                )
            return jnp.sum(w * a_seq) + jnp.sum(jnp.sin(a_last))

        return f

    args = (W_aa, z, a0, b)
    ref = jax.grad(loss("autodiff", False), argnums=(0, 1, 2, 3))(*args)
    for backward in ("bptt", "autodiff"):
        got = jax.grad(loss(backward, True), argnums=(0, 1, 2, 3))(*args)
        for name, x, y in zip(("W_aa", "z", "a0", "b"), got, ref, strict=True):
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5, err_msg=f"{backward} {name}")
