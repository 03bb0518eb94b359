"""A linear-chain conditional random field (CRF) output layer: the likelihood and Viterbi.

A tagger (e.g. :func:`rnn_jax.rnn_apply`) gives *emission* scores ``E<t>[k]`` of tag ``k``
at step ``t``; a CRF adds scores of tag *pairs*, so the tags are chosen jointly (Lafferty
et al. 2001; on top of a bidirectional RNN: Huang et al. 2015, Lample et al. 2016). A tag
sequence ``y = (y<1>, ..., y<L>)`` of an example of length ``L`` scores

.. math::

    s(y) = \\mathrm{start}[y^{<1>}] + \\sum_{t=1}^{L} E^{<t>}[y^{<t>}]
         + \\sum_{t=2}^{L} A[y^{<t-1>}, y^{<t>}] + \\mathrm{end}[y^{<L>}]

with the transition scores ``A`` (``transitions``, ``(K, K)``, row = previous tag), and

.. math::

    \\log p(y \\mid x) = s(y) - \\log Z, \\qquad
    \\log Z = \\log \\sum_{y'} \\exp s(y') ,

the sum over all ``K^L`` sequences, computed by the forward algorithm
(``α<1> = start + E<1>``, ``α<t>[k] = logsumexp_j(α<t-1>[j] + A[j, k]) + E<t>[k]``,
``log Z = logsumexp(α<L> + end)``) in one :func:`jax.lax.scan`. :func:`crf_decode` is the
same recursion with ``max`` for ``logsumexp`` (Viterbi) and a backward pass over the
back-pointers.

Masking: step ``t`` of example ``b`` is valid iff ``t < lengths[b]`` (the library's one
rule, :func:`rnn_jax.lengths_to_mask`). Padded steps never matter: their emissions and tags
(any values, NaN or out-of-range ids included) are never read into a result or a gradient,
and the batch's padded length ``T`` changes nothing. An example of length 0 has one (empty)
sequence: ``log Z = s(y) = 0``, log-likelihood 0, and decodes to no tags.

Example:
    >>> import jax.numpy as jnp
    >>> K = 2
    >>> e = jnp.array([[[1.0, 0.0], [0.0, 2.0]]])               # (B, T, K) = (1, 2, 2)
    >>> A, start, end = jnp.zeros((K, K)), jnp.zeros(K), jnp.zeros(K)
    >>> tags, score = crf_decode(e, jnp.array([2]), A, start, end)
    >>> tags.tolist(), round(float(score[0]), 3)                  # 1 + 2
    ([[0, 1]], 3.0)
    >>> ll = crf_log_likelihood(e, tags, jnp.array([2]), A, start, end)
    >>> # log Z = log((e^1 + e^0) (e^0 + e^2)): the tags are independent when A = 0
    >>> bool(jnp.allclose(ll, 3.0 - jnp.log((jnp.e + 1) * (1 + jnp.e**2))))
    True
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from rnn_jax._checks import check_label_range, check_lengths, lengths_to_mask, nan_where

__all__ = [
    "CRFParams",
    "crf_decode",
    "crf_log_likelihood",
    "crf_log_partition",
    "crf_sequence_score",
    "init_crf",
]


class CRFParams(NamedTuple):
    """The CRF's own parameters (a plain pytree, updated by Optax like any other).

    Attributes:
        transitions: ``(K, K)``: ``transitions[i, j]`` scores tag ``j`` right after tag ``i``.
        start: ``(K,)``: the score of each tag at the first step.
        end: ``(K,)``: the score of each tag at the last valid step.
    """

    transitions: Float[Array, "K K"]
    start: Float[Array, " K"]
    end: Float[Array, " K"]


def init_crf(num_tags: int, dtype: jnp.dtype = jnp.float32) -> CRFParams:
    """Zero transition, start and end scores (no key: the emissions break the symmetry).

    Example:
        >>> init_crf(3).transitions.shape
        (3, 3)
    """
    if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags < 1:
        raise ValueError(f"`num_tags` must be a positive int, got {num_tags!r}.")
    return CRFParams(
        jnp.zeros((num_tags, num_tags), dtype),
        jnp.zeros(num_tags, dtype),
        jnp.zeros(num_tags, dtype),
    )


def _check(emissions, lengths, transitions, start, end):
    """Validated ``(emissions, lengths, transitions, start, end)``; the CRF's parameters are
    cast to the emissions' dtype (strict dtype promotion never mixes widths)."""
    emissions = jnp.asarray(emissions)
    if emissions.ndim != 3 or not jnp.issubdtype(emissions.dtype, jnp.floating):
        raise ValueError(
            f"`emissions` must be floats of shape (B, T, K), got shape {tuple(emissions.shape)} "
            f"and dtype {emissions.dtype}."
        )
    B, T, K = emissions.shape
    if K < 1:
        raise ValueError(f"`emissions` must have K >= 1 tags (last axis), got shape {(B, T, K)}.")
    lengths = check_lengths(lengths, B, T)
    out = []
    for name, value, shape in (("transitions", transitions, (K, K)), ("start", start, (K,)),
                               ("end", end, (K,))):  # fmt: skip
        value = jnp.asarray(value)
        if value.shape != shape or not jnp.issubdtype(value.dtype, jnp.floating):
            raise ValueError(
                f"`{name}` must be floats of shape {shape} (K = {K} tags, the last axis of "
                f"`emissions`), got shape {tuple(value.shape)} and dtype {value.dtype}."
            )
        out.append(value.astype(emissions.dtype))
    return emissions, lengths, *out


