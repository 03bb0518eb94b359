"""rnn_jax.interop: weights to and from torch.nn.RNN/GRU/LSTM and flax.linen's cells.

The peers are the references here: a converted network must compute what the peer
computes on the same (padded, variable-length) batch, and a round trip must be exact.
"""

import dataclasses
import subprocess
import sys
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_jax import (
    HeadParams,
    LayerParams,
    RNNParams,
    check_params,
    init_rnn,
    rnn_apply,
    rnn_classify,
    rnn_layers,
    rnn_unroll,
)
from rnn_jax.cells import (
    GATED_CELLS,
    GRULayerParams,
    LSTMLayerParams,
    carry_zeros,
    init_gated_layer,
    layer_unroll,
    num_gates,
)
from rnn_jax.interop import (
    flax_module,
    from_flax,
    from_torch,
    gated_layers_from_flax,
    gated_layers_from_torch,
    gated_layers_to_flax,
    gated_layers_to_torch,
    to_flax,
    to_torch,
)

ATOL = 1e-5

# The converted networks run under jit: compiled once per configuration and shapes, where
# an eager call traces and compiles every scan again (about 3x the CPU time). The eager path
# is checked against jit in test_network (test_jit_and_no_jit_agree).
_layers = jax.jit(rnn_layers, static_argnames="return_cell_state")
_apply = jax.jit(rnn_apply)
_classify = jax.jit(rnn_classify)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip(
        "torch",
        reason="PyTorch is not installed (`pip install 'rnn_jax[torch]'`): torch interop not tested",
    )


def random_params(
    seed,
    D,
    H,
    C,
    *,
    num_layers=1,
    bidirectional=False,
    activation="tanh",
    merge="concat",
    token_inputs=False,
    dtype=np.float32,
):
    """RNNParams of init_rnn's shapes with every array (biases included) drawn at random.

    Drawn with NumPy rather than init_rnn + jax.random: no compilation per shape, which
    keeps the hypothesis tests fast.
    """
    rng = np.random.default_rng(seed)
    dirs = 2 if bidirectional else 1
    H_out = dirs * H if (bidirectional and merge == "concat") else H

    def draw(*shape):
        return jnp.asarray((0.5 * rng.normal(size=shape)).astype(dtype))

    layers = tuple(
        tuple(LayerParams(draw(H, H + (D if l == 0 else H_out)), draw(H)) for _ in range(dirs))
        for l in range(num_layers)
    )
    params = RNNParams(
        layers=layers,
        head=HeadParams(draw(C, H_out), draw(C)),
        activation=activation,
        merge=merge,
        token_inputs=token_inputs,
    )
    check_params(params)
    return params


def assert_params_identical(p, q):
    """Same structure and static configuration, bit-identical arrays of the same dtype."""
    assert jax.tree.structure(p) == jax.tree.structure(q)
    for u, v in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def batch(seed, B, T, D, *, dtype=np.float32):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(B, T, D)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B)  # torch packing needs lengths >= 1
    lengths[0] = T  # so that pad_packed_sequence's output has T steps
    return xs, lengths.astype(np.int64)


def valid(lengths, T):
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


# --------------------------------------------------------------------------- PyTorch


