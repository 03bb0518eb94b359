"""Smoke tests of the melody experiment: tokens, extraction, n-grams, a tiny run, sampling."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from experiments.cli import main
from experiments.melody.__main__ import translate_sample_flags
from experiments.melody.baselines import NGramCounts
from experiments.melody.config import default_config
from experiments.melody.data import extract_events, read_cache, write_cache
from experiments.melody.music import melody_stats
from experiments.melody.task import eval_command, sample_command, train_command
from experiments.melody.tokens import event_token, parse_event, parse_prime, parse_prompt

COMMANDS = {"train": train_command, "eval": eval_command, "sample": sample_command}
C_MAJOR = (60, 62, 64, 65, 67, 69, 71, 72)
A_MINOR = (57, 59, 60, 62, 64, 65, 68, 69)


def write_tunes(path: Path, n: int = 60, seed: int = 0) -> Path:
    """A tiny cache: random walks on C major (folk) and A minor (chorale) scales."""
    rng = random.Random(seed)
    tunes = []
    for i in range(n):
        minor = i % 2 == 1
        scale = A_MINOR if minor else C_MAJOR
        pos, events = 0, []
        for _ in range(rng.randint(8, 20)):
            pos = min(max(pos + rng.choice((-1, 1, 2, -2)), 0), len(scale) - 1)
            events.append([scale[pos], rng.choice(("1", "1/2", "2"))])
        events.append([scale[0], "2"])
        tunes.append({"id": f"t{i}", "style": "chorale" if minor else "folk",
                      "mode": "minor" if minor else "major", "tonic": "A" if minor else "C",
                      "metre": "duple", "shift": 0, "events": events})  # fmt: skip
    write_cache(path, tunes)
    return path


def test_event_tokens_and_prompts():
    assert event_token(61, "1/2") == "C#4:1/2" and event_token(-1, Fraction(3)) == "R:3"
    assert parse_event("Eb4:0.5") == (63, Fraction(1, 2))
    assert parse_prime("C4:1 Db4:1.5 R:1") == ["C4:1", "C#4:3/2", "R:1"]
    assert parse_prompt("mode=minor") == {"style": "*", "mode": "minor", "metre": "*"}
    for bad in ("H4:1", "C4", "C4:0", "C4:x"):
        with pytest.raises(ValueError, match="prime"):
            parse_event(bad)
    with pytest.raises(ValueError, match="prompt"):
        parse_prompt("colour=red")
    with pytest.raises(ValueError, match="mode"):
        parse_prompt("mode=lydian")


def test_extract_events_merges_ties_and_rests():
    from music21 import note, stream, tie

    part = stream.Part()
    first, second = note.Note("C4", quarterLength=1), note.Note("C4", quarterLength=0.5)
    first.tie, second.tie = tie.Tie("start"), tie.Tie("stop")
    grace = note.Note("D4").getGrace()
    elements = [note.Rest(quarterLength=1), first, second, grace, note.Rest(quarterLength=1),
                note.Rest(quarterLength=0.5), note.Note("E4", quarterLength=1 / 3),
                note.Rest(quarterLength=2)]  # fmt: skip
    for element in elements:
        part.append(element)
    assert extract_events(part) == [(60, "3/2"), (-1, "3/2"), (64, "1/3")]


def test_ngram_probabilities_are_normalised_and_match_hand_counts():
    # ids: 1 <UNK>, 2 <BOS>, 3 <EOS>, 4 and 5 events
    counts = NGramCounts([[4, 5, 4], [4, 4]], targets=[1, 3, 4, 5], bos_id=2, eos_id=3)
    # unigram targets 4 5 4 <EOS> 4 4 <EOS>: p(4) = (4 + 1) / (7 + 4)
    assert np.isclose(counts.probabilities([[4]], "unigram")[0], 5 / 11)
    # bigram add-k, k -> 0: p(5 | 4) = c(4, 5) / c(4) = 1 / 4
    p = counts.probabilities([[4, 5]], "bigram add-k", 1e-12)
    assert np.isclose(p[1], 1 / 4)
    for model, param in [("trigram interpolated", (0.5, 0.7)), ("trigram add-k", 0.3),
                         ("bigram interpolated", 0.6)]:  # fmt: skip
        # every context's distribution over the 4 targets sums to one
        total = sum(counts.probabilities([[4, 4, y]], model, param)[2] for y in (1, 3, 4, 5))
        assert math.isclose(total, 1.0, rel_tol=1e-9), model


def test_melody_stats_of_a_scale():
    stats = melody_stats([(m, "1") for m in (*A_MINOR, 64, 60, 57)])
    assert stats["minor"] and stats["in_key"] == 1.0 and stats["range"] == 12


def test_cache_checksum(tmp_path):
    path = write_tunes(tmp_path / "tunes.json", n=4)
    assert len(read_cache(path)) == 4
    path.write_text(path.read_text().replace('"t0"', '"x0"'))
    with pytest.raises(RuntimeError, match="sha256"):
        read_cache(path)


def test_tiny_run_train_eval_sample(tmp_path, capsys):
    tunes = write_tunes(tmp_path / "tunes.json")
    workdir, out = tmp_path / "run", tmp_path / "out"
    argv = ["--workdir", str(workdir), "--quick", f"--config.tunes_file={tunes}",
            "--config.models=lstm", "--config.hidden_size=16", "--config.num_epochs=2",
            "--config.batch_size=8", "--config.warmup_steps=0", "--config.learning_rate=0.02",
            "--config.progress=false", "--config.sanity_samples=3", "--config.sample_len=24",
            "--config.min_count=1", "--config.sanity_prompts=style=folk,style=chorale"]  # fmt: skip
    run = lambda a: main(a, prog="melody", commands=COMMANDS, default_config=default_config)  # noqa: E731
    assert run(["train", *argv]) == 0
    text = capsys.readouterr().out
    assert "| unigram |" in text and "| lstm, empty prompt |" in text and "real: all" in text
    results = json.loads((workdir / "results.json").read_text())
    base, models = results["baselines"], results["models"]
    # a random walk on 8 notes x 3 durations: even 2 epochs beat the uniform distribution
    uniform = math.log(results["vocab_events"] + 2)
    assert base["unigram"]["test"] < uniform and models["lstm"]["test"] < uniform
    assert (workdir / "samples.png").stat().st_size > 0 and (
        workdir / "lstm" / "train.json"
    ).is_file()

    assert run(["sample", "--workdir", str(workdir),
                *translate_sample_flags(["--num", "2", "--prime", "C4:1 D4:1",
                                         "--prompt", "style=folk,mode=major", "--out", str(out)])]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    paths = [Path(p) for line in lines if "\t" in line for p in line.split("\t")]
    assert len(paths) == 4 and all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert lines[1].split()[:2] == ["C4:1", "D4:1"]  # the opening comes first
    assert run(["sample", "--workdir", str(workdir), "--config.prime=C9:1"]) == 1  # not in vocab
    assert run(["sample", "--workdir", str(workdir), "--config.prompt=style=jazz"]) == 2
    assert run(["eval", "--workdir", str(workdir)]) == 0
    again = json.loads((workdir / "results.json").read_text())
    assert again["models"]["lstm"]["test"] == pytest.approx(models["lstm"]["test"], rel=1e-6)


def test_fetch_help_runs_without_parsing():
    done = subprocess.run([sys.executable, "-m", "experiments.melody", "fetch", "--help"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "--data-dir" in done.stdout
