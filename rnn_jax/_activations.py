"""The one table of activation functions: name -> ``g`` and its derivative.

A leaf module (it imports nothing from rnn_jax). The hidden activation ``g`` of the
recurrence is stored with its derivative written *as a function of the output*
``a = g(pre)``, so the hand-written backward pass (:mod:`rnn_jax.bptt`) never needs the
pre-activation::

    tanh' = 1 - a^2            relu' = [a > 0]

The cell, the backward pass, the parameter containers and the interop converters all
read this table; a new activation is added here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

__all__ = [
    "ACTIVATIONS",
    "OUTPUT_ACTIVATIONS",
    "Activation",
    "ActivationFn",
    "hidden_activation",
    "output_activation_fn",
]

ActivationFn = Callable[[Array], Array]
Activation = str | ActivationFn


class _Hidden(NamedTuple):
    """``g`` and ``g'`` as a function of ``g``'s output."""

    g: ActivationFn
    g_prime_of_output: ActivationFn


ACTIVATIONS: dict[str, _Hidden] = {
    "tanh": _Hidden(jnp.tanh, lambda a: 1.0 - a * a),
    "relu": _Hidden(jax.nn.relu, lambda a: (a > 0).astype(a.dtype)),
}


def _identity(z: Array) -> Array:
    return z


OUTPUT_ACTIVATIONS: dict[str | None, ActivationFn] = {
    None: _identity,
    "identity": _identity,
    "linear": _identity,
    "sigmoid": jax.nn.sigmoid,
    "softmax": lambda z: jax.nn.softmax(z, axis=-1),
    "tanh": jnp.tanh,
}


def hidden_activation(name: Activation) -> ActivationFn:
    """``g`` by name (``"tanh"``, ``"relu"``) or a callable, returned as is.

    Example:
        >>> import jax.numpy as jnp
        >>> hidden_activation("relu")(jnp.array([-1.0, 2.0]))
        Array([0., 2.], dtype=float32)
    """
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(
            f"`activation` must be one of {sorted(ACTIVATIONS)} or a callable, got {name!r}."
        )
    return ACTIVATIONS[name].g


def output_activation_fn(name: Activation | None) -> ActivationFn:
    """``g_y`` by name: ``None``/``"identity"`` (logits), ``"sigmoid"``, ``"softmax"``, ``"tanh"``."""
    if callable(name):
        return name
    if name not in OUTPUT_ACTIVATIONS:
        names = sorted(k for k in OUTPUT_ACTIVATIONS if k is not None)
        raise ValueError(
            f"`output_activation` must be None, one of {names} or a callable, got {name!r}."
        )
    return OUTPUT_ACTIVATIONS[name]
