"""Long sequences: the rematerialising loss and truncated BPTT."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax import init_rnn, rnn_apply
from rnn_jax.long import rnn_loss_remat, truncated_bptt


def _full_loss(params, xs, labels, lengths):
    logits = rnn_apply(params, xs, lengths)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if lengths is None:
        return jnp.mean(ce)
    mask = jnp.arange(labels.shape[1])[None, :] < lengths[:, None]
    return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(jnp.sum(mask), 1).astype(ce.dtype)


@pytest.mark.parametrize("token_ids", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_remat_loss_and_gradient_equal_full(token_ids, chunk_size):
    B, T, D, H, C = 3, 17, 5, 6, 4
    k_p, k_x, k_y, k_l = jax.random.split(jax.random.key(0), 4)
    params = init_rnn(k_p, D, H, C, num_layers=2, token_inputs=token_ids)
    xs = jax.random.randint(k_x, (B, T), 0, D) if token_ids else jax.random.normal(k_x, (B, T, D))
    labels = jax.random.randint(k_y, (B, T), 0, C)
    lengths = jax.random.randint(k_l, (B,), 0, T + 1)
    for ls in (None, lengths):
        full, g_full = jax.jit(jax.value_and_grad(_full_loss))(params, xs, labels, ls)
        remat, g_remat = jax.jit(
            jax.value_and_grad(
                lambda p, ls=ls: rnn_loss_remat(p, xs, labels, ls, chunk_size=chunk_size)
            )
        )(params)
        np.testing.assert_allclose(float(remat), float(full), rtol=1e-5)
        for a, b in zip(
            jax.tree_util.tree_leaves(g_remat), jax.tree_util.tree_leaves(g_full), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def _grad_temp_bytes(loss, params):
    m = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis()
    return m.temp_size_in_bytes + m.output_size_in_bytes


def _grad_sizes(params, B, D):
    """``(full, remat)`` gradient bytes at T = 400 and at T = 6400 (16x longer)."""

    def sizes(T):
        xs = jnp.zeros((B, T, D))
        labels = jnp.zeros((B, T), jnp.int32)
        full = _grad_temp_bytes(lambda p: _full_loss(p, xs, labels, None), params)
        remat = _grad_temp_bytes(lambda p: rnn_loss_remat(p, xs, labels), params)
        return full, remat

    return sizes(400), sizes(6400)


@pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="XLA's memory_analysis() is calibrated here on the CPU backend; on an H200 the full "
    "gradient reported 33.8 MB at T=400 and 7.0 MB at T=6400 (benchmarks/RESULTS.md)",
)
def test_remat_memory_grows_like_sqrt_t(optimized):
    """XLA's buffer count: the full gradient grows ~linearly in T, the remat one ~sqrt(T)."""
    B, D, H, C = 4, 3, 32, 2
    params = init_rnn(jax.random.key(0), D, H, C)
    (full_small, remat_small), (full_big, remat_big) = _grad_sizes(params, B, D)
    states_big = 6400 * B * H * 4
    assert full_big > states_big  # the full gradient keeps every state ...
    assert full_big / full_small > 8  # ... and grows ~linearly
    assert remat_big < states_big / 4  # remat keeps far less than the states
    assert remat_big / remat_small < 6  # ... and grows ~sqrt(16) = 4


def test_truncated_bptt_cuts_gradients_at_chunk_boundaries():
    B, T, V, H = 2, 12, 7, 5
    params = init_rnn(jax.random.key(0), V, H, V, token_inputs=True)
    ids = jax.random.randint(jax.random.key(1), (B, T), 0, V)
    labels = jnp.roll(ids, -1, axis=1)
    # With SGD of rate 0 nothing changes, so the reported chunk losses are the losses of
    # the full unroll's steps in each chunk: the state is carried exactly.
    opt = optax.sgd(0.0)
    new_params, _, losses, a_last = truncated_bptt(
        params, opt.init(params), ids, labels, optimizer=opt, chunk_size=4
    )
    logits = rnn_apply(params, ids)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(
        np.asarray(losses), np.asarray(ce.reshape(B, 3, 4).mean(axis=(0, 2))), rtol=1e-5
    )
    assert a_last.shape == (1, B, H)
    chex_equal = jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), new_params, params)
    assert all(jax.tree_util.tree_leaves(chex_equal))

    # The gradient of a chunk stops at its first step: the step-1 gradient of the second
    # chunk is the gradient of a fresh unroll of that chunk from the carried (constant) state.
    def first_chunk_grad_through(p, a_prev):
        from rnn_jax.long import chunk_loss

        m = jnp.ones((4, B), bool)
        return chunk_loss(p, a_prev, ids[:, 4:8], labels[:, 4:8], m)[0]

    g = jax.grad(first_chunk_grad_through, argnums=1)(params, jnp.zeros((1, B, H)))
    assert g.shape == (1, B, H)  # the carried state has a gradient inside chunk_loss ...
    opt = optax.sgd(0.1)
    p1, _, _, _ = jax.jit(truncated_bptt, static_argnames=("optimizer", "chunk_size"))(
        params, opt.init(params), ids, labels, optimizer=opt, chunk_size=4
    )
    # ... but truncated_bptt trains without NaNs and changes every parameter.
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(params), strict=True):
        assert np.all(np.isfinite(np.asarray(a))) and not np.array_equal(
            np.asarray(a), np.asarray(b)
        )


