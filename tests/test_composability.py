"""rnn_jax inside other JAX code: Flax linen and NNX, vmap ensembles, forward mode,
jax.export with a symbolic batch, flax.serialization, streaming, mixed dtypes (issue 10).

Each test is the few lines a researcher would write to use the functions in another
framework or transformation; it fails if that stops working.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import export

from rnn_jax import RNNParams, init_rnn, rnn_apply, rnn_classify, rnn_layers

# The library's own code under strict dtype promotion (optax, used in two tests, is not).
pytestmark = pytest.mark.usefixtures("strict_dtypes")

D, H, C = 5, 8, 3


def _xs(B=4, T=7, seed=1):
    return jax.random.normal(jax.random.key(seed), (B, T, D))


def _ids(B=4, T=7, V=11, seed=2):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, V)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- Flax linen --------------------------------------------------------------------


def test_flax_linen_param_apply_and_jit_init():
    import flax.linen as nn

    class Tagger(nn.Module):
        @nn.compact
        def __call__(self, xs, lengths):
            params = self.param("rnn", lambda k: init_rnn(k, D, H, C, num_layers=2))
            return rnn_apply(params, xs, lengths)

    xs, lengths = _xs(), jnp.array([7, 5, 1, 0])
    model = Tagger()
    variables = jax.jit(model.init)(jax.random.key(0), xs, lengths)
    rnn = variables["params"]["rnn"]
    assert isinstance(rnn, RNNParams) and rnn.num_layers == 2
    y = model.apply(variables, xs, lengths)
    np.testing.assert_allclose(y, rnn_apply(rnn, xs, lengths), rtol=1e-6, atol=1e-6)
    y_jit = jax.jit(model.apply)(variables, xs, lengths)
    np.testing.assert_allclose(y_jit, y, rtol=1e-6, atol=1e-6)
    # Gradients flow to the parameter through `apply`.
    grads = jax.grad(lambda v: jnp.sum(model.apply(v, xs, lengths) ** 2))(variables)
    assert float(jnp.abs(grads["params"]["rnn"].layers[0][0].W_a).sum()) > 0.0


# --- Flax NNX ----------------------------------------------------------------------


def _nnx_model():
    from flax import nnx

    class Tagger(nnx.Module):
        def __init__(self, *, rngs: nnx.Rngs):
            params = init_rnn(rngs.params(), D, H, C, bidirectional=True)
            # Every array of the RNNParams pytree becomes an nnx.Param leaf.
            self.rnn = nnx.data(jax.tree.map(nnx.Param, params))

        def __call__(self, xs, lengths=None):
            params = jax.tree.map(lambda v: v[...], self.rnn, is_leaf=_is_variable)
            return rnn_apply(params, xs, lengths)

    return nnx, Tagger


def _is_variable(x):
    from flax import nnx

    return isinstance(x, nnx.Variable)


def test_flax_nnx_module_eval_shape_jit_and_one_optimizer_step():
    nnx, Tagger = _nnx_model()
    abstract = nnx.eval_shape(lambda: Tagger(rngs=nnx.Rngs(0)))
    shapes = [
        v.shape for v in jax.tree.leaves(nnx.state(abstract, nnx.Param), is_leaf=_is_variable)
    ]
    # two directions of (W_a, b_a) and the head (W_y, b_y), no arrays allocated
    assert sorted(shapes) == sorted([(H, H + D), (H,)] * 2 + [(C, 2 * H), (C,)])

    model = Tagger(rngs=nnx.Rngs(0))
    xs, lengths = _xs(), jnp.array([7, 5, 1, 0])
    y = nnx.jit(lambda m, x, n: m(x, n))(model, xs, lengths)
    assert y.shape == (4, 7, C)
    np.testing.assert_allclose(y, model(xs, lengths), rtol=1e-6, atol=1e-6)

    before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, xs, lengths):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(xs, lengths) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    train_step(model, optimizer, xs, lengths)
    after = nnx.state(model, nnx.Param)
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        if old.ndim == 2:  # every weight matrix moves (the zero biases of b_a may too)
            assert not np.array_equal(np.asarray(old), np.asarray(new))


# --- vmap ensembles ----------------------------------------------------------------


def test_vmap_ensemble_of_init_and_apply_equals_a_loop():
    keys = jax.random.split(jax.random.key(0), 4)
    init = partial(init_rnn, input_size=D, hidden_size=H, output_size=C, num_layers=2)
    ensemble = jax.vmap(lambda k: init(k))(keys)
    assert ensemble.layers[0][0].W_a.shape == (4, H, H + D)
    xs, lengths = _xs(), jnp.array([7, 5, 1, 0])
    ys = jax.jit(jax.vmap(rnn_apply, in_axes=(0, None, None)))(ensemble, xs, lengths)
    for i, k in enumerate(keys):
        single = init(k)
        _assert_trees_equal(jax.tree.map(lambda a, i=i: a[i], ensemble), single)
        np.testing.assert_allclose(ys[i], rnn_apply(single, xs, lengths), rtol=1e-5, atol=1e-6)


# --- forward-mode autodiff ---------------------------------------------------------


def test_jvp_jacfwd_hessian_with_backward_autodiff(x64):
    params = init_rnn(jax.random.key(0), 2, 3, 2, num_layers=2, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (2, 4, 2), jnp.float64)
    lengths = jnp.array([4, 2])

    def loss(x, backward="autodiff"):
        return jnp.sum(jnp.tanh(rnn_classify(params, x, lengths, backward=backward)))

    # Each transformation jitted: one compile each (eagerly, every scan traced and compiled
    # on each call).
    t = jax.random.normal(jax.random.key(2), xs.shape, jnp.float64)
    eps = 1e-6
    loss_jit = jax.jit(loss)
    fd = (loss_jit(xs + eps * t) - loss_jit(xs - eps * t)) / (2 * eps)
    _, jvp = jax.jit(partial(jax.jvp, loss))((xs,), (t,))
    np.testing.assert_allclose(jvp, fd, rtol=1e-6, atol=1e-9)

    # jacfwd (autodiff path) equals jacrev (the default hand-written BPTT).
    J_fwd = jax.jit(jax.jacfwd(loss))(xs)
    g = jax.jit(jax.grad(loss), static_argnums=1)
    J_rev = g(xs, "bptt")
    np.testing.assert_allclose(J_fwd, J_rev, rtol=1e-9, atol=1e-12)

    # The Hessian against finite differences of the default path's gradient.
    Hess = jax.jit(jax.hessian(loss))(xs)
    assert Hess.shape == xs.shape * 2
    fd_H = (g(xs + eps * t, "bptt") - g(xs - eps * t, "bptt")) / (2 * eps)
    np.testing.assert_allclose(jnp.tensordot(Hess, t, axes=3), fd_H, rtol=1e-5, atol=1e-8)


def test_forward_mode_for_token_ids_with_take_lookup(x64):
    params = init_rnn(jax.random.key(0), 11, 4, 2, token_inputs=True, dtype=jnp.float64)
    ids = _ids(B=2, T=5)
    tangent = jax.tree.map(lambda a: jnp.ones_like(a) * 0.1, params)

    def loss(p):
        return jnp.sum(rnn_apply(p, ids, backward="autodiff", lookup="take") ** 2)

    eps = 1e-6
    shift = lambda s: jax.tree.map(lambda a, t: a + s * eps * t, params, tangent)  # noqa: E731
    fd = (loss(shift(1.0)) - loss(shift(-1.0))) / (2 * eps)
    _, jvp = jax.jvp(loss, (params,), (tangent,))
    np.testing.assert_allclose(jvp, fd, rtol=1e-6)


def test_forward_mode_on_the_default_path_names_the_option():
    params = init_rnn(jax.random.key(0), D, H, C)
    xs = _xs()
    with pytest.raises(TypeError, match="backward='autodiff'"):
        jax.jvp(lambda x: rnn_apply(params, x), (xs,), (xs,))
    with pytest.raises(TypeError, match="backward='autodiff'"):
        jax.jacfwd(lambda x: jnp.sum(rnn_apply(params, x)))(xs)
    tok = init_rnn(jax.random.key(0), 11, H, C, token_inputs=True)
    with pytest.raises(TypeError, match="lookup='take'"):
        jax.jvp(lambda p: rnn_apply(p, _ids(), backward="autodiff"), (tok,), (tok,))


# --- jax.export with a symbolic batch ----------------------------------------------


def _export_and_compare(fn, args, spec_index, spec, batches):
    """Export ``jit(fn)`` with ``args[spec_index]`` abstract as ``spec``; compare calls."""
    specs = list(args)
    specs[spec_index] = spec
    exported = export.export(jax.jit(fn))(*specs)
    for B in batches:
        call = list(args)
        call[spec_index] = args[spec_index][:B]
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
            exported.call(*call),
            fn(*call),
        )


def test_export_dense_apply_with_symbolic_batch():
    params = init_rnn(jax.random.key(0), D, H, C, num_layers=2, bidirectional=True)
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 7, 5"), jnp.float32)
    _export_and_compare(rnn_apply, (params, _xs()), 1, spec, (4, 2))


def test_export_token_ids_apply_with_symbolic_batch_take():
    params = init_rnn(jax.random.key(0), 11, H, C, token_inputs=True)
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 7"), jnp.int32)
    fn = partial(rnn_apply, lookup="take")
    _export_and_compare(fn, (params, _ids()), 1, spec, (4, 2))


def test_export_token_ids_apply_with_symbolic_batch_default_lookup():
    params = init_rnn(jax.random.key(0), 11, H, C, token_inputs=True)
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 7"), jnp.int32)
    _export_and_compare(rnn_apply, (params, _ids()), 1, spec, (4, 2))


@pytest.mark.parametrize("backward", ["bptt", "autodiff"])
def test_export_gradient_with_symbolic_batch(backward):
    params = init_rnn(jax.random.key(0), D, H, C, num_layers=2)
    lengths = jnp.array([7, 5, 1, 0])

    def grad(p, xs, lengths):
        loss = lambda p: jnp.mean(rnn_apply(p, xs, lengths, backward=backward) ** 2)  # noqa: E731
        return jax.grad(loss)(p)

    b = export.symbolic_shape("b")[0]
    specs = (
        params,
        jax.ShapeDtypeStruct((b, 7, D), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.int32),
    )
    exported = export.export(jax.jit(grad))(*specs)
    for B in (4, 2):
        args = (params, _xs()[:B], lengths[:B])
        _assert_close_trees(exported.call(*args), grad(*args))


def test_export_token_ids_gradient_with_symbolic_batch():
    params = init_rnn(jax.random.key(0), 11, H, C, token_inputs=True)

    def grad(p, ids):
        return jax.grad(lambda p: jnp.mean(rnn_apply(p, ids) ** 2))(p)

    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 7"), jnp.int32)
    exported = export.export(jax.jit(grad))(params, spec)
    for B in (4, 2):
        _assert_close_trees(exported.call(params, _ids()[:B]), grad(params, _ids()[:B]))


def _assert_close_trees(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


# --- flax.serialization ------------------------------------------------------------


def test_flax_serialization_round_trip_of_params_and_train_state():
    from flax import serialization
    from flax.training.train_state import TrainState

    from rnn_jax.interop import register_flax_serialization

    register_flax_serialization()
    register_flax_serialization()  # idempotent
    arch = dict(num_layers=2, bidirectional=True, token_inputs=True, merge="sum")
    params = init_rnn(jax.random.key(0), 11, H, C, **arch)
    template = init_rnn(jax.random.key(9), 11, H, C, **arch)
    restored = serialization.from_bytes(template, serialization.to_bytes(params))
    _assert_trees_equal(restored, params)
    assert restored.config() == params.config()
    # The state dict holds the arrays by field name; the configuration is the template's.
    sd = serialization.to_state_dict(params)
    assert sorted(sd) == ["head", "layers"] and sorted(sd["layers"]["1"]["0"]) == ["W_a", "b_a"]
    assert serialization.msgpack_restore(serialization.to_bytes(params)).keys() == sd.keys()

    state = TrainState.create(apply_fn=rnn_apply, params=params, tx=optax.adam(1e-3))
    grads = jax.tree.map(jnp.ones_like, params)
    with jax.numpy_dtype_promotion("standard"):  # optax's adam: a float times its int32 count
        state = state.apply_gradients(grads=grads)
    blank = TrainState.create(apply_fn=rnn_apply, params=template, tx=optax.adam(1e-3))
    back = serialization.from_bytes(blank, serialization.to_bytes(state))
    _assert_trees_equal(back.params, state.params)
    _assert_trees_equal(back.opt_state, state.opt_state)
    assert int(back.step) == 1 and back.params.config() == params.config()

    # A template of another architecture is refused by Flax (not silently reshaped).
    other = init_rnn(jax.random.key(9), 11, H, C, num_layers=1, bidirectional=True)
    with pytest.raises(ValueError, match="size of the list and the state dict"):
        serialization.from_bytes(other, serialization.to_bytes(params))
    with pytest.raises(ValueError, match=r"must hold the fields \['layers', 'head'\]"):
        serialization.from_state_dict(template, {"layers": sd["layers"]})


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_flax_serialization_of_gated_params_stacks_and_seq2seq(cell):
    from flax import serialization

    from rnn_jax.interop import register_flax_serialization
    from rnn_jax.seq2seq import init_seq2seq

    register_flax_serialization()
    params = init_rnn(jax.random.key(0), D, H, C, cell=cell, num_layers=2)
    template = init_rnn(jax.random.key(1), D, H, C, cell=cell, num_layers=2)
    back = serialization.from_bytes(template, serialization.to_bytes(params))
    _assert_trees_equal(back, params)
    assert back.cell == cell
    stack = serialization.from_bytes(template.stack, serialization.to_bytes(params.stack))
    _assert_trees_equal(stack, params.stack)
    s2s = init_seq2seq(jax.random.key(0), 9, 7, hidden_size=4, bridge="project", cell=cell)
    blank = init_seq2seq(jax.random.key(1), 9, 7, hidden_size=4, bridge="project", cell=cell)
    _assert_trees_equal(serialization.from_bytes(blank, serialization.to_bytes(s2s)), s2s)


def test_flax_serialization_keeps_the_attention_weights():
    from flax import serialization

    from rnn_jax.interop import register_flax_serialization
    from rnn_jax.seq2seq import init_seq2seq

    register_flax_serialization()
    s2s = init_seq2seq(jax.random.key(0), 9, 7, hidden_size=4, attention="additive")
    blank = init_seq2seq(jax.random.key(1), 9, 7, hidden_size=4, attention="additive")
    assert "attention" in serialization.to_state_dict(s2s)
    back = serialization.from_bytes(blank, serialization.to_bytes(s2s))
    _assert_trees_equal(back.attention, s2s.attention)  # not the template's weights
    plain = init_seq2seq(jax.random.key(1), 9, 7, hidden_size=4)
    assert "attention" not in serialization.to_state_dict(plain)  # the old layout
    with pytest.raises(ValueError, match="template has none"):
        serialization.from_bytes(plain, serialization.to_bytes(s2s))
    with pytest.raises(ValueError, match=r"missing \['attention'\]"):
        serialization.from_bytes(blank, serialization.to_bytes(plain))


# --- streaming ---------------------------------------------------------------------


def test_streaming_in_chunks_through_a0_equals_one_shot():
    params = init_rnn(jax.random.key(0), D, H, C, num_layers=2)
    xs = _xs(B=3, T=24)
    y_full = rnn_apply(params, xs)
    a_seq_full, a_last_full = rnn_layers(params, xs)

    step = jax.jit(lambda a, x: (rnn_apply(params, x, a0=a), rnn_layers(params, x, a0=a)[1]))
    a = None
    chunks = []
    for start in range(0, 24, 5):  # chunks of 5, 5, 5, 5, 4
        x = xs[:, start : start + 5]
        if a is None:
            y, a = rnn_apply(params, x), rnn_layers(params, x)[1]
        else:
            y, a = step(a, x)
        chunks.append(y)
    np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), y_full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, a_last_full, rtol=1e-5, atol=1e-6)
    assert a.shape == (2, 3, H)  # (num_layers * directions, B, H), fed back as-is


# --- mixed dtypes ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_params_with_float32_inputs(dtype):
    params = init_rnn(jax.random.key(0), D, H, C, num_layers=2, dtype=dtype)
    xs, lengths = _xs(), jnp.array([7, 5, 1, 0])
    # Documented: float inputs are cast to the parameters' dtype (jitted: one compile per
    # input dtype, where eagerly every call compiles its scans again).
    apply = jax.jit(rnn_apply)
    y = apply(params, xs, lengths)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, apply(params, xs.astype(dtype), lengths))
    g = jax.jit(jax.grad(lambda p: jnp.sum(rnn_classify(p, xs, lengths).astype(jnp.float32))))(
        params
    )
    assert g.layers[0][0].W_a.dtype == dtype


# --- strict dtype promotion on the gated paths --------------------------------------


def test_gated_seq2seq_remat_and_word_dropout_under_strict_dtypes():
    """The module runs under jax_numpy_dtype_promotion="strict": the gated seq2seq, the
    chunked loss and word dropout on token ids promote nothing implicitly."""
    from rnn_jax.long import rnn_loss_remat
    from rnn_jax.seq2seq import init_seq2seq, seq2seq_loss

    src, sl = jnp.array([[5, 6, 7], [8, 0, 0]]), jnp.array([3, 1])
    tgt, tl = jnp.array([[4, 3], [3, 0]]), jnp.array([2, 1])
    s2s = init_seq2seq(jax.random.key(0), 9, 6, hidden_size=4, feed_context=True, cell="lstm")
    g = jax.jit(jax.grad(partial(seq2seq_loss, bos_id=2)))(s2s, src, sl, tgt, tl)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))
    lm = init_rnn(jax.random.key(1), 9, H, 9, cell="gru", token_inputs=True)
    loss = jax.jit(partial(rnn_loss_remat, chunk_size=2))(lm, src, src, sl)
    assert loss.dtype == jnp.float32
    y = rnn_classify(lm, src, sl, input_dropout=0.5, key=jax.random.key(2))
    assert y.shape == (2, 9) and y.dtype == jnp.float32
