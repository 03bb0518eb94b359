"""The helpers every experiment's eval/predict/summary commands share (experiments.common) and
the module entry points (experiments.cli.module_main / fetch_main)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments import cli, common


class FakeRun:
    """A ModelRun-like run: ``best_params()`` is ``None`` where the model is untrained."""

    def __init__(self, name: str, trained: dict[str, object], workdir: Path):
        self.name, self.dir = name, Path(workdir) / name
        self._params = trained.get(name)

    def best_params(self):
        return self._params


def write_train_json(workdir: Path, name: str, val: dict[str, float] | None) -> None:
    (workdir / name).mkdir(parents=True)
    (workdir / name / "train.json").write_text(json.dumps({"val": val}))


def test_trained_runs_skip_untrained_models_in_order(tmp_path):
    trained = {"b": "params-b", "c": "params-c"}
    got = list(common.trained_runs(["a", "b", "c"], lambda n: FakeRun(n, trained, tmp_path)))
    assert [(name, run.name, params) for name, run, params in got] == [
        ("b", "b", "params-b"),
        ("c", "c", "params-c"),
    ]


def test_trained_params_names_the_model_to_train(tmp_path):
    assert common.trained_params(FakeRun("a", {"a": 1}, tmp_path)) == 1
    with pytest.raises(FileNotFoundError, match=r"a has no checkpoint: train a first"):
        common.trained_params(FakeRun("a", {}, tmp_path))


def test_best_trained_by_metric_and_mode(tmp_path):
    write_train_json(tmp_path, "a", {"f1": 0.5, "loss": 0.2})
    write_train_json(tmp_path, "b", {"f1": 0.7, "loss": 0.4})
    write_train_json(tmp_path, "c", {"f1": 0.7})  # ties go to the first
    write_train_json(tmp_path, "d", None)  # no validation metrics: ranks last
    assert common.best_trained(tmp_path, ["a", "b", "c", "d"], "f1") == "b"
    assert common.best_trained(tmp_path, ["d", "c", "b"], "f1") == "c"
    assert common.best_trained(tmp_path, ["b", "c", "d", "a"], "loss", mode="min") == "a"
    assert common.best_trained(tmp_path, ["d"], "loss", mode="min") == "d"
    assert common.best_trained(tmp_path, ["x"], "f1") is None
    with pytest.raises(FileNotFoundError, match=r"no trained tagger in .*python -m experiments.e "):
        common.best_trained(tmp_path, ["x"], "f1", experiment="e", what="tagger")
    with pytest.raises(ValueError, match="`mode` must be one of"):
        common.best_trained(tmp_path, ["a"], "f1", mode="best")


def test_mean_sd_is_the_sample_sd():
    assert common.mean_sd([1.0, 2.0, 3.0]) == pytest.approx([2.0, 1.0])
    assert common.mean_sd(iter([5.0])) == [5.0, 0.0]


def test_summary_command_writes_results_plots_and_prints(tmp_path, capsys):
    runs = []
    for seed, f1 in ((0, 0.5), (1, 0.7)):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "results.json").write_text(json.dumps({"f1": f1}))
        runs.append(str(tmp_path / f"s{seed}"))
    plotted = []
    out = tmp_path / "summary"
    status = common.summary_command(
        SimpleNamespace(inputs=runs, workdir=out),
        lambda rs: {"f1": common.mean_sd([r["f1"] for r in rs])},
        lambda s: f"| f1 | {s['f1'][0]:.2f} ± {s['f1'][1]:.2f} |",
        plots=[("summary.png", lambda rs, path: plotted.append((len(rs), path)))],
    )
    assert status == 0
    assert capsys.readouterr().out == "| f1 | 0.60 ± 0.14 |\n"
    stored = json.loads((out / "results.json").read_text())
    assert stored["runs"] == runs and stored["f1"] == pytest.approx([0.6, 0.1414213562])
    assert (out / "results.md").read_text() == "| f1 | 0.60 ± 0.14 |\n"
    assert plotted == [(2, out / "summary.png")]


def test_summary_command_needs_inputs_that_hold_results(tmp_path):
    with pytest.raises(ValueError, match="`summary` needs the run directories"):
        common.summary_command(SimpleNamespace(inputs=[], workdir=tmp_path), dict, str)
    run = SimpleNamespace(inputs=[str(tmp_path / "missing")], workdir=tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="results.json does not exist: train or evaluate"):
        common.summary_command(run, dict, str)


def test_table_head_and_save_figure(tmp_path):
    assert common.table_head(["model"]) == ["| model |", "|---|"]
    assert common.table_head(["m", "a", "b"])[1] == "|---|---:|---:|"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    path = common.save_figure(fig, tmp_path / "f.png")
    assert path.stat().st_size > 0 and not plt.fignum_exists(fig.number)


def test_stack_config_checks_its_fields():
    assert common.StackConfig(hidden_size=4, num_layers=2, dropout=0.5).num_layers == 2
    with pytest.raises(ValueError, match="`num_layers` must be a positive int, got 0"):
        common.StackConfig(num_layers=0)
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\), got 1.0"):
        common.StackConfig(dropout=1.0)


def test_fetch_main_prints_the_description_or_one_error_line(capsys):
    seen = []

    def fetch(data_dir):
        seen.append(data_dir)
        return f"cached in {data_dir}"

    assert cli.fetch_main("x", ["--data-dir", "/d"], fetch, (OSError,)) == 0
    assert capsys.readouterr().out == "cached in /d\n" and seen == ["/d"]

    def failing(data_dir):
        raise OSError("no network")

    assert cli.fetch_main("x", [], failing, (OSError,)) == 1
    assert capsys.readouterr().err == "python -m experiments.x fetch: error: no network\n"
    with pytest.raises(SystemExit):
        cli.fetch_main("x", ["--workdir", "w"], fetch, (OSError,))
    assert cli.fetch_main("x", ["--workdir", "w"], fetch, (OSError,), workdir_flag=True) == 0


def test_module_main_fetches_without_importing_the_task(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "experiments.genes.task", raising=False)
    status = cli.module_main(
        "genes", "doc", ["fetch", "--data-dir", "r"], fetch=lambda d: f"ok {d}", fetch_errors=()
    )
    assert status == 0 and capsys.readouterr().out == "ok r\n"
    assert "experiments.genes.task" not in sys.modules


def test_module_main_rewrites_then_runs_the_experiment(monkeypatch):
    import experiments.charlm.task as task

    calls = []
    fake = SimpleNamespace(main=lambda argv, description: calls.append((argv, description)) or 7)
    monkeypatch.setattr(task, "EXPERIMENT", fake)
    status = cli.module_main("charlm", "doc", ["eval", "-x"], rewrite=lambda a: [*a, "--more"])
    assert status == 7 and calls == [(["eval", "-x", "--more"], "doc")]
    # without a fetch function, "fetch" is an ordinary command of the experiment
    assert cli.module_main("charlm", "doc", ["fetch"]) == 7 and calls[-1] == (["fetch"], "doc")
