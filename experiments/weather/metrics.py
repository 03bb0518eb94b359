"""Point and probabilistic forecast scores, in the units of the data (°C).

For a Gaussian forecast ``N(μ, σ²)`` and an observation ``y``, with ``z = (y - μ) / σ``:

- CRPS (Gneiting & Raftery 2007, closed form)::

      CRPS = σ [ z (2 Φ(z) - 1) + 2 φ(z) - 1/√π ]

  which equals ``∫ (F(x) - 1{x ≥ y})² dx``; it has the units of ``y`` and reduces to the
  absolute error as ``σ → 0``;
- negative log-likelihood ``½ log(2π σ²) + z²/2``;
- the central 80 % interval ``μ ± 1.2816 σ``; coverage is the fraction of observations in it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

__all__ = ["Z80", "coverage", "crps_gaussian", "gaussian_nll", "point_scores", "prob_scores"]

#: ``Φ⁻¹(0.9)``: the half-width of the central 80 % interval in standard deviations.
Z80 = float(norm.ppf(0.9))


def crps_gaussian(mu: np.ndarray, sigma: np.ndarray, y: np.ndarray) -> np.ndarray:
    """CRPS of ``N(mu, sigma²)`` at ``y``, elementwise (closed form; see the module docstring).

    Example:
        >>> round(float(crps_gaussian(0.0, 1.0, 0.0)), 4)   # (√2 - 1)/√π
        0.2337
    """
    mu, sigma, y = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (mu, sigma, y)))
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))


def gaussian_nll(mu: np.ndarray, sigma: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-log N(y; mu, sigma²)`` elementwise (nats)."""
    z = (np.asarray(y, np.float64) - mu) / sigma
    return 0.5 * np.log(2 * np.pi * np.asarray(sigma, np.float64) ** 2) + 0.5 * z**2


def coverage(mu, sigma, y, z: float = Z80) -> float:
    """Fraction of ``y`` inside ``mu ± z·sigma`` (80 % central interval by default)."""
    return float(np.mean(np.abs(np.asarray(y) - mu) <= z * np.asarray(sigma)))


def point_scores(pred: np.ndarray, y: np.ndarray) -> dict:
    """RMSE and MAE overall and per horizon (``pred``, ``y``: ``(B, C)``)."""
    err = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "rmse_by_h": np.sqrt(np.mean(err**2, axis=0)).tolist(),
        "mae_by_h": np.mean(np.abs(err), axis=0).tolist(),
    }


def prob_scores(mu: np.ndarray, sigma: np.ndarray, y: np.ndarray) -> dict:
    """Point scores of ``mu`` plus CRPS, NLL and 80 % interval coverage."""
    return {
        **point_scores(mu, y),
        "crps": float(np.mean(crps_gaussian(mu, sigma, y))),
        "nll": float(np.mean(gaussian_nll(mu, sigma, y))),
        "coverage80": coverage(mu, sigma, y),
        "crps_by_h": np.mean(crps_gaussian(mu, sigma, y), axis=0).tolist(),
        "coverage80_by_h": np.mean(np.abs(y - mu) <= Z80 * sigma, axis=0).tolist(),
    }
