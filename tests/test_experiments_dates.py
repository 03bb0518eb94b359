"""Smoke tests of the dates experiment: a tiny run through the CLI, predict, eval, errors."""

from __future__ import annotations

import json

import jax

from experiments.cli import main
from experiments.dates.config import DatesConfig, ReportConfig, TrainConfig, default_config
from experiments.dates.task import eval_command, load_data, predict_command, train_command

COMMANDS = {"train": train_command, "eval": eval_command, "predict": predict_command}
TINY = [
    "--config.num_train=256",
    "--config.num_val=32",
    "--config.num_test=64",
    "--config.hidden_size=16",
    "--config.num_epochs=2",
    "--config.batch_size=32",
    "--config.eval_every=none",
    "--config.beam_width=2",
    "--config.progress=false",
    "--config.pad_to_multiple=48",  # one source shape: one compile of each function
    "--config.eval_batch_size=32",
]


def run(argv):
    return main(argv, prog="dates", commands=COMMANDS, default_config=default_config)


def test_data_is_held_out_and_iso():
    config = DatesConfig(
        train=TrainConfig(num_train=300, num_val=50), report=ReportConfig(num_test=80)
    )
    data = load_data(config)
    train_inputs = {s for s, _ in data.splits["train"]}
    for name in ("val", "test"):
        assert not train_inputs & {s for s, _ in data.splits[name]}
        assert all(len(t) == 10 and t[4] == t[7] == "-" for _, t in data.splits[name])
    assert sorted(c for c in data.tgt_vocab.tokens[4:]) == sorted("0123456789-")


def test_tiny_run_train_eval_predict(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert run(["train", "--workdir", str(workdir), "--quick", *TINY]) == 0
    out = capsys.readouterr().out
    assert "| greedy |" in out and "| beam (k=2" in out
    results = json.loads((workdir / "results.json").read_text())
    assert results["num_test"] == 64 - results["dropped_overlap"]["test"]
    for method in ("greedy", "beam"):
        assert 0.0 <= results[method]["exact_match"] <= 1.0
    assert (workdir / "curves.png").exists()
    assert run(["eval", "--workdir", str(workdir)]) == 0
    assert "| greedy |" in capsys.readouterr().out
    assert run(["predict", "--workdir", str(workdir), "3rd of May 1979", "", "☃ 1999"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("3rd of May 1979\t")
    assert "never seen in training" in lines[2]  # the snowman is not a date character


def test_predict_before_training_is_a_clear_error(tmp_path, capsys):
    assert run(["predict", "--workdir", str(tmp_path / "none"), "1 May 2000"]) == 1
    assert "train first" in capsys.readouterr().err


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    assert run(["train", "--workdir", str(tmp_path / "w"), "--config.hiden_size=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config key `hiden_size`" in err[0]
    assert not (tmp_path / "w").exists()


def test_translate_compiles_once_for_any_number_of_inputs():
    from experiments.dates.task import _greedy, make_model, translate

    config = DatesConfig(
        train=TrainConfig(num_train=64, num_val=8), report=ReportConfig(num_test=8)
    )
    data = load_data(config)
    params = make_model(config.model, data).init(jax.random.key(0))
    before = _greedy._cache_size()
    for n in (1, 2, 3, 5):
        texts = [f"{d + 1} May 2000" for d in range(n)]
        assert len(translate(params, config, data.src_vocab, data.tgt_vocab, texts)) == n
    assert _greedy._cache_size() - before == 1
