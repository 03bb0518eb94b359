"""Multi-process training on loopback: 2 processes x 2 CPU devices against 1 x 1.

Every multi-process run goes through ``python -m experiments.launch`` (a port on
127.0.0.1 the launcher holds) with a hard wall-clock limit; the launcher and its processes
are killed in a ``finally`` whatever happens. The worker below trains a small tagger with
:func:`rnn_jax.train.fit` (data order, checkpoints, evaluation), so the same code runs on
one device in this process and on 4 devices in 2 processes. The 2-process runs (an
uninterrupted one, one with a process killed, its relaunch) run once per session and are
shared by the tests that check them (``runs``). Every experiment's ``train --devices 2``
is checked against its plain run in a subprocess with 2 CPU devices.
"""

from __future__ import annotations

import json
import os
import signal
import socket
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


def OPTIMIZER():  # noqa: N802 (a constant, built where jax runs)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-2))


def run(
    workdir: Path, mesh=None, num_epochs: int = 4, checkpoint_every: int = 4, delay: float = 0.0
):
    """``fit`` of the tagger, on ``mesh`` (all processes) or, without one, plain on one device.

    ``delay`` seconds of sleep before each batch (to kill a run mid-training) change nothing
    else. Returns ``(final state, validation metrics)``; the run directory resumes on its own.
    """
    (train_ids, train_tags), (val_ids, val_tags), params = problem()
    optimizer = OPTIMIZER()
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
            time.sleep(delay)
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
    template = init_train_state(params, OPTIMIZER(), key=jax.random.key(3))
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
    body, *, logs: Path, processes=2, devices=2, timeout=120, grace=5.0, env=None, on_start=None
):
    """Runs ``WORKER`` with ``body`` under the launcher; returns ``(status, out, stderr, seconds)``.

    The launcher's output goes to files in ``logs`` (nothing can block on a full pipe);
    ``on_start(proc, stderr_path)`` may act on the running launcher (kill one of its
    processes). ``timeout`` only guards against a hang (the launcher is then stopped).
    """
    code = textwrap.dedent(WORKER).format(tests=str(TESTS), body=textwrap.dedent(body))
    cmd = [sys.executable, "-m", "experiments.launch", "--processes", str(processes),
           "--devices-per-process", str(devices), "--grace", str(grace),
           "--", sys.executable, "-c", code]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
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


def _computed_once(tmp_path_factory, name: str, compute):
    """``compute(directory)`` (a JSON-able result) once per test session.

    Under pytest-xdist every worker that needs it waits on a lock in the session's shared
    temporary directory and the first one computes it; alone, it is computed here.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return compute(tmp_path_factory.mktemp(name))
    import fcntl

    root = tmp_path_factory.getbasetemp().parent / name  # the session's, shared by workers
    root.mkdir(exist_ok=True)
    done = root / "result.json"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.is_file():
                work = root / f"by-{worker}"
                done.write_text(json.dumps(compute(work)))
            return json.loads(done.read_text())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# The body of every 2-process run: the tagger on the global mesh (2 processes x 2 devices).
# DELAY slows each batch (the killed run, so that the kill lands mid-training); CROSS also
# restores the 1x1 run's checkpoint on the 4 devices and saves one state from all processes.
TRAIN_BODY = """
state, val = t.run(Path(os.environ["WORKDIR"]), mesh, delay=float(os.environ.get("DELAY", 0)))
out["params"] = t.as_lists(state.params)
out["step"] = int(state.step)
out["val"] = val
out["is_global"] = [not x.is_fully_addressable for x in jax.tree_util.tree_leaves(state)]
if os.environ.get("CROSS"):
    from rnn_jax.checkpoint import Checkpointer
    template = distributed.replicate(t.init_train_state(
        t.problem()[2], t.OPTIMIZER(), key=jax.random.key(3)), mesh)
    with Checkpointer(Path(os.environ["CROSS"]), config=t.CONFIG) as ckpt:
        restored, _ = ckpt.restore(template)
    out["from_one"] = t.as_lists(restored.params)
    out["from_one_sharding"] = str(jax.tree_util.tree_leaves(restored.params)[0].sharding.spec)
    # a state on each process's own device (not yet on the mesh) is saved once, by all
    fresh = t.init_train_state(t.problem()[2], t.optax.sgd(0.1), key=jax.random.key(5))
    with Checkpointer(Path(os.environ["FRESH"]), config=t.CONFIG) as ckpt:
        ckpt.save(fresh, meta={"epoch": 0, "position": 0})
