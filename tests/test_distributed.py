"""Multi-process training on loopback: 2 processes x 2 CPU devices against 1 x 1.

Every multi-process run goes through ``python -m experiments.launch`` (a free port on
127.0.0.1) with a hard wall-clock limit; the launcher and its processes are killed in a
``finally`` whatever happens. The worker below trains a small tagger with
:func:`rnn_jax.train.fit` (data order, checkpoints, evaluation), so the same code runs on
one device in this process and on 4 devices in 2 processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnn_jax
from rnn_jax import distributed
from rnn_jax.batching import iterate_batches
from rnn_jax.checkpoint import Checkpointer
from rnn_jax.parallel import batch_mesh
from rnn_jax.train import evaluate, fit, init_train_state, make_train_step

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

N_TRAIN, BATCH, V, H, C = 40, 8, 13, 6, 3  # 5 steps an epoch
CONFIG = {"test": "distributed", "N": N_TRAIN, "B": BATCH, "V": V, "H": H}


# ----------------------------------------------------------------------------- the problem
def problem(seed: int = 0):
    """Training and validation sequences of lengths 1..8 (token ids, tags) and initial params.

    Every batch pads to ``T = 8``, so each function compiles once (compiling dominates here).
    """
    rng = np.random.default_rng(seed)

    def split(n):
        lengths = rng.integers(1, 9, n)
        ids = [rng.integers(0, V, t).astype(np.int32) for t in lengths]
        tags = [((x + np.roll(x, 1)) % C).astype(np.int32) for x in ids]  # needs the context
        return ids, tags

    init = jax.jit(lambda k: rnn_jax.init_rnn(k, V, H, C, bidirectional=False, token_inputs=True))
    params = init(jax.random.key(seed))
    return split(N_TRAIN), split(16), params


def loss_fn(params, batch, *, key):
    ids, tags, lengths = batch
    logits = rnn_jax.rnn_apply(params, ids, lengths)
    return rnn_jax.masked_softmax_cross_entropy(logits, tags, lengths=lengths)


def valid_tokens(batch):
    """What the loss is a mean over: the valid tokens (the exact weight of each shard)."""
    return jnp.sum(batch[2])


def eval_sums(params, batch):
    ids, tags, lengths = batch
    logits = rnn_jax.rnn_apply(params, ids, lengths)
    loss = rnn_jax.masked_softmax_cross_entropy(logits, tags, lengths=lengths, reduction="sum")
    return {"loss_sum": loss, "count": jnp.sum(lengths)}


def run(workdir: Path, mesh=None, num_epochs: int = 4, checkpoint_every: int = 5):
    """``fit`` of the tagger, on ``mesh`` (all processes) or, without one, plain on one device.

    Returns ``(final state, validation metrics)``; the run directory resumes on its own.
    """
    (train_ids, train_tags), (val_ids, val_tags), params = problem()
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-2))
    data_key = jax.random.key(7)

    def epoch_batches(epoch, start):
        for b in iterate_batches(
            train_ids,
            train_tags,
            batch_size=BATCH,
            key=jax.random.fold_in(data_key, epoch),
            drop_last=True,
            start=start,
        ):
            yield (*b.fields, b.lengths)

    val = next(
        iterate_batches(val_ids, val_tags, batch_size=16, key=None, shuffle=False, bucket=False)
    )
    val = (*val.fields, val.lengths)
    if mesh is None:
        step = make_train_step(loss_fn, optimizer)
        batches, sums = epoch_batches, jax.jit(eval_sums)
    else:
        step = rnn_jax.parallel.make_parallel_train_step(
            loss_fn, optimizer, mesh, weight_fn=valid_tokens
        )
        batches = distributed.process_batches(epoch_batches, mesh)
        sums = rnn_jax.parallel.parallel_sums(eval_sums, mesh)

    def evaluate_fn(params):
        totals = evaluate(sums, params, [val])
        return {"loss": float(totals["loss_sum"] / totals["count"])}

    state = init_train_state(params, optimizer, key=jax.random.key(3))
    ckpt = Checkpointer(workdir, config=CONFIG)
    try:
        result = fit(
            state,
            step,
            batches,
            num_epochs=num_epochs,
            steps_per_epoch=N_TRAIN // BATCH,
            evaluate_fn=evaluate_fn,
            eval_every=10,
            checkpointer=ckpt,
            checkpoint_every=checkpoint_every,
            progress=False,
            handle_signals=mesh is None,
        )
    finally:
        ckpt.close()
    return result.state, evaluate_fn(result.state.params)


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def as_lists(tree) -> list:
    return [x.tolist() for x in leaves(tree)]


def restored_params(workdir: Path):
    """The latest checkpoint of ``workdir`` restored on this process's one device."""
    (_, _), (_, _), params = problem()
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-2))
    template = init_train_state(params, optimizer, key=jax.random.key(3))
    with Checkpointer(workdir, config=CONFIG, read_only=True) as ckpt:
        state, meta = ckpt.restore(template)
    return state, meta


