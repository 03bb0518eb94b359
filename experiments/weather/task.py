"""Data, baselines, training, evaluation, figure and prediction of the weather experiment.

Run directory layout (``--workdir DIR``; one task per directory)::

    DIR/run_config.json      the whole configuration of the last ``train``
    DIR/scaler.json          standardisation, climatology and residual scale (from training)
    DIR/baselines.npz        the baselines' test forecasts (computed once by ``train``)
    DIR/<model>/             config.json, checkpoints/ (latest and best), metrics.jsonl,
                             curves.png, train.json
    DIR/results.json, .md    test scores of every model and baseline
    DIR/forecast.png         a test fortnight: observations, forecasts, 80 % intervals
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.cli import Experiment, Invocation, Option, UsageError
from experiments.weather import baselines as bl
from experiments.weather.config import BASELINES, WeatherConfig, default_config, parse_model_name
from experiments.weather.data import (
    TASKS,
    Series,
    Task,
    Windows,
    load_series,
    make_windows,
    series_from_frame,
    split_bounds,
)
from experiments.weather.metrics import Z80, point_scores, prob_scores
from experiments.weather.models import (
    Forecaster,
    gaussian_nll_loss,
    make_forecaster,
    mse_loss,
)
from rnn_jax._io import atomic_write

__all__ = [
    "Data",
    "ModelRun",
    "evaluate_all",
    "load_data",
    "predict_csv",
    "run_baselines",
    "summarize",
]

EXPERIMENT_NAME = "weather"


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class Data:
    """The series, its splits as windows, and what was fitted on the training rows."""

    series: Series
    bounds: tuple[int, int]
    mean: np.ndarray
    std: np.ndarray
    climatology: bl.Climatology
    train: Windows
    val: Windows
    test: Windows
    offset: np.ndarray  # (C,) training mean of the residual
    scale: np.ndarray  # (C,) training sd of the residual
    residual: str
    ridge: Any = None  # residual="ridge_ar": the ridge AR fitted on all training windows
    ridge_train: np.ndarray | None = None  # its cross-fitted forecasts of `train`

    @property
    def task(self) -> Task:
        return self.series.task

    def base(self, w: Windows) -> np.ndarray:
        """The reference forecast the network's output is added to: ``(B, C)``."""
        if self.residual == "persistence":
            return w.persistence
        if self.residual == "climatology":
            return self.climatology.windows(w)
        if self.residual == "ridge_ar":
            return self.ridge_train if w is self.train else bl.ridge_predict(self.ridge, w.xs)
        return np.zeros_like(w.y)

    def z(self, w: Windows) -> np.ndarray:
        """Standardised residual targets ``(B, C)``."""
        return ((w.y - self.base(w) - self.offset) / self.scale).astype(np.float32)

    @property
    def vocabs(self) -> tuple[()]:  # what common.start_training stores: nothing here
        return ()

    @property
    def num_train(self) -> int:
        return len(self.train)

    def describe(self) -> str:
        t = self.task
        return (
            f"{t.name}: {len(self.series)} rows, {len(self.train)} train / {len(self.val)} "
            f"validation / {len(self.test)} test windows of T_x = {t.T_x}, C = {t.C}"
        )


def load_data(config: WeatherConfig, vocabs: tuple[()] = ()) -> Data:
    """Splits, standardisation, climatology and residual scale (all from the training rows).

    ``vocabs``: none (the signature :func:`experiments.common.start_training` calls).
    """
    c = config.train
    series = load_series(c.task, config.report.data_dir)
    v, t = split_bounds(series)
    mean, std = series.X[:v].mean(axis=0), series.X[:v].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    train = make_windows(series, 0, v, mean, std, stride=c.train_stride)
    val = make_windows(series, v, t, mean, std)
    test = make_windows(series, t, len(series), mean, std)
    clim = bl.Climatology.fit(series, v)
    data = Data(series, (v, t), mean, std, clim, train, val, test, 0.0, 1.0, c.residual)
    if c.residual == "ridge_ar":
        data.ridge, data.ridge_train = _ridge_base(series, v, mean, std, val, train)
    resid = train.y - data.base(train)
    data.offset, data.scale = resid.mean(axis=0), resid.std(axis=0)
    return data


