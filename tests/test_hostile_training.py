"""Hostile cases for the training loop: non-finite gradients, best-state restore, signals,
divergence, and no host sync every step (issues 10 item 6 and 11, silent case 2)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax.checkpoint import Checkpointer
from rnn_jax.train import (
    EarlyStopping,
    NonFiniteLossError,
    TrainingDivergedWarning,
    _Run,
    default_optimizer,
    fit,
    init_train_state,
    make_train_step,
)

# A small regression problem shared with the subprocess of the signal tests.
PROBLEM = """
import sys, time
import jax, jax.numpy as jnp, numpy as np

from rnn_jax.checkpoint import Checkpointer
from rnn_jax.progress import MetricsLogger
from rnn_jax.train import (
    EarlyStopping, TrainingInterrupted, default_optimizer, fit, init_train_state, make_train_step,
)

X = np.random.default_rng(1).normal(size=(12, 4, 3)).astype(np.float32)
Y = X @ np.array([1.0, -2.0, 0.5], np.float32)
OPT = default_optimizer(0.05, warmup_steps=3, total_steps=36)


def loss_fn(params, batch, *, key):
    x, y = batch
    return jnp.mean((x @ params - y - 1e-3 * jax.random.normal(key, y.shape)) ** 2)


def run(directory, delay=0.0):
    def batches(epoch, start):
        for j in np.random.default_rng(epoch).permutation(len(X))[start:]:
            time.sleep(delay)
            yield jnp.asarray(X[j]), jnp.asarray(Y[j])

    ckpt = Checkpointer(directory, config={"x": 1}, max_to_keep=2)
    logger = MetricsLogger(directory)
    try:
        return fit(
            init_train_state(jnp.zeros(3), OPT, key=jax.random.key(3)),
            make_train_step(loss_fn, OPT),
            batches,
            num_epochs=3,
            steps_per_epoch=len(X),
            evaluate_fn=lambda p: {"loss": float(jnp.sum((p - jnp.array([1.0, -2.0, 0.5])) ** 2))},
            eval_every=5,
            early_stopping=EarlyStopping("loss", mode="min"),
            checkpointer=ckpt,
            checkpoint_every=100,
            logger=logger,
            log_every=1,
            progress=False,
        )
    finally:
        logger.close()
        ckpt.close()


if __name__ == "__main__":
    # Python's own SIGINT handler, as in a terminal: a shell starts background jobs (`make
    # test &`) with SIGINT ignored, and an ignored SIGINT is what fit restores after the first
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run(sys.argv[1], delay=float(sys.argv[2]))
    except TrainingInterrupted as err:
        print("INTERRUPTED", err.step, err.exit_code, err.signum, flush=True)
        sys.exit(err.exit_code)
    print("FINISHED", flush=True)
"""


def _raw(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(x)
    return x


def _trees_equal(a, b) -> bool:
    la = [np.asarray(_raw(x)) for x in jax.tree_util.tree_leaves(a)]
    lb = [np.asarray(_raw(x)) for x in jax.tree_util.tree_leaves(b)]
    return len(la) == len(lb) and all(
        x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(la, lb, strict=True)
    )


@pytest.fixture
def problem(tmp_path):
    path = tmp_path / "problem.py"
    path.write_text(PROBLEM)
    spec = importlib.util.spec_from_file_location("hostile_problem", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- silent case 2
@jax.custom_vjp
def _poison(params, flag):
    return params


def _poison_fwd(params, flag):
    return params, flag


def _poison_bwd(flag, g):
    return jnp.where(flag, jnp.nan, g), None


_poison.defvjp(_poison_fwd, _poison_bwd)


def _nan_gradient_problem(bad_step: int):
    """A finite loss everywhere; its gradient is NaN at ``bad_step`` (1-based) only."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 4, 3)).astype(np.float32)
    Y = X @ np.array([1.0, -2.0, 0.5], np.float32)

    def loss_fn(params, batch, *, key):
        x, y, flag = batch
        return jnp.mean((x @ _poison(params, flag) - y) ** 2)

    def epoch_batches(epoch, start):
        for j in range(start, len(X)):
            step = epoch * len(X) + j + 1
            yield jnp.asarray(X[j]), jnp.asarray(Y[j]), jnp.asarray(step == bad_step)

    return loss_fn, epoch_batches, len(X)


def test_silent_case_2_train_step_skips_a_nan_gradient_update_and_flags_it():
    loss_fn, epoch_batches, _ = _nan_gradient_problem(bad_step=1)
    opt = default_optimizer(0.05)
    state = init_train_state(jnp.ones(3), opt, key=jax.random.key(0))
    new, metrics = make_train_step(loss_fn, opt)(state, next(epoch_batches(0, 0)))
    assert np.isfinite(float(metrics["loss"])) and not bool(metrics["finite"])
    assert int(new.step) == 1
    assert _trees_equal((new.params, new.opt_state), (state.params, state.opt_state))