"""

KILL_SLACK_SECONDS = 15  # a loaded machine: the launcher's own polling and exit, scheduling


def _kill_one_after_a_checkpoint(work: Path, rng: np.random.Generator, killed: dict):
    """``on_start`` for :func:`launch`: SIGKILL a random one of its 2 processes at a random
    moment (0-1 s) after the first checkpoint of ``work`` appears."""

    def kill_one(proc, err_path):
        deadline = time.monotonic() + 90
        pids = []
        while time.monotonic() < deadline and proc.poll() is None and len(pids) < 2:
            pids = [int(x.split(" pid ")[1].split()[0]) for x in err_path.read_text().splitlines()
                    if x.startswith("launch: process") and " pid " in x]  # fmt: skip
            time.sleep(0.01)
        ckpts = work / "checkpoints"
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir()):
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        killed["victim"] = victim = int(rng.integers(0, 2))
        killed["alive_before"] = proc.poll() is None and len(pids) == 2
        if killed["alive_before"]:  # else the test reports that the launch ended too early
            try:
                os.kill(pids[victim], signal.SIGKILL)
            except ProcessLookupError:
                killed["alive_before"] = False
        killed["at"] = time.monotonic()

    return kill_one


def _two_process_runs(root: Path) -> dict:
    """Every multi-process run the tests below check, at once where they can overlap.

    1. ``two``: 2 processes x 2 devices, 20 steps, uninterrupted; meanwhile ``killed``: the
       same launch, one process SIGKILLed after a checkpoint; meanwhile ``one``: the same
       training in this process on one device.
    2. ``again``: the killed launch run again (it resumes), which also restores ``one``'s
       checkpoint on 2x2.
    """
    rng = np.random.default_rng(int(time.time()))
    killed: dict = {}
    launched: dict = {}
    ended: dict = {}

    def go(key, **kwargs):
        launched[key] = launch(TRAIN_BODY, **kwargs)
        ended[key] = time.monotonic()

    threads = [
        threading.Thread(target=go, args=("two",), kwargs={
            "logs": root / "log-two", "env": {"WORKDIR": str(root / "two")}}),
        threading.Thread(target=go, args=("kill",), kwargs={
            "logs": root / "log-killed", "grace": 60.0,
            "env": {"WORKDIR": str(root / "killed"), "DELAY": "0.1"},
            "on_start": _kill_one_after_a_checkpoint(root / "killed", rng, killed)}),
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        one_state, one_val = run(root / "one")
    finally:
        for thread in threads:
            thread.join()
    stopped_after = ended["kill"] - killed["at"] if "at" in killed and "kill" in ended else None
    go("again", logs=root / "log-again", env={
        "WORKDIR": str(root / "killed"), "CROSS": str(root / "one"), "FRESH": str(root / "fresh")})  # fmt: skip
    return {
        "root": str(root),
        "one": {"params": as_lists(one_state.params), "step": int(one_state.step), "val": one_val},
        "kill_info": {**killed, "stopped_after": stopped_after},
        **{
            k: dict(zip(("status", "out", "err", "seconds"), v, strict=True))
            for k, v in launched.items()
        },  # fmt: skip
    }


# The launcher needs POSIX process groups and SO_REUSEPORT (to hold the coordinator's port).
needs_processes = pytest.mark.skipif(
    os.name != "posix" or not hasattr(socket, "SO_REUSEPORT"),
    reason="the loopback launcher cannot start processes here (needs POSIX, SO_REUSEPORT)",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _computed_once(tmp_path_factory, "two-process-runs", _two_process_runs)


# ----------------------------------------------------------------------------- tests
@needs_processes
def test_two_by_two_equals_one_by_one_and_checkpoints_cross_over(runs):
    """2 processes x 2 devices vs this process's one device: 20 steps of fit, same batches.

    Tolerance 1e-6 relative (max abs difference over the largest entry of each array): the
    global gradient is the same sum, but added in another order (per device, then across
    devices), so float32 rounding differs in the last bits, and Adam carries that through
    20 steps. The checkpoints cross over exactly: a 2x2 checkpoint restores bit-identically
    on one device, and a 1x1 checkpoint on 2x2.
    """
    two, one, root = runs["two"], runs["one"], Path(runs["root"])
    assert two["status"] == 0, two["err"][-4000:]
    out = two["out"]
    assert one["step"] == 20
    assert out["mesh"] == [0, 0, 1, 1] and out["step"] == 20 and all(out["is_global"])
    got = [np.asarray(x, np.float32) for x in out["params"]]
    want = [np.asarray(x, np.float32) for x in one["params"]]
    errors = [_relative_error(a, b) for a, b in zip(got, want, strict=True)]
    assert max(errors) <= 1e-6, errors
    assert abs(out["val"]["loss"] - one["val"]["loss"]) <= 1e-5 * abs(one["val"]["loss"])
    # 1x1 -> 2x2 (in the relaunch): bit-identical, replicated
    again = runs["again"]
    assert again["status"] == 0, again["err"][-4000:]
    for a, b in zip(again["out"]["from_one"], want, strict=True):
        assert np.asarray(a, np.float32).tobytes() == b.tobytes()
    assert again["out"]["from_one_sharding"] == "P()"
    # 2x2 -> 1x1: bit-identical to what the 2 processes held, meta from the primary
    state, meta = restored_params(root / "two")
    assert int(state.step) == 20 and meta["finished"]
    for a, b in zip(got, leaves(state.params), strict=True):
        assert a.tobytes() == b.tobytes()
    assert (root / "two" / "checkpoints" / "20" / "files.sha256.json").is_file()
    fresh = init_train_state(problem()[2], optax.sgd(0.1), key=jax.random.key(5))
    with Checkpointer(root / "fresh", config=CONFIG, read_only=True) as ckpt:
        saved, _ = ckpt.restore(fresh)
    for a, b in zip(leaves(saved.params), leaves(fresh.params), strict=True):
        assert a.tobytes() == b.tobytes()
    print(f"2x2 under the launcher {two['seconds']:.1f} s; relative errors {max(errors):.2e}")


@needs_processes
def test_one_process_dies_the_other_stops_and_a_relaunch_is_bit_identical(runs):
    """SIGKILL one of 2 processes at a random moment after the first checkpoint: the other
    stops by itself (not stopped by the launcher, whose grace is 60 s here) within the
    heartbeat timeout plus slack for a busy machine, and the same launch again resumes from
    the last checkpoint and ends bit-identical to the uninterrupted 2-process run."""
    kill, info = runs["kill"], runs["kill_info"]
    assert info.get("alive_before"), "the launch had ended before the kill: " + kill["err"][-3000:]
    survivor = 1 - info["victim"]
    assert kill["status"] != 0, kill["err"][-3000:]
    ended = [
        x for x in kill["err"].splitlines() if x.startswith(f"launch: process {survivor} ended")
    ]
    assert ended, kill["err"][-3000:]
    assert not any(s in ended[0] for s in ("status 0", "SIGTERM", "SIGKILL")), kill["err"][-3000:]
    limit = distributed.HEARTBEAT_TIMEOUT_SECONDS + KILL_SLACK_SECONDS
    assert info["stopped_after"] <= limit, kill["err"][-3000:]
    for key in ("two", "again"):
        assert runs[key]["status"] == 0, runs[key]["err"][-4000:]
    two, again = runs["two"]["out"], runs["again"]["out"]
    assert again["step"] == two["step"] == 20
    for a, b in zip(again["params"], two["params"], strict=True):
        assert np.asarray(a, np.float32).tobytes() == np.asarray(b, np.float32).tobytes()
    print(f"process {info['victim']} killed; {ended[0]} {info['stopped_after']:.1f} s later")


@needs_processes
def test_names_experiment_under_the_launcher_equals_one_process(tmp_path):
    """``experiments.launch --processes 2 --devices-per-process 2 -- names train`` trains,
    checkpoints and evaluates on 4 devices; its validation and test metrics equal a plain
    one-process run's (trained meanwhile) to float tolerance. (Word dropout is off: each
    device draws its own dropout masks, so with dropout the two runs are equally good, not
    equal.)"""
    from test_experiments_names import tiny_args, write_corpus

    corpus = write_corpus(tmp_path / "corpus.txt", n=160)
    args = tiny_args(
        corpus, "--config.models=birnn", "--config.word_dropout=0", "--config.probe_shifts=0"
    )
    names = [sys.executable, "-m", "experiments.names", "train"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    one = {}

    def plain():
        one["run"] = subprocess.run([*names, "--workdir", str(tmp_path / "one"), *args],
                                    cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip

    thread = threading.Thread(target=plain)
    thread.start()
    cmd = [sys.executable, "-m", "experiments.launch", "--processes", "2",
           "--devices-per-process", "2", "--", *names, "--workdir", str(tmp_path / "two"), *args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out = err = ""
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # SIGTERM: the launcher stops its processes, then exits
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        thread.join()
    assert proc.returncode == 0, err[-3000:]
    assert one["run"].returncode == 0, one["run"].stderr[-3000:]
    assert "[p0] data parallel: 2 process(es) x 2 cpu device(s)" in err
    assert "[p0] | birnn | 1 |" in out and "[p1] |" not in out  # one report

    def checkpoints(workdir):
        return sorted(int(p.name) for p in (workdir / "birnn" / "checkpoints").iterdir())

    assert checkpoints(tmp_path / "two") == checkpoints(tmp_path / "one")

    def val(workdir):
        lines = (workdir / "birnn" / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["split"] == "val"]

    def test(workdir):
        return json.loads((workdir / "results.json").read_text())["models"]["birnn"]["test"]

    a_val, b_val = val(tmp_path / "one"), val(tmp_path / "two")
    assert a_val and len(a_val) == len(b_val)
    for a, b in zip(a_val, b_val, strict=True):
        assert a["step"] == b["step"] and a["tokens"] == b["tokens"]
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * a["loss"]
    assert test(tmp_path / "one")["tokens"] == test(tmp_path / "two")["tokens"]
    assert abs(test(tmp_path / "one")["f1"] - test(tmp_path / "two")["f1"]) <= 1e-6


# ----------------------------------------------------------------------------- every experiment
FAMILY_RUNNER = """
import importlib, json, sys
task = importlib.import_module(f"experiments.{sys.argv[1]}.task")