def _ridge_base(series, v, mean, std, val, train, folds: int = 5):
    """The ridge AR (alpha by validation) and its out-of-fold forecasts of ``train``.

    The training windows are cut into ``folds`` contiguous blocks; each block is forecast by
    a ridge fitted on the other blocks, so the network learns the ridge's errors as they
    are on unseen data, not its smaller in-sample errors.
    """
    from sklearn.linear_model import Ridge

    train_full = make_windows(series, 0, v, mean, std)
    model, alpha, _ = bl.ridge_fit(train_full, val)
    blocks = np.array_split(np.arange(len(train_full)), folds)
    oof = np.empty_like(train_full.y)
    flat = train_full.xs.reshape(len(train_full), -1).astype(np.float64)
    for block in blocks:
        rest = np.setdiff1d(np.arange(len(train_full)), block)
        fold = Ridge(alpha=alpha).fit(flat[rest], train_full.y[rest])
        oof[block] = fold.predict(flat[block]).reshape(len(block), -1)
    position = np.searchsorted(train_full.origins, train.origins)
    return model, oof[position]


def _scaler_dict(data: Data) -> dict[str, Any]:
    return {
        "task": data.task.name,
        "inputs": list(data.task.inputs),
        "mean": data.mean.tolist(),
        "std": data.std.tolist(),
        "climatology": data.climatology.coef.tolist(),
        "residual": data.residual,
        "offset": np.asarray(data.offset).tolist(),
        "scale": np.asarray(data.scale).tolist(),
        "ridge_coef": None if data.ridge is None else data.ridge.coef_.tolist(),
        "ridge_intercept": None if data.ridge is None else np.ravel(data.ridge.intercept_).tolist(),
    }