def test_silent_case_2_fit_never_checkpoints_a_nan_gradient_update(tmp_path):
    opt = default_optimizer(0.05)
    loss_fn, epoch_batches, n = _nan_gradient_problem(bad_step=5)
    step = make_train_step(loss_fn, opt)
    fresh = lambda: init_train_state(jnp.zeros(3), opt, key=jax.random.key(3))  # noqa: E731
    ckpt = Checkpointer(tmp_path / "run", config={}, max_to_keep=5)
    with pytest.raises(
        NonFiniteLossError,
        match=r"gradient or updated parameters are not finite \(loss .*\) at step 5 \(epoch 0, "
        r"batch 4\).*last good checkpoint is step 3",
    ) as err:
        fit(
            fresh(),
            step,
            epoch_batches,
            num_epochs=1,
            steps_per_epoch=n,
            checkpointer=ckpt,
            checkpoint_every=3,
            progress=False,
        )
    assert err.value.step == 5
    assert ckpt.all_steps() == [3]
    state = fresh()
    for batch in list(epoch_batches(0, 0))[:3]:
        state, _ = step(state, batch)
    restored, _ = ckpt.restore(fresh())
    assert _trees_equal(restored, state)
    assert all(
        np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(restored.params)
    )
    ckpt.close()


def test_fit_reads_the_finite_flags_only_on_logged_steps(monkeypatch):
    reads = []
    real = _Run.sync

    def counting(self):
        if self.pending:
            reads.append([p[0] for p in self.pending])
        real(self)

    monkeypatch.setattr(_Run, "sync", counting)
    loss_fn, epoch_batches, n = _nan_gradient_problem(bad_step=-1)
    opt = optax.sgd(0.01)
    fit(
        init_train_state(jnp.zeros(3), opt, key=jax.random.key(3)),
        make_train_step(loss_fn, opt),
        epoch_batches,
        num_epochs=2,
        steps_per_epoch=n,
        progress=False,
    )
    # no logger, no evaluation, no checkpointer: one read at the end of 24 steps
    assert reads == [list(range(1, 25))]


# ----------------------------------------------------------------------------- best state
def test_fit_returns_the_best_state_and_keeps_its_checkpoint_without_best_metric(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 4, 3)).astype(np.float32)
    Y = X @ np.array([1.0, -2.0, 0.5], np.float32)

    def loss_fn(params, batch, *, key):
        x, y = batch
        return jnp.mean((x @ params - y) ** 2)

    def epoch_batches(epoch, start):
        for j in range(start, len(X)):
            yield jnp.asarray(X[j]), jnp.asarray(Y[j])

    opt = optax.sgd(0.05)
    values = iter([0.5, 0.9, 0.4, 0.3, 0.2])
    states = {}

    def evaluate_fn(params):
        value = next(values)
        states[value] = params
        return {"f1": value}

    ckpt = Checkpointer(tmp_path, config={}, max_to_keep=1)  # no best_metric given
    result = fit(
        init_train_state(jnp.zeros(3), opt, key=jax.random.key(0)),
        make_train_step(loss_fn, opt),
        epoch_batches,
        num_epochs=5,
        steps_per_epoch=len(X),
        evaluate_fn=evaluate_fn,
        eval_every=2,
        early_stopping=EarlyStopping("f1", patience=3),
        checkpointer=ckpt,
        progress=False,
    )
    assert result.best_step == 4 and result.last_step == 10 and result.stopped_early
    assert int(result.state.step) == 4
    assert _trees_equal(result.state.params, states[0.9])
    assert ckpt.best_step() == 4 and ckpt.all_steps() == [4, 10]
    assert _trees_equal(ckpt.restore_params(jnp.zeros(3), step="best"), states[0.9])
    ckpt.close()
    # resumed (finished) run: the best state comes back from its checkpoint
    with Checkpointer(tmp_path, config={}, max_to_keep=1) as ckpt:
        again = fit(
            init_train_state(jnp.zeros(3), opt, key=jax.random.key(0)),
            make_train_step(loss_fn, opt),
            epoch_batches,
            num_epochs=5,
            steps_per_epoch=len(X),
            evaluate_fn=evaluate_fn,
            eval_every=2,
            early_stopping=EarlyStopping("f1", patience=3),
            checkpointer=ckpt,
            progress=False,
        )
    assert int(again.state.step) == 4 and _trees_equal(again.state.params, states[0.9])
    # restore_best=False keeps the final state
    values = iter([0.5, 0.9, 0.4, 0.3, 0.2])
    final = fit(
        init_train_state(jnp.zeros(3), opt, key=jax.random.key(0)),
        make_train_step(loss_fn, opt),
        epoch_batches,
        num_epochs=5,
        steps_per_epoch=len(X),
        evaluate_fn=evaluate_fn,
        eval_every=2,
        early_stopping=EarlyStopping("f1", patience=3),
        restore_best=False,
        progress=False,
    )
    assert int(final.state.step) == 10 and final.best_step == 4