def test_errors_name_the_argument():
    params = init_rnn(jax.random.key(0), 3, 4, 2, bidirectional=True)
    xs = jnp.zeros((2, 5, 3))
    labels = jnp.zeros((2, 5), jnp.int32)
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="`params` must be unidirectional"):
        truncated_bptt(params, opt.init(params), xs, labels, optimizer=opt, chunk_size=2)
    deep = init_rnn(jax.random.key(0), 3, 4, 2, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match="one-layer bidirectional network, got num_layers=2"):
        rnn_loss_remat(deep, xs, labels)
    params = init_rnn(jax.random.key(0), 3, 4, 2)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(B, T\) = \(2, 5\)"):
        rnn_loss_remat(params, xs, labels[:, :3])
    with pytest.raises(ValueError, match="`chunk_size` must be a positive int"):
        rnn_loss_remat(params, xs, labels, chunk_size=0)
    with pytest.raises(ValueError, match=r"`a0` must have shape \(num_layers, B, H\)"):
        truncated_bptt(
            params, opt.init(params), xs, labels, optimizer=opt, chunk_size=2, a0=jnp.zeros((2, 4))
        )


def test_truncated_bptt_equals_manual_chunks_with_the_gradient_cut():
    """Review d.33: a test that fails if the stop_gradient at the chunk boundary goes.

    Two SGD steps by hand: chunk 1 from a0, then chunk 2 from the carried state held
    constant. The same with the gradient flowing back into chunk 1 differs.
    """
    from rnn_jax.long import chunk_loss

    V, H, B, K = 6, 5, 3, 4
    params = init_rnn(jax.random.key(2), V, H, V, token_inputs=True, num_layers=2)
    ids = jax.random.randint(jax.random.key(3), (B, 2 * K), 0, V)
    labels = jnp.roll(ids, -1, axis=1)
    lr = 0.5
    opt = optax.sgd(lr)
    got, _, _, _ = truncated_bptt(
        params, opt.init(params), ids, labels, optimizer=opt, chunk_size=K
    )
    m = jnp.ones((K, B), bool)

    def mean_loss(p, a_prev, c):
        loss, a = chunk_loss(
            p, a_prev, ids[:, c * K : (c + 1) * K], labels[:, c * K : (c + 1) * K], m
        )
        return loss / (K * B), a

    def sgd(p, g):
        return jax.tree_util.tree_map(lambda x, d: x - lr * d, p, g)

    a0 = jnp.zeros((2, B, H))
    g1, a1 = jax.grad(mean_loss, has_aux=True)(params, a0, 0)
    p1 = sgd(params, g1)
    cut = sgd(p1, jax.grad(mean_loss, has_aux=True)(p1, a1, 1)[0])  # a1: a constant

    def through(p):  # the same a1 at p = p1, but as a function of the parameters
        shifted = jax.tree_util.tree_map(lambda x, x0, x1: x0 + (x - x1), p, params, p1)
        _, a = mean_loss(shifted, a0, 0)
        return mean_loss(p, a, 1)[0]

    uncut = sgd(p1, jax.grad(through)(p1))
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(got), leaves(cut), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert any(
        not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        for a, b in zip(leaves(got), leaves(uncut), strict=True)
    )


