"""rnn_layers / rnn_apply / rnn_classify against the float64 NumPy loop of the equations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import params_as_numpy, ref_network

from rnn_jax import (
    HeadParams,
    LayerParams,
    RNNParams,
    init_rnn,
    rnn_apply,
    rnn_classify,
    rnn_layers,
    split_layer,
    stack_layer,
)

RTOL, ATOL = 1e-5, 1e-5


def _inputs(rng, B, T, D, tokens):
    if tokens:
        return jnp.asarray(rng.integers(0, D, size=(B, T)), jnp.int32)
    return jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)


def _lengths(rng, B, T):
    # Always include the edge cases 0, 1 and T when the batch is large enough.
    lengths = rng.integers(0, T + 1, size=B)
    for i, v in enumerate((0, 1, T)[:B]):
        lengths[i] = v
    return jnp.asarray(lengths, jnp.int32)


CASES = [
    # (layers, bidirectional, tokens, activation, merge)
    (1, False, False, "tanh", "concat"),
    (1, True, False, "tanh", "concat"),
    (2, False, True, "tanh", "concat"),
    (2, True, True, "tanh", "concat"),
    (3, True, False, "tanh", "sum"),
    (3, False, False, "relu", "concat"),
    (2, True, False, "relu", "mean"),
    (2, True, True, "tanh", "product"),
]


@jax.jit
def _forward(params, xs, lengths, a0):
    """rnn_layers, rnn_apply and rnn_classify in one compiled program: one compile per case
    (eagerly, each call traces and compiles its scans again; the eager path is compared
    with jit in test_jit_and_no_jit_agree)."""
    return (
        rnn_layers(params, xs, lengths, a0=a0),
        rnn_apply(params, xs, lengths, a0=a0),
        rnn_classify(params, xs, lengths, a0=a0),
    )


@pytest.mark.parametrize("num_layers,bidirectional,tokens,activation,merge", CASES)
def test_matches_numpy_reference(num_layers, bidirectional, tokens, activation, merge):
    rng = np.random.default_rng(num_layers * 10 + bidirectional)
    B, T, D, H, C = 5, 7, 6, 8, 3
    params = init_rnn(
        jax.random.key(num_layers),
        D,
        H,
        C,
        num_layers=num_layers,
        bidirectional=bidirectional,
        activation=activation,
        merge=merge,
        token_inputs=tokens,
    )
    # Non-zero biases so that they are tested too.
    params = jax.tree_util.tree_map(
        lambda x: x + 0.1 * jnp.asarray(rng.normal(size=x.shape), x.dtype), params
    )
    xs = _inputs(rng, B, T, D, tokens)
    lengths = _lengths(rng, B, T)
    a0 = jnp.asarray(rng.normal(size=(num_layers * (1 + bidirectional), B, H)) * 0.5, jnp.float32)

    layers, head = params_as_numpy(params)
    ref = ref_network(
        layers,
        head,
        np.asarray(xs) if tokens else np.asarray(xs, np.float64),
        np.asarray(lengths),
        np.asarray(a0, np.float64),
        activation=activation,
        merge=merge,
    )
    (a_seq, a_last), logits, cls = _forward(params, xs, lengths, a0)
    np.testing.assert_allclose(a_seq, ref["a_seq"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a_last, ref["a_last"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(logits, ref["logits"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(cls, ref["class_logits"], rtol=RTOL, atol=ATOL)
    # Padding emits exactly zero.
    pad = np.arange(T)[None, :] >= np.asarray(lengths)[:, None]
    assert np.all(np.asarray(a_seq)[pad] == 0.0)
    assert np.all(np.asarray(logits)[pad] == 0.0)


def test_length_zero_returns_initial_state():
    params = init_rnn(jax.random.key(0), 3, 4, 2, num_layers=2, bidirectional=True)
    a0 = jax.random.normal(jax.random.key(1), (4, 2, 4))
    xs = jax.random.normal(jax.random.key(2), (2, 5, 3))
    _, a_last = rnn_layers(params, xs, jnp.array([0, 5]), a0=a0)
    np.testing.assert_array_equal(a_last[:, 0], a0[:, 0])


def test_token_ids_equal_explicit_one_hot():
    V, H, C = 11, 6, 2
    tok = init_rnn(jax.random.key(0), V, H, C, bidirectional=True, token_inputs=True)
    dense = RNNParams(tok.layers, tok.head, token_inputs=False)
    ids = jax.random.randint(jax.random.key(1), (3, 9), 0, V)
    lengths = jnp.array([9, 4, 0])
    one_hot = jax.nn.one_hot(ids, V)
    np.testing.assert_allclose(
        rnn_apply(tok, ids, lengths), rnn_apply(dense, one_hot, lengths), rtol=1e-6, atol=1e-6
    )


def test_stacked_and_split_forms_give_identical_outputs():
    params = init_rnn(jax.random.key(0), 4, 5, 3)
    layer = params.layers[0][0]
    split = split_layer(layer)
    W_aa, W_ax, b_a = split
    xs = jax.random.normal(jax.random.key(1), (2, 6, 4))
    # The split-form equations, written out directly.
    a = jnp.zeros((2, 5))
    outs = []
    for t in range(6):
        a = jnp.tanh(a @ W_aa.T + xs[:, t] @ W_ax.T + b_a[None, :])
        outs.append(a)
    a_seq, _ = rnn_layers(params, xs)
    np.testing.assert_allclose(a_seq, jnp.stack(outs, 1), rtol=1e-6, atol=1e-6)
    rebuilt = RNNParams(((stack_layer(split),),), params.head)
    np.testing.assert_array_equal(rnn_layers(rebuilt, xs)[0], a_seq)


def _grad_case(tokens, bidirectional, num_layers):
    rng = np.random.default_rng(0)
    B, T, D, H, C = 3, 5, 4, 3, 2
    params = init_rnn(
        jax.random.key(3),
        D,
        H,
        C,
        num_layers=num_layers,
        bidirectional=bidirectional,
        token_inputs=tokens,
        dtype=jnp.float64,
    )
    params = jax.tree_util.tree_map(lambda x: x + 0.1 * rng.normal(size=x.shape), params)
    xs = (
        jnp.asarray(rng.integers(0, D, (B, T)))
        if tokens
        else jnp.asarray(rng.normal(size=(B, T, D)))
    )
    lengths = jnp.array([5, 2, 0])
    w = jnp.asarray(rng.normal(size=(B, T, C)))
    return params, xs, lengths, w


@pytest.mark.parametrize(
    "tokens,bidirectional,num_layers", [(False, False, 1), (True, True, 2), (False, True, 3)]
)
def test_gradients_match_reference_and_finite_differences(x64, tokens, bidirectional, num_layers):
    params, xs, lengths, w = _grad_case(tokens, bidirectional, num_layers)

    def loss(p):
        return jnp.sum(w * rnn_apply(p, xs, lengths)) + jnp.sum(rnn_layers(p, xs, lengths)[1] ** 2)

    def ref_loss(p):
        layers = [[(q.W_a, q.b_a) for q in layer] for layer in p.layers]
        # xs as NumPy: concrete under jit (the reference builds one-hot vectors from the ids)
        head = (p.head.W_y, p.head.b_y)
        out = ref_network(layers, head, np.asarray(xs), np.asarray(lengths), xp=jnp)
        return jnp.sum(w * out["logits"]) + jnp.sum(out["a_last"] ** 2)

    # jitted: one compile each, where eagerly every call traces and compiles again
    loss, ref_loss = jax.jit(loss), jax.jit(ref_loss)
    np.testing.assert_allclose(loss(params), ref_loss(params), rtol=1e-12)
    grads = jax.jit(jax.grad(loss))(params)
    ref_grads = jax.jit(jax.grad(ref_loss))(params)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-10, atol=1e-12)

    # Central finite differences along a random direction, float64.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(1)
    direction = jax.tree_util.tree_unflatten(treedef, [rng.normal(size=x.shape) for x in leaves])
    eps = 1e-6
    shift = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * eps * d, params, direction)  # noqa: E731
    fd = (loss(shift(1.0)) - loss(shift(-1.0))) / (2 * eps)
    analytic = sum(
        jnp.vdot(g, d)
        for g, d in zip(
            jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction), strict=True
        )
    )
    np.testing.assert_allclose(fd, analytic, rtol=1e-6)


def test_gradient_wrt_a0_and_inputs(x64):
    params, xs, lengths, w = _grad_case(False, True, 2)
    a0 = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3, 3)))

    def loss(xs, a0):
        return jnp.sum(w * rnn_apply(params, xs, lengths, a0=a0))

    def ref_loss(xs, a0):
        layers = [[(q.W_a, q.b_a) for q in layer] for layer in params.layers]
        out = ref_network(
            layers, (params.head.W_y, params.head.b_y), xs, np.asarray(lengths), a0, xp=jnp
        )
        return jnp.sum(w * out["logits"])

    g = jax.grad(loss, argnums=(0, 1))(xs, a0)
    g_ref = jax.grad(ref_loss, argnums=(0, 1))(xs, a0)
    chex.assert_trees_all_close(g, g_ref, rtol=1e-10, atol=1e-12)
    # Padded inputs get exactly zero gradient.
    assert np.all(np.asarray(g[0])[1, 2:] == 0.0) and np.all(np.asarray(g[0])[2] == 0.0)


# ---------------------------------------------------------------- properties


@st.composite
def batches(draw):
    # A few shapes only (each new shape compiles); lengths and contents vary freely.
    B = draw(st.sampled_from([1, 3]))
    T = draw(st.sampled_from([1, 6]))
    lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    extra = draw(st.sampled_from([1, 5]))
    seed = draw(st.integers(0, 2**16))
    bidirectional = draw(st.booleans())
    tokens = draw(st.booleans())
    return B, T, np.array(lengths, np.int32), extra, seed, bidirectional, tokens


_apply = jax.jit(rnn_apply)
_classify = jax.jit(rnn_classify)
_layers = jax.jit(rnn_layers)

_PARAMS = {
    (bi, tok): init_rnn(
        jax.random.key(7), 6, 5, 3, num_layers=2, bidirectional=bi, token_inputs=tok
    )
    for bi in (False, True)
    for tok in (False, True)
}


@given(batches())
def test_padding_invariance(case):
    """Outputs at valid positions do not change when padding grows or its contents change."""
    B, T, lengths, extra, seed, bi, tok = case
    params = _PARAMS[(bi, tok)]
    rng = np.random.default_rng(seed)
    xs = np.asarray(_inputs(rng, B, T, 6, tok))
    longer = np.array(_inputs(rng, B, T + extra, 6, tok))  # random contents everywhere
    for b in range(B):
        longer[b, : lengths[b]] = xs[b, : lengths[b]]
    y1 = _apply(params, jnp.asarray(xs), jnp.asarray(lengths))
    y2 = _apply(params, jnp.asarray(longer), jnp.asarray(lengths))
    c1 = _classify(params, jnp.asarray(xs), jnp.asarray(lengths))
    c2 = _classify(params, jnp.asarray(longer), jnp.asarray(lengths))
    np.testing.assert_allclose(y2[:, :T], y1, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(y2)[:, T:] == 0.0)
    np.testing.assert_allclose(c2, c1, rtol=1e-5, atol=1e-6)


@given(batches())
def test_batch_equals_each_example_alone(case):
    B, T, lengths, _, seed, bi, tok = case
    params = _PARAMS[(bi, tok)]
    xs = _inputs(np.random.default_rng(seed), B, T, 6, tok)
    a_seq, a_last = _layers(params, xs, jnp.asarray(lengths))
    for b in range(B):
        s, l = _layers(params, xs[b : b + 1], jnp.asarray(lengths[b : b + 1]))
        np.testing.assert_allclose(s[0], a_seq[b], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(l[:, 0], a_last[:, b], rtol=1e-5, atol=1e-6)


@given(batches())
def test_jit_and_no_jit_agree(case):
    B, T, lengths, _, seed, bi, tok = case
    params = _PARAMS[(bi, tok)]
    xs = _inputs(np.random.default_rng(seed), B, T, 6, tok)
    eager = rnn_apply(params, xs, jnp.asarray(lengths))
    jitted = _apply(params, xs, jnp.asarray(lengths))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


def test_second_call_does_not_retrace():
    params = init_rnn(jax.random.key(0), 4, 5, 2, bidirectional=True)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(params, xs, lengths):
        return rnn_apply(params, xs, lengths)

    for seed in range(3):
        xs = jax.random.normal(jax.random.key(seed), (3, 6, 4))
        f(params, xs, jnp.array([6, seed, 1]))
    # New parameter values of the same shapes do not retrace either.
    f(jax.tree_util.tree_map(lambda x: x + 1.0, params), xs, jnp.array([1, 2, 3]))


def test_optax_updates_the_stacked_parameters(standard_dtypes):
    params = init_rnn(jax.random.key(0), 4, 5, 2, num_layers=2, bidirectional=True)
    xs = jax.random.normal(jax.random.key(1), (3, 6, 4))
    opt = optax.adam(1e-2)
    state = opt.init(params)
    grads = jax.grad(lambda p: jnp.sum(rnn_apply(p, xs) ** 2))(params)
    updates, state = opt.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    assert isinstance(new, RNNParams) and new.merge == params.merge
    for old, upd in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(new), strict=True
    ):
        assert old.shape == upd.shape and not np.array_equal(old, upd)


def test_dropout():
    params = init_rnn(jax.random.key(0), 4, 16, 2, num_layers=2)
    xs = jax.random.normal(jax.random.key(1), (3, 6, 4))
    base = rnn_apply(params, xs)
    with pytest.raises(ValueError, match="`key` is required when `dropout` > 0"):
        rnn_apply(params, xs, dropout=0.5)
    with pytest.raises(ValueError, match=r"`dropout` must lie in \[0, 1\), got 1.0"):
        rnn_apply(params, xs, dropout=1.0, key=jax.random.key(0))
    d1 = rnn_apply(params, xs, dropout=0.5, key=jax.random.key(2))
    d2 = rnn_apply(params, xs, dropout=0.5, key=jax.random.key(2))
    d3 = rnn_apply(params, xs, dropout=0.5, key=jax.random.key(3))
    np.testing.assert_array_equal(d1, d2)
    assert not np.allclose(d1, base) and not np.allclose(d1, d3)
    # `dropout` acts between layers only: with one layer it would do nothing, so it raises
    # and names the options that do act.
    one = init_rnn(jax.random.key(0), 4, 16, 2)
    with pytest.raises(ValueError, match="no effect with num_layers=1; use input_dropout="):
        rnn_apply(one, xs, dropout=0.5, key=jax.random.key(2))


def test_merge_callable():
    params = init_rnn(jax.random.key(0), 3, 4, 2, bidirectional=True, merge=jnp.maximum)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    a_seq, a_last = rnn_layers(params, xs, jnp.array([5, 3]))
    fwd = rnn_layers(
        RNNParams(((params.layers[0][0],),), HeadParams(params.head.W_y, params.head.b_y)),
        xs,
        jnp.array([5, 3]),
    )[0]
    assert a_seq.shape == (2, 5, 4)
    assert np.all(np.asarray(a_seq) >= np.asarray(fwd) - 1e-7)


def test_output_activation():
    params = init_rnn(jax.random.key(0), 3, 4, 5)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    probs = rnn_apply(params, xs, jnp.array([5, 2]), output_activation="softmax")
    np.testing.assert_allclose(np.asarray(probs).sum(-1), [[1] * 5, [1, 1, 0, 0, 0]], rtol=1e-6)
    logits = rnn_classify(params, xs, output_activation=None)
    np.testing.assert_allclose(
        rnn_classify(params, xs, output_activation="sigmoid"), jax.nn.sigmoid(logits), rtol=1e-6
    )


# ---------------------------------------------------------------- errors


def test_errors_name_the_argument():
    params = init_rnn(jax.random.key(0), 4, 5, 2, num_layers=2, bidirectional=True)
    tok = init_rnn(jax.random.key(0), 10, 5, 2, token_inputs=True)
    xs = jnp.zeros((3, 6, 4))
    with pytest.raises(
        ValueError, match=r"`xs` must have feature size D = 4 .* got shape \(3, 6, 5\)"
    ):
        rnn_apply(params, jnp.zeros((3, 6, 5)))
    with pytest.raises(
        ValueError,
        match=r"`xs` must have shape \(B, T, D\) or \(B, T\) for token ids, got \(6, 4\, 1, 1\)",
    ):
        rnn_apply(params, jnp.zeros((6, 4, 1, 1)))
    with pytest.raises(
        ValueError, match=r"`xs` of shape \(3, 6\) has dtype float32: token ids must be integers"
    ):
        rnn_apply(tok, jnp.zeros((3, 6)))
    with pytest.raises(
        ValueError, match=r"`xs` token ids must lie in \[0, 10\) .* got values in \[0, 10\]"
    ):
        rnn_apply(tok, jnp.array([[0, 10]]))
    with pytest.raises(
        ValueError, match=r"`xs` token ids must lie in \[0, 10\) .* got values in \[-1, 3\]"
    ):
        rnn_apply(tok, jnp.array([[-1, 3]]))
    with pytest.raises(
        ValueError, match="`xs` holds integer token ids but `params` was built for dense inputs"
    ):
        rnn_apply(params, jnp.array([[0, 1]]))
    with pytest.raises(
        ValueError, match=r"`lengths` must lie in \[0, T\] = \[0, 6\], got values in \[0, 7\]"
    ):
        rnn_apply(params, xs, jnp.array([0, 7, 3]))
    with pytest.raises(
        ValueError, match=r"`lengths` must lie in \[0, T\] = \[0, 6\], got values in \[-1, 3\]"
    ):
        rnn_apply(params, xs, jnp.array([-1, 2, 3]))
    with pytest.raises(ValueError, match=r"`lengths` must have shape \(B,\) = \(3,\), got \(2,\)"):
        rnn_apply(params, xs, jnp.array([1, 2]))
    with pytest.raises(ValueError, match="`lengths` must be integers, got dtype float32"):
        rnn_apply(params, xs, jnp.array([1.0, 2.0, 3.0]))
    with pytest.raises(
        ValueError, match=r"`mask` must have shape \(B, T\) = \(3, 6\), got \(6, 3\)"
    ):
        rnn_apply(params, xs, mask=jnp.ones((6, 3), bool))
    with pytest.raises(ValueError, match="Pass either `lengths` or `mask`, not both"):
        rnn_apply(params, xs, jnp.array([1, 2, 3]), mask=jnp.ones((3, 6), bool))
    with pytest.raises(
        ValueError,
        match=r"`a0` must have shape \(num_layers \* directions, B, H\) = \(4, 3, 5\), got \(3, 5\)",
    ):
        rnn_layers(params, xs, a0=jnp.zeros((3, 5)))
    bad = RNNParams(
        ((params.layers[0][0], LayerParams(jnp.zeros((5, 8)), jnp.zeros(5))), params.layers[1]),
        params.head,
    )
    with pytest.raises(
        ValueError,
        match=r"`params.layers\[0\]\[1\].W_a` must have shape \(H, H \+ D\) = \(5, 9\), got \(5, 8\)",
    ):
        rnn_apply(bad, xs)
    bad_head = RNNParams(params.layers, HeadParams(jnp.zeros((2, 5)), jnp.zeros(2)))
    with pytest.raises(
        ValueError,
        match=r"`params.head.W_y` must have shape \(C, H_out\) = \(2, 10\), got \(2, 5\)",
    ):
        rnn_apply(bad_head, xs)


def test_out_of_range_ids_under_jit_give_nan_not_a_wrong_column():
    tok = init_rnn(jax.random.key(0), 10, 5, 2, token_inputs=True)
    ids = jnp.array([[1, 2, 10], [1, 2, 3]])
    out = jax.jit(rnn_apply)(tok, ids)
    assert np.all(np.isfinite(out[1])) and np.all(np.isfinite(out[0, :2]))
    assert np.all(np.isnan(out[0, 2]))


def test_closed_over_inputs_under_jit_are_checked_at_trace_time():
    """Constants captured by a jitted function are concrete: validated, never a trace error."""
    tok = init_rnn(jax.random.key(0), 10, 5, 2, token_inputs=True)
    ids, lengths = jnp.array([[1, 2, 3], [4, 5, 6]]), jnp.array([3, 1])
    out = jax.jit(lambda p: rnn_apply(p, ids, lengths))(tok)
    np.testing.assert_allclose(out, rnn_apply(tok, ids, lengths), rtol=1e-6)
    bad = jnp.array([[1, 2, 10], [4, 5, 6]])
    with pytest.raises(ValueError, match=r"`xs` token ids must lie in \[0, 10\)"):
        jax.jit(lambda p: rnn_apply(p, bad, lengths))(tok)


_SHARDED = """
    import json
    import jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import rnn_jax

    B, T, V, D, H, C = 4, 7, 11, 6, 5, 3
    rng = np.random.default_rng(0)
    out = {}
    mesh = jax.make_mesh((2,), ("b",), axis_types=(AxisType.Explicit,))
    shard = lambda x, spec=P("b"): jax.device_put(x, NamedSharding(mesh, spec))
    for token in (True, False):
        for bi in (False, True):
            params = rnn_jax.init_rnn(
                jax.random.key(0), V if token else D, H, C, num_layers=2,
                bidirectional=bi, token_inputs=token,
            )
            xs = (rng.integers(0, V, (B, T)).astype(np.int32) if token
                  else rng.standard_normal((B, T, D)).astype(np.float32))
            lengths = np.array([7, 1, 3, 0], np.int32)
            a0 = rng.standard_normal((2 * (2 if bi else 1), B, H)).astype(np.float32)

            def loss(p, xs, lengths, a0):
                logits = rnn_jax.rnn_apply(p, xs, lengths, a0=a0)
                _, finals = rnn_jax.rnn_layers(p, xs, lengths, a0=a0)
                return jnp.sum(jnp.sin(logits)) + jnp.sum(finals**2)

            name = f"{'ids' if token else 'dense'}-{'bi' if bi else 'uni'}"
            # the references on one device (jitted: eagerly every call compiles again)
            ref_val, ref_grad = jax.jit(jax.value_and_grad(loss))(params, xs, lengths, a0)
            ref_logits = jax.jit(rnn_jax.rnn_apply)(params, xs)  # no lengths: all valid

            def err(val, grad):
                g = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                        zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad), strict=True))
                return [abs(float(val) - float(ref_val)), g]

            # 1. plain jit over a batch sharded on explicit mesh axes (a0 left replicated)
            with jax.set_mesh(mesh):
                args = (shard(xs), shard(lengths), a0)
                val, grad = jax.jit(jax.value_and_grad(loss))(params, *args)
                logits = jax.jit(rnn_jax.rnn_apply)(params, shard(xs))
                spec = str(jax.typeof(logits).sharding.spec)
                drop = jax.jit(lambda p, x: rnn_jax.rnn_apply(
                    p, x, dropout=0.5, key=jax.random.key(3)))(params, shard(xs))
            out[name + " explicit"] = err(val, grad) + [
                float(jnp.max(jnp.abs(logits - ref_logits))), spec,
                bool(jnp.all(jnp.isfinite(drop))),
            ]
            # 2. the user's own shard_map (check_vma=True), gradients summed over devices
            def local(p, xs, lengths, a0):
                v, g = jax.value_and_grad(loss)(p, xs, lengths, a0)
                return jax.lax.psum(v, "b"), g
            f = jax.jit(jax.shard_map(
                local, mesh=mesh, in_specs=(P(), P("b"), P("b"), P(None, "b")),
                out_specs=(P(), P()),
            ))
            val, grad = f(params, shard(xs), shard(lengths), shard(a0, P(None, "b")))
            out[name + " shard_map"] = err(val, grad)
    print(json.dumps(out))
    """


def test_batch_sharded_over_two_devices_equals_one_device(on_cpu_devices):
    out = on_cpu_devices(_SHARDED)
    assert len(out) == 8, out
    for name, res in out.items():
        assert res[0] < 1e-4 and res[1] < 1e-4, (name, res)  # loss and every gradient
        if name.endswith("explicit"):
            assert res[2] < 1e-5, (name, res)  # logits without lengths
            assert res[3].startswith("P('b'"), (name, res)  # the output stays sharded
            assert res[4], (name, res)  # dropout on shards runs and stays finite


def _np_pool(h, lengths, pool):
    out = np.zeros((h.shape[0], h.shape[2]))
    for b, n in enumerate(np.asarray(lengths)):
        if n > 0:
            out[b] = h[b, :n].mean(0) if pool == "mean" else h[b, :n].max(0)
    return out


@pytest.mark.parametrize("pool", ["mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classify_pooling_against_numpy_and_padding_invariant(pool, bidirectional):
    rng = np.random.default_rng(3)
    B, T, D = 5, 6, 3
    params = init_rnn(jax.random.key(4), D, 4, 2, num_layers=2, bidirectional=bidirectional)
    xs = _inputs(rng, B, T, D, tokens=False)
    lengths = _lengths(rng, B, T)  # includes 0, 1 and T
    layers, head = params_as_numpy(params)
    ref = ref_network(layers, head, np.asarray(xs, np.float64), np.asarray(lengths))
    pooled = _np_pool(ref["a_seq"], lengths, pool)
    expected = pooled @ head[0].T + head[1]
    got = rnn_classify(params, xs, lengths, pool=pool)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=RTOL, atol=ATOL)
    assert bool(jnp.all(jnp.isfinite(got)))  # a length-0 example pools to zeros, not NaN
    np.testing.assert_allclose(np.asarray(got[0]), head[1], rtol=RTOL, atol=ATOL)
    # Padding never matters: garbage (even inf) beyond each length changes nothing.
    pad = jnp.arange(T)[None, :, None] >= lengths[:, None, None]
    noisy = jnp.where(pad, jnp.inf, xs)
    np.testing.assert_array_equal(
        np.asarray(rnn_classify(params, noisy, lengths, pool=pool)), np.asarray(got)
    )
    with pytest.raises(ValueError, match="`pool` must be one of"):
        rnn_classify(params, xs, lengths, pool="sum")


def test_one_layer_dropouts_act_and_need_a_key():
    params = init_rnn(jax.random.key(0), 4, 16, 2)
    tok = init_rnn(jax.random.key(0), 9, 16, 2, token_inputs=True)
    xs = jax.random.normal(jax.random.key(1), (3, 6, 4))
    ids = jax.random.randint(jax.random.key(1), (3, 6), 1, 9)
    k = jax.random.key(5)
    base = rnn_classify(params, xs)
    for option in ("input_dropout", "recurrent_dropout", "output_dropout"):
        with pytest.raises(ValueError, match=f"`key` is required when `{option}` > 0"):
            rnn_classify(params, xs, **{option: 0.5})
        with pytest.raises(ValueError, match=rf"`{option}` must lie in \[0, 1\)"):
            rnn_classify(params, xs, key=k, **{option: 1.0})
        d1 = rnn_classify(params, xs, key=k, **{option: 0.5})
        np.testing.assert_array_equal(d1, rnn_classify(params, xs, key=k, **{option: 0.5}))
        assert not np.allclose(d1, base), option
        assert bool(jnp.all(jnp.isfinite(jax.grad(
            lambda p, o=option: rnn_classify(p, xs, key=k, **{o: 0.5}).sum())(params).layers[0][0].W_a
        )))  # fmt: skip
    # token ids: dropped words read as <UNK> (unk_id) or as a zeroed column of W_ax
    base_t = rnn_apply(tok, ids)
    unk = rnn_apply(tok, ids, input_dropout=0.5, unk_id=0, key=k)
    zeroed = rnn_apply(tok, ids, input_dropout=0.5, key=k)
    assert not np.allclose(unk, base_t) and not np.allclose(zeroed, base_t)
    with pytest.raises(ValueError, match="`unk_id` only acts with token ids and input_dropout"):
        rnn_apply(tok, ids, unk_id=0)
    with pytest.raises(ValueError, match="`unk_id` only acts with token ids and input_dropout"):
        rnn_apply(params, xs, input_dropout=0.5, unk_id=0, key=k)
    keep = jax.random.bernoulli(jax.random.fold_in(k, 1_000_001), 0.5, ids.shape)
    np.testing.assert_allclose(unk, rnn_apply(tok, jnp.where(keep, ids, 0)), rtol=1e-6, atol=1e-6)


def test_nan_in_dense_padding_gives_finite_gradients():
    """Issue 11 case 1: NaN/inf in the padding of dense inputs never reaches a gradient."""
    params = init_rnn(jax.random.key(0), 3, 5, 2, num_layers=2, bidirectional=True)
    xs = jax.random.normal(jax.random.key(1), (3, 6, 3))
    lengths = jnp.array([6, 2, 0])
    pad = jnp.arange(6)[None, :, None] >= lengths[:, None, None]
    noisy = jnp.where(pad, jnp.nan, xs).at[1, 4, 0].set(jnp.inf)
    for backward in ("bptt", "autodiff"):

        def loss(p, x, backward=backward):
            return jnp.sum(rnn_apply(p, x, lengths, backward=backward) ** 2)

        grad = jax.jit(jax.grad(loss, argnums=(0, 1)))  # one compile for both inputs
        g_clean, _ = grad(params, xs)
        g_noisy, dx = grad(params, noisy)
        for a, b in zip(
            jax.tree_util.tree_leaves(g_noisy), jax.tree_util.tree_leaves(g_clean), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        assert bool(jnp.all(jnp.isfinite(dx))) and bool(jnp.all(jnp.where(pad, dx, 0.0) == 0.0))


def test_conventions_a0_keyword_only_and_cast():
    params = init_rnn(jax.random.key(0), 3, 4, 2, num_layers=2)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    a0 = jnp.ones((2, 2, 4))
    with pytest.raises(TypeError, match="`a0` is keyword-only"):
        rnn_layers(params, xs, None, a0)
    ref = rnn_layers(params, xs, a0=a0)
    got = rnn_layers(params, xs, a0=a0.astype(jnp.bfloat16))  # cast, not a scan carry error
    np.testing.assert_array_equal(got[1], ref[1])
    with pytest.raises(ValueError, match="`a0` must be a float array"):
        rnn_apply(params, xs, a0=a0.astype(jnp.int32))


def test_forward_mode_with_backward_autodiff():
    params = init_rnn(jax.random.key(0), 3, 4, 2, num_layers=2, bidirectional=True)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    lengths = jnp.array([5, 3])

    def f(x, backward):
        return rnn_classify(params, x, lengths, backward=backward)

    t = jnp.ones_like(xs)
    _, jvp = jax.jvp(lambda x: f(x, "autodiff"), (xs,), (t,))
    _, vjp_fn = jax.vjp(lambda x: f(x, "bptt"), xs)
    # <J t, e_i> == <t, J^T e_i> for every output i
    for i in range(2):
        e = jnp.zeros((2, 2)).at[:, i].set(1.0)
        np.testing.assert_allclose(
            jnp.sum(jvp * e), jnp.sum(vjp_fn(e)[0] * t), rtol=1e-4, atol=1e-5
        )
    assert jax.jacfwd(lambda x: f(x, "autodiff"))(xs).shape == (2, 2, 2, 5, 3)
    # The default path's error names the option.
    with pytest.raises(TypeError, match="pass backward='autodiff'"):
        jax.jvp(lambda x: f(x, "bptt"), (xs,), (t,))
    tok = init_rnn(jax.random.key(0), 7, 4, 2, token_inputs=True)
    ids = jnp.array([[1, 2, 3], [4, 5, 0]])
    jax.jvp(lambda p: rnn_apply(p, ids, backward="autodiff", lookup="take"), (tok,), (tok,))


# --------------------------------------------------------------------------- gated cells


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_cells_same_shapes_and_padding_never_matters(cell):
    """init_rnn(cell=...) runs through rnn_layers/rnn_apply/rnn_classify with the classic
    cell's shapes; NaN/inf in dense padding changes neither values nor gradients, with
    every dropout on."""
    D, H, C, B, T = 3, 4, 2, 2, 5
    params = init_rnn(jax.random.key(0), D, H, C, cell=cell, num_layers=2, bidirectional=True)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    lengths = jnp.array([5, 2])
    bad = xs.at[1, 2:].set(jnp.nan).at[1, 3].set(jnp.inf)
    a_seq, a_last = rnn_layers(params, xs, lengths)
    assert a_seq.shape == (B, T, 2 * H) and a_last.shape == (4, B, H)
    assert bool(jnp.all(a_seq[1, 2:] == 0))
    opts = dict(
        dropout=0.2, input_dropout=0.2, recurrent_dropout=0.2, output_dropout=0.2,
        key=jax.random.key(2),
    )  # fmt: skip

    def loss(p, x):
        out = 0.0
        for pool in ("last", "mean", "max"):
            out = out + jnp.sum(rnn_classify(p, x, lengths, pool=pool, **opts) ** 2)
        return out + jnp.sum(rnn_apply(p, x, lengths, **opts) ** 2)

    # jitted: one compile for both calls (eagerly, each traced and compiled every scan)
    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    (v1, (gp1, gx1)) = value_and_grad(params, xs)
    (v2, (gp2, gx2)) = value_and_grad(params, bad)
    assert float(v1) == float(v2)
    for u, v in zip(jax.tree.leaves(gp1), jax.tree.leaves(gp2), strict=True):
        np.testing.assert_array_equal(u, v)
    assert bool(jnp.all(gx2[1, 2:] == 0)) and bool(jnp.all(jnp.isfinite(gx2)))
    np.testing.assert_array_equal(gx1[0], gx2[0])
    if cell == "lstm":
        _, (h_n, c_n) = rnn_layers(params, xs, lengths, return_cell_state=True)
        np.testing.assert_array_equal(h_n, a_last)
        assert c_n.shape == h_n.shape
    else:
        with pytest.raises(ValueError, match="return_cell_state"):
            rnn_layers(params, xs, lengths, return_cell_state=True)


def test_gated_token_inputs_word_dropout():
    params = init_rnn(jax.random.key(0), 10, 4, 3, cell="gru", token_inputs=True)
    ids = jnp.array([[1, 2, 3], [4, 5, 0]])
    y = rnn_classify(params, ids, jnp.array([3, 2]), input_dropout=0.5, key=jax.random.key(1))
    y0 = rnn_classify(params, ids, jnp.array([3, 2]))
    assert y.shape == y0.shape == (2, 3) and not bool(jnp.allclose(y, y0))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_language_model_generation_continues_rnn_apply(cell):
    """lm_initial_state/lm_step with a GRU/LSTM: the first logits equal rnn_apply's at the
    seed's last position (the LSTM's LMState carries c); greedy and beam search run."""
    from rnn_jax.generate import beam_search, greedy_decode, lm_initial_state, lm_step

    lm = init_rnn(jax.random.key(0), 10, 8, 10, cell=cell, num_layers=2, token_inputs=True)
    seed, seed_lengths = jnp.array([[4, 5, 6], [7, 0, 0]]), jnp.array([3, 1])
    state, start = lm_initial_state(lm, seed, seed_lengths, bos_id=2)
    assert (state.c is not None) == (cell == "lstm")
    _, logits = lm_step(lm, state, start)
    prefix = jnp.concatenate([jnp.full((2, 1), 2), seed], axis=1)
    expected = rnn_apply(lm, prefix, seed_lengths + 1)[jnp.arange(2), seed_lengths]
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    tokens, _ = greedy_decode(lm_step, lm, state, start, max_len=4, eos_id=3)
    assert tokens.shape == (2, 4)
    assert beam_search(
        lm_step, lm, state, start, max_len=4, eos_id=3, beam_width=2
    ).tokens.shape == (
        2,
        2,
        4,
    )
