"""Masked losses for sequence outputs ŷ<t> of the recurrent network.

Every loss here takes the per-step outputs of a batch of padded sequences and
counts only the valid steps. Which steps are valid is given either by a boolean
``mask`` (``True`` = a real step) or by ``lengths`` (example ``b`` is valid for
``t < lengths[b]``), or by neither (every position is valid, which is also the
form used for many-to-one outputs such as ``logits`` of shape ``(B, C)``).

Let ``m<t> ∈ {0, 1}`` be the mask and ``ℓ<t>`` the per-step loss. The three
reductions are::

    "none":  ℓ<t> · m<t>                     (same shape as the mask; 0 at padding)
    "sum":   Σ_t m<t> ℓ<t>
    "mean":  Σ_t m<t> ℓ<t> / Σ_t m<t>         (0.0, not NaN, when Σ_t m<t> = 0)

so ``"mean"`` is the mean over *valid tokens of the whole batch* (a long
sentence weighs more than a short one), not the mean of per-sequence means.

Padding never reaches the result, not even through the gradient: the inputs at
masked positions are replaced by zeros with :func:`jax.numpy.where` *before* any
arithmetic, so arbitrary values there (huge numbers, ``inf``, ``NaN``,
out-of-range label ids) change neither the loss nor its gradient, and the
gradient at masked positions is exactly zero.

Call convention (the same as the network's ``rnn_apply(params, xs, lengths)``):
``loss(logits_or_preds, labels, lengths=None, *, mask=None, ...)`` -- ``lengths``
is the third positional argument and ``mask`` is keyword-only. A mask passed
positionally (a boolean array, or one of two or more axes, in the ``lengths``
slot) raises a :class:`TypeError` that says so. Masks may be boolean or
integer 0/1; ``lengths`` must lie in ``[0, T]``.

Shapes are checked at trace time (they are static under :func:`jax.jit`), and a
mismatch raises :class:`ValueError` naming the argument; nothing is broadcast
silently.

Label values at *valid* positions (padding may hold anything):

* eagerly (concrete arrays), a class id outside ``[0, C)`` for the softmax loss,
  or a binary label outside ``[0, 1]``, raises :class:`ValueError`, like
  out-of-range token ids do in the network;
* under :func:`jax.jit` (or ``grad``/``vmap``), where no value can be checked
  without a host sync, such a position makes the loss **NaN, and its gradient
  NaN** -- never a silently wrong finite number (e.g. ``-1`` is *not* read as the
  last class).

An empty batch (``B = 0``, or no valid position) gives ``0.0`` for ``"mean"``
and ``"sum"``, and zero gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from rnn_jax._checks import check_label_range, nan_where, reject_mask_as_lengths, resolve_mask

__all__ = [
    "masked_mean_squared_error",
    "masked_sigmoid_binary_cross_entropy",
    "masked_softmax_cross_entropy",
]

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- helpers
def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}.")


def _reduce(per_position: Array, mask: Array | None, reduction: str) -> Array:
    """Applies the documented reduction; ``per_position`` is already 0 at padding."""
    if reduction == "none":
        return per_position
    total = jnp.sum(per_position)
    if reduction == "sum":
        return total
    count = per_position.size if mask is None else jnp.sum(mask)
    return total / jnp.maximum(count, 1).astype(total.dtype)


def _expand_to(mask: Array, ndim: int) -> Array:
    """Appends trailing singleton axes so that ``mask`` has rank ``ndim`` (explicitly)."""
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


# Binary targets: 0/1 integers or bools, or probabilities in [0, 1] (soft labels).
BinaryLabels = (
    Float[ArrayLike, "*positions"] | Int[ArrayLike, "*positions"] | Bool[ArrayLike, "*positions"]
)


# --------------------------------------------------------------------------- losses
def masked_softmax_cross_entropy(
    logits: Float[ArrayLike, "*positions C"],
    labels: Int[ArrayLike, "*positions"],
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    mask: Bool[ArrayLike, "*positions"] | Int[ArrayLike, "*positions"] | None = None,
    reduction: str = "mean",
) -> Float[Array, ""] | Float[Array, "*positions"]:
    r"""Softmax cross-entropy of integer labels, counting valid positions only.

    Per position, with ``ŷ = softmax(logits)`` over the last axis and label ``y``::

        ℓ<t> = -log ŷ<t>_{y<t>} = logsumexp(z<t>) - z<t>_{y<t>}

    computed by :func:`optax.softmax_cross_entropy_with_integer_labels`.

    Args:
        logits: ``(B, T, C)`` per-step logits ``z<t>`` (or ``(B, C)`` for
            many-to-one; any leading shape works).
        labels: integer class ids in ``[0, C)``, shape ``logits.shape[:-1]``.
            Values at padding are ignored (they may be out of range, e.g. ``-1``).
        lengths: ``(B,)`` valid lengths in ``[0, T]`` (needs ``labels`` of
            shape ``(B, T)``).
        mask: keyword-only, instead of ``lengths``: bool (or integer 0/1) of
            shape ``logits.shape[:-1]``; ``True`` = counted. Neither counts
            every position.
        reduction: ``"mean"`` (sum over valid positions divided by their
            number — 0.0 when there are none), ``"sum"``, or ``"none"``
            (per-position losses, 0 at padding).

    Returns:
        A scalar, or an array of ``labels.shape`` for ``reduction="none"``.

    Raises:
        ValueError: on a shape or dtype mismatch (at trace time), or, on
            concrete arrays, a label outside ``[0, C)`` at a valid position
            (under ``jit`` the loss is NaN instead).
        TypeError: a mask passed positionally (``mask`` is keyword-only).

    Example:
        >>> import jax.numpy as jnp
        >>> logits = jnp.zeros((1, 3, 4))            # uniform over 4 classes
        >>> labels = jnp.array([[0, 1, -1]])         # last step is padding
        >>> loss = masked_softmax_cross_entropy(logits, labels, lengths=jnp.array([2]))
        >>> round(float(loss), 4)                    # log 4
        1.3863
    """
    _check_reduction(reduction)
    reject_mask_as_lengths(lengths, fn="masked_softmax_cross_entropy")
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim < 1:
        raise ValueError(f"`logits` must have a class axis (..., C), got shape {logits.shape}.")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"`labels` must have shape logits.shape[:-1] = {tuple(logits.shape[:-1])}, "
            f"got {tuple(labels.shape)}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must have an integer dtype, got {labels.dtype}.")
    mask = resolve_mask(lengths, mask, labels.shape, what="labels")
    C = logits.shape[-1]
    bad = check_label_range(labels, mask, 0, C, expected=f"[0, C) = [0, {C})")
    if mask is not None:
        logits = jnp.where(_expand_to(mask, logits.ndim), logits, 0.0)
        labels = jnp.where(mask, labels, 0)
    labels = jnp.where(bad, 0, labels)  # read a real class; the result is NaN there anyway
    per_position = nan_where(bad, optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    if mask is not None:
        per_position = jnp.where(mask, per_position, 0.0)
    return _reduce(per_position, mask, reduction)


def masked_sigmoid_binary_cross_entropy(
    # ``(*positions)`` or ``(*positions, 1)``: not bound here (a union would bind
    # ``*positions`` to the logits' full shape); the shapes are checked in the body.
    logits: Float[ArrayLike, "..."],
    labels: BinaryLabels,
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    mask: Bool[ArrayLike, "*positions"] | Int[ArrayLike, "*positions"] | None = None,
    pos_weight: float | ArrayLike | None = None,
    reduction: str = "mean",
) -> Float[Array, ""] | Float[Array, "*positions"]:
    r"""Binary cross-entropy of a sigmoid output ŷ<t> = σ(z<t>), y<t> ∈ {0, 1}.

    Per position, with ``w = pos_weight`` (1 when ``None``)::

        ℓ<t> = -[ w · y<t> · log σ(z<t>) + (1 - y<t>) · log(1 - σ(z<t>)) ]

    evaluated stably from the logit (``log σ(z) = -softplus(-z)``); without
    ``pos_weight`` this is :func:`optax.sigmoid_binary_cross_entropy`. A
    ``pos_weight > 1`` counters class imbalance (e.g. names are ~10% of tokens;
    ``pos_weight = #negatives / #positives`` balances the two classes). The
    ``"mean"`` reduction still divides by the number of valid positions, not by
    a weighted count.

    Args:
        logits: ``(B, T)`` or ``(B, T, 1)`` logits ``z<t>`` (any leading shape
            works, e.g. ``(B,)`` / ``(B, 1)`` for many-to-one).
        labels: targets of the leading shape (``(B, T)``), values in ``{0, 1}``
            (bool, integer or float; floats in ``[0, 1]`` act as soft labels).
            Values outside ``[0, 1]`` at valid positions raise on concrete
            arrays and give NaN under ``jit``.
        lengths: ``(B,)`` valid lengths in ``[0, T]``.
        mask: keyword-only, instead of ``lengths``: bool (or integer 0/1) of
            ``labels.shape``; ``True`` = counted.
        pos_weight: optional scalar weight ``w`` of the positive term.
        reduction: ``"mean"`` (0.0 when no position is valid), ``"sum"`` or
            ``"none"``.

    Returns:
        A scalar, or an array of ``labels.shape`` for ``reduction="none"``.

    Raises:
        ValueError: on a shape or dtype mismatch (at trace time), or, on
            concrete arrays, a label outside ``[0, 1]`` at a valid position
            (under ``jit`` the loss is NaN instead).
        TypeError: a mask passed positionally (``mask`` is keyword-only).

    Example:
        >>> import jax.numpy as jnp
        >>> logits = jnp.zeros((1, 3, 1))
        >>> labels = jnp.array([[1, 0, 1]])
        >>> mask = jnp.array([[True, True, False]])
        >>> round(float(masked_sigmoid_binary_cross_entropy(logits, labels, mask=mask)), 4)
        0.6931
    """
    _check_reduction(reduction)
    reject_mask_as_lengths(lengths, fn="masked_sigmoid_binary_cross_entropy")
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim == labels.ndim + 1 and logits.shape[-1] == 1:
        logits = logits[..., 0]
    if logits.shape != labels.shape:
        raise ValueError(
            f"`logits` must have shape labels.shape = {tuple(labels.shape)} or labels.shape + (1,) "
            f"= {(*labels.shape, 1)}, got {tuple(logits.shape)}."
        )
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(f"`logits` must have a floating dtype, got {logits.dtype}.")
    if not (labels.dtype == jnp.bool_ or jnp.issubdtype(labels.dtype, jnp.number)):
        raise ValueError(f"`labels` must be bool, integer or float, got dtype {labels.dtype}.")
    mask = resolve_mask(lengths, mask, labels.shape, what="labels")
    bad = check_label_range(
        labels, mask, 0, 1, closed=True, expected="[0, 1] (0/1, or soft labels in between)"
    )
    labels = labels.astype(logits.dtype)
    if mask is not None:
        logits = jnp.where(mask, logits, 0.0)
        labels = jnp.where(mask, labels, 0.0)
    if pos_weight is None:
        per_position = optax.sigmoid_binary_cross_entropy(logits, labels)
    else:
        pos_weight = jnp.asarray(pos_weight, dtype=logits.dtype)
        if pos_weight.shape != ():
            raise ValueError(f"`pos_weight` must be a scalar, got shape {tuple(pos_weight.shape)}.")
        per_position = -(
            pos_weight * labels * jax.nn.log_sigmoid(logits)
            + (1.0 - labels) * jax.nn.log_sigmoid(-logits)
        )
    per_position = nan_where(bad, per_position)
    if mask is not None:
        per_position = jnp.where(mask, per_position, 0.0)
    return _reduce(per_position, mask, reduction)


def masked_mean_squared_error(
    preds: Float[ArrayLike, "*shape"],
    targets: Float[ArrayLike, "*shape"],
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    mask: Bool[ArrayLike, "*positions"] | Int[ArrayLike, "*positions"] | None = None,
    reduction: str = "mean",
) -> Float[Array, ""] | Float[Array, "*positions"]:
    r"""Squared error for forecasting, counting valid positions only.

    The positions are the leading axes named by the mask (``(B, T)`` with
    ``lengths``); any remaining axes are features, averaged per position::

        ℓ<t> = mean_features (ŷ<t> - y<t>)²

    With neither ``mask`` nor ``lengths`` every element is a position.
    ``"mean"`` is therefore the mean squared error over all valid elements.

    Args:
        preds: predictions ``ŷ``, e.g. ``(B, T)`` or ``(B, T, D)``.
        targets: same shape as ``preds``.
        lengths: ``(B,)`` valid lengths in ``[0, T]`` (positions ``(B, T)``).
        mask: keyword-only, instead of ``lengths``: bool (or integer 0/1)
            whose shape is a prefix of ``preds.shape`` (e.g. ``(B, T)``).
        reduction: ``"mean"`` (0.0 when no position is valid), ``"sum"``
            (sum of the per-position means) or ``"none"`` (per position, 0 at
            padding).

    Returns:
        A scalar, or an array of the mask's shape for ``reduction="none"``.

    Raises:
        ValueError: on a shape mismatch (at trace time).
        TypeError: a mask passed positionally (``mask`` is keyword-only).

    Example:
        >>> import jax.numpy as jnp
        >>> preds = jnp.array([[1.0, 2.0, 99.0]])
        >>> targets = jnp.array([[0.0, 0.0, 0.0]])
        >>> float(masked_mean_squared_error(preds, targets, lengths=jnp.array([2])))
        2.5
    """
    _check_reduction(reduction)
    reject_mask_as_lengths(lengths, fn="masked_mean_squared_error")
    preds = jnp.asarray(preds)
    targets = jnp.asarray(targets)
    if targets.shape != preds.shape:
        raise ValueError(
            f"`targets` must have shape preds.shape = {tuple(preds.shape)}, got {tuple(targets.shape)}."
        )
    if mask is not None:
        mask_shape = tuple(jnp.shape(mask))
        if mask_shape != tuple(preds.shape[: len(mask_shape)]):
            raise ValueError(
                f"`mask` must have a prefix of preds.shape = {tuple(preds.shape)} as its shape, "
                f"got {mask_shape}."
            )
        positions = mask_shape
    elif lengths is not None:
        if preds.ndim < 2:
            raise ValueError(
                f"`lengths` needs preds with at least 2 axes (B, T, ...), got {tuple(preds.shape)}."
            )
        positions = tuple(preds.shape[:2])
    else:
        positions = tuple(preds.shape)
    mask = resolve_mask(lengths, mask, positions, what="preds[positions]")
    if mask is not None:
        full = _expand_to(mask, preds.ndim)
        preds = jnp.where(full, preds, 0.0)
        targets = jnp.where(full, targets, 0.0)
    squared = jnp.square(preds - targets)
    feature_axes = tuple(range(len(positions), preds.ndim))
    per_position = jnp.mean(squared, axis=feature_axes) if feature_axes else squared
    if mask is not None:
        per_position = jnp.where(mask, per_position, 0.0)
    return _reduce(per_position, mask, reduction)