def _check_tags(tags, emissions, lengths):
    """Validated tags ``(B, T)``, the valid mask, and the bad positions (NaN under ``jit``)."""
    B, T, K = emissions.shape
    tags = jnp.asarray(tags)
    if tags.shape != (B, T) or not jnp.issubdtype(tags.dtype, jnp.integer):
        raise ValueError(
            f"`tags` must be integer ids of shape (B, T) = {(B, T)} (the emissions' first two "
            f"axes), got shape {tuple(tags.shape)} and dtype {tags.dtype}."
        )
    valid = lengths_to_mask(lengths, T)
    bad = check_label_range(tags, valid, 0, K, expected=f"[0, K) = [0, {K})", name="tags")
    safe = jnp.where(valid & ~bad, tags, 0).astype(jnp.int32)  # padding is never read
    return safe, valid, jnp.any(bad, axis=1)


def _masked_emissions(emissions, valid):
    # Padded steps may hold anything (NaN, inf): replaced, so neither values nor gradients
    # ever read them.
    return jnp.where(valid[..., None], emissions, jnp.zeros((), emissions.dtype))


def _forward(emissions, valid, transitions, start, end):
    """``log Z`` of one example: ``emissions (T, K)``, ``valid (T,)``."""

    def step(alpha, inputs):
        e_t, valid_t = inputs
        nxt = jax.nn.logsumexp(alpha[:, None] + transitions, axis=0) + e_t
        return jnp.where(valid_t, nxt, alpha), None

    alpha, _ = jax.lax.scan(step, start + emissions[0], (emissions[1:], valid[1:]))
    log_z = jax.nn.logsumexp(alpha + end)
    return jnp.where(valid[0], log_z, jnp.zeros((), log_z.dtype))


def _score(emissions, tags, valid, transitions, start, end):
    """``s(y)`` of one example's tags ``(T,)``."""
    zero = jnp.zeros((), emissions.dtype)
    T = emissions.shape[0]
    unary = jnp.sum(jnp.where(valid, emissions[jnp.arange(T), tags], zero))
    pairs = jnp.sum(jnp.where(valid[1:], transitions[tags[:-1], tags[1:]], zero))
    last = tags[jnp.maximum(jnp.sum(valid.astype(jnp.int32)) - 1, 0)]
    ends = start[tags[0]] + end[last]
    return unary + pairs + jnp.where(valid[0], ends, zero)