# --------------------------------------------------------------------------- gated cells


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_remat_loss_and_gradient_equal_one_shot(cell):
    """rnn_loss_remat with a GRU/LSTM: chunk by chunk (the LSTM's (h, c) carried across
    chunk boundaries) equals the one-shot loss and gradient of rnn_apply."""
    B, T, V, H = 3, 13, 7, 5
    params = init_rnn(jax.random.key(4), V, H, V, cell=cell, num_layers=2, token_inputs=True)
    ids = jax.random.randint(jax.random.key(5), (B, T), 0, V)
    labels = jnp.roll(ids, -1, axis=1)
    lengths = jnp.array([13, 9, 2])
    full, g_full = jax.value_and_grad(_full_loss)(params, ids, labels, lengths)
    remat, g_remat = jax.value_and_grad(
        lambda p: rnn_loss_remat(p, ids, labels, lengths, chunk_size=4)
    )(params)
    np.testing.assert_allclose(float(remat), float(full), rtol=1e-5)
    for a, b in zip(
        jax.tree_util.tree_leaves(g_remat), jax.tree_util.tree_leaves(g_full), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_truncated_bptt_carries_the_whole_state(cell):
    """With SGD of rate 0 the chunk losses are the one-shot per-chunk losses and the final
    states are rnn_layers' (h_n, and c_n for the LSTM): the carry crosses chunks exactly.
    A stream of two calls fed back through a0 (and c0) equals one call on the whole."""
    from rnn_jax import rnn_layers

    B, T, V, H, K = 2, 12, 7, 5, 4
    params = init_rnn(jax.random.key(6), V, H, V, cell=cell, num_layers=2, token_inputs=True)
    ids = jax.random.randint(jax.random.key(7), (B, T), 0, V)
    labels = jnp.roll(ids, -1, axis=1)
    opt = optax.sgd(0.0)
    lstm = cell == "lstm"
    _, _, losses, a_last = truncated_bptt(
        params, opt.init(params), ids, labels, optimizer=opt, chunk_size=K,
        return_cell_state=lstm,
    )  # fmt: skip
    ce = optax.softmax_cross_entropy_with_integer_labels(rnn_apply(params, ids), labels)
    np.testing.assert_allclose(
        np.asarray(losses), np.asarray(ce.reshape(B, T // K, K).mean(axis=(0, 2))), rtol=1e-5
    )
    _, finals = rnn_layers(params, ids, return_cell_state=lstm)
    for got, want in zip(jax.tree.leaves(a_last), jax.tree.leaves(finals), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)

    # Streaming: two calls, the state fed back, equal one call.
    half = T // 2
    _, _, l1, s1 = truncated_bptt(
        params, opt.init(params), ids[:, :half], labels[:, :half], optimizer=opt, chunk_size=K,
        return_cell_state=lstm,
    )  # fmt: skip
    more = dict(a0=s1[0], c0=s1[1]) if lstm else dict(a0=s1)
    _, _, l2, s2 = truncated_bptt(
        params, opt.init(params), ids[:, half:], labels[:, half:], optimizer=opt, chunk_size=K,
        **more,
    )  # fmt: skip
    whole = _, _, _, h_whole = truncated_bptt(
        params, opt.init(params), ids, labels, optimizer=opt, chunk_size=K
    )
    assert whole[2].shape == (T // K + (T % K > 0),)
    np.testing.assert_allclose(np.asarray(s2), np.asarray(h_whole), rtol=1e-5, atol=1e-6)
    if lstm:  # without c0 the second call restarts the cell states: another result
        _, _, _, s_no_c = truncated_bptt(
            params, opt.init(params), ids[:, half:], labels[:, half:], optimizer=opt,
            chunk_size=K, a0=s1[0],
        )  # fmt: skip
        assert not np.allclose(np.asarray(s_no_c), np.asarray(h_whole), atol=1e-6)


def test_gated_options_are_for_the_lstm_only():
    params = init_rnn(jax.random.key(0), 3, 4, 2, cell="gru")
    xs, labels = jnp.zeros((2, 5, 3)), jnp.zeros((2, 5), jnp.int32)
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match=r"`c0` is only for cell='lstm', got cell='gru'"):
        truncated_bptt(params, opt.init(params), xs, labels, optimizer=opt, chunk_size=2,
                       c0=jnp.zeros((1, 2, 4)))  # fmt: skip
    with pytest.raises(ValueError, match=r"`return_cell_state` is only for cell='lstm'"):
        truncated_bptt(params, opt.init(params), xs, labels, optimizer=opt, chunk_size=2,
                       return_cell_state=True)  # fmt: skip
    lstm = init_rnn(jax.random.key(0), 3, 4, 2, cell="lstm")
    with pytest.raises(ValueError, match=r"`c0` must have shape \(num_layers, B, H\)"):
        truncated_bptt(lstm, opt.init(lstm), xs, labels, optimizer=opt, chunk_size=2,
                       c0=jnp.zeros((2, 4)))  # fmt: skip


# --------------------------------------------------------------------------- bidirectional


def _assert_same_loss_and_grad(params, loss_a, loss_b):
    va, ga = jax.jit(jax.value_and_grad(loss_a))(params)
    vb, gb = jax.jit(jax.value_and_grad(loss_b))(params)
    np.testing.assert_allclose(float(va), float(vb), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "cell,merge,token_ids",
    [("rnn", "concat", True), ("gru", "sum", False), ("lstm", "concat", True)],
)
def test_bidirectional_remat_equals_rnn_apply(cell, merge, token_ids):
    """A one-layer bidirectional network, chunk by chunk: the loss and gradient of the
    one-shot rnn_apply, with lengths (the backward direction starts at each example's last
    valid step, also when it lies in an earlier chunk than the padding) and without."""
    B, T, D, H, C = 3, 17, 5, 4, 3
    k_p, k_x, k_y = jax.random.split(jax.random.key(8), 3)
    params = init_rnn(
        k_p, D, H, C, cell=cell, bidirectional=True, merge=merge, token_inputs=token_ids
    )
    xs = jax.random.randint(k_x, (B, T), 0, D) if token_ids else jax.random.normal(k_x, (B, T, D))
    labels = jax.random.randint(k_y, (B, T), 0, C)
    for lengths, chunk_size in ((None, None), (jnp.array([17, 6, 0]), 5)):
        _assert_same_loss_and_grad(
            params,
            lambda p, ls=lengths, k=chunk_size: rnn_loss_remat(p, xs, labels, ls, chunk_size=k),
            lambda p, ls=lengths: _full_loss(p, xs, labels, ls),
        )


def test_bidirectional_remat_respects_a_mask_with_holes():
    """A mask (not a prefix) means what it means in rnn_apply: masked steps keep the state
    of each direction and add no loss; garbage at masked steps changes nothing."""
    B, T, V, H = 2, 11, 6, 4
    params = init_rnn(jax.random.key(9), V, H, V, cell="gru", bidirectional=True, token_inputs=True)
    ids = jax.random.randint(jax.random.key(10), (B, T), 0, V)
    labels = jnp.roll(ids, -1, axis=1)
    mask = jax.random.bernoulli(jax.random.key(11), 0.7, (B, T))
    noisy = jnp.where(mask, ids, (ids + 3) % V)

    def full(p):
        ce = optax.softmax_cross_entropy_with_integer_labels(rnn_apply(p, ids, mask=mask), labels)
        return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.sum(mask).astype(ce.dtype)

    _assert_same_loss_and_grad(
        params, lambda p: rnn_loss_remat(p, noisy, labels, mask=mask, chunk_size=3), full
    )
    assert not np.isclose(
        float(rnn_loss_remat(params, noisy, labels, chunk_size=3)), float(full(params))
    )


@pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="XLA's memory_analysis() is calibrated here on the CPU backend",
)
def test_bidirectional_remat_memory_grows_like_sqrt_t(optimized):
    """XLA's buffer count for a bidirectional LSTM: the full gradient keeps both
    directions' states (~linear in T), the remat one ~sqrt(T). (Measured on CPU: full
    9.6 MB at T=400, 151.5 MB at T=6400; remat 0.77 MB and 2.6 MB.)"""
    B, D, H, C = 4, 3, 32, 2
    params = init_rnn(jax.random.key(0), D, H, C, cell="lstm", bidirectional=True)
    (full_small, remat_small), (full_big, remat_big) = _grad_sizes(params, B, D)
    states_big = 2 * 6400 * B * H * 4  # both directions' h alone, float32
    assert full_big > states_big
    assert full_big / full_small > 8
    assert remat_big < full_big / 16  # (the LSTM's chunk also holds c and 4 gates)
    assert remat_big / remat_small < 6  # ~sqrt(16) = 4
