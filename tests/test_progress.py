"""Progress bar, metrics JSON lines, curves."""

import json

import numpy as np
import pytest

from rnn_jax.progress import MetricsLogger, ProgressBar, plot_metrics, read_metrics


def test_metrics_round_trip_and_truncate_on_resume(tmp_path):
    logger = MetricsLogger(tmp_path)
    for step in (10, 20, 30):
        logger.log(step, "train", {"loss": 1.0 / step}, epoch=0)
    logger.log(20, "val", {"f1": 0.5})
    logger.truncate_after(20)  # a run resumed from the checkpoint of step 20
    logger.log(30, "train", {"loss": 0.25}, epoch=0)
    logger.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in records] == [
        (10, "train"),
        (20, "train"),
        (20, "val"),
        (30, "train"),
    ]
    assert records[-1]["loss"] == 0.25 and records[0]["epoch"] == 0
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # every line is one JSON object


def test_plot_metrics_writes_a_png(tmp_path):
    logger = MetricsLogger(tmp_path)
    for step in range(1, 50):
        logger.log(step, "train", {"loss": float(np.exp(-step / 10))})
        if step % 10 == 0:
            logger.log(step, "val", {"loss": 0.5, "f1": step / 50})
    logger.close()
    out = tmp_path / "curves.png"
    plot_metrics(tmp_path / "metrics.jsonl", out, title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_read_metrics_of_a_missing_file_is_empty(tmp_path):
    assert read_metrics(tmp_path / "none.jsonl") == []


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_shows_loss_and_validation_metrics(enabled, capsys):
    bar = ProgressBar(5, initial=2, enabled=enabled, description="demo")
    bar.update(loss=0.123456)
    bar.set_postfix_metrics({"f1": 0.9, "loss": 0.2}, keys=("f1",))
    bar.update(2, loss=0.1)
    bar.close()
    err = capsys.readouterr().err
    if enabled:
        assert "demo" in err and "5/5" in err and "val_f1=0.9000" in err and "loss=0.1000" in err
        assert "val_loss" not in err
    else:
        assert err == ""