# ----------------------------------------------------------------------------- launching
WORKER = """
import json, os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import jax
from rnn_jax import distributed
distributed.initialize()
import test_distributed as t
mesh = distributed.global_mesh()
out = {{"process": jax.process_index(), "mesh": [d.process_index for d in mesh.devices.flat]}}
{body}
if distributed.is_primary():
    print("RESULT " + json.dumps(out), flush=True)
"""


def launch(
    body, *, logs: Path, processes=2, devices=2, timeout=90, grace=5.0, env=None, on_start=None
):
    """Runs ``WORKER`` with ``body`` under the launcher; returns ``(status, out, stderr, seconds)``.

    The launcher's output goes to files in ``logs`` (nothing can block on a full pipe);
    ``on_start(proc, stderr_path)`` may act on the running launcher (kill one of its processes).
    """
    code = textwrap.dedent(WORKER).format(tests=str(TESTS), body=textwrap.dedent(body))
    cmd = [sys.executable, "-m", "experiments.launch", "--processes", str(processes),
           "--devices-per-process", str(devices), "--grace", str(grace),
           "--", sys.executable, "-c", code]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    env.pop("XLA_FLAGS", None)
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"
    start = time.monotonic()
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out_f, stderr=err_f)
        try:
            if on_start is not None:
                on_start(proc, err_path)
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:  # the launcher kills its processes when it gets SIGTERM
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    seconds = time.monotonic() - start
    out, err = out_path.read_text(), err_path.read_text()
    results = [json.loads(x.split("RESULT ", 1)[1]) for x in out.splitlines() if "RESULT " in x]
    return proc.returncode, (results[-1] if results else None), err, seconds


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ----------------------------------------------------------------------------- tests
# Slow-marked after one failure in the full parallel suite (2 xdist workers on 2 cores):
# process 0 ended with SIGABRT 10 s into the launch and process 1's all-gather lost its peer;
# the same test passes alone in 14 s. The cause is not found yet (issue 14's closing note).
@pytest.mark.slow
def test_two_by_two_equals_one_by_one_and_checkpoints_cross_over(tmp_path):
    """2 processes x 2 devices vs this process's one device: 20 steps of fit, same batches.

    Tolerance 1e-6 relative (max abs difference over the largest entry of each array): the
    global gradient is the same sum, but added in another order (per device, then across
    devices), so float32 rounding differs in the last bits, and Adam carries that through
    20 steps. The checkpoints cross over exactly: a 2x2 checkpoint restores bit-identically
    on one device, and a 1x1 checkpoint on 2x2.
    """
    one = tmp_path / "one"
    body = f"""
    state, val = t.run(Path({str(tmp_path / "two")!r}), mesh)
    out["params"] = t.as_lists(state.params)
    out["step"] = int(state.step)
    out["val"] = val
    out["is_global"] = [not x.is_fully_addressable for x in jax.tree_util.tree_leaves(state)]
    # the 1x1 run's checkpoint (written meanwhile by the test), restored replicated on the
    # 4 devices of the 2 processes
    import time
    from rnn_jax.checkpoint import Checkpointer
    done = Path({str(one / "checkpoints" / "20" / "files.sha256.json")!r})
    deadline = time.monotonic() + 80
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    template = distributed.replicate(t.init_train_state(
        t.problem()[2], t.optax.chain(t.optax.clip_by_global_norm(1.0), t.optax.adam(3e-2)),
        key=jax.random.key(3)), mesh)
    with Checkpointer(Path({str(one)!r}), config=t.CONFIG) as ckpt:
        restored, _ = ckpt.restore(template)
    out["from_one"] = t.as_lists(restored.params)
    out["from_one_sharding"] = str(jax.tree_util.tree_leaves(restored.params)[0].sharding.spec)
    # a state on each process's own device (not yet on the mesh) is saved once, by all
    fresh = t.init_train_state(t.problem()[2], t.optax.sgd(0.1), key=jax.random.key(5))
    with Checkpointer(Path({str(tmp_path / "fresh")!r}), config=t.CONFIG) as ckpt:
        ckpt.save(fresh, meta={{"epoch": 0, "position": 0}})
    """
    launched = []  # the 2x2 run goes on while this process trains 1x1
    thread = threading.Thread(target=lambda: launched.append(launch(body, logs=tmp_path / "logs")))
    thread.start()
    try:
        want_state, want_val = run(one)
    finally:
        thread.join()
    assert int(want_state.step) == 20
    status, out, err, seconds = launched[0]
    assert status == 0, err[-4000:]
    assert out["mesh"] == [0, 0, 1, 1] and out["step"] == 20 and all(out["is_global"])
    got = [np.asarray(x, np.float32) for x in out["params"]]
    errors = [_relative_error(a, b) for a, b in zip(got, leaves(want_state.params), strict=True)]
    assert max(errors) <= 1e-6, errors
    assert abs(out["val"]["loss"] - want_val["loss"]) <= 1e-5 * abs(want_val["loss"])
    # 1x1 -> 2x2: bit-identical
    for a, b in zip(out["from_one"], leaves(want_state.params), strict=True):
        assert np.asarray(a, np.float32).tobytes() == b.tobytes()
    assert out["from_one_sharding"] == "P()"  # replicated
    # 2x2 -> 1x1: bit-identical to what the 2 processes held, meta from the primary
    state, meta = restored_params(tmp_path / "two")
    assert int(state.step) == 20 and meta["finished"]
    for a, b in zip(got, leaves(state.params), strict=True):
        assert a.tobytes() == b.tobytes()
    assert (tmp_path / "two" / "checkpoints" / "20" / "files.sha256.json").is_file()
    fresh = init_train_state(problem()[2], optax.sgd(0.1), key=jax.random.key(5))
    with Checkpointer(tmp_path / "fresh", config=CONFIG, read_only=True) as ckpt:
        saved, _ = ckpt.restore(fresh)
    for a, b in zip(leaves(saved.params), leaves(fresh.params), strict=True):
        assert a.tobytes() == b.tobytes()
    print(f"2x2 under the launcher {seconds:.1f} s; relative errors {max(errors):.2e}")