@jax.jit
def _log_partition(emissions, lengths, transitions, start, end):
    valid = lengths_to_mask(lengths, emissions.shape[1])
    emissions = _masked_emissions(emissions, valid)
    forward = jax.vmap(_forward, in_axes=(0, 0, None, None, None))
    return forward(emissions, valid, transitions, start, end)


@jax.jit
def _sequence_score(emissions, tags, valid, transitions, start, end):
    emissions = _masked_emissions(emissions, valid)
    score = jax.vmap(_score, in_axes=(0, 0, 0, None, None, None))
    return score(emissions, tags, valid, transitions, start, end)


def crf_log_partition(
    emissions: Float[ArrayLike, "B T K"],
    lengths: Int[ArrayLike, " B"],
    transitions: Float[ArrayLike, "K K"],
    start: Float[ArrayLike, " K"],
    end: Float[ArrayLike, " K"],
) -> Float[Array, " B"]:
    """``log Z`` of each example: log of the sum of ``exp s(y)`` over all ``K^L`` sequences.

    The forward algorithm (module docstring), one ``lax.scan`` over the steps, ``vmap`` over
    the batch (jitted). Length 0: ``log Z = 0``.

    Raises:
        ValueError: ``emissions`` not floats ``(B, T, K)``; ``lengths`` not integers ``(B,)``
            in ``[0, T]`` (values checked when concrete); ``transitions``, ``start``, ``end``
            not floats of shapes ``(K, K)``, ``(K,)``, ``(K,)``.
    """
    emissions, lengths, transitions, start, end = _check(emissions, lengths, transitions,
                                                         start, end)  # fmt: skip
    B, T, _ = emissions.shape
    if T == 0:
        return jnp.zeros((B,), emissions.dtype)
    return _log_partition(emissions, lengths, transitions, start, end)


def crf_sequence_score(
    emissions: Float[ArrayLike, "B T K"],
    tags: Int[ArrayLike, "B T"],
    lengths: Int[ArrayLike, " B"],
    transitions: Float[ArrayLike, "K K"],
    start: Float[ArrayLike, " K"],
    end: Float[ArrayLike, " K"],
) -> Float[Array, " B"]:
    """``s(y)`` of the given tag sequences (the module docstring's sum; length 0: 0).

    Tags at valid steps must be ids in ``[0, K)``: on concrete arrays anything else raises a
    ``ValueError``; under ``jit`` that example's score (and gradient) is NaN. Padded steps may
    hold anything.
    """
    emissions, lengths, transitions, start, end = _check(emissions, lengths, transitions,
                                                         start, end)  # fmt: skip
    B, T, _ = emissions.shape
    tags, valid, bad = _check_tags(tags, emissions, lengths)
    if T == 0:
        return jnp.zeros((B,), emissions.dtype)
    return nan_where(bad, _sequence_score(emissions, tags, valid, transitions, start, end))


