"""The taggers compared: RNNs from :mod:`rnn_jax` and the formulation's fully connected network.

Every model maps token ids ``(B, T)`` and lengths ``(B,)`` to one logit per token
``(B, T)`` (``ŷ<t> = σ(logit<t>)`` is the probability that word ``t`` is part of a name).

**The fully connected network** of the formulation reads the whole sentence as one vector:
the ``T × V`` one-hot matrix ``X`` (row ``t`` is ``x<t>``, zero rows for padding), flattened,
and outputs ``T`` logits::

    h = tanh(W_1 vec(X) + b_1),        W_1: (H, T·V)
    ŷ = W_2 h + b_2,                   W_2: (T, H)

It has a separate block of ``W_1`` for every position ``t``, so what it learns about a word at
position 3 says nothing about the same word at position 4, and the sentence length is fixed
at ``T`` (longer sentences are cut; their remaining words get no prediction, i.e. label 0).
``W_1 vec(X) = Σ_t W_1[:, t·V + x<t>]`` because each row of ``X`` is one-hot, so we store
``W_1`` as ``(T, V, H)`` and compute that sum with a gather: the ``T × V`` one-hot matrix is
never built. The parameter count is ``T·V·H + H + T·H + T``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from experiments.names.config import MODEL_SPECS, ModelConfig
from rnn_jax import init_rnn, rnn_apply

__all__ = ["FCParams", "Tagger", "fc_apply", "init_fc", "make_tagger"]


class FCParams(NamedTuple):
    """The fully connected tagger over a fixed window of ``T`` tokens.

    Attributes:
        W_1: ``(T, V, H)``; ``W_1[t, v]`` is the column of the formulation's ``(H, T·V)``
            matrix that multiplies the one-hot entry ``X[t, v]``.
        b_1: ``(H,)``.
        W_2: ``(T, H)``: one output unit per position.
        b_2: ``(T,)``.
    """

    W_1: Float[Array, "T V H"]
    b_1: Float[Array, " H"]
    W_2: Float[Array, "T H"]
    b_2: Float[Array, " T"]


def init_fc(key: jax.Array, window: int, vocab_size: int, hidden_size: int) -> FCParams:
    """Glorot-style initialisation (fan-in ``T`` active inputs for ``W_1``)."""
    k_1, k_2 = jax.random.split(key)
    W_1 = jax.random.normal(k_1, (window, vocab_size, hidden_size)) / jnp.sqrt(window)
    W_2 = jax.random.normal(k_2, (window, hidden_size)) / jnp.sqrt(hidden_size)
    return FCParams(W_1, jnp.zeros(hidden_size), W_2, jnp.zeros(window))


def fc_apply(
    params: FCParams, ids: Int[Array, "B T_b"], lengths: Int[Array, " B"]
) -> Float[Array, "B T_b"]:
    """Logits for a batch of any length ``T_b``: the first ``T`` tokens fill the window.

    Positions ``t >= T`` (beyond the window) get the logit ``-30.0`` (label 0), without
    gradient; padded positions contribute a zero row of ``X``.
    """
    T, V, H = params.W_1.shape
    B, T_b = ids.shape
    if T_b >= T:
        ids_w = ids[:, :T]
    else:
        ids_w = jnp.concatenate([ids, jnp.zeros((B, T - T_b), ids.dtype)], axis=1)
    valid = jnp.arange(T)[None, :] < lengths[:, None]  # (B, T): rows of X that are one-hot
    rows = params.W_1[jnp.arange(T)[None, :], ids_w]  # (B, T, H) = W_1[:, t·V + x<t>]
    z_1 = jnp.sum(jnp.where(valid[:, :, None], rows, 0.0), axis=1) + params.b_1[None, :]
    h = jnp.tanh(z_1)  # (B, H)
    y = h @ params.W_2.T + params.b_2[None, :]  # (B, T)
    if T_b > T:
        return jnp.concatenate([y, jnp.full((B, T_b - T), -30.0, y.dtype)], axis=1)
    return y[:, :T_b]


class Tagger(NamedTuple):
    """A model: ``init(key) -> params`` and ``apply(params, ids, lengths, *, key) -> logits``.

    ``window`` is the fixed length of the fully connected network (``None`` for RNNs): the
    training loss counts only tokens inside it.
    """

    name: str
    init: Callable[[jax.Array], Any]
    apply: Callable[..., Float[Array, "B T"]]
    window: int | None


def make_tagger(name: str, config: ModelConfig, vocab_size: int) -> Tagger:
    """The model called ``name`` (``rnn``, ``birnn``, ``rnn2``, ``birnn2``, ``fc``)."""
    kind, num_layers, bidirectional = MODEL_SPECS[name]
    if kind == "fc":

        def init(key):
            return init_fc(key, config.fc_window, vocab_size, config.fc_hidden)

        def apply(params, ids, lengths, *, key=None, train=False):
            return fc_apply(params, ids, lengths)

        return Tagger(name, init, apply, config.fc_window)

    dropout = config.dropout if num_layers > 1 else 0.0

    def init(key):
        return init_rnn(
            key,
            vocab_size,
            config.hidden_size,
            1,
            num_layers=num_layers,
            bidirectional=bidirectional,
            token_inputs=True,
        )

    def apply(params, ids, lengths, *, key=None, train=False):
        rate = dropout if train else 0.0
        logits = rnn_apply(params, ids, lengths, dropout=rate, key=key if rate > 0 else None)
        return logits[..., 0]

    return Tagger(name, init, apply, None)
