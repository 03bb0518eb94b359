"""Parameters: shapes, initialisers, converters, pytree behaviour, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import (
    LayerParams,
    RNNParams,
    SplitLayerParams,
    count_params,
    init_head,
    init_layer,
    init_rnn,
    split_layer,
    stack_layer,
)
from rnn_jax.train import optimizer_step


def _normal_bias(key, shape, dtype):
    return 0.3 * jax.random.normal(key, shape, dtype)


def test_default_initialisation():
    layer = init_layer(7, 16, key=jax.random.key(0))
    assert layer.W_a.shape == (16, 23) and layer.b_a.shape == (16,)
    W_aa, W_ax, b_a = split_layer(layer)
    np.testing.assert_allclose(W_aa @ W_aa.T, np.eye(16), atol=1e-5)  # orthogonal
    limit = np.sqrt(6.0 / (7 + 16))  # Glorot uniform over fan_in D, fan_out H
    assert np.all(np.abs(W_ax) <= limit) and np.abs(W_ax).max() > 0.5 * limit
    np.testing.assert_array_equal(b_a, 0.0)
    head = init_head(16, 3, key=jax.random.key(1))
    assert head.W_y.shape == (3, 16) and np.all(head.b_y == 0.0)


def test_initialisers_are_selectable():
    layer = init_layer(
        3,
        4,
        key=jax.random.key(0),
        recurrent_init="zeros",
        input_init="lecun_normal",
        bias_init=lambda key, shape, dtype: jnp.full(shape, 0.5, dtype),
    )
    np.testing.assert_array_equal(layer.W_aa, 0.0)
    np.testing.assert_array_equal(layer.b_a, 0.5)
    assert np.std(np.asarray(layer.W_ax)) > 0


def test_key_is_required_and_explicit():
    with pytest.raises(TypeError):
        init_layer(3, 4)  # no default key
    with pytest.raises(TypeError):
        init_layer(3, 4, jax.random.key(0))  # keyword-only
    with pytest.raises(ValueError, match="`key` must be a jax.random key array, got int"):
        init_rnn(0, 3, 4, 2)
    a = init_rnn(jax.random.key(0), 3, 4, 2)
    b = init_rnn(jax.random.key(0), 3, 4, 2)
    c = init_rnn(jax.random.key(1), 3, 4, 2)
    np.testing.assert_array_equal(a.layers[0][0].W_a, b.layers[0][0].W_a)
    assert not np.array_equal(a.layers[0][0].W_a, c.layers[0][0].W_a)


def test_deep_bidirectional_layout():
    p = init_rnn(jax.random.key(0), 5, 4, 3, num_layers=3, bidirectional=True)
    assert [[q.W_a.shape for q in layer] for layer in p.layers] == [
        [(4, 9)] * 2,
        [(4, 12)] * 2,
        [(4, 12)] * 2,
    ]
    assert p.head.W_y.shape == (3, 8)
    assert (p.num_layers, p.num_directions, p.hidden_size, p.input_size, p.output_size) == (
        3,
        2,
        4,
        5,
        3,
    )
    assert not np.array_equal(p.layers[0][0].W_a, p.layers[0][1].W_a)  # distinct keys per direction
    s = init_rnn(jax.random.key(0), 5, 4, 3, num_layers=2, bidirectional=True, merge="sum")
    assert s.layers[1][0].W_a.shape == (4, 8) and s.head.W_y.shape == (3, 4)
    assert count_params(p) == 2 * (4 * 9 + 4) + 4 * (4 * 12 + 4) + 3 * 8 + 3


def test_converters_round_trip_exactly():
    layer = init_layer(6, 5, key=jax.random.key(0), bias_init=_normal_bias)
    split = split_layer(layer)
    assert split.W_aa.shape == (5, 5) and split.W_ax.shape == (5, 6)
    back = stack_layer(split)
    np.testing.assert_array_equal(back.W_a, layer.W_a)
    np.testing.assert_array_equal(back.b_a, layer.b_a)
    again = split_layer(back)
    for x, y in zip(split, again, strict=True):
        np.testing.assert_array_equal(x, y)


def test_pytree_leaves_are_arrays_and_config_is_static():
    p = init_rnn(jax.random.key(0), 3, 4, 2, bidirectional=True, activation="relu", merge="mean")
    leaves, treedef = jax.tree_util.tree_flatten(p)
    assert len(leaves) == 2 * 2 + 2
    q = jax.tree_util.tree_unflatten(treedef, leaves)
    assert isinstance(q, RNNParams) and (q.activation, q.merge) == ("relu", "mean")
    assert p.config() == dict(
        input_size=3,
        hidden_size=4,
        output_size=2,
        num_layers=1,
        bidirectional=True,
        activation="relu",
        merge="mean",
        token_inputs=False,
    )
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, p)
    assert doubled.activation == "relu"


def test_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`hidden_size` must be a positive int, got 0"):
        init_rnn(key, 3, 0, 2)
    with pytest.raises(ValueError, match="`input_size` must be a positive int, got 2.5"):
        init_rnn(key, 2.5, 4, 2)
    with pytest.raises(ValueError, match="`num_layers` must be a positive int, got -1"):
        init_rnn(key, 3, 4, 2, num_layers=-1)
    with pytest.raises(
        ValueError, match=r"`activation` must be one of \('tanh', 'relu'\), got 'sigmoid'"
    ):
        init_rnn(key, 3, 4, 2, activation="sigmoid")
    with pytest.raises(ValueError, match=r"`merge` must be one of .* got 'max'"):
        init_rnn(key, 3, 4, 2, merge="max")
    with pytest.raises(
        ValueError, match=r"`recurrent_init` must be a callable or one of .* got 'eye'"
    ):
        init_rnn(key, 3, 4, 2, recurrent_init="eye")
    nan_init = lambda key, shape, dtype: jnp.full(shape, jnp.nan, dtype)  # noqa: E731
    with pytest.raises(ValueError, match=r"`input_init` produced non-finite values \(NaN or inf\)"):
        init_rnn(key, 3, 4, 2, input_init=nan_init)
    with pytest.raises(
        ValueError, match=r"`recurrent_init\(...\)` must have shape \(4, 4\), got \(3,\)"
    ):
        init_layer(3, 4, key=key, recurrent_init=lambda k, s, d: jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`W_aa` must have shape \(4, 4\), got \(4, 3\)"):
        stack_layer(SplitLayerParams(jnp.zeros((4, 3)), jnp.zeros((4, 2)), jnp.zeros(4)))
    with pytest.raises(
        ValueError, match=r"`W_ax` must have shape \(H, D\) with H = 4, got \(3, 2\)"
    ):
        stack_layer(SplitLayerParams(jnp.zeros((4, 4)), jnp.zeros((3, 2)), jnp.zeros(4)))


def test_layer_properties():
    layer = LayerParams(jnp.arange(12.0).reshape(2, 6), jnp.zeros(2))
    assert (layer.hidden_size, layer.input_size) == (2, 4)
    np.testing.assert_array_equal(layer.W_aa, [[0, 1], [6, 7]])


def test_initialisers_are_traceable_vmap_and_jit():
    keys = jax.random.split(jax.random.key(0), 8)
    ensemble = jax.vmap(lambda k: init_rnn(k, 5, 8, 3))(keys)
    assert ensemble.layers[0][0].W_a.shape == (8, 8, 13)
    one = init_rnn(keys[3], 5, 8, 3)
    np.testing.assert_array_equal(ensemble.layers[0][0].W_a[3], one.layers[0][0].W_a)
    jitted = jax.jit(init_rnn, static_argnums=(1, 2, 3))(keys[3], 5, 8, 3)
    np.testing.assert_allclose(jitted.head.W_y, one.head.W_y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_dtypes_with_the_default_orthogonal_init(dtype):
    p = init_rnn(jax.random.key(0), 5, 8, 3, dtype=dtype, num_layers=2)
    assert {x.dtype for x in jax.tree_util.tree_leaves(p)} == {jnp.dtype(dtype)}
    # drawn in float32 then cast: W_aa is the float32 orthogonal matrix, rounded
    ref = init_rnn(jax.random.key(0), 5, 8, 3, num_layers=2)
    np.testing.assert_array_equal(
        np.asarray(p.layers[0][0].W_a), np.asarray(ref.layers[0][0].W_a.astype(dtype))
    )


def test_seeds_trained_in_one_jit_vmap_program_equal_separate_runs():
    import optax

    from rnn_jax import masked_softmax_cross_entropy, rnn_apply

    xs = jax.random.normal(jax.random.key(1), (6, 7, 3))
    labels = jax.random.randint(jax.random.key(2), (6, 7), 0, 2)
    lengths = jnp.array([7, 5, 3, 1, 0, 6])
    opt = optax.adam(1e-2)

    def train(key):
        params = init_rnn(key, 3, 8, 2)

        def loss(p):
            return masked_softmax_cross_entropy(rnn_apply(p, xs, lengths), labels, lengths=lengths)

        def step(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            return optimizer_step(opt, g, s, p), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=5)
        return params

    keys = jax.random.split(jax.random.key(0), 4)
    together = jax.jit(jax.vmap(train))(keys)
    separate = jax.jit(train)
    for i, k in enumerate(keys):
        one = separate(k)
        for a, b in zip(
            jax.tree_util.tree_leaves(together), jax.tree_util.tree_leaves(one), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=2e-5, atol=2e-5)


def test_stack_view_and_cell_field():
    from rnn_jax import StackParams

    p = init_rnn(jax.random.key(0), 5, 8, 3, num_layers=2, bidirectional=True)
    assert isinstance(p.stack, StackParams) and p.stack.layers is p.layers
    assert (p.cell, p.stack.cell, p.stack.merged_size) == ("rnn", "rnn", 16)
    assert "cell" not in p.config()  # classic-cell checkpoints keep their configuration
    with pytest.raises(ValueError, match="`cell` must be one of"):
        init_rnn(jax.random.key(0), 5, 8, 3, cell="magic")


def test_gated_cells_plug_in_point():
    import importlib.util

    if importlib.util.find_spec("rnn_jax.cells") is not None:
        pytest.skip("rnn_jax.cells is installed: its own tests cover cell='gru'/'lstm'")
    with pytest.raises(ValueError, match="needs the gated cells of rnn_jax.cells"):
        init_rnn(jax.random.key(0), 5, 8, 3, cell="gru")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gate_init_keras_for_gated_cells(cell):
    """init_rnn(cell=..., gate_init="keras"): every layer is init_gated_layer's Keras scheme
    (the LSTM's forget-gate bias one, the other biases zero, orthogonal W_h blocks); the
    default stays PyTorch's."""
    from rnn_jax.cells import init_gated_layer

    D, H, L = 5, 4, 2
    key = jax.random.key(3)
    p = init_rnn(key, D, H, 3, cell=cell, num_layers=L, bidirectional=True, gate_init="keras")
    keys = jax.random.split(key, L * 2 + 1)
    G = 3 if cell == "gru" else 4
    for l, layer in enumerate(p.layers):
        for d, q in enumerate(layer):
            want = init_gated_layer(
                cell, D if l == 0 else 2 * H, H, key=keys[l * 2 + d], scheme="keras"
            )
            for u, v in zip(q, want, strict=True):
                np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
            for g in range(G):
                W_hg = np.asarray(q.W_a[g * H : (g + 1) * H, :H])
                np.testing.assert_allclose(W_hg @ W_hg.T, np.eye(H), atol=1e-5)
            if cell == "lstm":
                expected = np.zeros(4 * H, np.float32)
                expected[H : 2 * H] = 1.0  # the forget gate
                np.testing.assert_array_equal(np.asarray(q.b_a), expected)
            else:
                assert not np.any(np.asarray(q.b_x)) and not np.any(np.asarray(q.b_h))
    torch_like = init_rnn(key, D, H, 3, cell=cell, num_layers=L, bidirectional=True)
    assert not np.array_equal(
        np.asarray(torch_like.layers[0][0].W_a), np.asarray(p.layers[0][0].W_a)
    )
    assert float(jnp.max(jnp.abs(torch_like.layers[0][0].W_a))) <= 1 / H**0.5
    # Traceable like the default: an ensemble of Keras-initialised LSTMs.
    ens = jax.vmap(lambda k: init_rnn(k, D, H, 3, cell=cell, gate_init="keras"))(
        jax.random.split(key, 3)
    )
    assert ens.layers[0][0].W_a.shape == (3, G * H, H + D)


def test_gate_init_errors():
    with pytest.raises(ValueError, match=r"`gate_init` must be one of \('torch', 'keras'\)"):
        init_rnn(jax.random.key(0), 5, 8, 3, cell="lstm", gate_init="glorot")
    with pytest.raises(ValueError, match=r"classic cell \(cell='rnn'\) takes recurrent_init="):
        init_rnn(jax.random.key(0), 5, 8, 3, gate_init="keras")