def crf_log_likelihood(
    emissions: Float[ArrayLike, "B T K"],
    tags: Int[ArrayLike, "B T"],
    lengths: Int[ArrayLike, " B"],
    transitions: Float[ArrayLike, "K K"],
    start: Float[ArrayLike, " K"],
    end: Float[ArrayLike, " K"],
) -> Float[Array, " B"]:
    """``log p(tags | x) = s(tags) - log Z`` of each example (``<= 0``; length 0: 0).

    The training loss of a CRF layer is its negative, e.g.
    ``-jnp.sum(crf_log_likelihood(...)) / jnp.sum(lengths)`` per token.

    Args:
        emissions: ``(B, T, K)`` per-step tag scores (e.g. a tagger's logits; not normalised).
        tags: ``(B, T)`` integer tag ids, in ``[0, K)`` at valid steps; padding may hold
            anything.
        lengths: ``(B,)`` valid steps, in ``[0, T]``.
        transitions, start, end: the CRF's scores, ``(K, K)``, ``(K,)``, ``(K,)`` (cast to
            the emissions' dtype).

    Returns:
        ``(B,)`` log-likelihoods.

    Raises:
        ValueError: a shape or dtype mismatch, lengths outside ``[0, T]``, or (on concrete
            arrays) a tag outside ``[0, K)`` at a valid step. Under ``jit`` such an example's
            log-likelihood and its gradient are NaN, never a finite number.
    """
    emissions, lengths, transitions, start, end = _check(emissions, lengths, transitions,
                                                         start, end)  # fmt: skip
    B, T, _ = emissions.shape
    tags, valid, bad = _check_tags(tags, emissions, lengths)
    if T == 0:
        return jnp.zeros((B,), emissions.dtype)
    score = _sequence_score(emissions, tags, valid, transitions, start, end)
    return nan_where(bad, score - _log_partition(emissions, lengths, transitions, start, end))


def _viterbi(emissions, valid, transitions, start, end):
    """Best tags ``(T,)`` (``-1`` at padded steps) and their score, for one example."""
    K = emissions.shape[1]
    identity = jnp.arange(K, dtype=jnp.int32)

    def forward(delta, inputs):
        e_t, valid_t = inputs
        total = delta[:, None] + transitions  # (previous, current)
        back = jnp.argmax(total, axis=0).astype(jnp.int32)
        nxt = jnp.max(total, axis=0) + e_t
        # a padded step keeps the scores, and its back-pointers point to the same tag
        return jnp.where(valid_t, nxt, delta), jnp.where(valid_t, back, identity)

    delta, backs = jax.lax.scan(forward, start + emissions[0], (emissions[1:], valid[1:]))
    final = delta + end
    last = jnp.argmax(final).astype(jnp.int32)

    def backward(tag, back):
        previous = back[tag]
        return previous, previous

    _, earlier = jax.lax.scan(backward, last, backs, reverse=True)
    tags = jnp.concatenate([earlier, last[None]])
    tags = jnp.where(valid, tags, jnp.int32(-1))
    score = jnp.where(valid[0], jnp.max(final), jnp.zeros((), final.dtype))
    return tags, score


@jax.jit
def _decode(emissions, lengths, transitions, start, end):
    B, T, _ = emissions.shape
    valid = lengths_to_mask(lengths, T)
    emissions = _masked_emissions(emissions, valid)
    viterbi = jax.vmap(_viterbi, in_axes=(0, 0, None, None, None))
    return viterbi(emissions, valid, transitions, start, end)


def crf_decode(
    emissions: Float[ArrayLike, "B T K"],
    lengths: Int[ArrayLike, " B"],
    transitions: Float[ArrayLike, "K K"],
    start: Float[ArrayLike, " K"],
    end: Float[ArrayLike, " K"],
) -> tuple[Int[Array, "B T"], Float[Array, " B"]]:
    """Viterbi: the tag sequence of highest score ``s(y)`` of each example (jitted).

    A disallowed transition can be given the score ``-inf`` (e.g. BIO's ``O -> I-X``):
    no returned sequence then takes it (as long as some sequence avoids every ``-inf``).

    Returns:
        ``(tags (B, T) int32, score (B,))``: ``tags[b, :lengths[b]]`` is the best sequence
        (``-1`` at padded steps) and ``score[b]`` its ``s(y)`` (length 0: no tags, score 0).
        Ties go to the lowest tag id.

    Raises:
        ValueError: as :func:`crf_log_partition`.
    """
    emissions, lengths, transitions, start, end = _check(emissions, lengths, transitions,
                                                         start, end)  # fmt: skip
    B, T, _ = emissions.shape
    if T == 0:
        return jnp.zeros((B, 0), jnp.int32), jnp.zeros((B,), emissions.dtype)
    return _decode(emissions, lengths, transitions, start, end)