@pytest.mark.slow  # three 2-process launches: about 90 s on 2 busy cores
def test_one_process_dies_the_other_stops_and_a_relaunch_is_bit_identical(tmp_path):
    """SIGKILL one of 2 processes at a random moment after the first checkpoint: the other
    exits non-zero within the heartbeat timeout (plus slack for a busy machine), and the same
    launch again resumes from the last checkpoint and ends bit-identical to an uninterrupted
    2-process run."""
    rng = np.random.default_rng(int(time.time()))
    body = """
    state, val = t.run(Path(os.environ["WORKDIR"]), mesh, num_epochs=8, checkpoint_every=2)
    out["params"] = t.as_lists(state.params)
    out["step"] = int(state.step)
    """
    status, ref, err, _ = launch(
        body, logs=tmp_path / "log-ref", devices=1, env={"WORKDIR": str(tmp_path / "ref")}
    )
    assert status == 0, err[-4000:]
    work = tmp_path / "killed"
    killed = {}

    def kill_one(proc, err_path):
        deadline = time.monotonic() + 60
        pids = []
        while time.monotonic() < deadline and proc.poll() is None and len(pids) < 2:
            pids = [int(x.split(" pid ")[1].split()[0])
                    for x in err_path.read_text().splitlines() if x.startswith("launch: process")]  # fmt: skip
            time.sleep(0.01)
        ckpts = work / "checkpoints"
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir()):
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        killed["victim"] = victim = int(rng.integers(0, 2))
        os.kill(pids[victim], signal.SIGKILL)
        killed["at"] = time.monotonic()

    status, _, err, _ = launch(
        body, logs=tmp_path / "log-kill", devices=1, grace=60, env={"WORKDIR": str(work)},
        on_start=kill_one,
    )  # fmt: skip
    stopped_after = time.monotonic() - killed["at"]
    assert status != 0, err[-3000:]
    survivor = 1 - killed["victim"]
    assert f"launch: process {survivor} ended with status" in err or "signal" in err
    assert stopped_after <= distributed.HEARTBEAT_TIMEOUT_SECONDS + 15, err[-3000:]
    status, out, err, _ = launch(
        body, logs=tmp_path / "log-again", devices=1, env={"WORKDIR": str(work)}
    )
    assert status == 0, err[-4000:]
    assert out["step"] == ref["step"] == 40
    for a, b in zip(out["params"], ref["params"], strict=True):
        assert np.asarray(a, np.float32).tobytes() == np.asarray(b, np.float32).tobytes()


