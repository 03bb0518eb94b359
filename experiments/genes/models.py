"""The gene taggers: bidirectional RNNs over bases, and their losses over long windows.

A model reads base ids ``(B, T)`` (``token_inputs=True``: ``W_ax x<t>`` is the column lookup
of the base's id) and emits two logits per base (non-coding, coding).

Two training losses of the same value and the same gradient (up to float rounding):

- ``"bptt"``: :func:`rnn_jax.rnn_apply` over the whole window, then the mean cross-entropy:
  the library's default backward pass, which keeps the states of every step (``O(T)``).
- ``"remat"``: :func:`bidirectional_loss_remat`, ``O(sqrt(T))`` memory for a bidirectional
  one-layer network. :func:`rnn_jax.long.rnn_loss_remat` is unidirectional (a backward
  direction needs the whole sequence), so the bidirectional case runs three chunked scans
  under ``jax.checkpoint``: the forward direction keeps only its state at every chunk start,
  the backward direction (the reversed sequence, chunk by chunk) likewise, and the loss scan
  recomputes one chunk of both directions from those states. Unidirectional models
  (``"gru"``, ...) use :func:`rnn_jax.long.rnn_loss_remat` itself.

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

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import init_rnn, rnn_apply
from rnn_jax.long import rnn_loss_remat
from rnn_jax.params import CELLS, RNNParams, StackParams
from rnn_jax.stack import head_apply, stack_unroll

__all__ = [
    "CELLS",
    "MODES",
    "MODEL_NAMES",
    "GeneModel",
    "bidirectional_loss_remat",
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


def _direction(stack: StackParams, d: int) -> StackParams:
    """Direction ``d`` of a one-layer bidirectional stack, as a unidirectional stack."""
    return dataclasses.replace(stack, layers=((stack.layers[0][d],),))


def _run_chunk(stack: StackParams, carry: Any, x: jax.Array, m_tb: jax.Array):
    """One chunk ``x (B, K)`` of one direction from ``carry``: ``(h_tm (K, B, H), carry)``."""
    if stack.cell == "lstm":
        h, c = carry
        h_tm, (h_n, c_n) = stack_unroll(stack, x, m_tb, h, c0=c, return_cell_state=True)
        return h_tm, (h_n, c_n)
    h_tm, h_n = stack_unroll(stack, x, m_tb, carry)
    return h_tm, h_n


def bidirectional_loss_remat(
    params: RNNParams,
    ids: jax.Array,
    labels: jax.Array,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
    """Mean per-base cross-entropy of a one-layer bidirectional network in ``O(sqrt(T))`` memory.

    The same value and gradient as ``softmax_cross_entropy(rnn_apply(params, ids), labels)``
    averaged over all bases. Memory: the states at the ``T / K`` chunk starts of both
    directions plus one chunk's states (``K = chunk_size``, default ``ceil(sqrt(T))``); cost:
    the forward pass twice.

    Args:
        params: a one-layer bidirectional :class:`~rnn_jax.RNNParams` (any cell, merge
            ``"concat"``) with ``token_inputs=True``.
        ids: ``(B, T)`` base ids.
        labels: ``(B, T)`` classes.
        chunk_size: bases per chunk.
    """
    if not params.bidirectional or params.num_layers != 1 or params.merge != "concat":
        raise ValueError(
            "`params` must be a one-layer bidirectional network merged by 'concat', got "
            f"num_layers={params.num_layers}, bidirectional={params.bidirectional}, "
            f"merge={params.merge!r}"
        )
    if ids.ndim != 2 or labels.shape != ids.shape:
        raise ValueError(
            f"`ids` and `labels` must both have shape (B, T), got {ids.shape} and {labels.shape}"
        )
    B, T = ids.shape
    k = max(1, math.ceil(math.sqrt(T))) if chunk_size is None else int(chunk_size)
    if k < 1:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}")
    n = -(-T // k)
    pad = n * k - T
    valid = jnp.pad(jnp.ones((B, T), bool), ((0, 0), (0, pad)))
    ids, labels = jnp.pad(ids, ((0, 0), (0, pad))), jnp.pad(labels, ((0, 0), (0, pad)))

    def split(x):  # (B, n*k) -> (n, B, k)
        return jnp.swapaxes(x.reshape(B, n, k), 0, 1)

    x_c, y_c, m_c = split(ids), split(labels), split(valid)
    fwd, bwd = _direction(params.stack, 0), _direction(params.stack, 1)
    H = params.hidden_size
    dtype = params.layers[0][0].W_a.dtype
    zeros = jnp.zeros((1, B, H), dtype)
    carry0 = (zeros, zeros) if params.cell == "lstm" else zeros

    def starts(stack, xs, ms):
        @jax.checkpoint
        def body(carry, chunk):
            x, m = chunk
            _, new = _run_chunk(stack, carry, x, m.T)
            return new, carry  # the state at this chunk's start

        return jax.lax.scan(body, carry0, (xs, ms))[1]

    f_starts = starts(fwd, x_c, m_c)
    # The backward direction reads the sequence right to left: the chunks in reverse order,
    # each reversed; padding (at the end) is read first and, masked, keeps the zero state.
    b_starts = starts(bwd, x_c[::-1, :, ::-1], m_c[::-1, :, ::-1])
    b_starts = jax.tree.map(lambda s: s[::-1], b_starts)

    @jax.checkpoint
    def chunk_loss(total, chunk):
        x, y, m, f0, b0 = chunk
        h_f, _ = _run_chunk(fwd, f0, x, m.T)
        h_b, _ = _run_chunk(bwd, b0, x[:, ::-1], m[:, ::-1].T)
        h = jnp.concatenate([h_f, h_b[::-1]], axis=-1)  # (k, B, 2H)
        ce = optax.softmax_cross_entropy_with_integer_labels(head_apply(params.head, h), y.T)
        return total + jnp.sum(jnp.where(m.T, ce, 0.0)), None

    total, _ = jax.lax.scan(chunk_loss, jnp.zeros((), dtype), (x_c, y_c, m_c, f_starts, b_starts))
    return total / (B * T)


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
    chunked recomputation in ``O(sqrt(T))`` memory (:func:`bidirectional_loss_remat`, or
    :func:`rnn_jax.long.rnn_loss_remat` for a unidirectional network).
    """
    if mode == "bptt":
        logits = rnn_apply(params, ids)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    if mode == "remat":
        if params.bidirectional:
            return bidirectional_loss_remat(params, ids, labels, chunk_size=chunk_size)
        return rnn_loss_remat(params, ids, labels, chunk_size=chunk_size)
    raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")


@jax.jit
def coding_probability(params: RNNParams, ids: jax.Array) -> jax.Array:
    """``P(coding)`` of every base of ``ids (B, T)``: one pass over the whole sequence."""
    return jax.nn.softmax(rnn_apply(params, ids), axis=-1)[..., 1]
