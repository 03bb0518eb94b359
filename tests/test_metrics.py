"""Tests of rnn_jax.metrics: hand-computed cases, NumPy references, batch accumulation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_jax.metrics import (
    AccuracyCounts,
    ConfusionCounts,
    accuracy_counts,
    binary_confusion_counts,
    binary_precision_recall_f1,
    masked_accuracy,
    predicted_labels,
    safe_divide,
)


def np_counts(pred, label, mask):
    """(tp, fp, fn, tn) by an explicit loop."""
    tp = fp = fn = tn = 0
    for p, y, m in zip(np.ravel(pred), np.ravel(label), np.ravel(mask), strict=True):
        if not m:
            continue
        if p and y:
            tp += 1
        elif p and not y:
            fp += 1
        elif not p and y:
            fn += 1
        else:
            tn += 1
    return tp, fp, fn, tn


def np_prf(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


# ----------------------------------------------------------------------------- hand-computed
def test_hand_computed_binary_example():
    #            valid:  4 steps            2 steps
    labels = np.array([[1, 0, 1, 0, 1], [1, 1, 0, 0, 0]])
    preds = np.array([[1, 1, 0, 0, 1], [1, 0, 1, 1, 1]])
    lengths = np.array([4, 2])
    # row 0 (t<4): (1,1)=tp (1,0)=fp (0,1)=fn (0,0)=tn ; row 1 (t<2): (1,1)=tp (0,1)=fn
    c = binary_confusion_counts(preds, labels, lengths=lengths)
    assert [int(v) for v in c] == [2, 1, 2, 1]
    p, r, f = binary_precision_recall_f1(preds, labels, lengths=lengths)
    np.testing.assert_allclose([p, r, f], [2 / 3, 2 / 4, 2 * 2 / (2 * 2 + 1 + 2)], rtol=1e-6)
    # accuracy = (tp + tn) / 6 = 3 / 6
    np.testing.assert_allclose(masked_accuracy(preds, labels, lengths=lengths), 0.5)
    np.testing.assert_allclose(c.accuracy(), 0.5)


def test_hand_computed_multiclass_token_accuracy():
    logits = jnp.array(
        [
            [[0.1, 0.9, 0.0], [2.0, 0.0, 1.0], [0.0, 0.0, 5.0]],  # argmax 1, 0, 2
            [[1.0, 1.0, 0.0], [0.0, 3.0, 0.0], [9.0, 0.0, 0.0]],  # argmax 0 (tie -> 0), 1, 0
        ]
    )
    labels = jnp.array([[1, 2, 2], [0, 0, 1]])
    mask = jnp.array([[True, True, True], [True, True, False]])
    # correct: (0,0) yes, (0,1) no, (0,2) yes, (1,0) yes, (1,1) no -> 3 / 5
    np.testing.assert_allclose(masked_accuracy(logits, labels, mask=mask, from_logits=True), 0.6)
    c = accuracy_counts(logits, labels, mask=mask, from_logits=True)
    assert (int(c.correct), int(c.total)) == (3, 5)


def test_many_to_one_accuracy_without_mask():
    logits = jnp.array([[0.0, 2.0], [3.0, 1.0], [0.0, 0.5]])
    np.testing.assert_allclose(
        masked_accuracy(logits, jnp.array([1, 1, 1]), from_logits=True), 2 / 3, rtol=1e-6
    )


# ----------------------------------------------------------------------------- numpy reference
@pytest.mark.parametrize("seed", range(5))
def test_counts_match_numpy_loop(seed):
    rng = np.random.default_rng(seed)
    B, T = 5, 7
    labels = rng.integers(0, 2, size=(B, T))
    logits = rng.normal(size=(B, T)).astype(np.float32)
    lengths = rng.integers(0, T + 1, size=(B,))
    mask = np.arange(T)[None, :] < lengths[:, None]
    pred = logits > 0
    tp, fp, fn, tn = np_counts(pred, labels, mask)
    for c in (
        binary_confusion_counts(logits, labels, mask=mask, from_logits=True),
        binary_confusion_counts(logits[..., None], labels, lengths=lengths, from_logits=True),
        binary_confusion_counts(pred.astype(np.int32), labels, mask=mask),
        binary_confusion_counts(pred, labels.astype(bool), mask=mask),
    ):
        assert [int(v) for v in c] == [tp, fp, fn, tn]
    np.testing.assert_allclose(
        binary_precision_recall_f1(logits, labels, mask=mask, from_logits=True),
        np_prf(tp, fp, fn),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        masked_accuracy(logits, labels, mask=mask, from_logits=True),
        (tp + tn) / mask.sum() if mask.sum() else 0.0,
        rtol=1e-6,
    )


def test_two_class_softmax_logits_are_argmax():
    rng = np.random.default_rng(7)
    logits2 = rng.normal(size=(3, 4, 2)).astype(np.float32)
    labels = rng.integers(0, 2, size=(3, 4))
    pred = np.argmax(logits2, axis=-1)
    c = binary_confusion_counts(logits2, labels, from_logits=True)
    assert [int(v) for v in c] == list(np_counts(pred, labels, np.ones((3, 4), bool)))


def test_multiclass_accuracy_matches_numpy():
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(4, 6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(4, 6))
    lengths = np.array([6, 0, 3, 1])
    mask = np.arange(6)[None, :] < lengths[:, None]
    want = np.mean((np.argmax(logits, -1) == labels)[mask])
    np.testing.assert_allclose(
        masked_accuracy(logits, labels, lengths=lengths, from_logits=True), want, rtol=1e-6
    )


# ----------------------------------------------------------------------------- 0/0
def test_zero_division_is_zero():
    labels = jnp.array([[0, 0, 1]])
    # nothing predicted positive: precision 0/0 -> 0; recall 0/1 = 0; f1 0
    p, r, f = binary_precision_recall_f1(jnp.zeros((1, 3), int), labels)
    assert (float(p), float(r), float(f)) == (0.0, 0.0, 0.0)
    # no positive label and none predicted: all 0/0 -> 0
    p, r, f = binary_precision_recall_f1(jnp.zeros((1, 3), int), jnp.zeros((1, 3), int))
    assert (float(p), float(r), float(f)) == (0.0, 0.0, 0.0)
    # no valid token at all
    empty = jnp.zeros((1, 3), bool)
    assert float(masked_accuracy(jnp.ones((1, 3), int), labels, mask=empty)) == 0.0
    c = binary_confusion_counts(jnp.ones((1, 3), int), labels, mask=empty)
    assert [int(v) for v in c] == [0, 0, 0, 0]
    assert all(np.isfinite(float(v)) for v in (c.precision(), c.recall(), c.f1(), c.accuracy()))
    assert float(safe_divide(5, 0)) == 0.0


def test_perfect_prediction():
    labels = jnp.array([[1, 0, 1, 1]])
    p, r, f = binary_precision_recall_f1(labels, labels)
    assert (float(p), float(r), float(f)) == (1.0, 1.0, 1.0)


# ----------------------------------------------------------------------------- accumulation
def test_plus_adds_fields_and_sum_works():
    a = ConfusionCounts(1, 2, 3, 4)
    b = ConfusionCounts(10, 20, 30, 40)
    total = a + b
    assert isinstance(total, ConfusionCounts) and len(total) == 4
    assert [int(v) for v in total] == [11, 22, 33, 44]
    assert [int(v) for v in sum([a, b])] == [11, 22, 33, 44]
    assert [int(v) for v in sum([a, b], ConfusionCounts.zeros())] == [11, 22, 33, 44]
    acc = sum([AccuracyCounts(1, 2), AccuracyCounts(3, 5)])
    assert (int(acc.correct), int(acc.total)) == (4, 7)
    with pytest.raises(TypeError):
        _ = a + (1, 2, 3, 4)


def test_corpus_f1_is_not_mean_of_batch_f1():
    # batch 1: 1 tp, 0 fp, 0 fn -> F1 1.0; batch 2: 1 tp, 9 fp, 0 fn -> F1 2/12
    b1 = binary_confusion_counts(jnp.array([1]), jnp.array([1]))
    b2 = binary_confusion_counts(jnp.ones(10, int), jnp.array([1] + [0] * 9))
    corpus = (b1 + b2).f1()
    np.testing.assert_allclose(corpus, 2 * 2 / (2 * 2 + 9 + 0), rtol=1e-6)  # 4/13
    mean_of_batches = (float(b1.f1()) + float(b2.f1())) / 2
    assert abs(float(corpus) - mean_of_batches) > 0.2


_counts_jit = jax.jit(lambda z, y, m: binary_confusion_counts(z, y, mask=m, from_logits=True))
_acc_jit = jax.jit(lambda z, y, m: accuracy_counts(z, y, mask=m, from_logits=True))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    cuts=st.lists(st.integers(0, 12), min_size=0, max_size=4),
)
def test_accumulated_batches_equal_whole_set(seed, cuts):
    """Summing per-batch counts over any split of the rows == counting the whole set at once."""
    rng = np.random.default_rng(seed)
    N, T, C = 12, 5, 3
    logits = rng.normal(size=(N, T)).astype(np.float32)
    logits_mc = rng.normal(size=(N, T, C)).astype(np.float32)
    labels = rng.integers(0, 2, size=(N, T)).astype(np.int32)
    labels_mc = rng.integers(0, C, size=(N, T)).astype(np.int32)
    mask = rng.random((N, T)) < 0.7
    bounds = [0, *sorted(cuts), N]

    whole = _counts_jit(logits, labels, mask)
    whole_acc = _acc_jit(logits_mc, labels_mc, mask)
    total = ConfusionCounts.zeros()
    total_acc = AccuracyCounts.zeros()
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        # pad every batch back to N rows with masked-out garbage so the jit compiles once
        sl = np.zeros(N, bool)
        sl[a:b] = True
        batch_mask = mask & sl[:, None]
        total = total + _counts_jit(logits, labels, batch_mask)
        total_acc = total_acc + _acc_jit(logits_mc, labels_mc, batch_mask)
    assert [int(v) for v in total] == [int(v) for v in whole]
    assert [int(v) for v in total_acc] == [int(v) for v in whole_acc]
    np.testing.assert_allclose(total.f1(), whole.f1())
    np.testing.assert_allclose(total_acc.accuracy(), whole_acc.accuracy())
    tp, fp, fn, tn = np_counts(logits > 0, labels, mask)
    assert [int(v) for v in whole] == [tp, fp, fn, tn]


def test_counts_are_a_pytree_usable_in_jit_and_scan():
    labels = jnp.array([[1, 0, 1], [0, 1, 1]])
    preds = jnp.array([[1, 1, 0], [0, 1, 1]])

    def step(carry, xs):
        p, y = xs
        return carry + binary_confusion_counts(p, y), None

    total, _ = jax.lax.scan(step, ConfusionCounts.zeros(), (preds, labels))
    assert [int(v) for v in total] == list(np_counts(preds, labels, np.ones((2, 3), bool)))


# ----------------------------------------------------------------------------- errors
def test_errors_are_pinned():
    labels = jnp.zeros((2, 3), int)
    with pytest.raises(
        ValueError, match="`predictions` must be integer or bool labels, got dtype float32"
    ):
        binary_confusion_counts(jnp.zeros((2, 3)), labels)
    with pytest.raises(
        ValueError, match=r"`predictions` must have shape labels.shape = \(2, 3\), got \(3, 2\)"
    ):
        masked_accuracy(jnp.zeros((3, 2), int), labels)
    with pytest.raises(
        ValueError, match=r"`predictions` \(logits\) must have shape labels.shape = \(2, 3\)"
    ):
        masked_accuracy(jnp.zeros((2, 4)), labels, from_logits=True)
    with pytest.raises(
        ValueError, match="`labels` must have an integer or bool dtype, got float32"
    ):
        masked_accuracy(jnp.zeros((2, 3), int), jnp.zeros((2, 3)))
    with pytest.raises(
        ValueError, match=r"`mask` must have shape labels.shape = \(2, 3\), got \(2,\)"
    ):
        binary_confusion_counts(jnp.zeros((2, 3), int), labels, mask=jnp.ones(2, bool))
    with pytest.raises(ValueError, match=r"`lengths` must have shape \(B,\) = \(2,\), got \(1,\)"):
        binary_confusion_counts(jnp.zeros((2, 3), int), labels, lengths=jnp.array([1]))


def test_predicted_labels_rules():
    z = jnp.array([[-0.5, 0.0, 0.5]])
    assert predicted_labels(z, (1, 3), from_logits=True).tolist() == [[0, 0, 1]]
    assert predicted_labels(z[..., None], (1, 3), from_logits=True).tolist() == [[0, 0, 1]]
    two = jnp.stack([jnp.zeros_like(z), z], axis=-1)  # softmax over (0, z): class 1 iff z > 0
    assert predicted_labels(two, (1, 3), from_logits=True).tolist() == [[0, 0, 1]]


# ----------------------------------------------------------------------------- convention
_METRICS = [masked_accuracy, accuracy_counts, binary_confusion_counts, binary_precision_recall_f1]


@pytest.mark.parametrize("metric", _METRICS, ids=lambda f: f.__name__)
def test_lengths_third_positional_mask_keyword_only(metric):
    preds = jnp.array([[1, 0, 1], [0, 1, 1]])
    labels = jnp.array([[1, 1, 0], [0, 0, 1]])
    lengths = jnp.array([2, 3])
    mask = np.arange(3)[None, :] < np.asarray(lengths)[:, None]
    by_lengths = metric(preds, labels, lengths)
    for m in (mask, mask.astype(np.int32)):
        for a, b in zip(
            jax.tree.leaves(by_lengths), jax.tree.leaves(metric(preds, labels, mask=m)), strict=True
        ):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match=r"`mask` is keyword-only now, pass mask=\.\.\."):
        metric(preds, labels, mask)
    with pytest.raises(TypeError, match=r"`mask` is keyword-only now"):
        metric(preds, labels, mask.astype(np.int32))
    with pytest.raises(ValueError, match=r"`lengths` must lie in \[0, T\] = \[0, 3\]"):
        metric(preds, labels, jnp.array([2, 4]))


@pytest.mark.parametrize("metric", _METRICS, ids=lambda f: f.__name__)
def test_empty_batch_gives_zeros(metric):
    out = metric(jnp.zeros((0, 3), int), jnp.zeros((0, 3), int), jnp.zeros((0,), int))
    assert all(float(v) == 0.0 for v in jax.tree.leaves(out))


# ----------------------------------------------------------------------------- label values
def test_confusion_counts_reject_labels_outside_0_1():
    preds = jnp.array([[1, 1, 0], [0, 1, 1]])
    lengths = jnp.array([3, 1])  # row 1 is padding after t = 0: anything goes there
    for bad in (-1, 2):
        labels = jnp.array([[1, bad, 0], [0, 7, -3]])
        with pytest.raises(
            ValueError, match=r"`labels` must lie in \{0, 1\} at valid positions, got values in"
        ):
            binary_confusion_counts(preds, labels, lengths)
        counts = jax.jit(lambda p, y: binary_confusion_counts(p, y, lengths))(preds, labels)
        assert [int(v) for v in counts] == [1, 0, 0, 2]  # the bad position is never a positive
        prf = jax.jit(lambda p, y: binary_precision_recall_f1(p, y, lengths))(preds, labels)
        assert all(np.isnan(float(v)) for v in prf)
    with pytest.raises(ValueError, match=r"`predictions` must lie in \{0, 1\} at valid positions"):
        binary_confusion_counts(preds.at[0, 0].set(2), jnp.zeros((2, 3), int), lengths)
    with pytest.raises(ValueError, match=r"`predictions` must be binary logits"):
        binary_confusion_counts(jnp.zeros((2, 3, 3)), jnp.zeros((2, 3), int), from_logits=True)
    ok = jnp.array([[1, 0, 0], [0, 7, -3]])
    assert [int(v) for v in binary_confusion_counts(preds, ok, lengths)] == [1, 1, 0, 2]


def test_accuracy_rejects_labels_out_of_range():
    logits = jnp.zeros((1, 3, 4))
    with pytest.raises(
        ValueError, match=r"`labels` must lie in \[0, C\) = \[0, 4\) at valid positions"
    ):
        masked_accuracy(logits, jnp.array([[0, 4, 9]]), jnp.array([2]), from_logits=True)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, inf\) at valid positions"):
        masked_accuracy(jnp.array([[0, -1]]), jnp.array([[0, -1]]))
    value = jax.jit(lambda y: masked_accuracy(logits, y, jnp.array([2]), from_logits=True))(
        jnp.array([[0, 4, 9]])
    )
    assert np.isnan(float(value))
    assert (
        float(masked_accuracy(logits, jnp.array([[0, 3, 9]]), jnp.array([2]), from_logits=True))
        == 0.5
    )