def torch_run(torch, rnn, xs, lengths):
    """``(output (B, T, H_out), h_n)`` of ``rnn`` on a packed, unsorted batch, batch-first."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    x = torch.from_numpy(xs)
    if not rnn.batch_first:
        x = x.transpose(0, 1)
    packed = pack_padded_sequence(
        x, torch.from_numpy(lengths), batch_first=rnn.batch_first, enforce_sorted=False
    )
    with torch.no_grad():
        out, h_n = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=xs.shape[1])
    return out, h_n


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_from_torch_matches_torch_on_packed_sequences(
    torch, num_layers, bidirectional, nonlinearity
):
    torch.manual_seed(num_layers * 10 + bidirectional)
    D, H, C, B, T = 3, 4, 2, 5, 7
    rnn = torch.nn.RNN(
        D,
        H,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        bidirectional=bidirectional,
        batch_first=True,
    )
    dirs = 2 if bidirectional else 1
    linear = torch.nn.Linear(dirs * H, C)
    xs, lengths = batch(num_layers, B, T, D)
    out, h_n = torch_run(torch, rnn, xs, lengths)

    params = from_torch(rnn, linear)
    assert params.activation == nonlinearity and params.merge == "concat"
    assert (params.num_layers, params.bidirectional) == (num_layers, bidirectional)
    assert params.head.W_y.dtype == jnp.float32

    a_seq, a_last = _layers(params, xs, lengths)
    np.testing.assert_allclose(a_seq, out.numpy(), atol=ATOL)  # zero at padding on both sides
    np.testing.assert_allclose(a_last, h_n.numpy(), atol=ATOL)

    m = valid(lengths, T)
    with torch.no_grad():
        y_torch = linear(out).numpy()
        h_top = torch.cat([h_n[-2], h_n[-1]], -1) if bidirectional else h_n[-1]
        y_class = linear(h_top).numpy()
    y_hat = np.asarray(_apply(params, xs, lengths))
    np.testing.assert_allclose(y_hat[m], y_torch[m], atol=ATOL)
    assert np.all(y_hat[~m] == 0)  # torch's linear gives its bias at padding; rnn_apply zero
    np.testing.assert_allclose(_classify(params, xs, lengths), y_class, atol=ATOL)


def test_from_torch_without_bias_and_time_major_module(torch):
    torch.manual_seed(1)
    D, H, B, T = 3, 4, 4, 6
    rnn = torch.nn.RNN(D, H, num_layers=2, bias=False, bidirectional=True)  # batch_first=False
    xs, lengths = batch(2, B, T, D)
    out, h_n = torch_run(torch, rnn, xs, lengths)  # fed (T, B, D), unpacked batch-first
    params = from_torch(rnn)
    for layer in params.layers:
        for p in layer:
            assert np.all(np.asarray(p.b_a) == 0)
    a_seq, a_last = _layers(params, xs, lengths)
    np.testing.assert_allclose(a_seq, out.numpy(), atol=ATOL)
    np.testing.assert_allclose(a_last, h_n.numpy(), atol=ATOL)


def test_from_torch_stacks_weights_and_folds_the_two_biases_exactly(torch):
    torch.manual_seed(2)
    rnn = torch.nn.RNN(3, 4, num_layers=2, bidirectional=True)
    params = from_torch(rnn)
    for k in range(2):
        for d, sfx in enumerate([f"_l{k}", f"_l{k}_reverse"]):
            t = {n: getattr(rnn, n + sfx).detach().numpy() for n in ("weight_ih", "weight_hh")}
            b = {n: getattr(rnn, n + sfx).detach().numpy() for n in ("bias_ih", "bias_hh")}
            p = params.layers[k][d]
            np.testing.assert_array_equal(p.W_aa, t["weight_hh"])
            np.testing.assert_array_equal(p.W_ax, t["weight_ih"])
            np.testing.assert_array_equal(p.b_a, b["bias_ih"] + b["bias_hh"])


def test_from_torch_without_linear_has_the_identity_head(torch):
    torch.manual_seed(3)
    H, B, T = 4, 3, 5
    rnn = torch.nn.RNN(2, H, bidirectional=True, batch_first=True)
    params = from_torch(rnn)
    np.testing.assert_array_equal(params.head.W_y, np.eye(2 * H, dtype=np.float32))
    np.testing.assert_array_equal(params.head.b_y, np.zeros(2 * H, np.float32))
    xs, lengths = batch(3, B, T, 2)
    out, _ = torch_run(torch, rnn, xs, lengths)
    np.testing.assert_allclose(_apply(params, xs, lengths), out.numpy(), atol=ATOL)


def test_from_torch_keeps_float64(torch, x64):
    torch.manual_seed(4)
    rnn = torch.nn.RNN(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    linear = torch.nn.Linear(8, 2).double()
    params = from_torch(rnn, linear)
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(params))
    xs, lengths = batch(4, 4, 6, 3, dtype=np.float64)
    out, h_n = torch_run(torch, rnn, xs, lengths)
    a_seq, a_last = _layers(params, xs, lengths)
    np.testing.assert_allclose(a_seq, out.numpy(), atol=1e-12)
    np.testing.assert_allclose(a_last, h_n.numpy(), atol=1e-12)
    assert_params_identical(from_torch(*to_torch(params)), params)
    assert to_torch(params)[0].weight_hh_l0.dtype == torch.float64


def test_from_torch_float64_without_x64_is_an_error_unless_dtype_given(torch):
    rnn = torch.nn.RNN(3, 4).double()
    with pytest.raises(
        ValueError, match=r"float64 but JAX's 64-bit mode is off.*dtype=jnp.float32"
    ):
        from_torch(rnn)
    params = from_torch(rnn, dtype=jnp.float32)
    assert params.layers[0][0].W_a.dtype == jnp.float32


def test_from_torch_folds_an_embedding_and_reads_token_ids(torch):
    torch.manual_seed(5)
    V, E, H, C, B, T = 11, 3, 4, 2, 4, 6
    emb = torch.nn.Embedding(V, E, padding_idx=0)
    rnn = torch.nn.RNN(E, H, num_layers=2, bidirectional=True, batch_first=True)
    linear = torch.nn.Linear(2 * H, C)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, V, size=(B, T))
    _, lengths = batch(5, B, T, 1)
    with torch.no_grad():
        xs = emb(torch.from_numpy(ids)).numpy()
    out, h_n = torch_run(torch, rnn, xs, lengths)

    params = from_torch(rnn, linear, embedding=emb)
    assert params.token_inputs and params.input_size == V
    assert params.layers[0][0].W_a.shape == (H, H + V)
    a_seq, a_last = _layers(params, jnp.asarray(ids, jnp.int32), lengths)
    np.testing.assert_allclose(a_seq, out.numpy(), atol=ATOL)
    np.testing.assert_allclose(a_last, h_n.numpy(), atol=ATOL)


def test_from_torch_token_inputs_is_one_hot_in_torch(torch):
    torch.manual_seed(6)
    V, H, B, T = 7, 4, 3, 5
    rnn = torch.nn.RNN(V, H, batch_first=True)
    ids = np.random.default_rng(6).integers(0, V, size=(B, T))
    _, lengths = batch(6, B, T, 1)
    one_hot = np.eye(V, dtype=np.float32)[ids]
    out, h_n = torch_run(torch, rnn, one_hot, lengths)
    params = from_torch(rnn, token_inputs=True)
    assert params.token_inputs
    a_seq, a_last = _layers(params, jnp.asarray(ids, jnp.int32), lengths)
    np.testing.assert_allclose(a_seq, out.numpy(), atol=ATOL)
    np.testing.assert_allclose(a_last, h_n.numpy(), atol=ATOL)
    rnn_back, _ = to_torch(params)
    assert rnn_back.input_size == V


@pytest.mark.parametrize(
    "num_layers, bidirectional, activation",
    [(1, False, "tanh"), (2, True, "relu"), (3, True, "tanh")],
)
def test_to_torch_computes_rnn_apply(torch, num_layers, bidirectional, activation):
    D, H, C, B, T = 3, 4, 2, 5, 6
    params = random_params(
        num_layers,
        D,
        H,
        C,
        num_layers=num_layers,
        bidirectional=bidirectional,
        activation=activation,
    )
    rnn, linear = to_torch(params)
    assert rnn.batch_first and rnn.bias and rnn.nonlinearity == activation
    assert (rnn.num_layers, rnn.bidirectional, rnn.hidden_size) == (num_layers, bidirectional, H)
    for k in range(num_layers):
        for d, sfx in enumerate([f"_l{k}", f"_l{k}_reverse"][: 1 + bidirectional]):
            p = params.layers[k][d]
            np.testing.assert_array_equal(getattr(rnn, "bias_ih" + sfx).detach().numpy(), p.b_a)
            assert np.all(getattr(rnn, "bias_hh" + sfx).detach().numpy() == 0)
    xs, lengths = batch(7, B, T, D)
    out, h_n = torch_run(torch, rnn, xs, lengths)
    a_seq, a_last = _layers(params, xs, lengths)
    np.testing.assert_allclose(a_seq, out.numpy(), atol=ATOL)
    np.testing.assert_allclose(a_last, h_n.numpy(), atol=ATOL)
    m = valid(lengths, T)
    with torch.no_grad():
        y_torch = linear(out).numpy()
    np.testing.assert_allclose(np.asarray(_apply(params, xs, lengths))[m], y_torch[m], atol=ATOL)

    rnn_tm, _ = to_torch(params, batch_first=False)
    assert not rnn_tm.batch_first
    np.testing.assert_allclose(torch_run(torch, rnn_tm, xs, lengths)[0].numpy(), out.numpy())


@settings(max_examples=5)
@given(
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    activation=st.sampled_from(["tanh", "relu"]),
    sizes=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)),
    seed=st.integers(0, 1000),
)
def test_torch_round_trip_is_exact(num_layers, bidirectional, activation, sizes, seed):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    D, H, C = sizes
    params = random_params(
        seed, D, H, C, num_layers=num_layers, bidirectional=bidirectional, activation=activation
    )
    assert_params_identical(from_torch(*to_torch(params)), params)


def test_to_torch_leaves_the_torch_rng_alone(torch):
    params = random_params(0, 3, 4, 2, num_layers=2, bidirectional=True)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    to_torch(params)
    assert torch.equal(torch.rand(3), expected)


def test_to_torch_merge_must_be_concat_when_bidirectional(torch):
    params = random_params(0, 3, 4, 2, bidirectional=True, merge="sum")
    with pytest.raises(ValueError, match=r"`params.merge` must be 'concat'.*got 'sum'"):
        to_torch(params)
    uni = random_params(0, 3, 4, 2, merge="sum")  # one direction: nothing is merged
    rnn, _ = to_torch(uni)
    assert not rnn.bidirectional


def test_from_torch_rejects_other_modules(torch):
    with pytest.raises(
        ValueError, match=r"`rnn` must be a torch.nn.RNN, torch.nn.GRU or torch.nn.LSTM, got Linear"
    ):
        from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"`rnn.proj_size` must be 0"):
        from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    rnn = torch.nn.RNN(3, 4)
    rnn.proj_size = 2  # torch refuses it for nn.RNN at construction; a tampered module
    with pytest.raises(ValueError, match=r"`rnn.proj_size` must be 0"):
        from_torch(rnn)


def test_from_torch_checks_the_head_and_embedding(torch):
    rnn = torch.nn.RNN(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match=r"`linear.in_features` must be .* 2H = 8, got 4"):
        from_torch(rnn, torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"`linear` must be a torch.nn.Linear or None, got RNN"):
        from_torch(rnn, rnn)
    with pytest.raises(ValueError, match=r"embedding_dim = rnn.input_size = 3, got 5"):
        from_torch(rnn, embedding=torch.nn.Embedding(10, 5))
    with pytest.raises(ValueError, match=r"`embedding.max_norm` must be None"):
        from_torch(rnn, embedding=torch.nn.Embedding(10, 3, max_norm=1.0))
    with pytest.raises(ValueError, match=r"`token_inputs=False` contradicts `embedding`"):
        from_torch(rnn, embedding=torch.nn.Embedding(10, 3), token_inputs=False)
    with pytest.raises(ValueError, match=r"`embedding` must be a torch.nn.Embedding, got Linear"):
        from_torch(rnn, embedding=torch.nn.Linear(3, 3))


def test_missing_torch_raises_importerror_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    params = random_params(0, 3, 4, 2)
    with pytest.raises(ImportError, match=r"pip install torch"):
        to_torch(params)
    with pytest.raises(ImportError, match=r"pip install torch"):
        from_torch(object())


def test_importing_rnn_jax_does_not_import_torch():
    code = (
        "import rnn_jax, rnn_jax.interop, sys; assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Flax


def flax_cell(H, activation):
    return nn.SimpleCell(H, activation_fn={"tanh": nn.tanh, "relu": nn.relu}[activation])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_from_flax_forward_rnn_matches_on_valid_steps(activation):
    D, H, B, T = 3, 4, 5, 7
    xs, lengths = batch(10, B, T, D)
    module = nn.RNN(flax_cell(H, activation), return_carry=True)
    variables = module.init(jax.random.key(0), xs)
    carry, ys = module.apply(variables, xs, seq_lengths=lengths)

    params = from_flax(variables, activation=activation)
    assert params.num_layers == 1 and not params.bidirectional
    a_seq, a_last = _layers(params, xs, lengths)
    m = valid(lengths, T)
    # Flax does not zero the outputs at padding: compare valid steps, and the carries.
    np.testing.assert_allclose(np.asarray(a_seq)[m], np.asarray(ys)[m], atol=ATOL)
    np.testing.assert_allclose(a_last[0], carry, atol=ATOL)


def test_from_flax_backward_rnn_is_reverse_keep_order():
    D, H, B, T = 3, 4, 5, 7
    xs, lengths = batch(11, B, T, D)
    module = nn.RNN(nn.SimpleCell(H), reverse=True, keep_order=True, return_carry=True)
    variables = module.init(jax.random.key(1), xs)
    carry, ys = module.apply(variables, xs, seq_lengths=lengths)

    layer = from_flax(variables).layers[0][0]
    a_seq, a_last = rnn_unroll(layer, xs, lengths, reverse=True)
    m = valid(lengths, T)
    np.testing.assert_allclose(np.asarray(a_seq)[m], np.asarray(ys)[m], atol=ATOL)
    np.testing.assert_allclose(a_last, carry, atol=ATOL)


def test_from_flax_bidirectional_matches_nn_bidirectional():
    D, H, B, T = 3, 4, 5, 7
    xs, lengths = batch(12, B, T, D)
    module = nn.Bidirectional(nn.RNN(nn.SimpleCell(H)), nn.RNN(nn.SimpleCell(H)), return_carry=True)
    variables = module.init(jax.random.key(2), xs)
    (carry_f, carry_b), ys = module.apply(variables, xs, seq_lengths=lengths)

    params = from_flax(variables)
    assert params.bidirectional and params.merge == "concat"
    a_seq, a_last = _layers(params, xs, lengths)
    m = valid(lengths, T)
    np.testing.assert_allclose(np.asarray(a_seq)[m], np.asarray(ys)[m], atol=ATOL)
    np.testing.assert_allclose(a_last[0], carry_f, atol=ATOL)
    np.testing.assert_allclose(a_last[1], carry_b, atol=ATOL)


def test_from_flax_deep_bidirectional_from_a_list_of_layers():
    D, H, C, B, T = 3, 4, 2, 5, 7
    xs, lengths = batch(13, B, T, D)
    layers = [
        nn.Bidirectional(nn.RNN(nn.SimpleCell(H)), nn.RNN(nn.SimpleCell(H)), return_carry=True)
        for _ in range(2)
    ]
    dense = nn.Dense(C)
    h, variables, carries = xs, [], []
    for l, layer in enumerate(layers):
        v = layer.init(jax.random.key(3 + l), h)
        (c_f, c_b), h = layer.apply(v, h, seq_lengths=lengths)  # padding of h is not zero
        variables.append(v["params"])
        carries += [c_f, c_b]
    head = dense.init(jax.random.key(9), h)["params"]
    y_flax = np.asarray(dense.apply({"params": head}, h))

    params = from_flax(variables, head=head)
    assert params.num_layers == 2 and params.output_size == C
    a_seq, a_last = _layers(params, xs, lengths)
    m = valid(lengths, T)
    np.testing.assert_allclose(np.asarray(a_seq)[m], np.asarray(h)[m], atol=ATOL)
    np.testing.assert_allclose(a_last, np.stack(carries), atol=ATOL)
    np.testing.assert_allclose(np.asarray(_apply(params, xs, lengths))[m], y_flax[m], atol=ATOL)


@pytest.mark.parametrize(
    "config",
    [
        dict(num_layers=1, bidirectional=False, activation="tanh", merge="concat"),
        dict(num_layers=2, bidirectional=True, activation="relu", merge="concat"),
        dict(num_layers=2, bidirectional=True, activation="tanh", merge="sum"),
    ],
)
def test_to_flax_and_flax_module_compute_rnn_apply(config):
    D, H, C, B, T = 3, 4, 2, 5, 6
    params = random_params(20, D, H, C, **config)
    xs, lengths = batch(20, B, T, D)
    variables = to_flax(params)
    y_flax = flax_module(params).apply(variables, xs, seq_lengths=lengths)
    np.testing.assert_allclose(y_flax, _apply(params, xs, lengths), atol=ATOL)  # padding too
    back = from_flax(variables, activation=config["activation"], merge=config["merge"])
    assert_params_identical(back, params)


def test_flax_module_init_has_the_to_flax_layout_and_reads_token_ids():
    V, H, C, B, T = 9, 4, 3, 4, 5
    params = random_params(21, V, H, C, num_layers=2, bidirectional=True, token_inputs=True)
    module = flax_module(params)
    ids = jnp.asarray(np.random.default_rng(21).integers(0, V, size=(B, T)), jnp.int32)
    _, lengths = batch(21, B, T, 1)
    fresh = module.init(jax.random.key(0), ids, seq_lengths=lengths)
    assert jax.tree.structure(fresh) == jax.tree.structure(to_flax(params))
    converted = from_flax(fresh, token_inputs=True)
    np.testing.assert_allclose(
        module.apply(fresh, ids, seq_lengths=lengths),
        _apply(converted, ids, lengths),
        atol=ATOL,
    )


def test_from_flax_folds_an_embed():
    V, E, H, B, T = 10, 3, 4, 4, 6
    ids = jnp.asarray(np.random.default_rng(22).integers(0, V, size=(B, T)), jnp.int32)
    _, lengths = batch(22, B, T, 1)
    embed, rnn = nn.Embed(V, E), nn.RNN(nn.SimpleCell(H), return_carry=True)
    v_embed = embed.init(jax.random.key(0), ids)
    x = embed.apply(v_embed, ids)
    v_rnn = rnn.init(jax.random.key(1), x)
    carry, ys = rnn.apply(v_rnn, x, seq_lengths=lengths)

    params = from_flax(v_rnn, embedding=v_embed["params"])
    assert params.token_inputs and params.input_size == V
    a_seq, a_last = _layers(params, ids, lengths)
    m = valid(lengths, T)
    np.testing.assert_allclose(np.asarray(a_seq)[m], np.asarray(ys)[m], atol=ATOL)
    np.testing.assert_allclose(a_last[0], carry, atol=ATOL)


@settings(max_examples=5)
@given(
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    merge=st.sampled_from(["concat", "sum", "mean", "product"]),
    sizes=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)),
    seed=st.integers(0, 1000),
)
def test_flax_round_trip_is_exact(num_layers, bidirectional, merge, sizes, seed):
    D, H, C = sizes
    params = random_params(
        seed, D, H, C, num_layers=num_layers, bidirectional=bidirectional, merge=merge
    )
    assert_params_identical(from_flax(to_flax(params), merge=merge), params)


def test_flax_round_trip_keeps_float64(x64):
    params = random_params(3, 3, 4, 2, num_layers=2, bidirectional=True, dtype=np.float64)
    back = from_flax(to_flax(params))
    assert back.layers[1][1].W_a.dtype == jnp.float64
    assert_params_identical(back, params)


def test_from_flax_head_and_identity_head():
    params = random_params(4, 3, 4, 2, bidirectional=True)
    v = to_flax(params)["params"]
    layer_only = {"params": v["layers_0"]}
    identity = from_flax(layer_only)
    np.testing.assert_array_equal(identity.head.W_y, np.eye(8, dtype=np.float32))
    with_head = from_flax(layer_only, head=v["head"])
    assert_params_identical(with_head, params)
    no_bias = from_flax(layer_only, head={"kernel": v["head"]["kernel"]})
    np.testing.assert_array_equal(no_bias.head.b_y, np.zeros(2, np.float32))


def test_from_flax_rejects_mixed_cells_and_other_layouts():
    xs = jnp.ones((2, 3, 3))
    simple = nn.RNN(nn.SimpleCell(4)).init(jax.random.key(0), xs)["params"]
    lstm = nn.RNN(nn.LSTMCell(4)).init(jax.random.key(0), jnp.ones((2, 3, 4)))["params"]
    with pytest.raises(ValueError, match=r"holds LSTMCell params.*every layer must have the same"):
        from_flax([simple, lstm])
    gru = nn.RNN(nn.GRUCell(4)).init(jax.random.key(0), jnp.ones((2, 3, 4)))["params"]
    with pytest.raises(ValueError, match=r"holds GRUCell params"):
        from_flax([simple, gru])
    with pytest.raises(ValueError, match=r"must be the params of nn.GRUCell"):
        from_flax([gru, simple])
    with pytest.raises(ValueError, match=r"`activation` must be 'tanh' .* for Flax LSTM cells"):
        from_flax(lstm, activation="relu")
    with pytest.raises(
        ValueError, match=r"`variables` must be the params of nn.RNN.*got keys \['foo'\]"
    ):
        from_flax({"params": {"foo": {}}})
    v = to_flax(random_params(0, 3, 4, 2, num_layers=2))["params"]
    gap = {"layers_0": v["layers_0"], "layers_2": v["layers_1"]}
    with pytest.raises(ValueError, match=r"layers_0 .. layers_\{L-1\} with no gap"):
        from_flax(gap)
    with pytest.raises(ValueError, match=r"`head` was given but `variables` already holds one"):
        from_flax(v, head=v["head"])
    with pytest.raises(ValueError, match=r"`activation` must be one of"):
        from_flax(v, activation="sigmoid")
    with pytest.raises(ValueError, match=r"`variables\[0\]` must be the params of nn.RNN"):
        from_flax([{"kernel": 1}])
    with pytest.raises(ValueError, match=r"`token_inputs=False` contradicts `embedding`"):
        from_flax(v, embedding=jnp.ones((5, 3)), token_inputs=False)
    with pytest.raises(ValueError, match=r"`embedding` must have shape \(V, D\) with D = 3"):
        from_flax(v, embedding=jnp.ones((5, 2)))


def test_from_flax_checks_that_the_layers_fit_together():
    v = to_flax(random_params(0, 3, 4, 2, bidirectional=True))["params"]
    deep_uni = to_flax(random_params(0, 3, 4, 2, num_layers=2))["params"]
    # a unidirectional layer 1 (input 4) on top of a bidirectional layer 0 (output 8)
    with pytest.raises(ValueError, match=r"`params.layers\[1\]` must hold 2 direction"):
        from_flax([v["layers_0"], deep_uni["layers_1"]])
    with pytest.raises(
        ValueError, match=r"`params.head.W_y` must have shape \(C, H_out\) = \(2, 4\)"
    ):
        from_flax(v, merge="sum")  # the head reads 2H = 8, a sum merge gives H = 4


def test_params_dataclass_replace_keeps_converted_params_usable():
    """The documented way to train a new head on a converted network."""
    from rnn_jax import init_head

    params = from_flax(to_flax(random_params(0, 3, 4, 2)))
    params = dataclasses.replace(params, head=init_head(4, 5, key=jax.random.key(0)))
    assert rnn_apply(params, jnp.ones((1, 2, 3))).shape == (1, 2, 5)


# --------------------------------------------------------------------------- gated cells

TORCH_GATED = {"gru": "GRU", "lstm": "LSTM"}


@partial(jax.jit, static_argnums=0)
def gated_stack(cell, layers, xs, lengths):
    """The stack run layer by layer with rnn_jax.cells: each direction with layer_unroll
    (reverse for d = 1), the concatenated outputs feeding the next layer.

    xs: batch-first (B, T, D) dense or (B, T) ids. Returns (output (B, T, dirs * H),
    h_n (L * dirs, B, H), c_n (L * dirs, B, H) or None), PyTorch's layout.

    Compiled once per cell, stack structure and shapes, and shared by the tests (the
    conversions are what they check; layer_unroll's eager path is tested in test_cells).
    """
    xs = jnp.swapaxes(jnp.asarray(xs), 0, 1)
    T, B = xs.shape[:2]
    mask = jnp.arange(T)[:, None] < jnp.asarray(lengths)[None, :]
    H = layers[0][0].hidden_size
    finals = []
    h = xs
    for layer in layers:
        outs = []
        for d, p in enumerate(layer):
            seq, carry = layer_unroll(cell, p, h, carry_zeros(cell, B, H), mask, reverse=d == 1)
            outs.append(seq)
            finals.append(carry)
        h = jnp.concatenate(outs, axis=-1)
    output = jnp.swapaxes(h, 0, 1)
    if cell == "gru":
        return output, jnp.stack(finals), None
    return output, jnp.stack([f[0] for f in finals]), jnp.stack([f[1] for f in finals])


@partial(jax.jit, static_argnums=0)
def gated_stack_input_grad(cell, layers, xs, lengths, weights):
    """d/dxs of sum(w * output) + sum(w_h * h_n) (+ sum(w_c * c_n)), the loss of
    torch_gated_run; compiled once per cell, stack structure and shapes."""

    def loss(xs):
        output, h_last, c_last = gated_stack(cell, layers, xs, lengths)
        total = jnp.sum(weights[0] * output) + jnp.sum(weights[1] * h_last)
        return total if c_last is None else total + jnp.sum(weights[2] * c_last)

    return jax.grad(loss)(xs)


def torch_gated_run(torch, module, xs, lengths, weights):
    """PyTorch on a packed, unsorted batch; returns output, h_n, c_n (or None) and the
    gradient of sum(w * output) + sum(w_h * h_n) (+ sum(w_c * c_n)) w.r.t. the inputs."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    x = torch.from_numpy(xs).requires_grad_(True)
    x_in = x if module.batch_first else x.transpose(0, 1)
    packed = pack_padded_sequence(
        x_in, torch.from_numpy(lengths), batch_first=module.batch_first, enforce_sorted=False
    )
    out, state = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=xs.shape[1])
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    w_out, w_h, w_c = (torch.from_numpy(w) for w in weights)
    loss = (w_out * out).sum() + (w_h * h_n).sum()
    if c_n is not None:
        loss = loss + (w_c * c_n).sum()
    loss.backward()
    detach = lambda t: None if t is None else t.detach().numpy()  # noqa: E731
    return detach(out), detach(h_n), detach(c_n), x.grad.numpy()