@pytest.mark.slow  # the names experiment three times: about 150 s on 2 busy cores
def test_names_experiment_under_the_launcher_equals_one_process(tmp_path):
    """``experiments.launch --processes 2 --devices-per-process 2 -- names train`` trains,
    checkpoints, evaluates on 4 devices, and ``names train --devices 2`` on 2 devices of one
    process; their validation and test metrics equal a plain one-process run's to float
    tolerance. (Word dropout is off: each device draws its own
    dropout masks, so with dropout the two runs are equally good, not equal.)"""
    from test_experiments_names import tiny_args, write_corpus

    corpus = write_corpus(tmp_path / "corpus.txt")
    args = tiny_args(corpus, "--config.models=birnn", "--config.word_dropout=0")
    names = [sys.executable, "-m", "experiments.names", "train"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    one = subprocess.run([*names, "--workdir", str(tmp_path / "one"), *args],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    cmd = [sys.executable, "-m", "experiments.launch", "--processes", "2",
           "--devices-per-process", "2", "--", *names, "--workdir", str(tmp_path / "two"), *args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out = err = ""
    try:
        out, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:  # SIGTERM: the launcher stops its processes, then exits
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "[p0] data parallel: 2 process(es) x 2 cpu device(s)" in err
    assert "[p0] | birnn | 1 |" in out and "[p1] |" not in out  # one report
    assert sorted(p.name for p in (tmp_path / "two" / "birnn" / "checkpoints").iterdir()) == [
        "15",
        "30",
    ]

    cmd = [*names, "--devices", "2", "--workdir", str(tmp_path / "devices"), *args]
    devices = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert devices.returncode == 0, devices.stderr[-3000:]
    assert "data parallel: 1 process(es) x 2 cpu device(s)" in devices.stderr

    def val(workdir):
        lines = (workdir / "birnn" / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["split"] == "val"]

    def test(workdir):
        return json.loads((workdir / "results.json").read_text())["models"]["birnn"]["test"]

    for other in ("two", "devices"):
        for a, b in zip(val(tmp_path / "one"), val(tmp_path / other), strict=True):
            assert a["step"] == b["step"] and a["tokens"] == b["tokens"]
            assert abs(a["loss"] - b["loss"]) <= 1e-5 * a["loss"]
        assert test(tmp_path / "one")["tokens"] == test(tmp_path / other)["tokens"]
        assert abs(test(tmp_path / "one")["f1"] - test(tmp_path / other)["f1"]) <= 1e-6


# ----------------------------------------------------------------------------- one process
def test_one_process_helpers():
    mesh = distributed.global_mesh()
    assert distributed.is_primary() and distributed.info().process_count == 1
    assert distributed.process_rows(8, mesh) == slice(0, 8)
    batch = (np.arange(8).reshape(4, 2), np.ones(4, np.int32))
    placed = distributed.global_batch(batch, mesh)
    assert placed[0].shape == (4, 2) and np.array_equal(np.asarray(placed[0]), batch[0])
    state = init_train_state(jnp.ones(3), optax.sgd(0.1), key=jax.random.key(0))
    replicated = distributed.replicate(state, mesh)
    assert jax.dtypes.issubdtype(replicated.key.dtype, jax.dtypes.prng_key)
    assert distributed.replicate(replicated, mesh).params is replicated.params  # no copy


def test_bad_arguments(monkeypatch):
    mesh = batch_mesh(jax.devices()[:1])
    with pytest.raises(ValueError, match="`global_batch_size` must be a positive multiple"):
        distributed.process_rows(0, mesh)
    with pytest.raises(ValueError, match="`mesh` must be a jax.sharding.Mesh"):
        distributed.process_rows(4, "cpu")
    with pytest.raises(ValueError, match=r"`batch` leaf 0 must have a first \(batch\) axis"):
        distributed.global_batch(np.float32(1.0), mesh)
    with pytest.raises(ValueError, match="`devices_per_process` = 5 exceeds"):
        distributed.global_mesh(5)
    with pytest.raises(ValueError, match="`n` = 2 CPU devices cannot be set any more"):
        distributed.set_local_devices(2)
    with pytest.raises(ValueError, match="`n` must be a positive int"):
        distributed.set_local_devices(0)
    with pytest.raises(ValueError, match="must all be given"):
        distributed.initialize("127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"`process_id` must be an int in \[0, 2\)"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an int, got 'two'"):
        distributed.initialize()


def test_experiment_command_lines(tmp_path, capsys):
    from experiments.cli import main, parallel_flags
    from experiments.names.config import default_config

    def run(*argv, data_parallel=False):
        commands = {"train": lambda invocation: 0}
        return main(["train", "--workdir", str(tmp_path), *argv], prog="x", commands=commands,
                    default_config=default_config, data_parallel=data_parallel)  # fmt: skip

    assert run("--devices", "2") == 2
    assert (
        "--devices/--distributed: this experiment has no data-parallel" in capsys.readouterr().err
    )
    assert run("--devices", "0", data_parallel=True) == 2
    assert "`--devices` must be a positive int, got 0" in capsys.readouterr().err
    assert parallel_flags(["train", "--devices", "3", "--distributed"]) == (3, True)
    assert parallel_flags(["train", "--config.seed=1"]) == (None, False)
