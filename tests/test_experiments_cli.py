"""The experiment CLI under bad inputs: one line on stderr, exit 2 (usage) or 1 (runtime), no
traceback, and nothing written before the whole configuration and the run directory are checked.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import common
from experiments.charlm.task import EXPERIMENT as CHARLM
from experiments.cli import main
from experiments.names.config import NamesConfig
from experiments.names.task import ModelRun
from rnn_jax.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[1]


def write_corpus(path: Path, n: int = 120, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = ["the/DT", "dog/NN", "saw/VBD", "a/DT", "cat/NN", "John/NNP", "ran/VBD", "./."]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 6))) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny(corpus: Path, *extra: str) -> list[str]:
    return [
        f"--config.corpus_file={corpus}",
        "--config.hidden_size=8",
        "--config.num_epochs=1",
        "--config.batch_size=16",
        "--config.warmup_steps=0",
        "--config.progress=false",
        "--config.temperatures=1.0",
        "--config.num_samples=1",
        "--config.sample_len=5",
        "--config.seeds=",
        *extra,
    ]


def run(argv, capsys) -> tuple[int, str, list[str]]:
    code = CHARLM.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def files(directory: Path) -> dict[Path, tuple[int, int]]:
    return {
        p: (p.stat().st_mtime_ns, p.stat().st_size) for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny trained charlm run: ``(corpus, workdir)``; copy it before changing it."""
    base = tmp_path_factory.mktemp("cli")
    corpus = write_corpus(base / "corpus.txt")
    workdir = base / "run"
    assert CHARLM.main(["train", "--workdir", str(workdir), *tiny(corpus)]) == 0
    return corpus, workdir


def copy_run(trained, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(trained[1], target)
    return target


# --------------------------------------------------------------------------- usage errors: exit 2
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["some", "input"], "`train` takes no inputs"),
        (["--config.learning_rate=-1"], "`learning_rate` must be positive, got -1.0"),
        (["--config.eval_every=0"], "`eval_every` must be a positive int or none, got 0"),
        (["--config.dropout=1.5"], "`dropout` must be in [0, 1)"),
        (["--config.batch_size=0"], "`batch_size` must be a positive int"),
        (["--config.hiden_size=3"], "unknown config key `hiden_size`"),
        (["--config.hidden_size=x"], "must be an int, got 'x'"),
        (["--bogus"], "unrecognised argument '--bogus'"),
    ],
)
def test_usage_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, extra, expected):
    workdir = tmp_path / "w"
    code, _, err = run(["train", "--workdir", str(workdir), *extra], capsys)
    assert code == 2
    assert len(err) == 1 and expected in err[0], err
    assert not workdir.exists()  # the whole config is checked before the disk is touched