class Trained(BaseException):  # not an Exception: the CLI lets it through
    pass


def stop(*args, **kwargs):  # the final evaluation is the same single-device code either way
    raise Trained


setattr(task, sys.argv[2], stop)
args = json.loads(sys.argv[3])
for flags, workdir in (([], sys.argv[4]), (["--devices", "2"], sys.argv[5])):
    try:
        status = task.EXPERIMENT.main(["train", *flags, "--workdir", workdir, *args])
        raise SystemExit(f"train {flags} ended with status {status} before its evaluation")
    except Trained:
        pass
"""


def _family_args(name: str, tmp_path: Path, monkeypatch) -> list[str]:
    """A tiny configuration of experiment ``name`` without dropout (each device draws its own
    masks) and with even batch sizes (2 devices), its data written under ``tmp_path``."""
    if name == "entities":
        from test_experiments_entities import _write_corpus

        corpus = _write_corpus(tmp_path / "ner.txt", n=64)
        return [f"--config.corpus_file={corpus}", "--config.models=birnn",
                "--config.hidden_size=8", "--config.word_dim=8", "--config.num_epochs=1",
                "--config.batch_size=16", "--config.warmup_steps=2", "--config.progress=false",
                "--config.max_len=8", "--config.pad_to_multiple=8", "--config.word_dropout=0",
                "--config.input_dropout=0", "--config.output_dropout=0"]  # fmt: skip
    if name == "sentiment":
        from test_experiments_sentiment import _write_corpus

        (tmp_path / "corpus").mkdir()
        corpus = _write_corpus(tmp_path / "corpus", n=80)
        return [f"--config.corpus_dir={corpus}", "--config.models=rnn_mean",
                "--config.cross_domains=tweets", "--config.hidden_size=8",
                "--config.batch_size=16", "--config.num_epochs=1", "--config.warmup_steps=2",
                "--config.eval_batch_size=32", "--config.progress=false",
                "--config.input_dropout=0", "--config.recurrent_dropout=0",
                "--config.output_dropout=0", "--config.dropout=0"]  # fmt: skip
    if name == "genes":
        from test_experiments_genes import write_genome

        genbank = write_genome(tmp_path / "synthetic.gb")
        return ["--quick", f"--config.genbank={genbank}", "--config.models=grubi",
                "--config.hidden_size=8", "--config.window=120", "--config.batch_size=8",
                "--config.windows_per_epoch=16", "--config.num_epochs=1",
                "--config.progress=false", "--config.figure_bases=1000"]  # fmt: skip
    if name == "weather":
        pytest.importorskip("vega_datasets")
        return ["--task=daily", "--quick", "--config.models=rnn_gauss", "--config.hidden_size=8",
                "--config.num_epochs=1", "--config.batch_size=64",
                "--config.baselines=persistence", "--config.eval_batch_size=128"]  # fmt: skip
    if name == "dates":
        return ["--config.num_train=64", "--config.num_val=16", "--config.num_test=16",
                "--config.hidden_size=8", "--config.num_epochs=1", "--config.batch_size=16",
                "--config.beam_width=2", "--config.progress=false",
                "--config.pad_to_multiple=48", "--config.eval_batch_size=16"]  # fmt: skip
    if name == "translate":
        from test_experiments_translate import fixture_records

        root = tmp_path / "cache"
        (root / "translate").mkdir(parents=True)
        (root / "translate" / "pairs.json").write_text(json.dumps(fixture_records(120)))
        monkeypatch.setenv("RNN_JAX_DATA", str(root))
        return ["--quick", "--config.val_books=Col", "--config.test_books=Mark",
                "--config.hidden_size=8", "--config.num_epochs=1", "--config.batch_size=16",
                "--config.max_train=0", "--config.num_test=0", "--config.progress=false",
                "--config.pad_to_multiple=16", "--config.eval_batch_size=8",
                "--config.max_len=12", "--config.cell=rnn", "--config.num_heatmaps=0"]  # fmt: skip
    if name == "charlm":
        from test_experiments_charlm import write_corpus

        corpus = write_corpus(tmp_path / "corpus.txt", n=120)
        return ["--quick", f"--config.corpus_file={corpus}", "--config.hidden_size=8",
                "--config.num_epochs=1", "--config.batch_size=16", "--config.warmup_steps=0",
                "--config.progress=false"]  # fmt: skip
    if name == "melody":
        from test_experiments_melody import write_tunes

        tunes = write_tunes(tmp_path / "tunes.json")
        return ["--quick", f"--config.tunes_file={tunes}", "--config.models=lstm",
                "--config.hidden_size=8", "--config.num_epochs=1", "--config.batch_size=8",
                "--config.warmup_steps=0", "--config.progress=false", "--config.min_count=1",
                "--config.prompt_dropout=0"]  # fmt: skip
    if name == "speech":
        from test_experiments_speech import _fixture_corpus

        manifest = _fixture_corpus(tmp_path)
        return ["--quick", f"--config.corpus_file={manifest}", "--config.models=rnn",
                "--config.hidden_size=8", "--config.batch_size=4", "--config.num_epochs=1",
                "--config.warmup_steps=1", "--config.dropout=0", "--config.baseline_clips=1",
                "--config.real_speech=false", "--config.progress=false"]  # fmt: skip
    raise AssertionError(name)


def _numbers(tree, path=()) -> dict[tuple, float]:
    """The numeric leaves of a JSON tree by path (times left out: they are not results)."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if "second" not in k and "time" not in k:
                out.update(_numbers(v, (*path, k)))
        return out
    if isinstance(tree, list):
        return {k: v for i, x in enumerate(tree) for k, v in _numbers(x, (*path, i)).items()}
    if isinstance(tree, bool) or not isinstance(tree, int | float):
        return {}
    return {path: float(tree)}


