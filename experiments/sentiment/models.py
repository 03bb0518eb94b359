"""The sentiment models: recurrent networks of :mod:`rnn_jax` with a many-to-one head.

Every model maps token ids ``(B, T)`` and lengths ``(B,)`` with :func:`rnn_jax.rnn_classify`
to two logits ``(B, 2)`` (negative, positive), or, for a ``_score`` model, to one number
``(B, 1)``: the rating divided by 4 (so in about ``[-1, 1]``). The ids go through the column lookup
``W_ax[:, id]`` (never one-hot vectors), the recurrent layers run with masking, the top
layer's outputs are summarised by ``pool`` (the last state, or the mean or max over the
valid steps) and the head ``W_y a_pool + b_y`` gives the logits. During training, words are
read as ``<UNK>`` with probability ``input_dropout``, the recurrent state and the pooled
state are dropped out as configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from jaxtyping import Array, Float

from experiments.sentiment.config import MODEL_SPECS, ModelConfig
from rnn_jax import init_rnn, rnn_classify

__all__ = ["SCORE_SCALE", "Classifier", "make_classifier"]

NUM_CLASSES = 2
SCORE_SCALE = 4.0  # a _score model's output times this is the rating in [-4, 4]


class Classifier(NamedTuple):
    """``init(key) -> params`` and ``apply(params, ids, lengths, *, key, train) -> outputs``.

    ``outputs``: ``(B, 2)`` logits, or ``(B, 1)`` scaled ratings for a ``_score`` model.
    """

    name: str
    init: Callable[[jax.Array], Any]
    apply: Callable[..., Float[Array, "B _"]]


def make_classifier(name: str, config: ModelConfig, vocab_size: int, unk_id: int) -> Classifier:
    """The model called ``name`` (a key of :data:`MODEL_SPECS`, e.g. ``rnnbi_mean``)."""
    spec = MODEL_SPECS[name]
    cell, num_layers, bidirectional, pool = spec[:4]
    outputs = 1 if spec.target == "score" else NUM_CLASSES
    cell_kw = {} if cell == "rnn" else {"cell": cell}
    rates = {
        "input_dropout": config.input_dropout,
        "recurrent_dropout": config.recurrent_dropout,
        "output_dropout": config.output_dropout,
        "dropout": config.dropout if num_layers > 1 else 0.0,
    }

    def init(key):
        return init_rnn(
            key,
            vocab_size,
            config.hidden_size,
            outputs,
            num_layers=num_layers,
            bidirectional=bidirectional,
            token_inputs=True,
            **cell_kw,
        )

    def apply(params, ids, lengths, *, key=None, train=False):
        if not train or not any(rates.values()):
            return rnn_classify(params, ids, lengths, pool=pool)
        return rnn_classify(params, ids, lengths, pool=pool, unk_id=unk_id, key=key, **rates)

    return Classifier(name, init, apply)
