"""Tests of rnn_jax.losses against NumPy float64 references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_jax._checks import resolve_mask
from rnn_jax.losses import (
    masked_mean_squared_error,
    masked_sigmoid_binary_cross_entropy,
    masked_softmax_cross_entropy,
)

RTOL = 1e-5
ATOL = 1e-6


# ----------------------------------------------------------------------------- references
def ref_softmax_ce(logits, labels, mask):
    """Per-position -log softmax(z)_y by explicit float64 loops; 0 where mask is False."""
    logits = np.asarray(logits, dtype=np.float64)
    out = np.zeros(labels.shape, dtype=np.float64)
    for idx in np.ndindex(labels.shape):
        if not mask[idx]:
            continue
        z = logits[idx]
        m = z.max()
        log_norm = m + np.log(np.sum(np.exp(z - m)))
        out[idx] = log_norm - z[labels[idx]]
    return out


def ref_bce(logits, labels, mask, pos_weight=1.0):
    out = np.zeros(labels.shape, dtype=np.float64)
    for idx in np.ndindex(labels.shape):
        if not mask[idx]:
            continue
        z = float(logits[idx])
        y = float(labels[idx])
        p = 1.0 / (1.0 + np.exp(-z))
        out[idx] = -(pos_weight * y * np.log(p) + (1.0 - y) * np.log(1.0 - p))
    return out


def reduce_ref(per, mask, reduction):
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    n = mask.sum()
    return per.sum() / n if n else 0.0


def lengths_mask(lengths, T):
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    B, T, C = 3, 5, 4
    logits = rng.normal(size=(B, T, C)).astype(np.float32) * 3
    labels = rng.integers(0, C, size=(B, T)).astype(np.int32)
    lengths = np.array([5, 2, 0], dtype=np.int32)
    return logits, labels, lengths


# ----------------------------------------------------------------------------- softmax CE
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_ce_matches_float64_reference(batch, reduction):
    logits, labels, lengths = batch
    mask = lengths_mask(lengths, labels.shape[1])
    want = reduce_ref(ref_softmax_ce(logits, labels, mask), mask, reduction)
    got_mask = masked_softmax_cross_entropy(logits, labels, mask=mask, reduction=reduction)
    got_len = masked_softmax_cross_entropy(logits, labels, lengths=lengths, reduction=reduction)
    np.testing.assert_allclose(got_mask, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got_len, want, rtol=RTOL, atol=ATOL)


def test_softmax_ce_hand_computed_value():
    # uniform logits over C=4 classes: every valid step costs log 4; padding label -1 ignored
    loss = masked_softmax_cross_entropy(
        jnp.zeros((2, 3, 4)), jnp.array([[0, 1, -1], [3, -1, -1]]), lengths=jnp.array([2, 1])
    )
    np.testing.assert_allclose(loss, np.log(4.0), rtol=1e-6)


def test_softmax_ce_mean_is_token_level_not_mean_of_sequences():
    logits = jnp.array([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], [[5.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    labels = jnp.zeros((2, 3), dtype=jnp.int32)
    lengths = jnp.array([3, 1])
    per = ref_softmax_ce(logits, np.zeros((2, 3), int), lengths_mask([3, 1], 3))
    want = per.sum() / 4  # 4 valid tokens
    mean_of_means = (per[0, :3].mean() + per[1, :1].mean()) / 2
    got = masked_softmax_cross_entropy(logits, labels, lengths=lengths)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    assert abs(float(got) - mean_of_means) > 1e-3


def test_softmax_ce_many_to_one_without_mask():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=(6,)).astype(np.int32)
    want = ref_softmax_ce(logits, labels, np.ones(6, bool)).mean()
    np.testing.assert_allclose(masked_softmax_cross_entropy(logits, labels), want, rtol=RTOL)
    mask = np.array([1, 0, 1, 1, 0, 0], bool)
    want_m = ref_softmax_ce(logits, labels, mask).sum() / 3
    np.testing.assert_allclose(
        masked_softmax_cross_entropy(logits, labels, mask=mask), want_m, rtol=RTOL
    )


def test_softmax_ce_jit_equals_eager(batch):
    logits, labels, lengths = batch
    f = jax.jit(lambda z, y, n: masked_softmax_cross_entropy(z, y, lengths=n))
    np.testing.assert_allclose(
        f(logits, labels, lengths),
        masked_softmax_cross_entropy(logits, labels, lengths=lengths),
        rtol=1e-6,
    )


@pytest.mark.parametrize("garbage", [1e30, -1e30, np.inf, np.nan])
def test_softmax_ce_padding_invariance_loss_and_gradient(batch, garbage):
    logits, labels, lengths = batch
    mask = lengths_mask(lengths, labels.shape[1])
    dirty = np.where(mask[..., None], logits, np.float32(garbage)).astype(np.float32)
    dirty_labels = np.where(mask, labels, 12345).astype(np.int32)  # out of range at padding

    def loss(z, y):
        return masked_softmax_cross_entropy(z, y, mask=mask)

    clean_val, clean_grad = jax.value_and_grad(loss)(jnp.asarray(logits), labels)
    dirty_val, dirty_grad = jax.value_and_grad(loss)(jnp.asarray(dirty), dirty_labels)
    assert np.isfinite(dirty_val)
    np.testing.assert_array_equal(dirty_val, clean_val)
    np.testing.assert_array_equal(dirty_grad, clean_grad)
    assert np.all(np.asarray(dirty_grad)[~mask] == 0.0)
    # a real gradient flows at valid positions
    assert np.any(np.asarray(dirty_grad)[mask] != 0.0)


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda m: masked_softmax_cross_entropy(jnp.ones((2, 3, 4)), jnp.zeros((2, 3), int), mask=m),
        lambda m: masked_sigmoid_binary_cross_entropy(jnp.ones((2, 3)), jnp.ones((2, 3)), mask=m),
        lambda m: masked_mean_squared_error(jnp.ones((2, 3)), jnp.zeros((2, 3)), mask=m),
    ],
    ids=["softmax", "sigmoid", "mse"],
)
def test_no_valid_token_returns_zero_not_nan(loss_fn):
    out = loss_fn(jnp.zeros((2, 3), dtype=bool))
    assert out.shape == ()
    assert float(out) == 0.0


def test_no_valid_token_gradient_is_zero():
    def loss(z):
        return masked_softmax_cross_entropy(z, jnp.zeros((2, 3), int), lengths=jnp.array([0, 0]))

    g = jax.grad(loss)(jnp.full((2, 3, 4), jnp.nan))
    np.testing.assert_array_equal(g, np.zeros((2, 3, 4)))


def test_integer_mask_is_accepted(batch):
    logits, labels, lengths = batch
    mask = lengths_mask(lengths, labels.shape[1])
    np.testing.assert_allclose(
        masked_softmax_cross_entropy(logits, labels, mask=mask.astype(np.int32)),
        masked_softmax_cross_entropy(logits, labels, mask=mask),
    )


# ----------------------------------------------------------------------------- sigmoid BCE
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [None, 1.0, 4.5])
def test_sigmoid_bce_matches_float64_reference(reduction, pos_weight):
    rng = np.random.default_rng(2)
    B, T = 4, 6
    logits = (rng.normal(size=(B, T)) * 4).astype(np.float32)
    labels = rng.integers(0, 2, size=(B, T)).astype(np.int32)
    lengths = np.array([6, 3, 1, 0], np.int32)
    mask = lengths_mask(lengths, T)
    w = 1.0 if pos_weight is None else pos_weight
    want = reduce_ref(ref_bce(logits, labels, mask, w), mask, reduction)
    got = masked_sigmoid_binary_cross_entropy(
        logits, labels, lengths=lengths, pos_weight=pos_weight, reduction=reduction
    )
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    got_3d = masked_sigmoid_binary_cross_entropy(
        logits[..., None], labels, mask=mask, pos_weight=pos_weight, reduction=reduction
    )
    np.testing.assert_allclose(got_3d, want, rtol=RTOL, atol=ATOL)


def test_sigmoid_bce_hand_computed_pos_weight():
    # z = 0: log σ = log(1 - σ) = -log 2; positive term weighted 3, negative 1
    loss = masked_sigmoid_binary_cross_entropy(
        jnp.zeros((1, 2)), jnp.array([[1, 0]]), pos_weight=3.0, reduction="none"
    )
    np.testing.assert_allclose(loss, [[3 * np.log(2), np.log(2)]], rtol=1e-6)


def test_sigmoid_bce_is_stable_for_large_valid_logits():
    loss = masked_sigmoid_binary_cross_entropy(
        jnp.array([[100.0, -100.0]]), jnp.array([[0, 1]]), reduction="none"
    )
    np.testing.assert_allclose(loss, [[100.0, 100.0]], rtol=1e-6)


@pytest.mark.parametrize("garbage", [1e30, np.inf, np.nan])
def test_sigmoid_bce_padding_invariance(garbage):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 4)).astype(np.float32)
    labels = rng.integers(0, 2, size=(3, 4)).astype(np.float32)
    mask = lengths_mask([4, 1, 2], 4)
    dirty = np.where(mask, logits, np.float32(garbage))
    dirty_labels = np.where(mask, labels, np.float32(np.nan))

    def loss(z, y):
        return masked_sigmoid_binary_cross_entropy(z, y, mask=mask, pos_weight=2.0)

    clean = jax.value_and_grad(loss)(jnp.asarray(logits), labels)
    dirty_out = jax.value_and_grad(loss)(jnp.asarray(dirty), dirty_labels)
    np.testing.assert_array_equal(dirty_out[0], clean[0])
    np.testing.assert_array_equal(dirty_out[1], clean[1])
    assert np.all(np.asarray(dirty_out[1])[~mask] == 0.0)


# ----------------------------------------------------------------------------- MSE
def test_mse_matches_reference_with_features():
    rng = np.random.default_rng(4)
    preds = rng.normal(size=(3, 5, 2)).astype(np.float32)
    targets = rng.normal(size=(3, 5, 2)).astype(np.float32)
    lengths = np.array([5, 2, 4])
    mask = lengths_mask(lengths, 5)
    sq = (preds.astype(np.float64) - targets) ** 2
    per = np.where(mask, sq.mean(-1), 0.0)
    np.testing.assert_allclose(
        masked_mean_squared_error(preds, targets, lengths=lengths),
        per.sum() / mask.sum(),
        rtol=RTOL,
    )
    np.testing.assert_allclose(
        masked_mean_squared_error(preds, targets, mask=mask, reduction="none"),
        per,
        rtol=RTOL,
        atol=ATOL,
    )
    np.testing.assert_allclose(
        masked_mean_squared_error(preds, targets, mask=mask, reduction="sum"), per.sum(), rtol=RTOL
    )
    # mean over valid positions == mean over their elements
    np.testing.assert_allclose(
        masked_mean_squared_error(preds, targets, mask=mask), sq[mask].mean(), rtol=RTOL
    )


def test_mse_without_mask_is_plain_mean():
    rng = np.random.default_rng(5)
    preds = rng.normal(size=(4, 3)).astype(np.float32)
    targets = rng.normal(size=(4, 3)).astype(np.float32)
    want = np.mean((preds.astype(np.float64) - targets) ** 2)
    np.testing.assert_allclose(masked_mean_squared_error(preds, targets), want, rtol=RTOL)


def test_mse_padding_invariance():
    preds = jnp.array([[1.0, 2.0, jnp.nan], [3.0, jnp.inf, 1e30]])
    targets = jnp.array([[0.0, 1.0, 7.0], [jnp.nan, 0.0, 0.0]])
    mask = jnp.array([[True, True, False], [False, False, False]])
    val, grad = jax.value_and_grad(masked_mean_squared_error)(preds, targets, mask=mask)
    np.testing.assert_allclose(val, (1.0 + 1.0) / 2)
    np.testing.assert_array_equal(grad, [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


# ----------------------------------------------------------------------------- properties
_B, _T, _C = 4, 6, 5
_ce_mean = jax.jit(lambda z, y, m: masked_softmax_cross_entropy(z, y, mask=m))
_ce_sum = jax.jit(lambda z, y, m: masked_softmax_cross_entropy(z, y, mask=m, reduction="sum"))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), p_valid=st.sampled_from([0.0, 0.3, 0.7, 1.0]))
def test_masked_loss_depends_only_on_the_valid_tokens(seed, p_valid):
    """Masked mean over (B, T) == masked mean of the valid tokens packed to the front of (B·T,).

    Shapes are fixed so that the jitted losses compile once; the packed array's
    tail holds different garbage, which must not matter either.
    """
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(_B, _T, _C)).astype(np.float32) * 3
    labels = rng.integers(0, _C, size=(_B, _T)).astype(np.int32)
    mask = rng.random((_B, _T)) < p_valid
    n = int(mask.sum())
    packed = rng.normal(size=(_B * _T, _C)).astype(np.float32) * 100
    packed_labels = rng.integers(-3, 9, size=(_B * _T,)).astype(np.int32)
    packed[:n] = logits[mask]
    packed_labels[:n] = labels[mask]
    packed_mask = np.arange(_B * _T) < n

    got = _ce_mean(logits, labels, mask)
    np.testing.assert_allclose(
        got, _ce_mean(packed, packed_labels, packed_mask), rtol=RTOL, atol=ATOL
    )
    want = ref_softmax_ce(logits, labels, mask).sum() / max(n, 1)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got * max(n, 1), _ce_sum(logits, labels, mask), rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- errors
def test_shape_errors_are_pinned():
    z = jnp.zeros((2, 3, 4))
    y = jnp.zeros((2, 3), int)
    with pytest.raises(
        ValueError, match=r"`labels` must have shape logits.shape\[:-1\] = \(2, 3\), got \(2, 4\)"
    ):
        masked_softmax_cross_entropy(z, jnp.zeros((2, 4), int))
    with pytest.raises(
        ValueError, match=r"`mask` must have shape labels.shape = \(2, 3\), got \(3,\)"
    ):
        masked_softmax_cross_entropy(z, y, mask=jnp.ones((3,), bool))
    with pytest.raises(ValueError, match=r"`lengths` must have shape \(B,\) = \(2,\), got \(3,\)"):
        masked_softmax_cross_entropy(z, y, lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match="either `lengths` or `mask`, not both"):
        masked_softmax_cross_entropy(z, y, mask=jnp.ones((2, 3), bool), lengths=jnp.array([1, 2]))
    with pytest.raises(ValueError, match="`labels` must have an integer dtype, got float32"):
        masked_softmax_cross_entropy(z, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        masked_softmax_cross_entropy(z, y, reduction="avg")
    with pytest.raises(ValueError, match="`mask` must be boolean .* got dtype float32"):
        masked_softmax_cross_entropy(z, y, mask=jnp.ones((2, 3)))
    with pytest.raises(
        ValueError,
        match=r"`logits` must have shape labels.shape = \(2, 3\) or labels.shape \+ \(1,\) = \(2, 3, 1\), got \(2, 3, 2\)",
    ):
        masked_sigmoid_binary_cross_entropy(jnp.zeros((2, 3, 2)), y)
    with pytest.raises(ValueError, match=r"`pos_weight` must be a scalar, got shape \(2,\)"):
        masked_sigmoid_binary_cross_entropy(jnp.zeros((2, 3)), y, pos_weight=jnp.ones(2))
    with pytest.raises(
        ValueError, match=r"`targets` must have shape preds.shape = \(2, 3\), got \(3, 2\)"
    ):
        masked_mean_squared_error(jnp.zeros((2, 3)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"`mask` must have a prefix of preds.shape"):
        masked_mean_squared_error(
            jnp.zeros((2, 3, 2)), jnp.zeros((2, 3, 2)), mask=jnp.ones((3,), bool)
        )
    with pytest.raises(ValueError, match=r"`lengths` needs labels with two position axes"):
        resolve_mask(jnp.array([1]), None, (4,), what="labels")


def test_shape_errors_raise_under_jit():
    f = jax.jit(lambda z, y: masked_softmax_cross_entropy(z, y))
    with pytest.raises(ValueError, match=r"`labels` must have shape logits.shape\[:-1\]"):
        f(jnp.zeros((2, 3, 4)), jnp.zeros((3, 2), int))


def test_no_silent_broadcast_of_mask():
    # a (B, 1) mask would broadcast in NumPy; here it is an error
    with pytest.raises(ValueError, match="`mask` must have a prefix of preds.shape"):
        masked_mean_squared_error(jnp.zeros((2, 3)), jnp.zeros((2, 3)), mask=jnp.ones((2, 1), bool))
    with pytest.raises(
        ValueError, match=r"`mask` must have shape labels.shape = \(2, 3\), got \(2, 1\)"
    ):
        masked_softmax_cross_entropy(
            jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), int), mask=jnp.ones((2, 1), bool)
        )


# ----------------------------------------------------------------------------- convention
_LOSSES = [
    (masked_softmax_cross_entropy, lambda: (jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), int))),
    (masked_sigmoid_binary_cross_entropy, lambda: (jnp.zeros((2, 3)), jnp.zeros((2, 3), int))),
    (masked_mean_squared_error, lambda: (jnp.zeros((2, 3)), jnp.zeros((2, 3)))),
]


@pytest.mark.parametrize("loss, args", _LOSSES, ids=lambda v: getattr(v, "__name__", ""))
def test_lengths_third_positional_mask_keyword_only(loss, args):
    x, y = args()
    lengths = jnp.array([2, 1])
    mask = np.arange(3)[None, :] < np.asarray(lengths)[:, None]
    by_lengths = loss(x, y, lengths)
    np.testing.assert_allclose(by_lengths, loss(x, y, mask=mask))
    np.testing.assert_allclose(by_lengths, loss(x, y, mask=mask.astype(np.int32)))
    with pytest.raises(TypeError, match=r"`mask` is keyword-only now, pass mask=\.\.\."):
        loss(x, y, mask)  # the old positional mask (boolean)
    with pytest.raises(TypeError, match=r"`mask` is keyword-only now"):
        loss(x, y, mask.astype(np.int32))  # an old integer 0/1 mask: two axes
    with pytest.raises(TypeError, match=r"`mask` is keyword-only now"):
        jax.jit(lambda m: loss(x, y, m))(mask)  # the check is static: also under jit
    with pytest.raises(
        ValueError, match=r"`lengths` must lie in \[0, T\] = \[0, 3\], got .*\[2, 4\]"
    ):
        loss(x, y, jnp.array([2, 4]))
    with pytest.raises(
        ValueError, match=r"`lengths` must lie in \[0, T\] = \[0, 3\], got .*\[-1, 2\]"
    ):
        loss(x, y, jnp.array([-1, 2]))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss, args", _LOSSES, ids=lambda v: getattr(v, "__name__", ""))
def test_empty_batch_gives_zero_and_zero_gradients(loss, args, reduction):
    x, y = args()
    x, y = x[:0], y[:0]
    for mask in (None, jnp.zeros((0, 3), bool)):
        value, grad = jax.value_and_grad(loss)(x, y, mask=mask, reduction=reduction)
        assert float(value) == 0.0
        assert grad.shape == x.shape and not np.asarray(grad).any()
    value, grad = jax.value_and_grad(
        lambda z: loss(z, y, jnp.zeros((0,), int), reduction=reduction)
    )(x)
    assert float(value) == 0.0 and grad.shape == x.shape
    no_valid = jax.grad(lambda z: loss(z, y[:0], reduction=reduction))  # B = 0 under jit too
    assert jax.jit(no_valid)(x).shape == x.shape


# ----------------------------------------------------------------------------- label values
def test_softmax_ce_labels_out_of_range_at_valid_steps_raise():
    z = jnp.zeros((2, 3, 5))
    lengths = jnp.array([3, 1])
    for bad in (-1, 5):
        y = jnp.array([[0, 1, bad], [3, -7, 99]])  # padding (row 1, t >= 1) may hold anything
        with pytest.raises(
            ValueError,
            match=rf"`labels` must lie in \[0, C\) = \[0, 5\) at valid positions, "
            rf"got values in \[{min(bad, 0)}, {max(bad, 3)}\]\.",
        ):
            masked_softmax_cross_entropy(z, y, lengths)
    y_ok = jnp.array([[0, 1, 4], [3, -7, 99]])
    assert np.isfinite(float(masked_softmax_cross_entropy(z, y_ok, lengths)))


@pytest.mark.parametrize("bad", [-1, 5, 2**20])
def test_softmax_ce_bad_label_under_jit_is_nan_value_and_gradient(bad):
    z = jax.random.normal(jax.random.key(0), (2, 3, 5))
    y = jnp.array([[0, 1, bad], [3, -7, 99]])
    lengths = jnp.array([3, 1])
    f = jax.jit(jax.value_and_grad(lambda z, y: masked_softmax_cross_entropy(z, y, lengths)))
    value, grad = f(z, y)
    assert np.isnan(float(value))
    assert np.isnan(np.asarray(grad)).any()
    # padding still never matters under jit
    value, grad = f(z, y.at[0, 2].set(4))
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()


def test_binary_ce_labels_outside_0_1_raise_and_are_nan_under_jit():
    z = jnp.zeros((2, 3))
    lengths = jnp.array([3, 1])
    for y in (jnp.array([[0, 2, 1], [1, 5, 5]]), jnp.array([[0.0, -0.5, 1.0], [1.0, 5.0, 5.0]])):
        with pytest.raises(
            ValueError, match=r"`labels` must lie in \[0, 1\] .* at valid positions"
        ):
            masked_sigmoid_binary_cross_entropy(z, y, lengths)
        value = jax.jit(lambda z, y: masked_sigmoid_binary_cross_entropy(z, y, lengths))(z, y)
        assert np.isnan(float(value))
    soft = jnp.array([[0.0, 0.25, 1.0], [1.0, 5.0, -3.0]])  # soft labels; padding ignored
    assert np.isfinite(float(masked_sigmoid_binary_cross_entropy(z, soft, lengths)))
    with pytest.raises(ValueError, match=r"got NaN\."):
        masked_sigmoid_binary_cross_entropy(z, soft.at[0, 0].set(jnp.nan), lengths)
