"""Connectionist temporal classification (CTC): outputs shorter than inputs, no alignment given.

A per-step head (:func:`rnn_jax.rnn_apply`, ``C = |labels| + 1`` outputs with one
*blank*) gives ``p(π<t> | x)`` for every input step. A labelling ``l`` (length ``S <= T``)
has the probability of all alignments ``π`` that collapse to it (merge repeats, then
drop blanks, written ``B(π) = l``):

.. math::

    p(l \\mid x) = \\sum_{\\pi : \\mathcal{B}(\\pi) = l} \\prod_{t=1}^{T} p(\\pi^{<t>} \\mid x)

and the loss is ``-log p(l | x)``, computed by :func:`optax.ctc_loss` (the forward
algorithm). Decoding: :func:`ctc_greedy_decode` (best path: argmax per step, collapse;
jitted, fixed shapes) and :func:`ctc_prefix_beam_search` (sums over alignments of each
prefix, so it can find a labelling whose probability is spread over many paths; runs on
the host in NumPy float64, one example at a time).

Labels at valid label positions must be ids in ``[0, C)`` other than the blank: on concrete
arrays anything else raises a ``ValueError`` (padding may hold anything); under ``jit`` the
example's loss and gradient are NaN, never a finite number.

Example:
    >>> import jax.numpy as jnp
    >>> # T = 2 steps, C = 2 (blank 0 and "a" = 1), uniform outputs: p("a") = 3/4
    >>> logits = jnp.zeros((1, 2, 2))
    >>> loss = ctc_loss(logits, jnp.array([2]), jnp.array([[1]]), jnp.array([1]))
    >>> round(float(loss), 4) == round(-float(jnp.log(0.75)), 4)
    True
    >>> ctc_greedy_decode(jnp.array([[[0., 1.], [0., 1.], [1., 0.], [0., 1.]]]),
    ...                   jnp.array([4]))[0].tolist()        # a a _ a -> "a a"
    [[1, 1, -1, -1]]
"""

from __future__ import annotations

from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int

from rnn_jax._checks import (
    check_label_range,
    check_lengths,
    is_concrete,
    lengths_to_mask,
    nan_where,
)
from rnn_jax.network import rnn_apply
from rnn_jax.params import RNNParams

__all__ = [
    "ctc_greedy_decode",
    "ctc_loss",
    "ctc_prefix_beam_search",
    "rnn_ctc_loss",
]

_REDUCTIONS = ("mean", "sum", "none", "mean_per_label")


def _check_logits(logits: Array, name: str = "logits") -> Array:
    logits = jnp.asarray(logits)
    if logits.ndim != 3 or not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(
            f"`{name}` must be floats of shape (B, T, C), got shape {tuple(logits.shape)} "
            f"and dtype {logits.dtype}."
        )
    return logits


