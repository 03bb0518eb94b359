"""The gene taggers: bidirectional RNNs over bases, and their losses over long windows.

A model reads base ids ``(B, T)`` (``token_inputs=True``: ``W_ax x<t>`` is the column lookup
of the base's id) and emits two logits per base (non-coding, coding).

Two training losses of the same value and the same gradient (up to float rounding):

- ``"bptt"``: :func:`rnn_jax.rnn_apply` over the whole window, then the mean cross-entropy:
  the library's default backward pass, which keeps the states of every step (``O(T)``).
- ``"remat"``: :func:`rnn_jax.long.rnn_loss_remat`, ``O(sqrt(T))`` memory, for the
  unidirectional models and the one-layer bidirectional ones alike (for the latter three
  chunked scans under ``jax.checkpoint``: the forward direction keeps only its state at
  every chunk start, the backward direction likewise, and the loss scan recomputes one
  chunk of both directions from those states).

Example:
    >>> import jax, jax.numpy as jnp
    >>> model = make_model("rnnbi", hidden_size=4)
    >>> params = model.init(jax.random.key(0))
    >>> ids = jax.random.randint(jax.random.key(1), (2, 50), 0, 5)
    >>> labels = (ids > 1).astype(jnp.int32)
    >>> full = sequence_loss(params, ids, labels, mode="bptt")
    >>> remat = sequence_loss(params, ids, labels, mode="remat", chunk_size=7)
    >>> bool(jnp.allclose(full, remat, atol=1e-5))
    True
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import init_rnn, rnn_apply
from rnn_jax.long import rnn_loss_remat
from rnn_jax.params import CELLS, RNNParams

__all__ = [
    "CELLS",
    "MODES",
    "MODEL_NAMES",
    "GeneModel",
    "coding_probability",
    "make_model",
    "parse_model_name",
    "sequence_loss",
]

MODES = ("bptt", "remat")
#: ``{cell}bi``: bidirectional, one layer; ``{cell}``: unidirectional (reads left to right
#: only); ``{cell}bi_orf``: bidirectional, reading ``base + 5 * in_orf`` (the ORF finder's
#: call of the base as part of the token).
MODEL_NAMES = tuple(f"{c}{d}" for c in CELLS for d in ("bi", "", "bi_orf"))
BASE_VOCAB = 5  # A C G T other
NUM_CLASSES = 2


def parse_model_name(name: str) -> tuple[str, bool, bool]:
    """``(cell, bidirectional, orf_inputs)`` of a model name.

    Example:
        >>> parse_model_name("lstmbi"), parse_model_name("gru"), parse_model_name("rnnbi_orf")
        (('lstm', True, False), ('gru', False, False), ('rnn', True, True))
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"`models` must name models among {MODEL_NAMES}, got {name!r}")
    stem, orf = (name[:-4], True) if name.endswith("_orf") else (name, False)
    bidirectional = stem.endswith("bi")
    return (stem[:-2] if bidirectional else stem), bidirectional, orf


class GeneModel(NamedTuple):
    """``init(key) -> RNNParams`` of one named model, and its input tokens."""

    name: str
    cell: str
    bidirectional: bool
    orf_inputs: bool
    hidden_size: int

    @property
    def vocab_size(self) -> int:
        return 2 * BASE_VOCAB if self.orf_inputs else BASE_VOCAB

    def tokens(self, ids: np.ndarray, orf: np.ndarray | None) -> np.ndarray:
        """The model's input tokens: the base ids, with ``orf_inputs`` ``+ 5 * orf``."""
        if not self.orf_inputs:
            return np.asarray(ids, np.int32)
        if orf is None or np.shape(orf) != np.shape(ids):
            raise ValueError(
                f"`orf` must be the ORF finder's 0/1 call of each base, shape {np.shape(ids)}, "
                f"got {None if orf is None else np.shape(orf)}"
            )
        return (np.asarray(ids) + BASE_VOCAB * np.asarray(orf)).astype(np.int32)

    def init(self, key: jax.Array) -> RNNParams:
        return init_rnn(
            key,
            self.vocab_size,
            self.hidden_size,
            NUM_CLASSES,
            cell=self.cell,
            bidirectional=self.bidirectional,
            token_inputs=True,
        )


def make_model(name: str, hidden_size: int) -> GeneModel:
    """The model called ``name`` (see :data:`MODEL_NAMES`) with ``hidden_size`` per direction."""
    cell, bidirectional, orf = parse_model_name(name)
    if hidden_size < 1:
        raise ValueError(f"`hidden_size` must be a positive int, got {hidden_size!r}")
    return GeneModel(name, cell, bidirectional, orf, hidden_size)


def sequence_loss(
    params: RNNParams,
    ids: jax.Array,
    labels: jax.Array,
    *,
    mode: str = "bptt",
    chunk_size: int | None = None,
) -> jax.Array:
    """Mean per-base cross-entropy of ``params`` on windows ``ids (B, T)``.

    ``mode="bptt"``: the full backward pass of :func:`rnn_jax.rnn_apply`; ``"remat"``:
    chunked recomputation in ``O(sqrt(T))`` memory (:func:`rnn_jax.long.rnn_loss_remat`).
    """
    if mode == "bptt":
        logits = rnn_apply(params, ids)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    if mode == "remat":
        return rnn_loss_remat(params, ids, labels, chunk_size=chunk_size)
    raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")


@jax.jit
def coding_probability(params: RNNParams, ids: jax.Array) -> jax.Array:
    """``P(coding)`` of every base of ``ids (B, T)``: one pass over the whole sequence."""
    return jax.nn.softmax(rnn_apply(params, ids), axis=-1)[..., 1]
