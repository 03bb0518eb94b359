"""Data-parallel training: the step over split batches equals the step over the whole batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnn_jax
from rnn_jax.parallel import batch_mesh, make_parallel_train_step, parallel_sums, shard_batch
from rnn_jax.train import init_train_state, make_train_step


def _tagging_problem(B=4, T=7, V=11, H=5, C=3, seed=0):
    rng = np.random.default_rng(seed)
    params = rnn_jax.init_rnn(jax.random.key(seed), V, H, C, bidirectional=True, token_inputs=True)
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    labels = rng.integers(0, C, (B, T)).astype(np.int32)
    lengths = np.array([7, 1, 3, 6][:B] + [T] * max(0, B - 4), np.int32)
    return params, (ids, labels, lengths)


def _loss_fn(params, batch, *, key):
    ids, labels, lengths = batch
    logits = rnn_jax.rnn_apply(params, ids, lengths)
    return rnn_jax.masked_softmax_cross_entropy(logits, labels, lengths=lengths)


def _sums(params, batch):
    ids, labels, lengths = batch
    logits = rnn_jax.rnn_apply(params, ids, lengths)
    loss_sum = rnn_jax.masked_softmax_cross_entropy(
        logits, labels, lengths=lengths, reduction="sum"
    )
    return {"loss_sum": loss_sum, "count": jnp.sum(lengths)}


def _valid_tokens(batch):
    return jnp.sum(batch[2])


def test_one_device_mesh_reproduces_make_train_step():
    params, batch = _tagging_problem()
    opt = optax.adam(1e-2)
    mesh = batch_mesh(jax.devices()[:1])
    single = make_train_step(_loss_fn, opt)
    parallel = make_parallel_train_step(_loss_fn, opt, mesh, weight_fn=_valid_tokens)
    s1 = s2 = init_train_state(params, opt, key=jax.random.key(1))
    for _ in range(3):
        s1, m1 = single(s1, batch)
        s2, m2 = parallel(s2, batch)
        np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-6)
        np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=1e-5)
    leaves1, leaves2 = jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params)
    for a, b in zip(leaves1, leaves2, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    assert int(s2.step) == 3


def test_parallel_sums_one_device():
    params, batch = _tagging_problem()

    got = parallel_sums(_sums, batch_mesh(jax.devices()[:1]))(params, batch)
    want = _sums(params, batch)
    np.testing.assert_allclose(got["loss_sum"], want["loss_sum"], rtol=1e-6)
    assert float(got["count"]) == float(want["count"]) == 17.0


def test_bad_arguments():
    mesh = batch_mesh(jax.devices()[:1])
    with pytest.raises(ValueError, match="`mesh` must be a jax.sharding.Mesh"):
        shard_batch(np.ones(4), "cpu")
    with pytest.raises(ValueError, match="`batch` must hold at least one array"):
        shard_batch({}, mesh)
    with pytest.raises(ValueError, match=r"`batch` leaf 0 must have a first \(batch\) axis"):
        shard_batch(np.float32(1.0), mesh)
    with pytest.raises(ValueError, match="`devices` must hold at least one device"):
        batch_mesh([])
    with pytest.raises(ValueError, match="`axis_name`"):
        batch_mesh(axis_name="")
    with pytest.raises(ValueError, match="`mesh`"):
        make_parallel_train_step(_loss_fn, optax.sgd(0.1), mesh=None)


# Several CPU devices need a fresh process (the device count is fixed when JAX starts).
_TWO_DEVICES = """
    import json
    import jax.numpy as jnp, numpy as np, optax
    from test_parallel import _tagging_problem, _loss_fn, _sums, _valid_tokens
    import rnn_jax
    from rnn_jax.parallel import batch_mesh, make_parallel_train_step, parallel_sums, shard_batch
    from rnn_jax.train import init_train_state, make_train_step

    params, batch = _tagging_problem()
    opt = optax.sgd(0.5)
    mesh = batch_mesh()
    out = {}
    s1 = s2 = s3 = init_train_state(params, opt, key=jax.random.key(1))
    s1, m1 = make_train_step(_loss_fn, opt)(s1, batch)
    s2, m2 = make_parallel_train_step(_loss_fn, opt, mesh, weight_fn=_valid_tokens)(s2, batch)
    # Equal weights per shard: wrong for a masked token mean over unequal lengths.
    s3, m3 = make_parallel_train_step(_loss_fn, opt, mesh)(s3, batch)
    leaves = lambda s: [np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(s.params)]
    out["params_err"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(leaves(s1), leaves(s2), strict=True)
    )
    out["naive_params_err"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(leaves(s1), leaves(s3), strict=True)
    )
    out["loss"] = [float(m1["loss"]), float(m2["loss"]), float(m3["loss"])]
    out["grad_norm"] = [float(m1["grad_norm"]), float(m2["grad_norm"])]
    placed = shard_batch(batch, mesh)[0]
    out["shards"] = sorted(
        (s.device.id, list(s.data.shape), s.index[0].start or 0) for s in placed.addressable_shards
    )

    got = parallel_sums(_sums, mesh)(params, batch)
    want = _sums(params, batch)
    out["sums"] = [float(got["loss_sum"]), float(want["loss_sum"]), float(got["count"])]
    try:
        make_parallel_train_step(_loss_fn, opt, mesh)(s1, tuple(a[:3] for a in batch))
    except ValueError as e:
        out["odd_batch_error"] = str(e)
    print(json.dumps(out))
    """


def test_two_cpu_devices_equal_the_whole_batch_on_one(on_cpu_devices):
    out = on_cpu_devices(_TWO_DEVICES)
    # Shards hold 8 and 9 valid tokens of 17: the weighted combination is exact ...
    assert out["params_err"] < 1e-5, out
    np.testing.assert_allclose(out["loss"][1], out["loss"][0], rtol=1e-6)
    np.testing.assert_allclose(out["grad_norm"][1], out["grad_norm"][0], rtol=1e-5)
    # ... and the default (equal weights per shard) differs measurably, so the check bites.
    assert out["naive_params_err"] > 1e-3, out
    assert abs(out["loss"][2] - out["loss"][0]) > 1e-4, out
    assert out["shards"] == [[0, [2, 7], 0], [1, [2, 7], 2]], out
    np.testing.assert_allclose(out["sums"][0], out["sums"][1], rtol=1e-6)
    assert out["sums"][2] == 17.0
    assert "divisible by the 2 device(s)" in out["odd_batch_error"], out
