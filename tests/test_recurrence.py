"""rnn_unroll: one layer, one direction, against the NumPy loop; masking semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import ref_layer

from rnn_jax import init_layer, init_rnn, lengths_to_mask, rnn_cell, rnn_unroll

_unroll = jax.jit(rnn_unroll, static_argnames=("reverse", "activation", "unroll"))


def _normal_bias(key, shape, dtype):
    return 0.3 * jax.random.normal(key, shape, dtype)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("tokens", [False, True])
def test_matches_numpy_loop(reverse, activation, tokens):
    rng = np.random.default_rng(0)
    B, T, D, H = 4, 6, 5, 3
    layer = init_layer(D, H, key=jax.random.key(0), bias_init=_normal_bias)
    xs = (
        jnp.asarray(rng.integers(0, D, (B, T)))
        if tokens
        else jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    )
    lengths = jnp.array([0, 1, T, 3])
    a0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    a_seq, a_last = _unroll(layer, xs, lengths, a0=a0, reverse=reverse, activation=activation)
    W_a, b_a = (np.asarray(v, np.float64) for v in layer)
    for b in range(B):
        ref_seq, ref_last = ref_layer(
            W_a,
            b_a,
            np.asarray(xs[b], np.float64) if not tokens else np.asarray(xs[b]),
            int(lengths[b]),
            np.asarray(a0[b], np.float64),
            reverse=reverse,
            activation=activation,
        )
        np.testing.assert_allclose(a_seq[b], ref_seq, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a_last[b], ref_last, rtol=1e-5, atol=1e-6)


def test_unmasked_equals_scan_of_the_cell():
    layer = init_layer(3, 4, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    a_seq, a_last = rnn_unroll(layer, xs)

    def one(x):  # single-sequence maths, vmapped over the batch
        return jax.lax.scan(lambda a, x_t: rnn_cell(layer, a, x_t), jnp.zeros(4), x)

    last, seq = jax.vmap(one)(xs)
    np.testing.assert_allclose(a_seq, seq, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a_last, last, rtol=1e-6, atol=1e-6)


def test_mask_equals_lengths_and_holes_keep_the_state():
    layer = init_layer(3, 4, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    lengths = jnp.array([5, 2])
    by_len = rnn_unroll(layer, xs, lengths)
    by_mask = rnn_unroll(layer, xs, mask=lengths_to_mask(lengths, 5))
    for x, y in zip(by_len, by_mask, strict=True):
        np.testing.assert_array_equal(x, y)
    # A mask with a hole: the masked step emits zero and passes the state through.
    mask = jnp.array([[True, False, True, True, True]] * 2)
    seq, _ = rnn_unroll(layer, xs, mask=mask)
    skipped = jnp.concatenate([xs[:, :1], xs[:, 2:]], axis=1)
    ref, _ = rnn_unroll(layer, skipped)
    np.testing.assert_array_equal(seq[:, 1], 0.0)
    np.testing.assert_allclose(seq[:, 2:], ref[:, 1:], rtol=1e-5, atol=1e-6)


@given(
    lengths=st.lists(st.integers(0, 6), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
    reverse=st.booleans(),
)
def test_reverse_starts_at_the_last_valid_token(lengths, seed, reverse):
    """Reversing the valid part of each example by hand gives the same states."""
    layer = init_layer(3, 4, key=jax.random.key(0))
    xs = np.asarray(jax.random.normal(jax.random.key(seed), (3, 6, 3)))
    lengths = np.asarray(lengths, np.int32)
    seq, last = _unroll(layer, jnp.asarray(xs), jnp.asarray(lengths), reverse=True)
    for b, L in enumerate(lengths):
        flipped = xs[b : b + 1, :L][:, ::-1]
        if L == 0:
            np.testing.assert_array_equal(last[b], 0.0)
            continue
        f_seq, f_last = _unroll(layer, jnp.asarray(np.ascontiguousarray(flipped)), reverse=False)
        np.testing.assert_allclose(seq[b, :L], f_seq[0, ::-1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(last[b], f_last[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(seq[b, L:], 0.0)


def test_unroll_factor_does_not_change_results():
    layer = init_layer(3, 4, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 9, 3))
    base = rnn_unroll(layer, xs, jnp.array([9, 4]))
    for unroll in (2, 4, True):
        out = rnn_unroll(layer, xs, jnp.array([9, 4]), unroll=unroll)
        np.testing.assert_allclose(out[0], base[0], rtol=1e-6, atol=1e-7)


def test_errors():
    layer = init_layer(3, 4, key=jax.random.key(0))
    xs = jnp.zeros((2, 5, 3))
    with pytest.raises(ValueError, match=r"`a0` must have shape \(B, H\) = \(2, 4\), got \(4,\)"):
        rnn_unroll(layer, xs, a0=jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`xs` must have feature size D = 3"):
        rnn_unroll(layer, jnp.zeros((2, 5, 4)))
    with pytest.raises(
        ValueError, match=r"`mask` must be boolean \(or integer 0/1\), got dtype float32"
    ):
        rnn_unroll(layer, xs, mask=jnp.ones((2, 5), jnp.float32))
    with pytest.raises(
        ValueError, match=r"`mask` as integers must hold only 0 and 1, got values in \[0, 2\]"
    ):
        rnn_unroll(layer, xs, mask=jnp.array([[1, 1, 2, 0, 0], [1, 0, 0, 0, 0]]))
    # An integer 0/1 mask means the same as the boolean one (as in the losses).
    int_mask = jnp.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    for a, b in zip(
        rnn_unroll(layer, xs, mask=int_mask), rnn_unroll(layer, xs, mask=int_mask == 1), strict=True
    ):
        assert jnp.array_equal(a, b)
    with pytest.raises(ValueError, match="`xs` must be floats"):
        rnn_unroll(layer, jnp.zeros((2, 5, 3), jnp.complex64))


@pytest.mark.parametrize(("D", "H"), [(3, 5), (7, 4)])  # narrow and wide inputs
def test_input_term_gradients_equal_autodiff(x64, D, H):
    from rnn_jax.recurrence import input_projection, input_term

    k1, k2, k3 = jax.random.split(jax.random.key(D), 3)
    layer = init_layer(D, H, key=k1)
    layer = jax.tree.map(lambda a: a.astype(jnp.float64), layer)
    xs = jax.random.normal(k2, (2, 6, D), jnp.float64)
    w = jax.random.normal(k3, (6, 2, H), jnp.float64)

    def plain(layer, xs):  # the definition, differentiated by jax.grad
        return jnp.einsum("btd,hd->tbh", xs, layer.W_a[:, H:])

    for f in (input_term, lambda p, x: input_projection(p, x) - p.b_a[None, None, :]):
        g = jax.grad(lambda p, x, f=f: jnp.sum(w * jnp.sin(f(p, x))), argnums=(0, 1))(layer, xs)
        g_ref = jax.grad(lambda p, x: jnp.sum(w * jnp.sin(plain(p, x))), argnums=(0, 1))(layer, xs)
        np.testing.assert_allclose(g[0].W_a, g_ref[0].W_a, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g[1], g_ref[1], rtol=1e-12, atol=1e-12)


_SHARDED_UNROLL = """
    import json
    import jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from rnn_jax import init_layer, rnn_unroll

    B, T, V, D, H = 4, 6, 9, 3, 5
    rng = np.random.default_rng(1)
    mesh = jax.make_mesh((2,), ("b",), axis_types=(AxisType.Explicit,))
    shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("b")))
    out = {}
    for token in (True, False):
        layer = init_layer(V if token else D, H, key=jax.random.key(2))
        xs = (rng.integers(0, V, (B, T)).astype(np.int32) if token
              else rng.standard_normal((B, T, D)).astype(np.float32))
        lengths = np.array([6, 0, 2, 5], np.int32)
        for reverse in (False, True):
            def loss(layer, xs, lengths):
                a_seq, a_last = rnn_unroll(layer, xs, lengths, reverse=reverse)
                return jnp.sum(jnp.sin(a_seq)) + jnp.sum(a_last**2), (a_seq, a_last)

            (ref, (ref_seq, ref_last)), ref_g = jax.value_and_grad(loss, has_aux=True)(
                layer, xs, lengths)
            with jax.set_mesh(mesh):
                (val, (seq, last)), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(
                    layer, shard(xs), shard(lengths))
            out[f"{token}-{reverse}"] = [
                abs(float(val) - float(ref)),
                float(jnp.max(jnp.abs(seq - ref_seq))),
                float(jnp.max(jnp.abs(last - ref_last))),
                max(float(jnp.max(jnp.abs(a - b))) for a, b in
                    zip(jax.tree.leaves(g), jax.tree.leaves(ref_g), strict=True)),
                str(jax.typeof(seq).sharding.spec),
            ]
    print(json.dumps(out))
    """


def test_rnn_unroll_on_a_batch_sharded_over_two_devices(on_cpu_devices):
    out = on_cpu_devices(_SHARDED_UNROLL)
    assert len(out) == 4, out
    for name, (d_loss, d_seq, d_last, d_grad, spec) in out.items():
        assert max(d_loss, d_seq, d_last, d_grad) < 1e-5, (name, out[name])
        assert spec.startswith("P('b'"), (name, spec)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("tokens", [False, True])
def test_rnn_unroll_equals_vmap_of_scan_over_the_cell(reverse, tokens):
    """The fused unroll against the cell itself: vmap over the batch of lax.scan(rnn_cell)."""
    from reference import cell_scan_reference

    rng = np.random.default_rng(7)
    B, T, D, H = 4, 6, 5, 3
    layer = init_layer(D, H, key=jax.random.key(1))
    if tokens:
        xs = jnp.asarray(rng.integers(0, D, size=(B, T)), jnp.int32)
    else:
        xs = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    lengths = jnp.array([6, 0, 3, 1])
    a0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    got = rnn_unroll(layer, xs, lengths, a0=a0, reverse=reverse)
    ref = cell_scan_reference(layer, xs, lengths, a0, reverse=reverse)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5)


def test_unroll_errors_from_issue_11():
    params = init_rnn(jax.random.key(0), 3, 4, 2, bidirectional=True)
    xs = jnp.zeros((2, 5, 3))
    with pytest.raises(ValueError, match="`layer` must be one LayerParams .*a layer's tuple"):
        rnn_unroll(params.layers[0], xs)
    # a float a0 of another dtype is cast (one carry dtype for lax.scan); ints are rejected
    layer = params.layers[0][0]
    a_seq, _ = rnn_unroll(layer, xs, a0=jnp.ones((2, 4), jnp.bfloat16))
    assert a_seq.dtype == jnp.float32
    with pytest.raises(ValueError, match="`a0` must be a float array, got dtype int32"):
        rnn_unroll(layer, xs, a0=jnp.ones((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="`backward` must be 'bptt' or 'autodiff'"):
        rnn_unroll(layer, xs, backward="magic")
    with pytest.raises(ValueError, match="`lookup` must be 'sorted' or 'take'"):
        rnn_unroll(layer, xs, lookup="magic")