def ctc_loss(
    logits: Float[ArrayLike, "B T C"],
    logit_lengths: Int[ArrayLike, " B"],
    labels: Int[ArrayLike, "B S"],
    label_lengths: Int[ArrayLike, " B"],
    *,
    blank_id: int = 0,
    reduction: str = "mean",
) -> Float[Array, ""] | Float[Array, " B"]:
    """``-log p(labels | x)`` summed over all alignments, via :func:`optax.ctc_loss`.

    Args:
        logits: per-step logits ``(B, T, C)`` (un-normalised; ``log_softmax`` is applied).
        logit_lengths: ``(B,)`` valid input steps in ``[0, T]``.
        labels: ``(B, S)`` label ids (never ``blank_id``), padded.
        label_lengths: ``(B,)`` in ``[0, S]``.
        blank_id: the blank class.
        reduction: ``"mean"`` over the batch, ``"sum"``, ``"none"`` (per example,
            ``(B,)``), or ``"mean_per_label"`` (each loss divided by its label length,
            at least 1, then averaged).

    Returns:
        The loss (``"mean"`` and ``"mean_per_label"`` give 0.0 for an empty batch
        ``B = 0``, like the other losses). A labelling that cannot fit in its input
        (``S + repeats > T``) has probability 0; optax then returns a large finite
        value (about ``1e5``), not ``inf``.

    Raises:
        ValueError: on a shape or dtype mismatch, lengths outside their range, or, on
            concrete arrays, a label id outside ``[0, C)`` or equal to ``blank_id`` at a
            valid label position (padding may hold anything). Under ``jit`` such an
            example's loss (and its gradient) is NaN instead -- never a finite number.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}.")
    logits = _check_logits(logits)
    B, T, C = logits.shape
    labels = jnp.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != B or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"`labels` must be integer ids of shape (B, S) with B = {B}, got shape "
            f"{tuple(labels.shape)} and dtype {labels.dtype}."
        )
    if not 0 <= blank_id < C:
        raise ValueError(f"`blank_id` must lie in [0, C) = [0, {C}), got {blank_id}.")
    logit_lengths = check_lengths(logit_lengths, B, T, name="logit_lengths")
    label_lengths = check_lengths(label_lengths, B, labels.shape[1], name="label_lengths")
    label_valid = lengths_to_mask(label_lengths, labels.shape[1])
    bad = check_label_range(labels, label_valid, 0, C, expected=f"[0, C) = [0, {C})")
    is_blank = label_valid & (labels == blank_id)
    if is_concrete(is_blank) and bool(np.any(np.asarray(is_blank))):
        b, s = (int(i[0]) for i in np.nonzero(np.asarray(is_blank)))
        raise ValueError(
            f"`labels` must not hold the blank id {blank_id} at valid positions (the blank is "
            f"not a label), got labels[{b}, {s}] = {blank_id}."
        )
    bad_example = jnp.any(bad | is_blank, axis=1)  # (B,): NaN loss under jit
    logit_paddings = (~lengths_to_mask(logit_lengths, T)).astype(logits.dtype)
    label_paddings = (~label_valid).astype(logits.dtype)
    labels = jnp.where(label_valid & ~bad, labels, 0)  # padded (and bad) ids are never read
    per_example = optax.ctc_loss(logits, logit_paddings, labels, label_paddings, blank_id=blank_id)
    per_example = nan_where(bad_example, per_example)
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return jnp.sum(per_example)
    if reduction == "mean_per_label":
        per_example = per_example / jnp.maximum(label_lengths, 1).astype(per_example.dtype)
    return jnp.sum(per_example) / max(B, 1)  # B = 0: 0.0, like the other losses


def rnn_ctc_loss(
    params: RNNParams,
    xs: Float[ArrayLike, "B T D"],
    lengths: Int[ArrayLike, " B"],
    labels: Int[ArrayLike, "B S"],
    label_lengths: Int[ArrayLike, " B"],
    *,
    blank_id: int = 0,
    reduction: str = "mean",
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> Float[Array, ""]:
    """CTC loss of an RNN's per-step head: ``ctc_loss(rnn_apply(params, xs, lengths), ...)``."""
    logits = rnn_apply(params, xs, lengths, dropout=dropout, key=key)
    return ctc_loss(logits, lengths, labels, label_lengths, blank_id=blank_id, reduction=reduction)


@jax.jit
def _greedy(logits, logit_lengths, blank_id):
    B, T, _ = logits.shape
    best = jnp.argmax(logits, axis=-1)  # (B, T) best path
    prev = jnp.concatenate([jnp.full((B, 1), -1, best.dtype), best[:, :-1]], axis=1)
    keep = (best != blank_id) & (best != prev) & lengths_to_mask(logit_lengths, T)
    pos = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, T)  # T = dropped (out of bounds)
    out = jnp.full((B, T), -1, jnp.int32)
    out = out.at[jnp.arange(B)[:, None], pos].set(best.astype(jnp.int32), mode="drop")
    return out, jnp.sum(keep, axis=1).astype(jnp.int32)


def ctc_greedy_decode(
    logits: Float[Array, "B T C"], logit_lengths: Int[Array, " B"], *, blank_id: int = 0
) -> tuple[Int[Array, "B T"], Int[Array, " B"]]:
    """Best-path decoding: per-step argmax, merge repeats, drop blanks (jitted).

    Returns:
        ``(labels (B, T), lengths (B,))``: ``labels[b, :lengths[b]]`` is the decoding,
        ``-1`` after it. An example of length 0 decodes to the empty labelling.
    """
    logits = _check_logits(logits)
    B, T, C = logits.shape
    if not 0 <= blank_id < C:
        raise ValueError(f"`blank_id` must lie in [0, C) = [0, {C}), got {blank_id}.")
    logit_lengths = check_lengths(logit_lengths, B, T, name="logit_lengths")
    return _greedy(logits, logit_lengths, jnp.int32(blank_id))


