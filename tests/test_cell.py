"""The cell: the formulation's equations for one step of one example."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import CellParams, init_head, init_layer, rnn_cell


def _normal_bias(key, shape, dtype):
    return 0.3 * jax.random.normal(key, shape, dtype)


def _params(D=5, H=4, C=3, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    layer = init_layer(D, H, key=k1, bias_init=_normal_bias)
    head = init_head(H, C, key=k2, bias_init=_normal_bias)
    return CellParams(*layer, *head)


def test_equations_verbatim():
    p = _params()
    a_prev = jnp.linspace(-1, 1, 4)
    x_t = jnp.arange(5.0) / 5
    a, y_hat = rnn_cell(p, a_prev, x_t, output_activation="softmax")
    W_a, b_a, W_y, b_y = (np.asarray(v, np.float64) for v in p)
    a_np, x_np = np.asarray(a_prev, np.float64), np.asarray(x_t, np.float64)
    a_ref = np.tanh(W_a @ np.concatenate([a_np, x_np]) + b_a)  # stacked form
    a_ref2 = np.tanh(W_a[:, :4] @ a_np + W_a[:, 4:] @ x_np + b_a)  # split form
    z = W_y @ a_ref + b_y
    np.testing.assert_allclose(a, a_ref, rtol=1e-6)
    np.testing.assert_allclose(a_ref, a_ref2, rtol=1e-12)
    np.testing.assert_allclose(y_hat, np.exp(z) / np.exp(z).sum(), rtol=1e-5)


def test_relu_and_output_activations():
    p = _params()
    a_prev, x_t = jnp.ones(4), jnp.ones(5)
    a, logits = rnn_cell(p, a_prev, x_t, activation="relu")
    z = p.W_a @ jnp.concatenate([a_prev, x_t]) + p.b_a
    np.testing.assert_allclose(a, jnp.maximum(z, 0), rtol=1e-6)
    _, probs = rnn_cell(p, a_prev, x_t, activation="relu", output_activation="sigmoid")
    np.testing.assert_allclose(probs, jax.nn.sigmoid(logits), rtol=1e-6)


def test_token_id_is_the_one_hot_column():
    p = _params(D=9)
    for i in range(9):
        a_id, y_id = rnn_cell(p, jnp.ones(4), jnp.int32(i))
        a_oh, y_oh = rnn_cell(p, jnp.ones(4), jax.nn.one_hot(i, 9))
        np.testing.assert_allclose(a_id, a_oh, rtol=1e-6)
        np.testing.assert_allclose(y_id, y_oh, rtol=1e-6)


def test_scan_signature_needs_no_adapter():
    p = _params()
    xs = jax.random.normal(jax.random.key(1), (6, 5))
    a_T, y_hats = jax.lax.scan(partial(rnn_cell, p), jnp.zeros(4), xs)
    a = jnp.zeros(4)
    for t in range(6):
        a, y = rnn_cell(p, a, xs[t])
        np.testing.assert_allclose(y_hats[t], y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a_T, a, rtol=1e-6)
    # vmap over a batch of examples.
    a_b, y_b = jax.vmap(partial(rnn_cell, p))(jnp.zeros((2, 4)), xs[:2])
    assert a_b.shape == (2, 4) and y_b.shape == (2, 3)


def test_layer_params_alone_emit_the_state():
    p = _params()
    a, y_hat = rnn_cell(p.layer, jnp.zeros(4), jnp.ones(5))
    np.testing.assert_array_equal(a, y_hat)


def test_errors():
    p = _params()
    with pytest.raises(ValueError, match=r"`a_prev` must have shape \(H,\) = \(4,\), got \(1, 4\)"):
        rnn_cell(p, jnp.zeros((1, 4)), jnp.ones(5))
    with pytest.raises(
        ValueError,
        match=r"`x_t` must be a vector of shape \(D,\) = \(5,\) or an integer token id, got shape \(6,\)",
    ):
        rnn_cell(p, jnp.zeros(4), jnp.ones(6))
    with pytest.raises(
        ValueError, match="`x_t` as a scalar must be an integer token id, got dtype float32"
    ):
        rnn_cell(p, jnp.zeros(4), jnp.float32(2))
    with pytest.raises(
        ValueError,
        match=r"`activation` must be one of \['relu', 'tanh'\] or a callable, got 'gelu'",
    ):
        rnn_cell(p, jnp.zeros(4), jnp.ones(5), activation="gelu")
    with pytest.raises(ValueError, match="`output_activation` must be None, one of"):
        rnn_cell(p, jnp.zeros(4), jnp.ones(5), output_activation="max")


def test_errors_from_issue_11():
    from rnn_jax import init_rnn

    params = init_rnn(jax.random.key(0), 5, 4, 3, token_inputs=True)
    with pytest.raises(ValueError, match="`params` must be a CellParams .* or a LayerParams"):
        rnn_cell(params, jnp.zeros(4), jnp.int32(1))
    layer = params.layers[0][0]
    # An out-of-range id gives NaN, also under jit (no clamped or wrapped-around column).
    step = jax.jit(lambda x: rnn_cell(layer, jnp.zeros(4), x)[0])
    for bad in (5, 7, -1):
        assert bool(jnp.all(jnp.isnan(step(jnp.int32(bad))))), bad
    assert bool(jnp.all(jnp.isfinite(step(jnp.int32(4)))))
