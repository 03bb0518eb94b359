"""Masked metrics for token tagging and classification.

All metrics count valid positions only (``mask`` or ``lengths``, as in
:mod:`rnn_jax.losses`) and are jit-compatible (shape checks happen at trace
time).

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

from rnn_jax._checks import resolve_mask

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
                f"got {tuple(predictions.shape)} (pass from_logits=True for logits)"
            )
        if not (predictions.dtype == jnp.bool_ or jnp.issubdtype(predictions.dtype, jnp.integer)):
            raise ValueError(
                f"`predictions` must be integer or bool labels, got dtype {predictions.dtype} "
                "(pass from_logits=True for logits)"
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
        f"labels.shape + (C,), got {tuple(predictions.shape)}"
    )


def _check_labels(labels: ArrayLike) -> Array:
    labels = jnp.asarray(labels)
    if not (labels.dtype == jnp.bool_ or jnp.issubdtype(labels.dtype, jnp.integer)):
        raise ValueError(f"`labels` must have an integer or bool dtype, got {labels.dtype}")
    return labels


def binary_confusion_counts(
    predictions: Int[Array, "*positions"] | Float[Array, "*positions *C"],
    labels: Int[Array, "*positions"],
    mask: Bool[Array, "*positions"] | None = None,
    *,
    lengths: Int[Array, " B"] | None = None,
    from_logits: bool = False,
) -> ConfusionCounts:
    """Confusion counts of the positive class (label 1) over the valid positions.

    A position is positive when its label is non-zero (so ``labels`` should be
    in ``{0, 1}``; multi-class ids count every non-zero class as positive).

    Args:
        predictions: predicted labels in ``{0, 1}`` (shape ``labels.shape``), or
            logits with ``from_logits=True`` (see the module docstring).
        labels: integer/bool targets, e.g. ``(B, T)``.
        mask: bool of ``labels.shape``; ``True`` = counted.
        lengths: ``(B,)`` valid lengths instead of ``mask``.
        from_logits: whether ``predictions`` are logits.

    Returns:
        Scalar ``int32`` :class:`ConfusionCounts`.

    Example:
        >>> import jax.numpy as jnp
        >>> labels = jnp.array([[1, 0, 1, 0], [1, 1, 0, 0]])
        >>> preds = jnp.array([[1, 1, 0, 0], [1, 0, 1, 1]])
        >>> c = binary_confusion_counts(preds, labels, lengths=jnp.array([4, 2]))
        >>> [int(v) for v in c]  # tp fp fn tn
        [2, 1, 2, 1]
    """
    labels = _check_labels(labels)
    y_hat = predicted_labels(predictions, labels.shape, from_logits=from_logits) != 0
    y = labels != 0
    valid = resolve_mask(lengths, mask, labels.shape, what="labels")
    if valid is None:
        valid = jnp.ones(labels.shape, dtype=jnp.bool_)

    def count(condition: Array) -> Array:
        return jnp.sum(condition & valid, dtype=jnp.int32)

    return ConfusionCounts(
        tp=count(y_hat & y), fp=count(y_hat & ~y), fn=count(~y_hat & y), tn=count(~y_hat & ~y)
    )


def binary_precision_recall_f1(
    predictions: Int[Array, "*positions"] | Float[Array, "*positions *C"],
    labels: Int[Array, "*positions"],
    mask: Bool[Array, "*positions"] | None = None,
    *,
    lengths: Int[Array, " B"] | None = None,
    from_logits: bool = False,
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """Precision, recall and F1 of the positive class on one batch (0/0 := 0.0).

    For a whole data set, accumulate :func:`binary_confusion_counts` over the
    batches and call ``.precision()``, ``.recall()``, ``.f1()`` on the sum.

    Example:
        >>> import jax.numpy as jnp
        >>> logits = jnp.array([[2.0, -1.0, 0.5, -3.0]])
        >>> labels = jnp.array([[1, 1, 0, 0]])
        >>> [float(v) for v in binary_precision_recall_f1(logits, labels, from_logits=True)]
        [0.5, 0.5, 0.5]
    """
    counts = binary_confusion_counts(
        predictions, labels, mask, lengths=lengths, from_logits=from_logits
    )
    return counts.precision(), counts.recall(), counts.f1()


def accuracy_counts(
    predictions: Int[Array, "*positions"] | Float[Array, "*positions *C"],
    labels: Int[Array, "*positions"],
    mask: Bool[Array, "*positions"] | None = None,
    *,
    lengths: Int[Array, " B"] | None = None,
    from_logits: bool = False,
) -> AccuracyCounts:
    """Number of correctly predicted valid positions and of valid positions.

    Example:
        >>> import jax.numpy as jnp
        >>> logits = jnp.array([[[0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])
        >>> c = accuracy_counts(logits, jnp.array([[1, 2, 0]]), lengths=jnp.array([2]),
        ...                     from_logits=True)
        >>> int(c.correct), int(c.total)
        (1, 2)
    """
    labels = _check_labels(labels)
    y_hat = predicted_labels(predictions, labels.shape, from_logits=from_logits)
    correct = y_hat == labels.astype(jnp.int32)
    valid = resolve_mask(lengths, mask, labels.shape, what="labels")
    if valid is None:
        return AccuracyCounts(
            jnp.sum(correct, dtype=jnp.int32), jnp.asarray(correct.size, dtype=jnp.int32)
        )
    return AccuracyCounts(
        jnp.sum(correct & valid, dtype=jnp.int32), jnp.sum(valid, dtype=jnp.int32)
    )


def masked_accuracy(
    predictions: Int[Array, "*positions"] | Float[Array, "*positions *C"],
    labels: Int[Array, "*positions"],
    mask: Bool[Array, "*positions"] | None = None,
    *,
    lengths: Int[Array, " B"] | None = None,
    from_logits: bool = False,
) -> Float[Array, ""]:
    """Fraction of valid positions predicted correctly (0.0 with no valid position).

    Multi-class token accuracy is ``masked_accuracy(logits, labels, mask,
    from_logits=True)`` with ``logits`` of shape ``(B, T, C)``; many-to-one
    accuracy uses ``(B, C)`` logits and ``(B,)`` labels.

    Example:
        >>> import jax.numpy as jnp
        >>> preds = jnp.array([[1, 2, 3], [0, 0, 0]])
        >>> labels = jnp.array([[1, 2, 0], [0, 5, 5]])
        >>> float(masked_accuracy(preds, labels, lengths=jnp.array([3, 1])))
        0.75
    """
    return accuracy_counts(
        predictions, labels, mask, lengths=lengths, from_logits=from_logits
    ).accuracy()