# ----------------------------------------------------------------------------- baselines
def run_baselines(
    data: Data, names=BASELINES, sarimax_rows: int | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Test forecasts of the baselines ``names``: ``{name: {"mean": (B, C)[, "sd": (B, C)]}}``."""
    task, test = data.task, data.test
    v, _ = data.bounds
    out: dict[str, dict[str, Any]] = {
        "persistence": {"mean": test.persistence},
        "climatology": {"mean": data.climatology.windows(test)},
    }
    if "ridge_ar" not in names and "sarimax" not in names:
        return out
    t0 = time.perf_counter()
    ridge, alpha, _ = bl.ridge_fit(data.train, data.val)  # the windows the RNN is trained on
    out["ridge_ar"] = {"mean": bl.ridge_predict(ridge, test.xs), "alpha": alpha}
    out["ridge_ar"]["seconds"] = time.perf_counter() - t0
    if "sarimax" not in names:
        return out
    t0 = time.perf_counter()
    y = data.series.y
    first = 0 if sarimax_rows is None else max(0, v - sarimax_rows)
    if task.name == "daily":  # an ARMA on the anomaly from the climatology
        anomaly = y - data.climatology.predict(np.arange(len(y)))
        res = bl.sarimax_fit(anomaly[first:v], "daily")
        mu, sd = bl.sarimax_rolling(res, anomaly, test.origins, task.C)
        mu = mu + data.climatology.windows(test)
        spec = f"ARMA{res.specification['order']} on the climatology anomaly"
    else:
        res = bl.sarimax_fit(y[first:v], "hourly")
        mu, sd = bl.sarimax_rolling(res, y, test.origins, task.C)
        spec = "SARIMAX(2,0,1)(0,1,1)_24"
    spec += f", parameters fitted on training rows {first}..{v - 1}"
    out["sarimax"] = {"mean": mu, "sd": sd, "spec": spec, "seconds": time.perf_counter() - t0}
    return out


def _save_baselines(path: Path, base: dict[str, dict[str, Any]]) -> None:
    arrays, meta = {}, {}
    for name, d in base.items():
        for k, val in d.items():
            if isinstance(val, np.ndarray):
                arrays[f"{name}.{k}"] = val
            else:
                meta[f"{name}.{k}"] = val
    np.savez(path, meta=json.dumps(meta), **arrays)


def _load_baselines(path: Path) -> dict[str, dict[str, Any]]:
    with np.load(path) as f:
        out: dict[str, dict[str, Any]] = {}
        for key in f.files:
            if key != "meta":
                name, k = key.split(".")
                out.setdefault(name, {})[k] = f[key]
        for key, val in json.loads(str(f["meta"])).items():
            name, k = key.split(".")
            out.setdefault(name, {})[k] = val
    return out


# ----------------------------------------------------------------------------- models
@functools.cache
def _compiled(name: str, model_config, D: int, C: int):
    forecaster = make_forecaster(name, model_config, D, C)
    return forecaster, jax.jit(forecaster.apply)


class ModelRun(common.ModelRun):
    """One model's training run in ``<workdir>/<name>``."""

    experiment = EXPERIMENT_NAME

    def __init__(self, config: WeatherConfig, name: str, workdir: Path, D: int, C: int):
        self.head = parse_model_name(name)[1]
        self.best = common.Best("rmse" if self.head == "mse" else "crps", "min")
        self.forecaster: Forecaster
        self.forecaster, self._apply = _compiled(name, config.model, D, C)
        super().__init__(config, name, workdir, self.forecaster)

    def make_keys(self) -> common.Keys:
        """This experiment's own derivation from the seed and the model's name (kept so that
        the commands of RESULTS.md reproduce its numbers): ``init`` and ``steps`` split from
        ``fold_in(key(seed), crc32(name))``, ``data`` = ``fold_in(key(seed), 1)``."""
        root = jax.random.key(self.config.train.seed)
        own = jax.random.fold_in(root, zlib.crc32(self.name.encode()) & 0x7FFFFFFF)
        k_init, k_steps = jax.random.split(own)
        return common.Keys(k_init, jax.random.fold_in(root, 1), k_steps, jax.random.fold_in(own, 3))

    def loss_fn(self, params, batch, *, key):
        xs, z = batch
        mu, log_var = self.forecaster.apply(params, xs)
        if log_var is None:
            return mse_loss(mu, z)
        return gaussian_nll_loss(mu, log_var, z)

    def predict_std(self, params, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Standardised ``(mu, sigma)`` for windows ``xs``, in fixed-size batches."""
        rows = self.config.report.eval_batch_size
        mus, sigmas = [], []
        for start in range(0, len(xs), rows):
            chunk = xs[start : start + rows]
            n = len(chunk)
            if n < rows:  # pad to one shape: one compile
                chunk = np.concatenate([chunk, np.zeros((rows - n, *chunk.shape[1:]), chunk.dtype)])
            mu, log_var = self._apply(params, jnp.asarray(chunk))
            mus.append(np.asarray(mu)[:n])
            if log_var is not None:
                sigmas.append(np.exp(0.5 * np.asarray(log_var))[:n])
        return np.concatenate(mus), (np.concatenate(sigmas) if sigmas else None)

    def forecast(self, params, data: Data, w: Windows):
        """Forecasts in °C: ``(mean (B, C), sd (B, C) or None)``."""
        mu, sigma = self.predict_std(params, w.xs)
        mean = data.base(w) + data.offset + data.scale * mu
        return mean, (None if sigma is None else data.scale * sigma)

    def scores(self, params, data: Data, w: Windows) -> dict[str, Any]:
        mean, sd = self.forecast(params, data, w)
        return point_scores(mean, w.y) if sd is None else prob_scores(mean, sd, w.y)

    def train(self, data: Data) -> dict[str, Any]:
        c = self.config.train
        xs, z = data.train.xs, data.z(data.train)
        n = len(xs)
        steps_per_epoch = common.check_steps_per_epoch(n, c.batch_size)

        def epoch_batches(epoch: int, start: int):
            order = np.asarray(jax.random.permutation(jax.random.fold_in(self.keys.data, epoch), n))
            for b in range(start, steps_per_epoch):
                idx = order[b * c.batch_size : (b + 1) * c.batch_size]
                yield jnp.asarray(xs[idx]), jnp.asarray(z[idx])

        def evaluate_fn(params):
            s = self.scores(params, data, data.val)
            return {k: v for k, v in s.items() if not k.endswith("_by_h")}

        return self.fit(self.loss_fn, epoch_batches, num_train=n, evaluate_fn=evaluate_fn)

    def best_params(self):
        """Parameters of the best checkpoint (by the validation score)."""
        params = super().best_params()
        if params is None:
            raise FileNotFoundError(
                f"{self.dir} has no checkpoint: train first with `python -m experiments.weather "
                f"train --workdir {self.workdir}`"
            )
        return params


# ----------------------------------------------------------------------------- commands
def train(config: WeatherConfig, data: Data, workdir: Path) -> None:
    """Fits the baselines (once per run directory), then trains every model (each resumes)."""
    atomic_write(workdir / "scaler.json", json.dumps(_scaler_dict(data), indent=2) + "\n")
    if common.is_primary() and not (workdir / "baselines.npz").exists():
        # read after training, which the other processes reach only with process 0
        t0 = time.perf_counter()
        _save_baselines(
            workdir / "baselines.npz",
            run_baselines(data, config.report.baselines, config.report.sarimax_rows),
        )
        print(f"baselines: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    D, C = data.train.xs.shape[2], data.task.C
    common.train_models(config, data, lambda name: ModelRun(config, name, workdir, D, C))


def _no_inputs(run: Invocation) -> None:
    if run.inputs:
        raise UsageError(f"`{run.command}` takes no positional inputs, got {run.inputs!r}")


def predict_command(run: Invocation) -> int:
    """``predict --workdir DIR --csv FILE``: the next forecast(s) of every trained model."""
    _no_inputs(run)
    if not run.options.get("csv"):
        raise UsageError("`predict` needs --csv FILE")
    print(predict_csv(run.workdir, run.options["csv"]))
    return 0


def fetch_command(run: Invocation) -> int:
    """Checks the bundled CSVs (sha256) and caches them (``--config.data_dir``)."""
    from experiments.weather.data import fetch

    _no_inputs(run)
    for name, path in fetch(run.config.report.data_dir).items():
        print(f"{name}: {path} (sha256 checked)")
    return 0


def summarize_command(run: Invocation) -> int:
    """``summarize DIR ...``: mean ± sd over the run directories' ``results.json``."""
    if not run.inputs:
        raise UsageError("`summarize` needs run directories")
    print(summarize(run.inputs))
    return 0


def evaluate_all(config: WeatherConfig, workdir: Path, data: Data) -> dict[str, Any]:
    """Test scores of the trained models and the baselines; writes results and the figure."""
    test = data.test
    results: dict[str, Any] = {
        "config": common.config_to_dict(config),
        "data": {
            "task": data.task.name,
            "train_windows": len(data.train),
            "val_windows": len(data.val),
            "test_windows": len(test),
            "test_from": str(data.series.dates[test.origins[0]]),
            "test_to": str(data.series.dates[test.origins[-1] + data.task.C - 1]),
        },
        "models": {},
        "baselines": {},
    }
    path = workdir / "baselines.npz"
    names = config.report.baselines
    base = _load_baselines(path) if path.exists() else {}
    if not all(n in base for n in names):
        base = run_baselines(data, names, config.report.sarimax_rows)
    forecasts: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for name in names:
        d = base[name]
        sd = d.get("sd")
        scores = (
            point_scores(d["mean"], test.y) if sd is None else prob_scores(d["mean"], sd, test.y)
        )
        extra = {k: v for k, v in d.items() if not isinstance(v, np.ndarray)}
        results["baselines"][name] = {**scores, **extra}
        forecasts[name] = (d["mean"], sd)
    D, C = data.train.xs.shape[2], data.task.C
    for name in config.models:
        run = ModelRun(config, name, workdir, D, C)
        params = run.best_params()
        info = run.train_info()
        mean, sd = run.forecast(params, data, test)
        scores = point_scores(mean, test.y) if sd is None else prob_scores(mean, sd, test.y)
        results["models"][name] = {**scores, "train": info}
        forecasts[name] = (mean, sd)
    common.write_results(  # prints a note instead where the run directory is read-only
        workdir,
        results,
        format_results(results),
        [("forecast.png", lambda path: plot_forecasts(data, forecasts, config, path))],
    )
    return results


def _fmt(x, digits=3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_results(results: dict[str, Any]) -> str:
    d = results["data"]
    lines = [
        f"Task {d['task']}: {d['test_windows']} test forecasts ({d['test_from']} .. "
        f"{d['test_to']}); scores in °C over all steps ahead.",
        "",
        "| forecaster | RMSE | MAE | CRPS | 80 % coverage | NLL | params | train time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(f"baseline: {n}", r) for n, r in results["baselines"].items()]
    rows += list(results["models"].items())
    for name, r in rows:
        t = r.get("train", {})
        secs = t.get("train_seconds")
        lines.append(
            f"| {name} | {r['rmse']:.3f} | {r['mae']:.3f} | {_fmt(r.get('crps'))} | "
            f"{_fmt(r.get('coverage80'))} | {_fmt(r.get('nll'))} | "
            f"{t.get('num_params', '-')} | {'-' if secs is None else f'{secs:.0f} s'} |"
        )
    C = len(rows[0][1]["rmse_by_h"])
    if C > 1:
        hs = [h for h in (1, 2, 6, 12, 18, 24) if h <= C]
        lines += [
            "",
            "RMSE (°C) by step ahead:",
            "",
            *common.table_head(["forecaster"] + [f"h = {h}" for h in hs]),
        ]
        for name, r in rows:
            by_h = r["rmse_by_h"]
            lines.append(f"| {name} | " + " | ".join(f"{by_h[h - 1]:.3f}" for h in hs) + " |")
    return "\n".join(lines)


def plot_forecasts(data: Data, forecasts, config: WeatherConfig, out: Path) -> None:
    """A test fortnight: the observations, each forecast, and the Gaussian 80 % intervals.

    Daily: each day's 1-day-ahead forecast. Hourly: the 24-hour forecasts issued at
    midnight of each day, joined.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test, task, dates = data.test, data.task, data.series.dates
    start = np.datetime64(config.report.plot_start) if config.report.plot_start else None
    first = int(np.searchsorted(dates[test.origins], start)) if start is not None else 0
    if task.name == "daily":
        sel = np.arange(first, min(first + 14, len(test)))
    else:
        midnight = (dates[test.origins].astype("datetime64[h]").astype(np.int64) % 24) == 0
        sel = np.nonzero(midnight)[0]
        sel = sel[sel >= first][:14]
    t = dates[(test.origins[sel][:, None] + np.arange(task.C)[None, :]).reshape(-1)]
    y = test.y[sel].reshape(-1)
    fig, (ax, ax_err) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(3, 2))
    ax.plot(t, y, "k.-", lw=1.5, ms=4, label="observed")
    ax_err.axhline(0.0, color="k", lw=1)
    styles = {"persistence": ":", "climatology": ":", "ridge_ar": "--", "sarimax": "--"}
    for name, (mean, sd) in forecasts.items():
        if name == "climatology" and task.name == "hourly":
            continue  # far off the scale of the others in autumn
        m = mean[sel].reshape(-1)
        line = ax.plot(t, m, styles.get(name, "-"), lw=1, label=name)[0]
        ax_err.plot(t, m - y, styles.get(name, "-"), lw=1, color=line.get_color())
        if sd is not None and name in config.models:
            s = sd[sel].reshape(-1)
            ax.fill_between(t, m - Z80 * s, m + Z80 * s, color=line.get_color(), alpha=0.2)
            ax_err.fill_between(t, m - y - Z80 * s, m - y + Z80 * s, color=line.get_color(), alpha=0.15)  # fmt: skip
    what = "tomorrow's maximum" if task.name == "daily" else "next 24 h, issued at midnight"
    ax.set(title=f"Seattle test fortnight ({what}); bands: 80 % intervals", ylabel="°C")
    ax_err.set(ylabel="forecast - observed (°C)")
    for a in (ax, ax_err):
        a.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.autofmt_xdate()
    common.save_figure(fig, out)


def predict_csv(workdir: Path, csv: str) -> str:
    """The next forecast(s) of every trained model from the last ``T_x`` rows of ``csv``."""
    import pandas as pd

    config = PIECES.read_config(workdir)
    scaler = json.loads((Path(workdir) / "scaler.json").read_text())
    task = TASKS[config.train.task]
    try:
        frame = pd.read_csv(csv)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {csv}: {err}") from None
    if task.name == "hourly" and "temp" not in frame.columns and "temp_f" in frame.columns:
        frame["temp"] = (frame["temp_f"] - 32.0) * 5.0 / 9.0
    series = series_from_frame(task, frame)
    if len(series) < task.rows_needed:
        raise ValueError(
            f"{csv} has {len(series)} rows; the {task.name} model needs the last {task.rows_needed}"
        )
    mean, std = np.array(scaler["mean"]), np.array(scaler["std"])
    n = len(series)
    xs = ((series.X[n - task.T_x :] - mean) / std).astype(np.float32)[None]  # (1, T_x, D)
    persistence = series.y[n - task.period + np.arange(task.C) % task.period][None]
    origin = n
    target_dates = series.dates[-1] + task.step * np.arange(1, task.C + 1)
    if config.train.residual == "persistence":
        base = persistence
    elif config.train.residual == "climatology":
        clim = bl.Climatology(
            dataclasses.replace(series, dates=np.concatenate([series.dates, target_dates])),
            np.array(scaler["climatology"]),
        )
        base = clim.predict(origin + np.arange(task.C))[None, :]
    elif config.train.residual == "ridge_ar":
        coef = np.array(scaler["ridge_coef"]).reshape(task.C, -1)
        base = xs.reshape(1, -1).astype(np.float64) @ coef.T + np.array(scaler["ridge_intercept"])
    else:
        base = np.zeros((1, task.C))
    offset, scale = np.array(scaler["offset"]), np.array(scaler["scale"])
    lines = []
    for name in config.models:
        run = ModelRun(config, name, workdir, len(task.inputs), task.C)
        mu, sigma = run.predict_std(run.best_params(), xs)
        y = base + offset + scale * mu
        for h in range(task.C):
            when = str(target_dates[h])[: 10 if task.name == "daily" else 16]
            text = f"{name}\t{when}\t{y[0, h]:.2f}"
            if sigma is not None:
                s = scale[h] * sigma[0, h]
                text += f"\t[{y[0, h] - Z80 * s:.2f}, {y[0, h] + Z80 * s:.2f}] (80 %)"
            lines.append(text)
    return "\n".join(lines)


def summarize(workdirs: list[str]) -> str:
    """Mean ± sd over the runs (seeds) in ``workdirs`` of every model's and baseline's scores."""
    runs = [json.loads((Path(w) / "results.json").read_text()) for w in workdirs]
    names = [f"baseline: {n}" for n in runs[0]["baselines"]] + list(runs[0]["models"])

    def get(r, name):
        if name.startswith("baseline: "):
            return r["baselines"][name[len("baseline: ") :]]
        return r["models"][name]

    def ms(values, digits=3):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        if len(values) == 1 or np.std(values) < 1e-9:  # a baseline: the same in every run
            return f"{values[0]:.{digits}f}"
        return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"

    lines = [
        f"{len(runs)} runs: " + ", ".join(str(r["config"]["train"]["seed"]) for r in runs),
        "",
        "| forecaster | RMSE | MAE | CRPS | 80 % coverage | train time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        rs = [get(r, name) for r in runs]
        times = [r.get("train", {}).get("train_seconds") for r in rs]
        lines.append(
            f"| {name} | {ms([r['rmse'] for r in rs])} | {ms([r['mae'] for r in rs])} | "
            f"{ms([r.get('crps') for r in rs])} | {ms([r.get('coverage80') for r in rs])} | "
            f"{ms(times, 0) if any(times) else '-'} |"
        )
    C = len(get(runs[0], names[0])["rmse_by_h"])
    if C > 1:
        hs = [h for h in (1, 6, 12, 24) if h <= C]
        lines += ["", *common.table_head(["RMSE by step ahead"] + [f"h = {h}" for h in hs])]
        for name in names:
            rs = [get(r, name) for r in runs]
            lines.append(
                f"| {name} | "
                + " | ".join(ms([r["rmse_by_h"][h - 1] for r in rs]) for h in hs)
                + " |"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the commands
PIECES = common.Pieces(
    EXPERIMENT_NAME,
    WeatherConfig,
    load_data,
    train,
    lambda config, data, workdir: evaluate_all(config, workdir, data),  # writes the results
    format_results,
    vocab_files=(),
    writes_results=True,
)
#: ``train``: fits the baselines (once per run directory), trains every model, evaluates.
train_command = PIECES.train_command
#: ``eval``: evaluates the run in ``workdir`` with its stored configuration (``report``
#: overrides only).
eval_command = PIECES.eval_command


EXPERIMENT = Experiment(
    EXPERIMENT_NAME,
    default_config,
    {
        "fetch": fetch_command,
        "train": train_command,
        "eval": eval_command,
        "predict": predict_command,
        "summarize": summarize_command,
    },
    options=(
        Option(
            "task",
            "the forecasting task",
            choices=("daily", "hourly"),
            default="daily",
            preset=True,
        ),  # fmt: skip
        Option("csv", "predict: a CSV with a date column and the input columns"),
    ),
    workdir_optional=frozenset({"fetch", "summarize"}),
    data_parallel=True,
)
