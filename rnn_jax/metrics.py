"""Masked metrics for token tagging and classification.

All metrics count valid positions only and are jit-compatible (shape checks
happen at trace time). They are called like the losses of :mod:`rnn_jax.losses`:
``metric(predictions, labels, lengths=None, *, mask=None, from_logits=False)``
-- ``lengths`` third positional, ``mask`` keyword-only (boolean or integer 0/1);
a mask passed positionally raises a :class:`TypeError` that says so.

Label values at valid positions are checked like token ids: on concrete arrays
an out-of-range label (outside ``{0, 1}`` for the binary counts, below 0 or at
least ``C`` for accuracy) raises :class:`ValueError`; under ``jit`` it is left
out of every count and the float scores (:func:`masked_accuracy`,
:func:`binary_precision_recall_f1`) are NaN -- never a silently wrong number.

Corpus-level scores must be computed from **summed counts**, not by averaging
per-batch scores: accumulate :class:`ConfusionCounts` (or
:class:`AccuracyCounts`) over batches with ``+`` and turn the total into
precision / recall / F1 once at the end::

    precision = tp / (tp + fp)
    recall    = tp / (tp + fn)
    F1        = 2 tp / (2 tp + fp + fn)     (= harmonic mean of precision and recall)
    accuracy  = correct / total

**0/0 is defined as 0.0** everywhere (no predicted positives → precision 0.0;
no true positives in the labels → recall 0.0; no valid tokens → accuracy 0.0),
like scikit-learn's ``zero_division=0``. No NaN is ever returned.

Predictions may be given as labels or as logits (``from_logits=True``):

* logits of shape ``labels.shape`` or ``labels.shape + (1,)`` are *binary*
  sigmoid logits: the prediction is 1 iff ``logit > 0`` (``σ(z) > 0.5``);
* logits of shape ``labels.shape + (C,)`` with ``C ≥ 2`` are softmax logits:
  the prediction is ``argmax`` (ties → the lower class id).

Counts are ``int32`` (JAX's default integer), exact up to 2³¹ - 1 tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from rnn_jax._checks import check_label_range, reject_mask_as_lengths, resolve_mask

# Predicted labels (integer or bool, the labels' shape) or logits (from_logits=True).
Predictions = Int[ArrayLike, "*positions"] | Bool[ArrayLike, "*positions"] | Float[ArrayLike, "..."]

__all__ = [
    "AccuracyCounts",
    "ConfusionCounts",
    "accuracy_counts",
    "binary_confusion_counts",
    "binary_precision_recall_f1",
    "masked_accuracy",
    "predicted_labels",
    "safe_divide",
]


def safe_divide(numerator: ArrayLike, denominator: ArrayLike) -> Float[Array, "..."]:
    """``numerator / denominator`` as float32, with ``x / 0 := 0.0``.

    Example:
        >>> float(safe_divide(3, 4)), float(safe_divide(0, 0))
        (0.75, 0.0)
    """
    numerator = jnp.asarray(numerator, dtype=jnp.float32)
    denominator = jnp.asarray(denominator, dtype=jnp.float32)
    nonzero = denominator != 0
    return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1.0), 0.0)


class ConfusionCounts(NamedTuple):
    """Counts of the positive class of a binary tagger (scalars or any same-shape arrays).

    ``+`` adds field by field (unlike a plain tuple's concatenation), and
    ``sum(list_of_counts)`` works, so batch counts accumulate into corpus counts.
    It is a pytree (a NamedTuple), so it can be returned from ``jit``-ed steps.

    Example:
        >>> c = ConfusionCounts(tp=3, fp=1, fn=2, tn=10) + ConfusionCounts(1, 0, 0, 5)
        >>> [int(v) for v in c]
        [4, 1, 2, 15]
        >>> round(float(c.precision()), 3), round(float(c.recall()), 3), round(float(c.f1()), 3)
        (0.8, 0.667, 0.727)
    """

    tp: Int[Array, "..."]
    fp: Int[Array, "..."]
    fn: Int[Array, "..."]
    tn: Int[Array, "..."]

    @classmethod
    def zeros(cls) -> ConfusionCounts:
        """All-zero counts: the start value of an accumulation."""
        zero = jnp.zeros((), dtype=jnp.int32)
        return cls(zero, zero, zero, zero)

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:  # type: ignore[override]
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return ConfusionCounts(*(jnp.add(a, b) for a, b in zip(self, other, strict=True)))

    def __radd__(self, other: object) -> ConfusionCounts:
        if isinstance(other, int) and other == 0:  # lets builtin sum() start from 0
            return self
        return NotImplemented

    def precision(self) -> Float[Array, "..."]:
        """``tp / (tp + fp)``; 0.0 when nothing was predicted positive."""
        return safe_divide(self.tp, jnp.add(self.tp, self.fp))

    def recall(self) -> Float[Array, "..."]:
        """``tp / (tp + fn)``; 0.0 when no label is positive."""
        return safe_divide(self.tp, jnp.add(self.tp, self.fn))

    def f1(self) -> Float[Array, "..."]:
        """``2 tp / (2 tp + fp + fn)``; 0.0 when ``tp = fp = fn = 0``."""
        return safe_divide(2 * jnp.asarray(self.tp), 2 * jnp.asarray(self.tp) + self.fp + self.fn)

    def accuracy(self) -> Float[Array, "..."]:
        """``(tp + tn) / (tp + fp + fn + tn)``; 0.0 with no tokens."""
        return safe_divide(jnp.add(self.tp, self.tn), sum(jnp.asarray(v) for v in self))


class AccuracyCounts(NamedTuple):
    """``correct`` and ``total`` valid tokens; ``+`` accumulates over batches.

    Example:
        >>> c = sum([AccuracyCounts(3, 4), AccuracyCounts(0, 0), AccuracyCounts(5, 6)])
        >>> int(c.correct), int(c.total), round(float(c.accuracy()), 4)
        (8, 10, 0.8)
    """

    correct: Int[Array, "..."]
    total: Int[Array, "..."]

    @classmethod
    def zeros(cls) -> AccuracyCounts:
        """All-zero counts: the start value of an accumulation."""
        zero = jnp.zeros((), dtype=jnp.int32)
        return cls(zero, zero)

    def __add__(self, other: AccuracyCounts) -> AccuracyCounts:  # type: ignore[override]
        if not isinstance(other, AccuracyCounts):
            return NotImplemented
        return AccuracyCounts(
            jnp.add(self.correct, other.correct), jnp.add(self.total, other.total)
        )

    def __radd__(self, other: object) -> AccuracyCounts:
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def accuracy(self) -> Float[Array, "..."]:
        """``correct / total``; 0.0 when ``total = 0``."""
        return safe_divide(self.correct, self.total)


def predicted_labels(
    predictions: ArrayLike,
    labels_shape: tuple[int, ...],
    *,
    from_logits: bool,
) -> Int[Array, "..."]:
    """Class ids predicted at each position (see the module docstring for the rules).

    Args:
        predictions: labels (``from_logits=False``; integer or bool, shape
            ``labels_shape``) or logits (``from_logits=True``; shape
            ``labels_shape``, ``labels_shape + (1,)`` or ``labels_shape + (C,)``).
        labels_shape: the shape of the labels they are compared with.
        from_logits: whether ``predictions`` are logits.

    Returns:
        ``int32`` predicted ids of ``labels_shape``.

    Raises:
        ValueError: on a shape mismatch, or float predictions without
            ``from_logits=True``.

    Example:
        >>> import jax.numpy as jnp
        >>> predicted_labels(jnp.array([[-1.0, 2.0]]), (1, 2), from_logits=True).tolist()
        [[0, 1]]
        >>> predicted_labels(jnp.array([[[0.1, 0.9, 0.0]]]), (1, 1), from_logits=True).tolist()
        [[1]]
    """
    predictions = jnp.asarray(predictions)
    labels_shape = tuple(labels_shape)
    if not from_logits:
        if predictions.shape != labels_shape:
            raise ValueError(
                f"`predictions` must have shape labels.shape = {labels_shape}, "
                f"got {tuple(predictions.shape)} (pass from_logits=True for logits)."
            )
        if not (predictions.dtype == jnp.bool_ or jnp.issubdtype(predictions.dtype, jnp.integer)):
            raise ValueError(
                f"`predictions` must be integer or bool labels, got dtype {predictions.dtype} "
                "(pass from_logits=True for logits)."
            )
        return predictions.astype(jnp.int32)
    if predictions.shape == labels_shape:
        return (predictions > 0).astype(jnp.int32)
    if predictions.ndim == len(labels_shape) + 1 and predictions.shape[:-1] == labels_shape:
        if predictions.shape[-1] == 1:
            return (predictions[..., 0] > 0).astype(jnp.int32)
        return jnp.argmax(predictions, axis=-1).astype(jnp.int32)
    raise ValueError(
        f"`predictions` (logits) must have shape labels.shape = {labels_shape} or "
        f"labels.shape + (C,), got {tuple(predictions.shape)}."
    )


def _check_labels(labels: ArrayLike) -> Array:
    labels = jnp.asarray(labels)
    if not (labels.dtype == jnp.bool_ or jnp.issubdtype(labels.dtype, jnp.integer)):
        raise ValueError(f"`labels` must have an integer or bool dtype, got {labels.dtype}.")
    return labels


def _valid(valid: Array | None, shape: tuple[int, ...]) -> Array:
    return jnp.ones(shape, dtype=jnp.bool_) if valid is None else valid


def _confusion(
    predictions: ArrayLike,
    labels: ArrayLike,
    lengths: ArrayLike | None,
    mask: ArrayLike | None,
    from_logits: bool,
) -> tuple[ConfusionCounts, Array]:
    """The counts over valid positions with labels in {0, 1}, and how many valid ones were not."""
    labels = _check_labels(labels)
    predictions = jnp.asarray(predictions)
    if (
        from_logits
        and predictions.ndim == labels.ndim + 1
        and predictions.shape[:-1] == labels.shape
        and predictions.shape[-1] > 2
    ):
        raise ValueError(
            f"`predictions` must be binary logits of shape labels.shape = {tuple(labels.shape)}, "
            f"labels.shape + (1,) or labels.shape + (2,), got {tuple(predictions.shape)} "
            f"({predictions.shape[-1]} classes); use accuracy_counts for multi-class outputs."
        )
    y_hat_ids = predicted_labels(predictions, labels.shape, from_logits=from_logits)
    valid = resolve_mask(lengths, mask, labels.shape, what="labels")
    bad = check_label_range(labels, valid, 0, 1, closed=True, expected="{0, 1}")
    if not from_logits:
        bad = bad | check_label_range(
            y_hat_ids, valid, 0, 1, closed=True, expected="{0, 1}", name="predictions"
        )
    counted = _valid(valid, labels.shape) & ~bad
    # Explicit dtypes (strict dtype promotion): bool labels are compared with False.
    y_hat = y_hat_ids != jnp.zeros((), y_hat_ids.dtype)
    y = labels != jnp.zeros((), labels.dtype)

    def count(condition: Array) -> Array:
        return jnp.sum(condition & counted, dtype=jnp.int32)

    counts = ConfusionCounts(
        tp=count(y_hat & y), fp=count(y_hat & ~y), fn=count(~y_hat & y), tn=count(~y_hat & ~y)
    )
    return counts, jnp.sum(bad, dtype=jnp.int32)


def binary_confusion_counts(
    predictions: Predictions,
    labels: Int[ArrayLike, "*positions"] | Bool[ArrayLike, "*positions"],
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    mask: Bool[ArrayLike, "*positions"] | Int[ArrayLike, "*positions"] | None = None,
    from_logits: bool = False,
) -> ConfusionCounts:
    """Confusion counts of the positive class (label 1) over the valid positions.

    Labels (and predicted labels) must be in ``{0, 1}`` at valid positions: on
    concrete arrays anything else raises; under ``jit`` such a position is left
    out of all four counts (so ``tp + fp + fn + tn`` falls short of the number
    of valid positions) and :func:`binary_precision_recall_f1` gives NaN. It is
    never counted as a positive.

    Args:
        predictions: predicted labels in ``{0, 1}`` (shape ``labels.shape``), or
            binary logits with ``from_logits=True`` (see the module docstring).
        labels: integer/bool targets in ``{0, 1}``, e.g. ``(B, T)``.
        lengths: ``(B,)`` valid lengths in ``[0, T]``.
        mask: keyword-only, instead of ``lengths``: bool (or integer 0/1) of
            ``labels.shape``; ``True`` = counted.
        from_logits: whether ``predictions`` are logits.

    Returns:
        Scalar ``int32`` :class:`ConfusionCounts`.

    Raises:
        ValueError: on a shape or dtype mismatch, or (concrete arrays) a label
            or predicted label outside ``{0, 1}`` at a valid position.
        TypeError: a mask passed positionally (``mask`` is keyword-only).

    Example:
        >>> import jax.numpy as jnp
        >>> labels = jnp.array([[1, 0, 1, 0], [1, 1, 0, 0]])
        >>> preds = jnp.array([[1, 1, 0, 0], [1, 0, 1, 1]])
        >>> c = binary_confusion_counts(preds, labels, jnp.array([4, 2]))
        >>> [int(v) for v in c]  # tp fp fn tn
        [2, 1, 2, 1]
    """
    reject_mask_as_lengths(lengths, fn="binary_confusion_counts")
    return _confusion(predictions, labels, lengths, mask, from_logits)[0]


def binary_precision_recall_f1(
    predictions: Predictions,
    labels: Int[ArrayLike, "*positions"] | Bool[ArrayLike, "*positions"],
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    mask: Bool[ArrayLike, "*positions"] | Int[ArrayLike, "*positions"] | None = None,
    from_logits: bool = False,
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """Precision, recall and F1 of the positive class on one batch (0/0 := 0.0).

    For a whole data set, accumulate :func:`binary_confusion_counts` over the
    batches and call ``.precision()``, ``.recall()``, ``.f1()`` on the sum.
    Arguments as in :func:`binary_confusion_counts`; under ``jit`` a label
    outside ``{0, 1}`` at a valid position makes all three NaN.

    Example:
        >>> import jax.numpy as jnp
        >>> logits = jnp.array([[2.0, -1.0, 0.5, -3.0]])
        >>> labels = jnp.array([[1, 1, 0, 0]])
        >>> [float(v) for v in binary_precision_recall_f1(logits, labels, from_logits=True)]
        [0.5, 0.5, 0.5]
    """
    reject_mask_as_lengths(lengths, fn="binary_precision_recall_f1")
    counts, num_bad = _confusion(predictions, labels, lengths, mask, from_logits)
    return tuple(  # type: ignore[return-value]
        jnp.where(num_bad > 0, jnp.nan, v)
        for v in (counts.precision(), counts.recall(), counts.f1())
    )


def _accuracy(
    predictions: ArrayLike,
    labels: ArrayLike,
    lengths: ArrayLike | None,
    mask: ArrayLike | None,
    from_logits: bool,
) -> tuple[AccuracyCounts, Array]:
    labels = _check_labels(labels)
    predictions = jnp.asarray(predictions)
    y_hat = predicted_labels(predictions, labels.shape, from_logits=from_logits)
    valid = resolve_mask(lengths, mask, labels.shape, what="labels")
    if not from_logits:
        bad = check_label_range(labels, valid, 0, float("inf"), expected="[0, inf)")
    elif predictions.ndim == labels.ndim + 1 and predictions.shape[-1] > 1:
        C = predictions.shape[-1]
        bad = check_label_range(labels, valid, 0, C, expected=f"[0, C) = [0, {C})")
    else:
        bad = check_label_range(labels, valid, 0, 1, closed=True, expected="{0, 1}")
    counted = _valid(valid, labels.shape) & ~bad
    correct = y_hat == labels.astype(jnp.int32)
    counts = AccuracyCounts(
        jnp.sum(correct & counted, dtype=jnp.int32), jnp.sum(counted, dtype=jnp.int32)
    )
    return counts, jnp.sum(bad, dtype=jnp.int32)


def accuracy_counts(
    predictions: Predictions,
    labels: Int[ArrayLike, "*positions"],
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    mask: Bool[ArrayLike, "*positions"] | Int[ArrayLike, "*positions"] | None = None,
    from_logits: bool = False,
) -> AccuracyCounts:
    """Number of correctly predicted valid positions and of valid positions.

    Labels at valid positions must be class ids: ``>= 0``, below ``C`` for
    ``(..., C)`` logits, in ``{0, 1}`` for binary logits. On concrete arrays
    anything else raises; under ``jit`` such a position is left out of both
    counts and :func:`masked_accuracy` gives NaN.

    Args:
        predictions: predicted labels (shape ``labels.shape``), or logits with
            ``from_logits=True`` (see the module docstring).
        labels: integer/bool class ids, e.g. ``(B, T)``.
        lengths: ``(B,)`` valid lengths in ``[0, T]``.
        mask: keyword-only, instead of ``lengths``: bool (or integer 0/1) of
            ``labels.shape``; ``True`` = counted.
        from_logits: whether ``predictions`` are logits.

    Raises:
        ValueError: on a shape or dtype mismatch, or (concrete arrays) a label
            out of range at a valid position.
        TypeError: a mask passed positionally (``mask`` is keyword-only).

    Example:
        >>> import jax.numpy as jnp
        >>> logits = jnp.array([[[0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])
        >>> c = accuracy_counts(logits, jnp.array([[1, 2, 0]]), jnp.array([2]), from_logits=True)
        >>> int(c.correct), int(c.total)
        (1, 2)
    """
    reject_mask_as_lengths(lengths, fn="accuracy_counts")
    return _accuracy(predictions, labels, lengths, mask, from_logits)[0]


def masked_accuracy(
    predictions: Predictions,
    labels: Int[ArrayLike, "*positions"],
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    mask: Bool[ArrayLike, "*positions"] | Int[ArrayLike, "*positions"] | None = None,
    from_logits: bool = False,
) -> Float[Array, ""]:
    """Fraction of valid positions predicted correctly (0.0 with no valid position).

    Multi-class token accuracy is ``masked_accuracy(logits, labels, lengths,
    from_logits=True)`` with ``logits`` of shape ``(B, T, C)``; many-to-one
    accuracy uses ``(B, C)`` logits and ``(B,)`` labels. Arguments as in
    :func:`accuracy_counts`; under ``jit`` an out-of-range label at a valid
    position gives NaN.

    Example:
        >>> import jax.numpy as jnp
        >>> preds = jnp.array([[1, 2, 3], [0, 0, 0]])
        >>> labels = jnp.array([[1, 2, 0], [0, 5, 5]])
        >>> float(masked_accuracy(preds, labels, jnp.array([3, 1])))
        0.75
    """
    reject_mask_as_lengths(lengths, fn="masked_accuracy")
    counts, num_bad = _accuracy(predictions, labels, lengths, mask, from_logits)
    return jnp.where(num_bad > 0, jnp.nan, counts.accuracy())