@pytest.mark.parametrize("cell", GATED_CELLS)
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True), (2, False)])
def test_gated_layers_from_torch_match_torch_on_packed_sequences(
    torch, cell, batch_first, num_layers, bidirectional
):
    torch.manual_seed(7 * num_layers + bidirectional)
    D, H, B, T = 3, 4, 5, 7
    module = getattr(torch.nn, TORCH_GATED[cell])(
        D, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first
    )
    dirs = 2 if bidirectional else 1
    xs, lengths = batch(30 + num_layers, B, T, D)
    rng = np.random.default_rng(31)
    weights = (
        rng.normal(size=(B, T, dirs * H)).astype(np.float32),
        rng.normal(size=(num_layers * dirs, B, H)).astype(np.float32),
        rng.normal(size=(num_layers * dirs, B, H)).astype(np.float32),
    )
    out, h_n, c_n, dx_torch = torch_gated_run(torch, module, xs, lengths, weights)

    name, layers = gated_layers_from_torch(module)
    assert name == cell and len(layers) == num_layers and len(layers[0]) == dirs
    kind = GRULayerParams if cell == "gru" else LSTMLayerParams
    assert all(isinstance(p, kind) and p.W_a.dtype == jnp.float32 for l in layers for p in l)

    output, h_last, c_last = gated_stack(cell, layers, xs, lengths)
    np.testing.assert_allclose(output, out, atol=ATOL)  # both exactly zero at padding
    np.testing.assert_allclose(h_last, h_n, atol=ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(c_last, c_n, atol=ATOL)

    dx = gated_stack_input_grad(cell, layers, jnp.asarray(xs), lengths, weights)
    np.testing.assert_allclose(dx, dx_torch, atol=ATOL)
    assert np.all(np.asarray(dx)[~valid(lengths, T)] == 0)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_gated_layers_from_torch_copy_the_weights_exactly(torch, cell):
    torch.manual_seed(8)
    module = getattr(torch.nn, TORCH_GATED[cell])(3, 4, num_layers=2, bidirectional=True)
    _, layers = gated_layers_from_torch(module)
    for k in range(2):
        for d, sfx in enumerate([f"_l{k}", f"_l{k}_reverse"]):
            t = {
                n: getattr(module, n + sfx).detach().numpy()
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            }
            p = layers[k][d]
            np.testing.assert_array_equal(p.W_h, t["weight_hh"])
            np.testing.assert_array_equal(p.W_x, t["weight_ih"])
            if cell == "gru":
                np.testing.assert_array_equal(p.b_x, t["bias_ih"])
                np.testing.assert_array_equal(p.b_h, t["bias_hh"])
            else:
                np.testing.assert_array_equal(p.b_a, t["bias_ih"] + t["bias_hh"])


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_gated_layers_from_torch_without_bias_and_token_ids(torch, cell):
    torch.manual_seed(9)
    V, H, B, T = 6, 4, 4, 5
    module = getattr(torch.nn, TORCH_GATED[cell])(V, H, bias=False, batch_first=True)
    _, layers = gated_layers_from_torch(module)
    for b in jax.tree.leaves(layers[0][0])[1:]:
        assert np.all(np.asarray(b) == 0)
    ids = np.random.default_rng(9).integers(0, V, size=(B, T))
    _, lengths = batch(9, B, T, 1)
    one_hot = np.eye(V, dtype=np.float32)[ids]
    zeros = tuple(np.zeros(s, np.float32) for s in ((B, T, H), (1, B, H), (1, B, H)))
    out, h_n, c_n, _ = torch_gated_run(torch, module, one_hot, lengths, zeros)
    output, h_last, c_last = gated_stack(cell, layers, jnp.asarray(ids, jnp.int32), lengths)
    np.testing.assert_allclose(output, out, atol=ATOL)
    np.testing.assert_allclose(h_last, h_n, atol=ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(c_last, c_n, atol=ATOL)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_gated_layers_float64(torch, cell, x64):
    torch.manual_seed(10)
    module = getattr(torch.nn, TORCH_GATED[cell])(
        3, 4, num_layers=2, bidirectional=True, batch_first=True
    ).double()
    _, layers = gated_layers_from_torch(module)
    assert layers[1][1].W_a.dtype == jnp.float64
    xs, lengths = batch(10, 4, 6, 3, dtype=np.float64)
    zeros = tuple(np.zeros(s) for s in ((4, 6, 8), (4, 4, 4), (4, 4, 4)))
    out, h_n, _, _ = torch_gated_run(torch, module, xs, lengths, zeros)
    output, h_last, _ = gated_stack(cell, layers, xs, lengths)
    np.testing.assert_allclose(output, out, atol=1e-12)
    np.testing.assert_allclose(h_last, h_n, atol=1e-12)
    _, as_f32 = gated_layers_from_torch(module, dtype=jnp.float32)
    assert as_f32[0][0].W_a.dtype == jnp.float32


@pytest.mark.parametrize("cell", GATED_CELLS)
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
def test_gated_torch_round_trip_is_exact(torch, cell, num_layers, bidirectional):
    keys = iter(jax.random.split(jax.random.key(11), 8))
    dirs = 2 if bidirectional else 1
    layers = tuple(
        tuple(
            init_gated_layer(cell, 3 if l == 0 else dirs * 4, 4, key=next(keys))
            for _ in range(dirs)
        )
        for l in range(num_layers)
    )
    torch.manual_seed(0)
    expected_rng = torch.rand(2)
    torch.manual_seed(0)
    module = gated_layers_to_torch(cell, layers, batch_first=False)
    assert torch.equal(torch.rand(2), expected_rng)  # the caller's torch RNG is not moved
    assert type(module).__name__ == TORCH_GATED[cell] and not module.batch_first
    assert (module.num_layers, module.bidirectional) == (num_layers, bidirectional)
    name, back = gated_layers_from_torch(module)
    assert name == cell
    assert_params_identical(back, layers)


def test_gated_layers_torch_errors(torch):
    with pytest.raises(
        ValueError, match=r"`module` must be a torch.nn.GRU or torch.nn.LSTM, got RNN \(mode"
    ):
        gated_layers_from_torch(torch.nn.RNN(3, 4))
    with pytest.raises(ValueError, match=r"got Linear\.$"):
        gated_layers_from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"`module.proj_size` must be 0"):
        gated_layers_from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    gru = init_gated_layer("gru", 3, 4, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`cell` must be one of"):
        gated_layers_to_torch("rnn", ((gru,),))
    with pytest.raises(ValueError, match=r"`layers` layer 1 must read the 4 outputs of layer 0"):
        gated_layers_to_torch("gru", ((gru,), (gru,)))
    with pytest.raises(ValueError, match=r"must have W_a of shape \(4H, H \+ D\)"):
        gated_layers_to_torch("lstm", ((gru,),))


def flax_gated(cell, H):
    return {"gru": nn.GRUCell, "lstm": nn.LSTMCell, "optimized_lstm": nn.OptimizedLSTMCell}[cell](H)


def flax_h(cell, carry):
    """Flax's hidden state: the GRU's carry, or h of the LSTM's (c, h)."""
    return carry if cell == "gru" else carry[1]


@pytest.mark.parametrize("flax_cell_name", ["gru", "lstm", "optimized_lstm"])
def test_gated_layers_from_flax_match_flax_deep_bidirectional(flax_cell_name):
    cell = "gru" if flax_cell_name == "gru" else "lstm"
    D, H, B, T = 3, 4, 5, 7
    xs, lengths = batch(40, B, T, D)
    stack = [
        nn.Bidirectional(
            nn.RNN(flax_gated(flax_cell_name, H)),
            nn.RNN(flax_gated(flax_cell_name, H)),
            return_carry=True,
        )
        for _ in range(2)
    ]
    h, variables, carries = xs, [], []
    for l, layer in enumerate(stack):
        v = layer.init(jax.random.key(40 + l), h)
        (c_f, c_b), h = layer.apply(v, h, seq_lengths=lengths)
        variables.append(v["params"])
        carries += [c_f, c_b]

    name, layers = gated_layers_from_flax(variables)
    assert name == cell and len(layers) == 2 and len(layers[0]) == 2
    output, h_last, c_last = gated_stack(cell, layers, xs, lengths)
    m = valid(lengths, T)
    # Flax does not zero the outputs at padding: compare valid steps, and the carries.
    np.testing.assert_allclose(np.asarray(output)[m], np.asarray(h)[m], atol=ATOL)
    np.testing.assert_allclose(h_last, np.stack([flax_h(cell, c) for c in carries]), atol=ATOL)
    if cell == "lstm":  # Flax's carry is (c, h)
        np.testing.assert_allclose(c_last, np.stack([c[0] for c in carries]), atol=ATOL)


@pytest.mark.parametrize("flax_cell_name", ["gru", "lstm"])
def test_gated_layers_from_flax_single_rnn_and_biases(flax_cell_name):
    cell = flax_cell_name
    D, H, B, T = 3, 4, 2, 5
    module = nn.RNN(flax_gated(cell, H), return_carry=True)
    xs, lengths = batch(41, B, T, D)
    variables = module.init(jax.random.key(41), xs)
    # non-zero biases everywhere Flax has one
    variables = jax.tree.map(lambda a: a + 0.1 if a.ndim == 1 else a, variables)
    carry, ys = module.apply(variables, xs, seq_lengths=lengths)
    name, layers = gated_layers_from_flax(variables)
    (p,) = layers[0]
    if cell == "gru":  # no b_hr, b_hz in Flax
        np.testing.assert_array_equal(p.b_h[: 2 * H], np.zeros(2 * H, np.float32))
        assert np.all(np.asarray(p.b_h[2 * H :]) != 0) and np.all(np.asarray(p.b_x) != 0)
    output, h_last, _ = gated_stack(cell, layers, xs, lengths)
    m = valid(lengths, T)
    np.testing.assert_allclose(np.asarray(output)[m], np.asarray(ys)[m], atol=ATOL)
    np.testing.assert_allclose(h_last[0], flax_h(cell, carry), atol=ATOL)


@pytest.mark.parametrize("flax_cell_name", ["gru", "lstm", "optimized_lstm"])
def test_from_flax_gives_gated_rnn_params_equal_to_flax(flax_cell_name):
    """from_flax on Flax GRU/LSTM networks: an RNNParams with cell="gru"/"lstm" whose
    rnn_layers/rnn_apply equal Flax (valid steps, final carries), head included."""
    cell = "gru" if flax_cell_name == "gru" else "lstm"
    D, H, C, B, T = 3, 4, 2, 5, 6
    xs, lengths = batch(42, B, T, D)
    layers = [
        nn.Bidirectional(
            nn.RNN(flax_gated(flax_cell_name, H)),
            nn.RNN(flax_gated(flax_cell_name, H)),
            return_carry=True,
        )
        for _ in range(2)
    ]
    h, variables, carries = xs, [], []
    for l, layer in enumerate(layers):
        v = layer.init(jax.random.key(42 + l), h)
        v = jax.tree.map(lambda a: a + 0.1 if a.ndim == 1 else a, v)  # non-zero biases
        (c_f, c_b), h = layer.apply(v, h, seq_lengths=lengths)
        variables.append(v["params"])
        carries += [c_f, c_b]
    dense = nn.Dense(C)
    head = dense.init(jax.random.key(0), h)["params"]
    y_flax = dense.apply({"params": head}, h)

    params = from_flax(variables, head=head)
    assert isinstance(params, RNNParams) and params.cell == cell
    assert params.num_layers == 2 and params.bidirectional and params.output_size == C
    a_seq, a_last = _layers(params, xs, lengths)
    m = valid(lengths, T)
    np.testing.assert_allclose(np.asarray(a_seq)[m], np.asarray(h)[m], atol=ATOL)
    np.testing.assert_allclose(a_last, np.stack([flax_h(cell, c) for c in carries]), atol=ATOL)
    y = _apply(params, xs, lengths)
    np.testing.assert_allclose(np.asarray(y)[m], np.asarray(y_flax)[m], atol=ATOL)
    # The same layers as gated_layers_from_flax, bit for bit.
    _, layers_direct = gated_layers_from_flax(variables)
    assert_params_identical(params.layers, layers_direct)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_gated_to_flax_and_flax_module_round_trip(cell):
    """to_flax/flax_module for cell="gru"/"lstm": Flax's module with those variables equals
    rnn_apply, and from_flax brings the same network back (the LSTM bit for bit; the GRU's
    b_hr, b_hz move into b_ir, b_iz, Flax having no recurrent r/z biases)."""
    D, H, C, B, T = 3, 4, 2, 3, 5
    params = init_rnn(jax.random.key(3), D, H, C, cell=cell, num_layers=2, bidirectional=True)
    params = jax.tree.map(lambda a: a + 0.1 if a.ndim == 1 else a, params)
    xs, lengths = batch(43, B, T, D)
    variables = to_flax(params)
    y_flax = flax_module(params).apply(variables, xs, seq_lengths=lengths)
    np.testing.assert_allclose(y_flax, _apply(params, xs, lengths), atol=ATOL)
    back = from_flax(variables)
    assert back.cell == cell
    if cell == "lstm":
        assert_params_identical(back, params)
    else:
        np.testing.assert_allclose(
            _apply(back, xs, lengths), _apply(params, xs, lengths), atol=1e-6
        )


def test_gated_layers_from_flax_errors():
    xs = jnp.ones((2, 3, 3))
    simple = nn.RNN(nn.SimpleCell(4)).init(jax.random.key(0), xs)
    with pytest.raises(ValueError, match=r"must be the params of nn.GRUCell .* got \['h', 'i'\]"):
        gated_layers_from_flax(simple)
    gru = nn.RNN(nn.GRUCell(4)).init(jax.random.key(0), xs)["params"]
    lstm = nn.RNN(nn.LSTMCell(4)).init(jax.random.key(0), jnp.ones((2, 3, 4)))["params"]
    with pytest.raises(ValueError, match=r"one kind of cell, got \['gru', 'lstm'\]"):
        gated_layers_from_flax([gru, lstm])
    with pytest.raises(ValueError, match=r"layer 1 must read the 4 outputs of layer 0"):
        gated_layers_from_flax([gru, gru])
    broken = jax.tree.map(lambda a: a, gru)
    broken["cell"]["hr"] = {"kernel": gru["cell"]["hr"]["kernel"], "bias": jnp.zeros(4)}
    with pytest.raises(
        ValueError, match=r"\['hr'\]` must hold \['kernel'\], got \['bias', 'kernel'\]"
    ):
        gated_layers_from_flax(broken)
    with pytest.raises(ValueError, match=r"recurrent layers only, got a 'head'"):
        gated_layers_from_flax({"layers_0": gru, "head": {}})


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_gated_layers_from_torch_fold_an_embedding(torch, cell):
    torch.manual_seed(12)
    V, E, H, B, T = 11, 3, 4, 4, 6
    emb = torch.nn.Embedding(V, E, padding_idx=0)
    module = getattr(torch.nn, TORCH_GATED[cell])(
        E, H, num_layers=2, bidirectional=True, batch_first=True
    )
    ids = np.random.default_rng(12).integers(0, V, size=(B, T))
    _, lengths = batch(12, B, T, 1)
    with torch.no_grad():
        xs = emb(torch.from_numpy(ids)).numpy()
    zeros = tuple(np.zeros(s, np.float32) for s in ((B, T, 2 * H), (4, B, H), (4, B, H)))
    out, h_n, c_n, _ = torch_gated_run(torch, module, xs, lengths, zeros)

    _, layers = gated_layers_from_torch(module, embedding=emb)
    assert layers[0][0].W_a.shape == (num_gates(cell) * H, H + V)
    assert layers[1][0].input_size == 2 * H
    output, h_last, c_last = gated_stack(cell, layers, jnp.asarray(ids, jnp.int32), lengths)
    np.testing.assert_allclose(output, out, atol=ATOL)
    np.testing.assert_allclose(h_last, h_n, atol=ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(c_last, c_n, atol=ATOL)
    with pytest.raises(ValueError, match=r"embedding_dim = module.input_size = 3, got 5"):
        gated_layers_from_torch(module, embedding=torch.nn.Embedding(V, 5))


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_gated_layers_from_flax_fold_an_embed(cell):
    V, E, H, B, T = 10, 3, 4, 4, 6
    ids = jnp.asarray(np.random.default_rng(13).integers(0, V, size=(B, T)), jnp.int32)
    _, lengths = batch(13, B, T, 1)
    embed, rnn = nn.Embed(V, E), nn.RNN(flax_gated(cell, H), return_carry=True)
    v_embed = embed.init(jax.random.key(0), ids)
    x = embed.apply(v_embed, ids)
    v_rnn = rnn.init(jax.random.key(1), x)
    carry, ys = rnn.apply(v_rnn, x, seq_lengths=lengths)

    _, layers = gated_layers_from_flax(v_rnn, embedding=v_embed["params"])
    assert layers[0][0].input_size == V
    output, h_last, _ = gated_stack(cell, layers, ids, lengths)
    m = valid(lengths, T)
    np.testing.assert_allclose(np.asarray(output)[m], np.asarray(ys)[m], atol=ATOL)
    np.testing.assert_allclose(h_last[0], flax_h(cell, carry), atol=ATOL)
    with pytest.raises(ValueError, match=r"`embedding` must have shape \(V, D\) with D = 3"):
        gated_layers_from_flax(v_rnn, embedding=jnp.ones((V, 5)))


def random_gated_stack(cell, D, H, num_layers, dirs, seed):
    """layers[l][d] with every array (all biases too) drawn at random."""
    rng = np.random.default_rng(seed)
    G = num_gates(cell)

    def draw(*shape):
        return jnp.asarray((0.5 * rng.normal(size=shape)).astype(np.float32))

    def one(D_in):
        if cell == "gru":
            return GRULayerParams(draw(G * H, H + D_in), draw(G * H), draw(G * H))
        return LSTMLayerParams(draw(G * H, H + D_in), draw(G * H))

    return tuple(
        tuple(one(D if l == 0 else dirs * H) for _ in range(dirs)) for l in range(num_layers)
    )


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_gated_layers_to_flax_compute_the_layers_in_flax(cell):
    D, H, B, T = 3, 4, 5, 6
    layers = random_gated_stack(cell, D, H, 2, 2, 50)
    trees = gated_layers_to_flax(cell, layers)
    xs, lengths = batch(50, B, T, D)
    h = xs
    for tree in trees:
        module = nn.Bidirectional(nn.RNN(flax_gated(cell, H)), nn.RNN(flax_gated(cell, H)))
        h = module.apply({"params": tree}, h, seq_lengths=lengths)
    output, _, _ = gated_stack(cell, layers, xs, lengths)
    m = valid(lengths, T)
    np.testing.assert_allclose(np.asarray(output)[m], np.asarray(h)[m], atol=ATOL)

    name, back = gated_layers_from_flax(trees)
    assert name == cell
    if cell == "lstm":
        assert_params_identical(back, layers)  # exact
    else:  # b_hr, b_hz folded into b_ir, b_iz: the same function
        for layer in back:
            for p in layer:
                assert np.all(np.asarray(p.b_h[: 2 * H]) == 0)
        np.testing.assert_allclose(gated_stack(cell, back, xs, lengths)[0], output, atol=ATOL)


@pytest.mark.parametrize("cell", GATED_CELLS)
def test_gated_flax_round_trip_from_flax_is_exact(cell):
    """Flax params -> layers -> Flax params gives back the same arrays."""
    module = nn.Bidirectional(nn.RNN(flax_gated(cell, 4)), nn.RNN(flax_gated(cell, 4)))
    variables = module.init(jax.random.key(51), jnp.ones((2, 3, 3)))
    variables = jax.tree.map(lambda a: a + 0.1 if a.ndim == 1 else a, variables)  # biases != 0
    _, layers = gated_layers_from_flax(variables)
    (tree,) = gated_layers_to_flax(cell, layers)
    assert_params_identical(tree, variables["params"])


# --------------------------------------------------------------------------- gated cells, network level


def torch_run_gated(torch, module, xs, lengths):
    """``(output, h_n, c_n or None)`` of a GRU/LSTM on a packed, unsorted batch, with grads."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    x = torch.from_numpy(xs).requires_grad_(True)
    packed = pack_padded_sequence(
        x, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
    )
    out, state = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=xs.shape[1])
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    return x, out, h_n, c_n


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_from_torch_gated_network_matches_torch_on_packed_sequences(torch, kind):
    """rnn_layers / rnn_apply / rnn_classify on from_torch(nn.GRU/nn.LSTM) equal PyTorch:
    packed unsorted batch, bidirectional, 2 layers, outputs, h_n, c_n and input gradients."""
    torch.manual_seed(7)
    D, H, C, B, T = 3, 4, 2, 5, 7
    module = getattr(torch.nn, kind)(D, H, num_layers=2, bidirectional=True, batch_first=True)
    linear = torch.nn.Linear(2 * H, C)
    xs, lengths = batch(3, B, T, D)
    x, out, h_n, c_n = torch_run_gated(torch, module, xs, lengths)
    m = valid(lengths, T)
    # A loss on the valid outputs and the final states: its input gradient covers both.
    w = np.random.default_rng(0).normal(size=(B, T, 2 * H)).astype(np.float32)
    loss_t = (out * torch.from_numpy(w * m[:, :, None])).sum() + (h_n**2).sum()
    loss_t.backward()

    params = from_torch(module, linear)
    assert params.cell == kind.lower() and params.num_layers == 2 and params.bidirectional
    a_seq, finals = _layers(params, xs, lengths, return_cell_state=(kind == "LSTM"))
    h_jax, c_jax = finals if kind == "LSTM" else (finals, None)
    np.testing.assert_allclose(np.asarray(a_seq)[m], out.detach().numpy()[m], atol=ATOL)
    assert np.all(np.asarray(a_seq)[~m] == 0)
    np.testing.assert_allclose(h_jax, h_n.detach().numpy(), atol=ATOL)
    if kind == "LSTM":
        np.testing.assert_allclose(c_jax, c_n.detach().numpy(), atol=ATOL)
        # a_last holds h_n without return_cell_state
        np.testing.assert_allclose(_layers(params, xs, lengths)[1], h_jax, atol=0)

    def loss(xs_):
        a, last = rnn_layers(params, xs_, lengths)
        return jnp.sum(a * w * m[:, :, None].astype(a.dtype)) + jnp.sum(last**2)

    gx = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(xs)))
    np.testing.assert_allclose(gx[m], x.grad.numpy()[m], atol=ATOL)
    assert np.all(gx[~m] == 0)

    with torch.no_grad():
        y_torch = linear(out).numpy()
        y_class = linear(torch.cat([h_n[-2], h_n[-1]], -1)).numpy()
    np.testing.assert_allclose(np.asarray(_apply(params, xs, lengths))[m], y_torch[m], atol=ATOL)
    np.testing.assert_allclose(_classify(params, xs, lengths), y_class, atol=ATOL)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_to_torch_gated_round_trip(torch, cell):
    params = init_rnn(jax.random.key(0), 3, 4, 2, cell=cell, num_layers=2, bidirectional=True)
    module, linear = to_torch(params)
    assert type(module).__name__ == cell.upper()
    back = from_torch(module, linear)
    assert back.cell == cell
    xs, lengths = batch(1, 3, 5, 3)
    np.testing.assert_allclose(_apply(back, xs, lengths), _apply(params, xs, lengths), atol=ATOL)
    if cell == "gru":  # the GRU keeps both biases: bit-identical
        assert_params_identical(back, params)