# ----------------------------------------------------------------------------- divergence
def test_a_diverging_loss_warns_once_naming_the_learning_rate(problem):
    opt = optax.sgd(1.5)
    batches = lambda epoch, start: (  # noqa: E731
        (jnp.asarray(problem.X[j]), jnp.asarray(problem.Y[j])) for j in range(start, 12)
    )
    with pytest.warns(TrainingDivergedWarning, match="learning rate") as record:
        fit(
            init_train_state(jnp.zeros(3), opt, key=jax.random.key(0)),
            make_train_step(problem.loss_fn, opt),
            batches,
            num_epochs=1,
            steps_per_epoch=12,
            progress=True,
            log_every=1,
        )
    assert len([w for w in record if w.category is TrainingDivergedWarning]) == 1


def test_a_converging_loss_does_not_warn(problem, recwarn):
    opt = optax.sgd(0.05)
    batches = lambda epoch, start: (  # noqa: E731
        (jnp.asarray(problem.X[j]), jnp.asarray(problem.Y[j])) for j in range(start, 12)
    )
    fit(
        init_train_state(jnp.zeros(3), opt, key=jax.random.key(0)),
        make_train_step(problem.loss_fn, opt),
        batches,
        num_epochs=1,
        steps_per_epoch=12,
        progress=False,
        log_every=1,
    )
    assert not [w for w in recwarn if w.category is TrainingDivergedWarning]


# ----------------------------------------------------------------------------- signals
def _start(problem_path: Path, directory: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(
        [sys.executable, str(problem_path), str(directory), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_records(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the child exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("the child did not start training in time")


def test_sigterm_checkpoints_exits_128_plus_15_and_the_resumed_run_is_bit_identical(
    problem, tmp_path
):
    directory = tmp_path / "cut"
    proc = _start(tmp_path / "problem.py", directory, delay=0.1)
    _wait_for_records(directory / "metrics.jsonl", 7, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    words = out.split()
    assert words[0] == "INTERRUPTED" and words[2:] == ["143", str(int(signal.SIGTERM))]
    step = int(words[1])
    assert 7 <= step < 36
    with Checkpointer(directory, config={"x": 1}) as ckpt:
        assert ckpt.latest_step() == step  # checkpoint_every=100: written on the way out
    previous = signal.getsignal(signal.SIGINT)
    resumed = problem.run(directory)
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored
    full = problem.run(tmp_path / "full")
    assert resumed.resumed_from == step
    assert resumed.last_step == full.last_step == 36
    assert _trees_equal(resumed.state, full.state)


def test_a_second_sigint_exits_at_once(tmp_path):
    (tmp_path / "problem.py").write_text(PROBLEM)
    directory = tmp_path / "run"
    proc = _start(tmp_path / "problem.py", directory, delay=1.0)
    _wait_for_records(directory / "metrics.jsonl", 1, proc)
    # Python runs a handler once for signals of one kind that arrive while the main thread is
    # inside C code (they are coalesced), so two signals 0.2 s apart can read as one. Keep
    # sending until the child is gone: once the first has been handled (fit then still sleeps
    # up to 1 s for its next batch), the next one must end it at once.
    proc.send_signal(signal.SIGINT)
    end = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    # Python ends a process on an uncaught KeyboardInterrupt by re-raising SIGINT
    assert proc.returncode == -signal.SIGINT, err
    assert "INTERRUPTED" not in out and "KeyboardInterrupt" in err


def test_fit_in_a_thread_leaves_signal_handlers_alone_and_bad_metric_is_named(problem):
    import threading

    opt = optax.sgd(0.05)
    batches = lambda epoch, start: (  # noqa: E731
        (jnp.asarray(problem.X[j]), jnp.asarray(problem.Y[j])) for j in range(start, 12)
    )
    before = signal.getsignal(signal.SIGTERM)
    seen, errors = [], []

    def target():
        def evaluate_fn(params):
            seen.append(signal.getsignal(signal.SIGTERM))
            return {"loss": 0.0}

        try:
            fit(
                init_train_state(jnp.zeros(3), opt, key=jax.random.key(0)),
                make_train_step(problem.loss_fn, opt),
                batches,
                num_epochs=1,
                steps_per_epoch=12,
                evaluate_fn=evaluate_fn,
                early_stopping=EarlyStopping("f1"),
                progress=False,
            )
        except ValueError as err:
            errors.append(str(err))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    assert seen == [before]
    assert errors == [
        "`early_stopping.metric` = 'f1' is not among the metrics of `evaluate_fn`: ['loss']."
    ]