def test_word_dropout_outside_unit_interval_is_a_usage_error(tmp_path, capsys):
    from experiments.names.task import EXPERIMENT as NAMES

    code = NAMES.main(["train", "--workdir", str(tmp_path / "w"), "--config.word_dropout=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "`word_dropout` must be in [0, 1)" in err[0]


def test_flat_and_sectioned_override_names_are_the_same(tmp_path):
    from experiments.cli import parse_args

    kw = dict(prog="x", commands=["train"], default_config=CHARLM.default_config)
    flat = parse_args(["train", "--workdir", "w", "--config.learning_rate=0.5"], **kw)
    nested = parse_args(["train", "--workdir", "w", "--config.train.learning_rate=0.5"], **kw)
    assert flat.config == nested.config and flat.config.train.learning_rate == 0.5


def test_experiment_options_presets_and_commands_without_workdir(capsys):
    from experiments.cli import Option, parse_args
    from experiments.weather.config import default_config

    kw = dict(
        prog="x",
        commands=["fetch", "train"],
        default_config=default_config,
        options=[
            Option("task", "the task", choices=("daily", "hourly"), default="daily", preset=True),
            Option("csv", "a CSV file"),
        ],
        workdir_optional={"fetch"},
    )
    run = parse_args(["train", "--workdir", "w", "--task", "hourly", "--csv", "f.csv"], **kw)
    assert run.options == {"task": "hourly", "csv": "f.csv"}
    assert run.config.train.task == "hourly" and run.config.model.hidden_size == 64  # preset
    assert parse_args(["fetch"], **kw).workdir is None
    assert parse_args(["train", "--workdir", "w"], **kw).config.model.hidden_size == 32
    with pytest.raises(SystemExit):
        parse_args(["train"], **kw)
    assert "required: --workdir" in capsys.readouterr().err


# --------------------------------------------------------------------------- runtime errors: exit 1
def test_batch_larger_than_the_data_is_one_line_and_writes_nothing(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", n=20)
    workdir = tmp_path / "w"
    code, _, err = run(["train", "--workdir", str(workdir), *tiny(corpus, "--config.batch_size=64")], capsys)  # fmt: skip
    assert code == 1 and len(err) == 1 and "`batch_size` = 64 is larger than the" in err[0]
    assert files(workdir) == {}


def test_workdir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    code, _, err = run(["train", "--workdir", str(path), *tiny(tmp_path / "none")], capsys)
    assert code == 1 and len(err) == 1 and "is a file, not a directory" in err[0]
    assert path.read_text() == "x"


def test_read_only_workdir(tmp_path, capsys, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode))  # fmt: skip
    corpus = write_corpus(tmp_path / "corpus.txt")
    code, _, err = run(["train", "--workdir", str(tmp_path / "w"), *tiny(corpus)], capsys)
    assert code == 1 and len(err) == 1 and "is not writable" in err[0]


def test_another_configuration_fails_before_anything_is_written(trained, tmp_path, capsys):
    corpus, _ = trained
    workdir = copy_run(trained, tmp_path)
    before = files(workdir)
    code, _, err = run(["train", "--workdir", str(workdir), *tiny(corpus, "--config.hidden_size=9")], capsys)  # fmt: skip
    assert code == 1 and len(err) == 1
    assert "different configuration (model.hidden_size: stored 8, now 9)" in err[0]
    assert files(workdir) == before  # config.json and run_config.json included


@pytest.mark.parametrize("name", ["run_config.json", "vocab.json"])
def test_corrupt_json_of_a_run_is_one_line(trained, tmp_path, capsys, name):
    workdir = copy_run(trained, tmp_path)
    (workdir / name).write_text('{"model": {')
    code, _, err = run(["eval", "--workdir", str(workdir)], capsys)
    assert code == 1 and len(err) == 1 and f"{name} is not valid JSON" in err[0], err


def test_eval_overriding_a_trained_field_is_refused(trained, tmp_path, capsys):
    workdir = copy_run(trained, tmp_path)
    code, _, err = run(["eval", "--workdir", str(workdir), "--config.hidden_size=9"], capsys)
    assert code == 1 and len(err) == 1 and "model.hidden_size: stored 8, now 9" in err[0]


def test_eval_needs_no_write_access(trained, tmp_path, capsys, monkeypatch):
    workdir = copy_run(trained, tmp_path)
    before = files(workdir)

    def read_only(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(common, "atomic_write", read_only)
    code, out, err = run(["eval", "--workdir", str(workdir), "--config.seeds=a"], capsys)
    assert code == 0 and "| rnn |" in out
    assert len(err) == 1 and "results printed only, not written" in err[0]
    assert files(workdir) == before


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(
    not _can_mount_read_only(), reason="needs `unshare -m` (root) for a read-only mount"
)
@pytest.mark.parametrize("command", ["eval", "sample", "train"])
def test_on_a_read_only_file_system(trained, tmp_path, command):
    """A real read-only mount: eval and sample work (eval says it wrote nothing); train refuses."""
    corpus, _ = trained
    workdir = copy_run(trained, tmp_path)
    before = files(workdir)
    extra = tiny(corpus) if command == "train" else []
    cli = [sys.executable, "-m", "experiments.charlm", command, "--workdir", str(workdir), *extra]
    script = f'mount --bind -o ro "{workdir}" "{workdir}" && exec "$@"'
    proc = subprocess.run(
        ["unshare", "-m", "--", "sh", "-c", script, "sh", *cli],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    if command == "train":
        assert proc.returncode == 1 and len(err) == 1 and "is not writable" in err[0], err
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert err == (["note: results printed only, not written to " + str(workdir) + " (Read-only file system)"] if command == "eval" else []), err  # fmt: skip
    assert files(workdir) == before


def test_truncated_checkpoint_is_one_line_without_tracebacks(trained, tmp_path):
    workdir = copy_run(trained, tmp_path)
    data = [p for p in (workdir / "checkpoints").rglob("*") if p.is_file() and "state" in p.parts]
    biggest = max(data, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.charlm", "eval", "--workdir", str(workdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(err) == 1 and "checkpoint" in err[0], proc.stderr[-2000:]


# --------------------------------------------------------------------------- exit codes of main
class FakeInterruptError(Exception):
    exit_code = 143


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (
            FakeInterruptError("stopped by SIGTERM at step 7;\ncheckpoint written"),
            143,
            "stopped by SIGTERM at step 7; checkpoint written",
        ),  # fmt: skip
        (KeyboardInterrupt(), 130, "KeyboardInterrupt"),
        (ValueError("bad\nvalue"), 1, "bad value"),
        (TypeError("oops"), 1, "unexpected TypeError: oops (rerun with --debug"),
    ],
)
def test_main_maps_every_error_to_one_line_and_an_exit_code(capsys, error, code, text):
    def command(run):
        raise error

    status = main(["go", "--workdir", "w"], prog="x", commands={"go": command},
                  default_config=lambda quick: NamesConfig())  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert status == code and len(err) == 1 and text in err[0], err
    with pytest.raises(type(error)):
        main(["go", "--workdir", "w", "--debug"], prog="x", commands={"go": command},
             default_config=lambda quick: NamesConfig())  # fmt: skip


# --------------------------------------------------------------------------- no recompilation
def test_predict_compiles_once_for_any_number_of_inputs(tmp_path):
    vocab = Vocabulary.build([["John", "saw", "a", "dog"]], lower=False)
    config = NamesConfig(models=("rnn",))
    model_run = ModelRun(config, "rnn", vocab, tmp_path)
    predict = model_run._predict
    rng = np.random.default_rng(0)
    sizes = []
    for n in (1, 2, 3, 5, 7):
        ids = [rng.integers(0, len(vocab), rng.integers(1, 10)).astype(np.int32) for _ in range(n)]
        out = model_run.predict(model_run.params0, ids)
        assert [len(y) for y in out] == [len(x) for x in ids]
        sizes.append(predict._cache_size())
    assert sizes[-1] == 1, sizes
    # a second ModelRun of the same model reuses the compiled function
    assert ModelRun(config, "rnn", vocab, tmp_path)._predict is predict
