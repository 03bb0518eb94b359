"""Tests of rnn_jax.train: optimizer, train step, evaluation, early stopping, the fit loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax import init_rnn, rnn_apply
from rnn_jax.checkpoint import Checkpointer
from rnn_jax.losses import masked_sigmoid_binary_cross_entropy
from rnn_jax.progress import MetricsLogger, read_metrics
from rnn_jax.train import (
    EarlyStopping,
    EarlyStoppingState,
    NonFiniteLossError,
    TrainState,
    default_optimizer,
    evaluate,
    fit,
    init_train_state,
    make_train_step,
)


def _raw(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(x)
    return x


def _trees_equal(a, b) -> bool:
    la = [_raw(x) for x in jax.tree_util.tree_leaves(a)]
    lb = [_raw(x) for x in jax.tree_util.tree_leaves(b)]
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype
        and np.asarray(x).tobytes() == np.asarray(y).tobytes()
        for x, y in zip(la, lb, strict=True)
    )


# ----------------------------------------------------------------------------- optimizer
def test_default_optimizer_matches_clip_then_adam_with_schedule(standard_dtypes):
    opt = default_optimizer(1e-2, clip_norm=1.0, warmup_steps=3, total_steps=10)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 3, 10, 1e-3)
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    params = jnp.array([1.0, -2.0])
    s, s_ref = opt.init(params), ref.init(params)
    rng = np.random.default_rng(0)
    for _ in range(6):
        g = jnp.asarray(rng.normal(size=2) * 100.0, jnp.float32)
        u, s = opt.update(g, s, params)
        u_ref, s_ref = ref.update(g, s_ref, params)
        np.testing.assert_array_equal(np.asarray(u), np.asarray(u_ref))


def test_default_optimizer_clipping_bounds_the_gradient_seen_by_adam(standard_dtypes):
    # With clipping, a huge gradient enters Adam's moments with norm <= 1.
    opt = default_optimizer(1e-3, clip_norm=1.0)
    state = opt.init(jnp.zeros(2))
    _, state = opt.update(jnp.array([3e4, 4e4]), state, jnp.zeros(2))
    mu = state[1][0].mu  # ScaleByAdamState after the clip
    np.testing.assert_allclose(np.linalg.norm(np.asarray(mu)) / (1 - 0.9), 1.0, rtol=1e-5)


def test_default_optimizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`learning_rate` must be positive"):
        default_optimizer(0.0)
    with pytest.raises(ValueError, match="`total_steps` must exceed `warmup_steps` = 5"):
        default_optimizer(1e-3, warmup_steps=5, total_steps=5)


# ----------------------------------------------------------------------------- train step
def _rnn_loss(params, batch, *, key):
    ids, labels, lengths = batch
    logits = rnn_apply(params, ids, lengths)[..., 0]
    loss = masked_sigmoid_binary_cross_entropy(logits, labels, lengths=lengths)
    return loss, {"key_data": jax.random.key_data(key)}


def _rnn_batch():
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, 20, size=(4, 6)), jnp.int32)
    labels = jnp.asarray(rng.integers(0, 2, size=(4, 6)), jnp.int32)
    return ids, labels, jnp.array([6, 3, 5, 1], jnp.int32)


def test_one_train_step_changes_every_parameter_and_uses_fold_in_key():
    params = init_rnn(jax.random.key(0), 20, 8, 1, bidirectional=True, token_inputs=True)
    opt = default_optimizer(1e-2)
    state = init_train_state(params, opt, key=jax.random.key(7))
    step = make_train_step(_rnn_loss, opt, has_aux=True)
    batch = _rnn_batch()
    new, metrics = step(state, batch)
    assert int(new.step) == 1
    changed = jax.tree_util.tree_map(
        lambda a, b: bool(np.all(np.asarray(a) != np.asarray(b))), state.params, new.params
    )
    # every array changes (W_ax columns of unused ids receive no gradient, so check W_aa/b/head)
    for layer in new.params.layers:
        for old_p, new_p in zip(state.params.layers[0], layer, strict=True):
            assert np.all(np.asarray(old_p.W_aa) != np.asarray(new_p.W_aa))
            assert np.all(np.asarray(old_p.b_a) != np.asarray(new_p.b_a))
    assert changed.head.W_y and changed.head.b_y
    np.testing.assert_array_equal(
        metrics["key_data"], jax.random.key_data(jax.random.fold_in(jax.random.key(7), 0))
    )
    _, metrics2 = step(new, batch)
    np.testing.assert_array_equal(
        metrics2["key_data"], jax.random.key_data(jax.random.fold_in(jax.random.key(7), 1))
    )
    assert np.isfinite(float(metrics["grad_norm"]))


def test_train_step_compiles_once_per_shape():
    traces = []

    def loss_fn(params, batch, *, key):
        traces.append(1)
        return jnp.sum((batch * params) ** 2)

    opt = optax.sgd(0.1)
    step = make_train_step(loss_fn, opt)
    state = init_train_state(jnp.ones(3), opt, key=jax.random.key(0))
    for _ in range(3):
        state, _ = step(state, jnp.ones(3))
    assert len(traces) == 1


def test_init_train_state_validates():
    with pytest.raises(ValueError, match="`key` must be a jax.random key"):
        init_train_state(jnp.ones(2), optax.sgd(0.1), key=0)
    with pytest.raises(ValueError, match="`optimizer` must be an optax.GradientTransformation"):
        init_train_state(jnp.ones(2), "adam", key=jax.random.key(0))


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_sums_counts_over_batches_not_mean_of_means():
    def eval_step(params, batch):
        x, n = batch
        return {"sum": jnp.sum(x[:n]), "count": n}

    batches = [(jnp.array([1.0, 1.0, 1.0]), 3), (jnp.array([4.0, 0.0, 0.0]), 1)]
    out = evaluate(
        eval_step, None, batches, finalize=lambda t: {"mean": float(t["sum"] / t["count"])}
    )
    assert out == {"mean": 7.0 / 4.0}  # a mean of batch means would give 2.5
    with pytest.raises(ValueError, match="at least one batch"):
        evaluate(eval_step, None, [])


# ----------------------------------------------------------------------------- early stopping
def test_early_stopping_is_a_pure_update_of_a_namedtuple_state():
    es = EarlyStopping("loss", mode="min", patience=2, min_delta=0.01)
    s0 = es.init()
    s1 = es.update(s0, 1.0, 1)
    assert s0 == EarlyStoppingState() and s1 == EarlyStoppingState(1.0, 1, 0)  # s0 unchanged
    s2 = es.update(s1, 0.995, 2)  # not better by min_delta
    assert s2.num_bad == 1
    s3 = es.update(s2, 0.5, 3)
    assert s3.num_bad == 0 and s3.best_step == 3
    s4 = es.update(s3, float("nan"), 4)
    assert s4.num_bad == 1 and not es.should_stop(s4)
    s5 = es.update(s4, 0.6, 5)
    assert es.should_stop(s5) and s5.best == 0.5 and s5.best_step == 3
    assert EarlyStoppingState(**s5._asdict()) == s5  # what a checkpoint stores
    with pytest.raises(ValueError, match="`mode` must be 'max' or 'min'"):
        EarlyStopping("f1", mode="up")


# ----------------------------------------------------------------------------- fit
def _regression_problem(nan_at: int | None = None):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 4, 3)).astype(np.float32)  # 12 batches of 4 examples
    w_true = np.array([1.0, -2.0, 0.5], np.float32)
    Y = X @ w_true
    if nan_at is not None:
        X[nan_at, 0, 0] = np.nan

    def loss_fn(params, batch, *, key):
        x, y = batch
        noise = 1e-3 * jax.random.normal(key, y.shape)  # uses the step key
        return jnp.mean((x @ params - y - noise) ** 2)

    def epoch_batches(epoch, start):
        order = np.random.default_rng(epoch).permutation(len(X))  # data order from epoch
        for j in order[start:]:
            yield jnp.asarray(X[j]), jnp.asarray(Y[j])

    return loss_fn, epoch_batches, len(X)


def _fresh_state(opt):
    return init_train_state(jnp.zeros(3), opt, key=jax.random.key(3))


def test_fit_stops_on_nan_and_keeps_the_last_good_checkpoint(tmp_path):
    opt = default_optimizer(0.05)
    loss_fn, epoch_batches, n = _regression_problem(nan_at=None)
    # The NaN is in the batch used at global step 5 (epoch 0, position 4).
    bad_batch = int(np.random.default_rng(0).permutation(n)[4])
    loss_fn, epoch_batches, n = _regression_problem(nan_at=bad_batch)
    step = make_train_step(loss_fn, opt)
    ckpt = Checkpointer(tmp_path / "run", config={"lr": 0.05}, max_to_keep=2)
    with pytest.raises(
        NonFiniteLossError, match=r"loss is nan at step 5 .*last good checkpoint is step 4"
    ):
        fit(
            _fresh_state(opt),
            step,
            epoch_batches,
            num_epochs=2,
            steps_per_epoch=n,
            checkpointer=ckpt,
            checkpoint_every=1,
            progress=False,
        )
    assert ckpt.latest_step() == 4
    # the checkpoint holds exactly the state after 4 good steps
    state = _fresh_state(opt)
    for batch in list(epoch_batches(0, 0))[:4]:
        state, _ = step(state, batch)
    restored, meta = ckpt.restore(_fresh_state(opt))
    assert _trees_equal(restored, state)
    assert (meta["epoch"], meta["position"]) == (0, 4)
    ckpt.close()


def test_fit_resumed_after_interruption_is_bit_identical(tmp_path):
    opt = default_optimizer(0.05, warmup_steps=3, total_steps=36)
    loss_fn, epoch_batches, n = _regression_problem()
    step = make_train_step(loss_fn, opt)
    evaluate_fn = lambda p: {"loss": float(jnp.sum((p - jnp.array([1.0, -2.0, 0.5])) ** 2))}  # noqa: E731

    def run(directory, interrupt_at=None):
        calls = {"n": 0}

        def batches(epoch, start):
            for b in epoch_batches(epoch, start):
                calls["n"] += 1
                if interrupt_at is not None and calls["n"] == interrupt_at:
                    raise KeyboardInterrupt
                yield b

        ckpt = Checkpointer(
            directory, config={"x": 1}, max_to_keep=2, best_metric="loss", best_mode="min"
        )
        logger = MetricsLogger(directory)
        try:
            return fit(
                _fresh_state(opt),
                step,
                batches,
                num_epochs=3,
                steps_per_epoch=n,
                evaluate_fn=evaluate_fn,
                eval_every=5,
                early_stopping=EarlyStopping("loss", mode="min"),
                checkpointer=ckpt,
                checkpoint_every=2,
                logger=logger,
                log_every=1,
                progress=False,
            )
        finally:
            logger.close()
            ckpt.close()

    full = run(tmp_path / "full")
    for cut in (4, 9, 17, 30):
        try:
            run(tmp_path / "cut", interrupt_at=cut)
        except KeyboardInterrupt:
            pass
    resumed = run(tmp_path / "cut")
    assert resumed.resumed_from is not None
    assert int(resumed.state.step) == int(full.state.step) == 36
    assert _trees_equal(resumed.state, full.state)
    assert resumed.best_step == full.best_step
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]  # noqa: E731
    assert strip(read_metrics(tmp_path / "cut" / "metrics.jsonl")) == strip(
        read_metrics(tmp_path / "full" / "metrics.jsonl")
    )
    # a finished run restarted does nothing more
    again = run(tmp_path / "cut")
    assert _trees_equal(again.state, full.state)


def test_fit_early_stopping_and_best_checkpoint(tmp_path):
    opt = optax.sgd(0.0)  # nothing improves
    loss_fn, epoch_batches, n = _regression_problem()
    values = iter([0.5, 0.9, 0.4, 0.3, 0.2])
    ckpt = Checkpointer(tmp_path, config={}, max_to_keep=1, best_metric="f1")
    result = fit(
        _fresh_state(opt),
        make_train_step(loss_fn, opt),
        epoch_batches,
        num_epochs=5,
        steps_per_epoch=n,
        evaluate_fn=lambda p: {"f1": next(values)},
        eval_every=2,
        early_stopping=EarlyStopping("f1", patience=2),
        checkpointer=ckpt,
        progress=False,
    )
    assert result.stopped_early and result.best_step == 4
    assert result.best_metrics == {"f1": 0.9}  # no "step" mixed in
    assert int(result.state.step) == 4 and result.last_step == 8  # restore_best by default
    assert ckpt.best_step() == 4 and ckpt.all_steps() == [4, 8]
    ckpt.close()


def test_fit_checks_epoch_length():
    opt = optax.sgd(0.1)
    loss_fn, epoch_batches, n = _regression_problem()
    with pytest.raises(ValueError, match="fewer batches than `steps_per_epoch` = 13"):
        fit(
            _fresh_state(opt),
            make_train_step(loss_fn, opt),
            epoch_batches,
            num_epochs=1,
            steps_per_epoch=n + 1,
            progress=False,
        )


def test_train_state_is_a_pytree():
    state = TrainState(jnp.ones(2), (), jnp.int32(0), jax.random.key(0))
    assert len(jax.tree_util.tree_leaves(state)) == 3
