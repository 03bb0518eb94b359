"""Tests of rnn_jax.ctc: the loss against hand computation and path enumeration, decoders, learning."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax import init_rnn, rnn_apply
from rnn_jax.ctc import ctc_greedy_decode, ctc_loss, ctc_prefix_beam_search, rnn_ctc_loss
from rnn_jax.train import optimizer_step


def _collapse(path, blank=0):
    out, prev = [], None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return tuple(out)


def _enumerate_label_probs(log_probs):
    """p(l | x) for every labelling l, by summing over all C^T paths (float64)."""
    T, C = log_probs.shape
    probs = {}
    for path in itertools.product(range(C), repeat=T):
        p = np.exp(sum(log_probs[t, c] for t, c in enumerate(path)))
        key = _collapse(path)
        probs[key] = probs.get(key, 0.0) + p
    return probs


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    return (
        z
        - z.max(-1, keepdims=True)
        - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    )


def test_hand_computed_example():
    # T = 2, C = 2: blank 0 and "a" = 1. p(blank) = 0.3 then 0.6.
    p = np.array([[0.3, 0.7], [0.6, 0.4]])
    # "a" <- (a, a), (a, _), (_, a)
    p_a = 0.7 * 0.4 + 0.7 * 0.6 + 0.3 * 0.4
    loss = ctc_loss(jnp.log(jnp.asarray(p, jnp.float32))[None], jnp.array([2]),
                    jnp.array([[1]]), jnp.array([1]), reduction="none")  # fmt: skip
    np.testing.assert_allclose(float(loss[0]), -np.log(p_a), rtol=1e-5)
    # "a a" needs a blank between: in T = 3 only (a, _, a)
    p3 = np.array([[0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    loss = ctc_loss(jnp.log(jnp.asarray(p3, jnp.float32))[None], jnp.array([3]),
                    jnp.array([[1, 1]]), jnp.array([2]), reduction="none")  # fmt: skip
    np.testing.assert_allclose(float(loss[0]), -np.log(0.7 * 0.6 * 0.9), rtol=1e-5)
    # the empty labelling: all blanks
    loss = ctc_loss(jnp.log(jnp.asarray(p3, jnp.float32))[None], jnp.array([3]),
                    jnp.zeros((1, 1), jnp.int32), jnp.array([0]), reduction="none")  # fmt: skip
    np.testing.assert_allclose(float(loss[0]), -np.log(0.3 * 0.6 * 0.1), rtol=1e-5)


def test_matches_path_enumeration_with_padding():
    rng = np.random.default_rng(0)
    B, T, C, S = 4, 5, 3, 3
    logits = rng.normal(size=(B, T, C)).astype(np.float32)
    logit_lengths = np.array([5, 4, 2, 3])
    labels = np.array([[1, 2, 1], [2, 2, 0], [1, 0, 0], [0, 0, 0]])
    label_lengths = np.array([3, 2, 1, 0])
    # garbage in the padding changes nothing
    noisy = logits.copy()
    for b in range(B):
        noisy[b, logit_lengths[b] :] = 1e3 * rng.normal(size=(T - logit_lengths[b], C))
    labels_noisy = np.where(np.arange(S)[None] < label_lengths[:, None], labels, 7)
    loss = ctc_loss(jnp.asarray(noisy), jnp.asarray(logit_lengths), jnp.asarray(labels_noisy),
                    jnp.asarray(label_lengths), reduction="none")  # fmt: skip
    for b in range(B):
        probs = _enumerate_label_probs(_log_softmax(logits[b, : logit_lengths[b]]))
        target = tuple(labels[b, : label_lengths[b]])
        np.testing.assert_allclose(float(loss[b]), -np.log(probs[target]), rtol=1e-4)
    mean = ctc_loss(jnp.asarray(logits), jnp.asarray(logit_lengths), jnp.asarray(labels),
                    jnp.asarray(label_lengths))  # fmt: skip
    np.testing.assert_allclose(float(mean), float(jnp.mean(loss)), rtol=1e-5)
    per_label = ctc_loss(jnp.asarray(logits), jnp.asarray(logit_lengths), jnp.asarray(labels),
                         jnp.asarray(label_lengths), reduction="mean_per_label")  # fmt: skip
    np.testing.assert_allclose(
        float(per_label),
        float(jnp.mean(loss / jnp.maximum(jnp.asarray(label_lengths), 1).astype(loss.dtype))),
        rtol=1e-5,
    )


def test_greedy_decode():
    # best path: a a _ b b _ _ a (padding) -> "a b" for length 7
    best = np.array([[1, 1, 0, 2, 2, 0, 0, 1], [2, 0, 2, 2, 1, 1, 0, 0]])
    logits = jnp.asarray(np.eye(3)[best] * 5.0, jnp.float32)
    labels, lengths = ctc_greedy_decode(logits, jnp.array([7, 8]))
    assert lengths.tolist() == [2, 3]
    assert labels.tolist() == [[1, 2, -1, -1, -1, -1, -1, -1], [2, 2, 1, -1, -1, -1, -1, -1]]
    labels, lengths = ctc_greedy_decode(logits, jnp.array([0, 1]))  # empty inputs
    assert lengths.tolist() == [0, 1] and labels[0].tolist() == [-1] * 8
    labels, lengths = ctc_greedy_decode(jnp.zeros((0, 4, 3)), jnp.zeros((0,), jnp.int32))
    assert labels.shape == (0, 4) and lengths.shape == (0,)


@pytest.mark.parametrize("seed", range(3))
def test_prefix_beam_search_is_exact_with_a_wide_beam(seed):
    rng = np.random.default_rng(seed)
    log_probs = _log_softmax(rng.normal(size=(4, 3)) * 2.0)
    probs = _enumerate_label_probs(log_probs)
    out = ctc_prefix_beam_search(log_probs, beam_width=1000)
    assert len(out) == len(probs)
    for labelling, lp in out:
        np.testing.assert_allclose(np.exp(lp), probs[labelling], rtol=1e-9)
    best = max(probs, key=probs.get)
    assert out[0][0] == best
    # a narrow beam still returns sorted, valid probabilities
    narrow = ctc_prefix_beam_search(log_probs, beam_width=2)
    assert len(narrow) <= 2 and narrow[0][1] >= narrow[-1][1]


def test_prefix_beam_can_beat_best_path():
    # best path is "_ _" (p = .36) but "a" collects .16*3 + ... = 0.64 over three paths
    log_probs = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    labels, _ = ctc_greedy_decode(jnp.asarray(log_probs, jnp.float32)[None], jnp.array([2]))
    assert labels[0].tolist() == [-1, -1]
    out = ctc_prefix_beam_search(log_probs, beam_width=4)
    assert out[0][0] == (1,) and np.isclose(np.exp(out[0][1]), 0.64)


def test_prefix_beam_empty_input():
    assert ctc_prefix_beam_search(np.zeros((0, 3))) == [((), 0.0)]


def _alignment_task(rng, n, T=16, S_max=4, symbols=3):
    """Frames: each label held for 1-2 steps, gaps of silence (zero frames) in between."""
    D = symbols + 1
    xs = np.zeros((n, T, D), np.float32)
    labels = np.zeros((n, S_max), np.int32)
    xl, ll = np.zeros(n, np.int32), np.zeros(n, np.int32)
    for i in range(n):
        S = rng.integers(1, S_max + 1)
        seq = rng.integers(1, symbols + 1, size=S)
        t = 0
        for s in seq:
            t += rng.integers(0, 2)  # optional silence
            for _ in range(rng.integers(1, 3)):
                xs[i, t, s] = 1.0
                t += 1
            xs[i, t, 0] = 1.0  # a silence frame separates labels (so "a a" is visible)
            t += 1
        xs[i] += 0.1 * rng.normal(size=(T, D)).astype(np.float32) * (np.arange(T) < t)[:, None]
        labels[i, :S], ll[i], xl[i] = seq, S, t
    return jnp.asarray(xs), jnp.asarray(xl), jnp.asarray(labels), jnp.asarray(ll)


def test_an_rnn_learns_an_alignment_with_ctc():
    rng = np.random.default_rng(0)
    params = init_rnn(jax.random.key(0), 4, 24, 4)  # C = 3 labels + blank
    opt = optax.adam(2e-2)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        loss, g = jax.value_and_grad(rnn_ctc_loss)(params, *batch)
        params, opt_state = optimizer_step(opt, g, opt_state, params)
        return params, opt_state, loss

    for _ in range(200):
        params, opt_state, loss = step(params, opt_state, _alignment_task(rng, 32))
    xs, xl, labels, ll = _alignment_task(rng, 200)
    decoded, lengths = ctc_greedy_decode(jax.jit(rnn_apply)(params, xs, xl), xl)
    exact = [
        lengths[i] == ll[i] and decoded[i, : ll[i]].tolist() == labels[i, : ll[i]].tolist()
        for i in range(200)
    ]
    assert np.mean(exact) > 0.9, (np.mean(exact), float(loss))


def test_errors_name_the_argument():
    logits = jnp.zeros((2, 4, 3))
    with pytest.raises(ValueError, match=r"`logits` must be floats of shape \(B, T, C\)"):
        ctc_loss(logits[0], jnp.array([4]), jnp.zeros((1, 2), jnp.int32), jnp.array([1]))
    with pytest.raises(
        ValueError, match=r"`labels` must be integer ids of shape \(B, S\) with B = 2"
    ):
        ctc_loss(logits, jnp.array([4, 4]), jnp.zeros((3, 2), jnp.int32), jnp.array([1, 1]))
    with pytest.raises(ValueError, match=r"`logit_lengths` must have shape \(B,\) = \(2,\)"):
        ctc_loss(logits, jnp.array([4]), jnp.zeros((2, 2), jnp.int32), jnp.array([1, 1]))
    with pytest.raises(ValueError, match=r"`label_lengths` must lie in \[0, T\] = \[0, 2\]"):
        ctc_loss(logits, jnp.array([4, 4]), jnp.zeros((2, 2), jnp.int32), jnp.array([1, 3]))
    with pytest.raises(ValueError, match="`blank_id` must lie in"):
        ctc_greedy_decode(logits, jnp.array([4, 4]), blank_id=3)
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        ctc_loss(logits, jnp.array([4, 4]), jnp.zeros((2, 2), jnp.int32), jnp.array([1, 1]),
                 reduction="avg")  # fmt: skip
    with pytest.raises(ValueError, match=r"`log_probs` must have shape \(T, C\)"):
        ctc_prefix_beam_search(np.zeros((1, 4, 3)))


# ----------------------------------------------------------------------------- hostile labels
def _ctc_batch():
    logits = jax.random.normal(jax.random.key(0), (2, 6, 4))
    labels = jnp.array([[1, 2, 3], [2, 0, 9]])  # row 1: only labels[1, 0] is valid
    return logits, jnp.array([6, 5]), labels, jnp.array([3, 1])


@pytest.mark.parametrize("bad", [4, 7, -1], ids=["id-equal-C", "id-above-C", "negative-id"])
def test_ctc_label_out_of_range_raises_and_is_nan_under_jit(bad):
    logits, logit_lengths, labels, label_lengths = _ctc_batch()
    labels = labels.at[0, 1].set(bad)
    with pytest.raises(
        ValueError, match=r"`labels` must lie in \[0, C\) = \[0, 4\) at valid positions"
    ):
        ctc_loss(logits, logit_lengths, labels, label_lengths)

    per_example = jax.jit(
        lambda z, y: ctc_loss(z, logit_lengths, y, label_lengths, reduction="none")
    )(logits, labels)
    assert np.isnan(float(per_example[0])) and np.isfinite(float(per_example[1]))
    grad = jax.jit(jax.grad(lambda z: ctc_loss(z, logit_lengths, labels, label_lengths)))(logits)
    assert np.isnan(np.asarray(grad)).any()


def test_ctc_blank_inside_the_labels_raises_and_is_nan_under_jit():
    logits, logit_lengths, labels, label_lengths = _ctc_batch()
    labels = labels.at[0, 2].set(0)
    with pytest.raises(
        ValueError, match=r"`labels` must not hold the blank id 0 .* got labels\[0, 2\] = 0\."
    ):
        ctc_loss(logits, logit_lengths, labels, label_lengths)
    with pytest.raises(ValueError, match=r"blank id 3"):
        ctc_loss(logits, logit_lengths, labels.at[0, 2].set(3), label_lengths, blank_id=3)
    value = jax.jit(lambda y: ctc_loss(logits, logit_lengths, y, label_lengths))(labels)
    assert np.isnan(float(value))


def test_ctc_padding_labels_may_hold_anything():
    logits, logit_lengths, labels, label_lengths = _ctc_batch()  # labels[1, 1:] = 0, 9
    clean = labels.at[1, 1:].set(1)
    np.testing.assert_allclose(
        ctc_loss(logits, logit_lengths, labels, label_lengths),
        ctc_loss(logits, logit_lengths, clean, label_lengths),
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "mean_per_label"])
def test_ctc_empty_batch_is_zero_not_nan(reduction):
    logits = jnp.zeros((0, 5, 3))
    labels = jnp.zeros((0, 2), jnp.int32)
    lengths = jnp.zeros((0,), jnp.int32)
    value, grad = jax.value_and_grad(ctc_loss)(
        logits, lengths, labels, lengths, reduction=reduction
    )
    assert float(value) == 0.0 and grad.shape == logits.shape