def _logged(workdir: Path) -> dict[tuple, float]:
    """Every training and validation record of every run directory's metrics log."""
    records = {}
    for log in sorted(workdir.rglob("metrics.jsonl")):
        rows = list(map(json.loads, log.read_text().splitlines()))
        records.update(_numbers(rows, (str(log.relative_to(workdir)),)))
    return records


FINAL_EVALUATION = {  # the function each train command evaluates the test split with
    "dates": "evaluate", "translate": "evaluate", "charlm": "run_evaluation",
    "melody": "run_evaluation", "speech": "evaluate",
}  # fmt: skip


EXPERIMENTS = [
    "entities",
    "sentiment",
    "genes",
    "weather",
    "dates",
    "translate",
    "charlm",
    "melody",
    "speech",
]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_trains_on_two_devices_as_on_one(name, tmp_path, monkeypatch):
    """``train --devices 2`` (the shared loop of experiments/common.py on a 2-device mesh)
    logs the training losses and validation metrics of a plain one-device run of the same
    tiny configuration, to float tolerance (the gradient sums are added in another order).
    Both runs stop before the final evaluation of the test split, which is the same
    single-device code after either (and costs most of the compiling)."""
    args = _family_args(name, tmp_path, monkeypatch)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "2"}
    one, two = tmp_path / "one", tmp_path / "two"
    final = FINAL_EVALUATION.get(name, "evaluate_all")
    cmd = [sys.executable, "-c", FAMILY_RUNNER, name, final, json.dumps(args), str(one), str(two)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "data parallel: 1 process(es) x 2 cpu device(s)" in proc.stderr
    a, b = _logged(one), _logged(two)
    splits = {k[-1] for k in a}
    assert {"loss"} < splits, splits  # training losses and at least one validation metric
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    for key in a:
        assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (key, a[key], b[key])


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
    with pytest.raises(ValueError, match="`heartbeat_timeout_seconds` must be a positive int"):
        distributed.initialize(heartbeat_timeout_seconds=0)
    monkeypatch.setenv("RNN_JAX_HEARTBEAT_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="RNN_JAX_HEARTBEAT_TIMEOUT must be an int, got 'soon'"):
        distributed.initialize()
    monkeypatch.setenv("RNN_JAX_HEARTBEAT_TIMEOUT", "0")
    with pytest.raises(ValueError, match="`heartbeat_timeout_seconds` must be a positive int"):
        distributed.initialize()
    monkeypatch.delenv("RNN_JAX_HEARTBEAT_TIMEOUT")
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