def ctc_prefix_beam_search(
    log_probs: Float[np.ndarray, "T C"],
    *,
    beam_width: int = 8,
    blank_id: int = 0,
) -> list[tuple[tuple[int, ...], float]]:
    """CTC prefix beam search for one example (host, NumPy float64).

    Keeps, for each labelling prefix ``l``, the log-probabilities ``p_b(l)`` and
    ``p_nb(l)`` of all alignments of the steps read so far that collapse to ``l`` and end
    in a blank / in ``l``'s last label. Reading ``p(c)`` at the next step: a blank keeps
    ``l`` (``p_b ← (p_b + p_nb) p(blank)``); repeating ``l``'s last label ``c`` keeps ``l``
    (``p_nb ← p_nb p(c)``) or, after a blank, extends it (``p_nb(l + c) ← p_b(l) p(c)``);
    any other label extends ``l`` (``p_nb(l + c) ← (p_b + p_nb) p(c)``). After each step
    the ``beam_width`` most probable prefixes are kept. With a beam wide enough to keep
    every prefix this is exact: ``max_l p(l | x)``.

    Args:
        log_probs: ``(T, C)`` log-probabilities of one example's *valid* steps (e.g.
            ``jax.nn.log_softmax(logits[b, :lengths[b]])``). ``T = 0`` gives the empty
            labelling with log-probability 0.
        beam_width: prefixes kept per step (``>= 1``).
        blank_id: the blank class.

    Returns:
        Up to ``beam_width`` pairs ``(labelling, log p(labelling | x))``, most probable
        first.

    Example:
        >>> import numpy as np
        >>> p = np.log(np.array([[0.4, 0.6], [0.4, 0.6]]))   # blank 0, label 1
        >>> [(l, round(float(np.exp(s)), 2)) for l, s in ctc_prefix_beam_search(p)]
        [((1,), 0.84), ((), 0.16)]
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.ndim != 2:
        raise ValueError(
            f"`log_probs` must have shape (T, C) (one example), got {log_probs.shape}."
        )
    T, C = log_probs.shape
    if (
        isinstance(beam_width, bool)
        or not isinstance(beam_width, (int, np.integer))
        or beam_width < 1
    ):
        raise ValueError(f"`beam_width` must be an int >= 1, got {beam_width!r}.")
    if not 0 <= blank_id < C:
        raise ValueError(f"`blank_id` must lie in [0, C) = [0, {C}), got {blank_id}.")
    neg_inf = -np.inf
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg_inf)}  # (p_b, p_nb)
    for t in range(T):
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [neg_inf, neg_inf])
        for prefix, (p_b, p_nb) in beams.items():
            p_total = np.logaddexp(p_b, p_nb)
            for c in range(C):
                p = log_probs[t, c]
                if c == blank_id:
                    entry = nxt[prefix]
                    entry[0] = np.logaddexp(entry[0], p_total + p)
                    continue
                extended = prefix + (c,)
                entry = nxt[extended]
                if prefix and prefix[-1] == c:
                    entry[1] = np.logaddexp(entry[1], p_b + p)  # a a needs a blank between
                    same = nxt[prefix]
                    same[1] = np.logaddexp(same[1], p_nb + p)  # a a collapses to a
                else:
                    entry[1] = np.logaddexp(entry[1], p_total + p)
        alive = [kv for kv in nxt.items() if np.logaddexp(*kv[1]) > neg_inf]  # p > 0 only
        ranked = sorted(alive, key=lambda kv: -np.logaddexp(*kv[1]))[:beam_width]
        beams = {prefix: (pb, pnb) for prefix, (pb, pnb) in ranked}
    out = [(prefix, float(np.logaddexp(pb, pnb))) for prefix, (pb, pnb) in beams.items()]
    return sorted(out, key=lambda lp: -lp[1])
