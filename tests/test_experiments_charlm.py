"""Smoke tests of the character language model experiment: baselines, a tiny run, sampling."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np

from experiments.charlm.config import default_config
from experiments.charlm.task import (
    bigram_bpc,
    eval_command,
    lm_pairs,
    sample_command,
    train_command,
    unigram_bpc,
)
from experiments.cli import main
from rnn_jax.vocab import Vocabulary

COMMANDS = {"train": train_command, "eval": eval_command, "sample": sample_command}


def write_corpus(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = ["the/DT", "dog/NN", "saw/VBD", "a/DT", "cat/NN", "John/NNP", "ran/VBD", "./."]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_baselines_against_hand_computation():
    vocab = Vocabulary.build(["ab"], level="char", max_size=None)  # <PAD> <UNK> <BOS> <EOS> a b
    train = lm_pairs(vocab, ["ab", "aab"])
    test = lm_pairs(vocab, ["ab"])
    # unigram: targets a b <EOS> a a b <EOS>: a 3, b 2, <EOS> 2, <UNK> 0; add one over 4 ids
    p = {"a": 4 / 11, "b": 3 / 11, "<EOS>": 3 / 11}
    expected = -(math.log2(p["a"]) + math.log2(p["b"]) + math.log2(p["<EOS>"])) / 3
    assert np.isclose(unigram_bpc(vocab, train[1], test[1]), expected)
    # bigram with k -> 0: <BOS>->a (2/2), a->b (2/3), b-><EOS> (2/2)
    assert np.isclose(bigram_bpc(vocab, train, test, 1e-9), -math.log2(2 / 3) / 3, atol=1e-6)


def test_tiny_run_train_eval_sample(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), "--quick", f"--config.corpus_file={corpus}",
            "--config.hidden_size=16", "--config.num_epochs=3", "--config.batch_size=16",
            "--config.warmup_steps=0", "--config.learning_rate=0.02",
            "--config.progress=false", "--config.temperatures=0.5,1.0",
            "--config.sample_len=30"]  # fmt: skip
    run = lambda a: main(a, prog="charlm", commands=COMMANDS, default_config=default_config)  # noqa: E731
    assert run(["train", *argv]) == 0
    out = capsys.readouterr().out
    assert "| unigram |" in out and "| rnn |" in out and "temperature 0.5" in out
    results = json.loads((workdir / "results.json").read_text())
    bpc = results["bpc"]
    assert set(bpc) >= {"unigram", "rnn"} and all(np.isfinite(v) for v in bpc.values())
    # on this 8-word corpus even a tiny trained RNN beats the unigram baseline
    assert bpc["rnn"] < bpc["unigram"]
    assert run(["eval", *argv]) == 0
    capsys.readouterr()
    assert run(["sample", *argv, "the dog"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "seed 'the dog', temperature 0.5:"
    assert all(line.startswith("  the dog") for line in lines[1:3])
