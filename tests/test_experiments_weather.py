"""Tests of the weather experiment: scores, baselines, splits, and a tiny run through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pandas")
pytest.importorskip("vega_datasets")
pytest.importorskip("sklearn")
pytest.importorskip("statsmodels")

from scipy.integrate import quad  # noqa: E402
from scipy.stats import norm  # noqa: E402

from experiments.weather.__main__ import main  # noqa: E402
from experiments.weather.baselines import Climatology, sarimax_rolling  # noqa: E402
from experiments.weather.data import load_series, make_windows, split_bounds  # noqa: E402
from experiments.weather.metrics import (  # noqa: E402
    Z80,
    coverage,
    crps_gaussian,
    gaussian_nll,
    point_scores,
)


# ----------------------------------------------------------------------------- scores
@pytest.mark.parametrize(("mu", "sigma", "y"), [(0.0, 1.0, 0.0), (1.5, 0.3, 2.0), (-2.0, 4.0, 3.0)])
def test_crps_gaussian_equals_the_integral_of_the_squared_cdf_difference(mu, sigma, y):
    F = lambda x: norm.cdf(x, mu, sigma)  # noqa: E731
    lo, hi = mu - 12 * sigma, mu + 12 * sigma
    below = quad(lambda x: F(x) ** 2, lo, y, limit=200)[0] if y > lo else 0.0
    above = quad(lambda x: (1 - F(x)) ** 2, y, hi, limit=200)[0]
    assert float(crps_gaussian(mu, sigma, y)) == pytest.approx(below + above, rel=1e-6, abs=1e-9)


def test_crps_tends_to_the_absolute_error_and_nll_is_gaussian():
    assert float(crps_gaussian(1.0, 1e-9, 3.5)) == pytest.approx(2.5, rel=1e-6)
    assert float(gaussian_nll(0.0, 2.0, 1.0)) == pytest.approx(-norm.logpdf(1.0, 0.0, 2.0))


def test_interval_coverage():
    assert Z80 == pytest.approx(1.2815515655)
    assert coverage(np.zeros(4), np.ones(4), np.array([0.0, 1.0, 1.3, -2.0])) == 0.5
    y = np.random.default_rng(0).normal(3.0, 2.0, 200_000)
    assert coverage(3.0, 2.0, y) == pytest.approx(0.8, abs=0.005)


def test_point_scores_per_horizon():
    s = point_scores(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.0], [3.0, 0.0]]))
    assert s["rmse_by_h"] == pytest.approx([0.0, np.sqrt(10.0)])
    assert s["mae"] == pytest.approx(1.5)


# ----------------------------------------------------------------------------- data
def test_daily_splits_are_chronological_and_persistence_is_yesterday():
    s = load_series("daily")
    v, t = split_bounds(s)
    assert str(s.dates[v])[:10] == "2014-01-01" and str(s.dates[t])[:10] == "2015-01-01"
    mean, std = s.X[:v].mean(0), s.X[:v].std(0)
    w = make_windows(s, t, len(s), mean, std)
    assert len(w) == 365 and w.y.shape == (365, 1)
    np.testing.assert_allclose(w.persistence[:, 0], s.y[w.origins - 1])
    np.testing.assert_allclose(w.xs[:, -1, 0] * std[0] + mean[0], s.y[w.origins - 1], atol=1e-4)


def test_hourly_series_is_a_regular_grid_in_celsius():
    s = load_series("hourly")
    assert len(s) == 8760 and np.all(np.diff(s.dates) == np.timedelta64(1, "h"))
    assert 0 < s.y.min() and s.y.max() < 30  # °C, not °F
    v, t = split_bounds(s)
    w = make_windows(s, t, len(s), s.X[:v].mean(0), s.X[:v].std(0))
    np.testing.assert_allclose(w.persistence, s.y[w.origins[:, None] - 24 + np.arange(24)])
    assert np.all(w.origins + 23 < len(s)) and w.origins[0] == t


def test_climatology_uses_only_training_rows():
    s = load_series("daily")
    v, _ = split_bounds(s)
    a = Climatology.fit(s, v).coef
    s2 = type(s)(s.task, s.dates, s.X.copy())
    s2.X[v:, 0] += 100.0  # changing validation/test targets changes nothing
    np.testing.assert_allclose(Climatology.fit(s2, v).coef, a)


def test_sarimax_rolling_equals_refiltered_forecasts():
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=300)) * 0.1 + np.sin(np.arange(300) * 2 * np.pi / 24)
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    res = SARIMAX(y[:200], order=(2, 0, 1), trend="c").fit(disp=False)
    origins = np.array([210, 250, 297])
    mean, sd = sarimax_rolling(res, y, origins, 3)
    for k, i in enumerate(origins):
        f = res.apply(y[:i]).get_forecast(3)
        np.testing.assert_allclose(mean[k], f.predicted_mean, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(sd[k], np.sqrt(f.var_pred_mean), rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------- CLI
TINY = [
    "--task=daily",
    "--quick",
    "--config.models=rnn_gauss",
    "--config.hidden_size=8",
    "--config.num_epochs=1",
    "--config.batch_size=64",
    "--config.baselines=persistence,climatology,ridge_ar",
    "--config.eval_batch_size=128",
]


def test_train_eval_predict_tiny_daily(tmp_path, capsys):
    w = tmp_path / "run"
    assert main(["train", "--workdir", str(w), *TINY]) == 0
    results = json.loads((w / "results.json").read_text())
    assert set(results["models"]) == {"rnn_gauss"}
    assert set(results["baselines"]) == {"persistence", "climatology", "ridge_ar"}
    assert 0.0 <= results["models"]["rnn_gauss"]["coverage80"] <= 1.0
    assert (w / "forecast.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["eval", "--workdir", str(w)]) == 0
    assert "rnn_gauss" in capsys.readouterr().out
    # predict from the last 30 days of 2015 written as a CSV
    import pandas as pd
    from vega_datasets import data

    csv = tmp_path / "last.csv"
    data.seattle_weather().tail(30).to_csv(csv, index=False)
    assert main(["predict", "--workdir", str(w), "--csv", str(csv)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[:2] for line in out] == [["rnn_gauss", "2016-01-01"]]
    assert "(80 %)" in out[0]
    short = tmp_path / "short.csv"
    pd.read_csv(csv).tail(5).to_csv(short, index=False)
    assert main(["predict", "--workdir", str(w), "--csv", str(short)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the last 30" in err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--workdir", str(tmp_path), "--config.nope=1"]) == 2
    assert main(["train", "--workdir", str(tmp_path), "--config.residual=tomorrow"]) == 2
    assert main(["eval", "--workdir", str(tmp_path / "none")]) == 1
    assert main(["predict", "--workdir", str(tmp_path)]) == 2
    for line in capsys.readouterr().err.strip().splitlines():
        assert "error:" in line
    assert not (tmp_path / "run_config.json").exists()
