"""The forecasters: an :mod:`rnn_jax` network read many-to-one, with an MSE or a Gaussian head.

The network reads the standardised window ``x<1> .. x<T_x>`` (``D`` inputs a step) and
:func:`rnn_jax.rnn_classify` maps its final state to ``C`` outputs (MSE head: the ``C``
standardised residual targets ``z``) or ``2C`` outputs (Gaussian head, DeepAR's idea:
``μ`` and ``log σ²`` per step ahead, trained by the Gaussian negative log-likelihood)::

    MSE:    L = mean_c (ŷ_c - z_c)²
    Gauss:  L = mean_c ½ [ log σ²_c + (z_c - μ_c)² / σ²_c ]   (+ ½ log 2π, dropped)

A forecast in °C is ``base + offset + scale · ŷ`` (``σ`` in °C: ``scale · σ``), where
``base`` is the residual's reference forecast (see :class:`~experiments.weather.config.TrainConfig`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from experiments.weather.config import ModelConfig, parse_model_name
from rnn_jax import init_rnn, rnn_classify
from rnn_jax.cells import carry_zeros, init_gated_layer, layer_unroll
from rnn_jax.params import HeadParams, init_head

__all__ = ["LOG_VAR_RANGE", "Forecaster", "gaussian_nll_loss", "make_forecaster", "mse_loss"]

#: ``log σ²`` (standardised units) is clipped to this range (σ between 0.7 % and 150 x).
LOG_VAR_RANGE = (-10.0, 8.0)


class Forecaster(NamedTuple):
    """``init(key) -> params``; ``apply(params, xs) -> (mu, log_var | None)``, each ``(B, C)``."""

    name: str
    head: str
    init: Callable[[jax.Array], Any]
    apply: Callable[..., tuple[jax.Array, jax.Array | None]]


def _supports(fn, argument: str) -> bool:
    return argument in inspect.signature(fn).parameters


def make_forecaster(name: str, config: ModelConfig, D: int, C: int) -> Forecaster:
    """The model ``name`` (``rnn``, ``gru_gauss``, ...) for ``D`` inputs and ``C`` outputs."""
    cell, head = parse_model_name(name)
    outputs = C if head == "mse" else 2 * C
    if cell != "rnn":  # the results in RESULTS.md were made with this path
        return _gated_forecaster(name, cell, head, config, D, C)
    init_kwargs: dict[str, Any] = {"num_layers": config.num_layers}
    apply_kwargs: dict[str, Any] = {}
    if config.pool != "last":
        if not _supports(rnn_classify, "pool"):
            raise ValueError(f"pool={config.pool!r} needs rnn_classify(..., pool=)")
        apply_kwargs["pool"] = config.pool

    def init(key):
        return init_rnn(key, D, config.hidden_size, outputs, **init_kwargs)

    def apply(params, xs):
        y_hat = rnn_classify(params, xs, **apply_kwargs)  # (B, C) or (B, 2C)
        if head == "mse":
            return y_hat, None
        log_var = jnp.clip(y_hat[:, C:], *LOG_VAR_RANGE)
        return y_hat[:, :C], log_var

    return Forecaster(name, head, init, apply)


class GatedParams(NamedTuple):
    """A one-layer GRU/LSTM (:mod:`rnn_jax.cells`) and the output head ``W_y (C, H)``, ``b_y``."""

    layer: Any
    head: HeadParams


def _split_head(head: str, y_hat: jax.Array, C: int):
    if head == "mse":
        return y_hat, None
    return y_hat[:, :C], jnp.clip(y_hat[:, C:], *LOG_VAR_RANGE)


def _gated_forecaster(name: str, cell: str, head: str, config: ModelConfig, D: int, C: int):
    """GRU/LSTM through :mod:`rnn_jax.cells` (written before ``init_rnn(..., cell=)`` landed).

    ``ŷ = W_y h<T_x> + b_y`` from the final hidden state (one layer, pool ``last``, Keras
    initialisation of the layer).
    """
    if config.num_layers != 1 or config.pool != "last":
        raise ValueError(f"model {name!r} supports num_layers=1 and pool=last only, for now")
    outputs = C if head == "mse" else 2 * C

    def init(key):
        k_layer, k_head = jax.random.split(key)
        layer = init_gated_layer(cell, D, config.hidden_size, key=k_layer, scheme="keras")
        return GatedParams(layer, init_head(config.hidden_size, outputs, key=k_head))

    def apply(params, xs):
        B = xs.shape[0]
        carry0 = carry_zeros(cell, B, config.hidden_size, xs.dtype)
        _, carry = layer_unroll(cell, params.layer, jnp.swapaxes(xs, 0, 1), carry0, None)
        h_last = carry[0] if cell == "lstm" else carry  # (B, H)
        y_hat = h_last @ params.head.W_y.T + params.head.b_y[None, :]
        return _split_head(head, y_hat, C)

    return Forecaster(name, head, init, apply)


def mse_loss(mu: jax.Array, z: jax.Array) -> jax.Array:
    """``mean (mu - z)²``."""
    return jnp.mean((mu - z) ** 2)


def gaussian_nll_loss(mu: jax.Array, log_var: jax.Array, z: jax.Array) -> jax.Array:
    """``mean ½ [log σ² + (z - μ)² / σ²]`` (the constant ``½ log 2π`` left out)."""
    return jnp.mean(0.5 * (log_var + (z - mu) ** 2 * jnp.exp(-log_var)))
