"""The baselines a forecaster tries first, all fitted on the training rows only.

- **persistence**: the value one ``period`` earlier (yesterday's maximum; the same hour
  yesterday), read from each window (:attr:`~experiments.weather.data.Windows.persistence`);
- **climatology**: daily, a smooth day-of-year curve (least squares on 3 harmonics of the
  year); hourly, the hour-of-day means (the hourly training part covers January to
  mid-September only, so no day-of-year curve can be fitted for the autumn test part);
- **ridge AR**: ridge regression of the ``C`` targets on the same standardised window the
  RNN reads (``T_x × D`` inputs), ``alpha`` chosen by validation RMSE;
- **SARIMAX** (statsmodels): daily, an ARMA on the anomaly from the climatology (order by
  AIC on the training part); hourly, ``SARIMAX(p,0,q)(0,1,1)_24``. Parameters are fitted on
  the training part once; the model is then run over the whole series with those parameters
  (``results.apply``) and every forecast origin's ``C``-step forecast and its variance are
  propagated from the Kalman filter's state at that origin: a rolling-origin forecast
  without refitting, identical to ``results.apply(y[:i]).get_forecast(C)`` at each origin
  ``i`` (tested).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from experiments.weather.data import Series, Windows

__all__ = [
    "Climatology",
    "ridge_fit",
    "ridge_predict",
    "sarimax_fit",
    "sarimax_rolling",
]

HARMONICS = 3
ALPHAS = tuple(float(a) for a in 10.0 ** np.arange(-2, 4.5, 0.5))


def _harmonics(series: Series, rows: np.ndarray) -> np.ndarray:
    dates = series.dates[rows]
    days = (dates - dates.astype("datetime64[Y]")).astype("timedelta64[h]").astype(float) / 24.0
    w = 2 * np.pi * days / 365.25
    cols = [np.ones_like(w)]
    for k in range(1, HARMONICS + 1):
        cols += [np.sin(k * w), np.cos(k * w)]
    return np.stack(cols, axis=1)


@dataclasses.dataclass(frozen=True)
class Climatology:
    """The seasonal mean of the target (see the module docstring): ``predict(rows)``."""

    series: Series
    coef: np.ndarray  # daily: harmonic coefficients; hourly: 24 hour-of-day means

    @classmethod
    def fit(cls, series: Series, train_hi: int) -> Climatology:
        rows = np.arange(train_hi)
        y = series.y[rows]
        if series.task.name == "daily":
            coef, *_ = np.linalg.lstsq(_harmonics(series, rows), y, rcond=None)
        else:
            hours = series.dates[rows].astype("datetime64[h]").astype(np.int64) % 24
            coef = np.array([y[hours == h].mean() for h in range(24)])
        return cls(series, coef)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Climatology at ``rows`` (any shape)."""
        rows = np.asarray(rows)
        flat = rows.reshape(-1)
        if self.series.task.name == "daily":
            out = _harmonics(self.series, flat) @ self.coef
        else:
            out = self.coef[self.series.dates[flat].astype("datetime64[h]").astype(np.int64) % 24]
        return out.reshape(rows.shape)

    def windows(self, w: Windows) -> np.ndarray:
        """Climatology at every target of ``w``: ``(B, C)``."""
        C = w.y.shape[1]
        return self.predict(w.origins[:, None] + np.arange(C)[None, :])


def ridge_fit(train: Windows, val: Windows, alphas=ALPHAS):
    """Ridge regression of the targets on the flattened window; ``alpha`` by validation RMSE.

    Returns ``(model, alpha, val_rmse_by_alpha)``; :func:`ridge_predict` applies the model.
    """
    from sklearn.linear_model import Ridge

    scores = {}
    for alpha in alphas:
        model = Ridge(alpha=alpha).fit(_flat(train.xs), train.y)
        err = ridge_predict(model, val.xs) - val.y
        scores[float(alpha)] = float(np.sqrt(np.mean(err**2)))
    best = min(scores, key=scores.get)
    return Ridge(alpha=best).fit(_flat(train.xs), train.y), best, scores


def _flat(xs: np.ndarray) -> np.ndarray:
    return xs.reshape(len(xs), -1).astype(np.float64)


def ridge_predict(model, xs: np.ndarray) -> np.ndarray:
    """``(B, C)`` forecasts from windows ``xs (B, T_x, D)`` (scikit-learn drops ``C = 1``)."""
    return model.predict(_flat(xs)).reshape(len(xs), -1)


def sarimax_fit(endog_train: np.ndarray, task: str):
    """Fits the task's SARIMAX on the training part; returns the statsmodels results.

    daily: ``ARMA(p, q)`` (on the climatology anomaly) with ``(p, q)`` by AIC among
    (1,0), (2,0), (1,1), (2,1); hourly: ``SARIMAX(2,0,1)(0,1,1)_24``.
    """
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "daily":
            fits = [
                SARIMAX(endog_train, order=(p, 0, q), trend="c").fit(disp=False)
                for p, q in ((1, 0), (2, 0), (1, 1), (2, 1))
            ]
            return min(fits, key=lambda r: r.aic)
        model = SARIMAX(endog_train, order=(2, 0, 1), seasonal_order=(0, 1, 1, 24))
        return model.fit(disp=False, maxiter=200)


def sarimax_rolling(results, endog: np.ndarray, origins: np.ndarray, C: int):
    """``C``-step forecasts (mean, sd) from every origin, with the fitted parameters.

    ``origins[k] = i`` means: data ``endog[:i]`` known, forecast ``endog[i .. i + C - 1]``.
    The model is filtered once over ``endog`` (``results.apply``); from the filtered state
    ``a_{i-1|i-1}`` and its covariance ``P``, ``a ← T a + c``, ``P ← T P Tᵀ + R Q Rᵀ``,
    ``ŷ = Z a + d``, ``var = Z P Zᵀ + H`` for each step ahead.

    Returns ``(mean (B, C), sd (B, C))``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = results.apply(endog)
    fr = full.filter_results
    T = fr.transition[:, :, 0]
    Z = fr.design[0, :, 0]
    c = fr.state_intercept[:, 0]
    d = fr.obs_intercept[0, 0]
    RQR = fr.selection[:, :, 0] @ fr.state_cov[:, :, 0] @ fr.selection[:, :, 0].T
    H = fr.obs_cov[0, 0, 0]
    a = fr.filtered_state[:, origins - 1].T  # (B, k)
    P = np.moveaxis(fr.filtered_state_cov[:, :, origins - 1], 2, 0)  # (B, k, k)
    mean = np.empty((len(origins), C))
    var = np.empty((len(origins), C))
    for h in range(C):
        a = a @ T.T + c
        P = T @ P @ T.T + RQR
        mean[:, h] = a @ Z + d
        var[:, h] = np.einsum("i,bij,j->b", Z, P, Z) + H
    return mean, np.sqrt(np.maximum(var, 1e-12))
