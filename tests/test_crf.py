"""Tests of rnn_jax.crf: the forward algorithm and Viterbi against enumeration of all K^T paths."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnn_jax import crf_decode, crf_log_likelihood, crf_log_partition, init_crf
from rnn_jax.crf import CRFParams, crf_sequence_score

# jitted once per shape (the functions under test; their eager checks are tested below)
log_partition = jax.jit(crf_log_partition)
log_likelihood = jax.jit(crf_log_likelihood)


@jax.jit
def _everything(e, tags, lengths, A, start, end):
    """``(log Z, log-likelihood, score, Viterbi tags, Viterbi score)``: one compile a shape."""
    args = (lengths, A, start, end)
    return (crf_log_partition(e, *args), crf_log_likelihood(e, tags, *args),
            crf_sequence_score(e, tags, *args), *crf_decode(e, *args))  # fmt: skip


def _path_scores(e, A, start, end):
    """Every path of one example ``e (L, K)`` (``L >= 1``) and its score, float64 NumPy."""
    L, K = e.shape
    paths = np.array(list(itertools.product(range(K), repeat=L)))  # (K^L, L)
    s = start[paths[:, 0]] + end[paths[:, -1]] + e[np.arange(L), paths].sum(axis=1)
    s += A[paths[:, :-1], paths[:, 1:]].sum(axis=1)
    return paths, s


def _problem(seed, B, T, K, lengths, garbage=np.nan):
    """Random float64 emissions and CRF scores; padded steps hold ``garbage`` and bad tags."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(B, T, K)) * 2
    A, start, end = rng.normal(size=(K, K)), rng.normal(size=K), rng.normal(size=K)
    tags = rng.integers(0, K, size=(B, T))
    pad = np.arange(T)[None] >= np.asarray(lengths)[:, None]
    e[pad] = garbage
    tags[pad] = -7  # never read
    return e, tags, A, start, end


@st.composite
def shapes(draw):
    """K tags, lengths in [0, T]: B = 3, T = 5 (or 4, for K = 4) keep the compiles few."""
    K = draw(st.integers(1, 4))
    B, T = 3, (5 if K <= 3 else 4)
    lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    return B, T, K, np.array(lengths), draw(st.integers(0, 2**16))


@given(shapes())
def test_log_partition_and_likelihood_match_enumeration(case):
    with jax.enable_x64(True):
        _check_against_enumeration(*case)


def _check_against_enumeration(B, T, K, lengths, seed):
    e, tags, A, start, end = _problem(seed, B, T, K, lengths)
    args = (jnp.asarray(lengths), jnp.asarray(A), jnp.asarray(start), jnp.asarray(end))
    log_z, ll, score, _, _ = map(np.asarray, _everything(jnp.asarray(e), jnp.asarray(tags), *args))
    assert log_z.dtype == np.float64 and ll.shape == (B,)
    for b, L in enumerate(lengths):
        if L == 0:  # one empty sequence
            assert log_z[b] == 0.0 and ll[b] == 0.0 and score[b] == 0.0
            continue
        paths, s = _path_scores(e[b, :L], A, start, end)
        ref_z = np.logaddexp.reduce(s)
        ref_s = s[np.flatnonzero((paths == tags[b, :L]).all(axis=1))[0]]
        np.testing.assert_allclose(log_z[b], ref_z, rtol=1e-10)
        np.testing.assert_allclose(score[b], ref_s, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ll[b], ref_s - ref_z, rtol=1e-10, atol=1e-12)
        assert ll[b] <= 1e-12


@given(shapes())
def test_viterbi_is_the_argmax_of_enumeration(case):
    with jax.enable_x64(True):
        _check_viterbi(*case)


def _check_viterbi(B, T, K, lengths, seed):
    e, gold, A, start, end = _problem(seed, B, T, K, lengths, garbage=1e6)  # huge padding
    args = (jnp.asarray(lengths), jnp.asarray(A), jnp.asarray(start), jnp.asarray(end))
    *_, tags, score = map(np.asarray, _everything(jnp.asarray(e), jnp.asarray(gold), *args))
    assert tags.shape == (B, T) and tags.dtype == np.int32
    for b, L in enumerate(lengths):
        assert (tags[b, L:] == -1).all()
        if L == 0:
            assert score[b] == 0.0
            continue
        paths, s = _path_scores(e[b, :L], A, start, end)
        np.testing.assert_array_equal(tags[b, :L], paths[np.argmax(s)])
        np.testing.assert_allclose(score[b], s.max(), rtol=1e-10)


def test_padding_values_and_padded_length_change_nothing():
    B, K = 4, 5
    lengths = np.array([6, 1, 0, 3])
    e, tags, A, start, end = _problem(0, B, 6, K, lengths, garbage=0.0)
    results = []
    for T, garbage, bad_tag in ((6, 0.0, 0), (6, np.nan, 99), (6, -1e9, 4), (11, np.inf, -3)):
        e_T = np.full((B, T, K), garbage, np.float32)
        e_T[:, :6] = np.where(np.isnan(e) | (np.arange(6)[None, :, None] >= lengths[:, None, None]), garbage, e)  # fmt: skip
        t_T = np.full((B, T), bad_tag, np.int32)
        t_T[:, :6] = np.where(np.arange(6)[None] < lengths[:, None], tags, bad_tag)
        args = (jnp.asarray(lengths), jnp.asarray(A, jnp.float32), jnp.asarray(start, jnp.float32),
                jnp.asarray(end, jnp.float32))  # fmt: skip
        z, ll, _, best, best_score = _everything(jnp.asarray(e_T), jnp.asarray(t_T), *args)
        assert np.isfinite(np.asarray(ll)).all() and (np.asarray(best)[:, 6:] == -1).all()
        results.append((np.asarray(ll), np.asarray(z), np.asarray(best)[:, :6], np.asarray(best_score)))  # fmt: skip
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    # the batch's other examples change nothing either: each row alone gives the same values
    for b in range(B):
        row = log_likelihood(jnp.asarray(e[b : b + 1], jnp.float32),
                             jnp.asarray(np.where(tags[b : b + 1] < 0, 0, tags[b : b + 1])),
                             jnp.asarray(lengths[b : b + 1]), jnp.asarray(A, jnp.float32),
                             jnp.asarray(start, jnp.float32), jnp.asarray(end, jnp.float32))  # fmt: skip
        np.testing.assert_allclose(np.asarray(row)[0], results[0][0][b], rtol=1e-6)


def test_gradients_finite_zero_at_padding_and_the_marginals():
    B, T, K = 3, 5, 4
    lengths = np.array([5, 2, 0])
    e, tags, A, start, end = _problem(1, B, T, K, lengths, garbage=np.nan)
    params = CRFParams(*(jnp.asarray(p, jnp.float32) for p in (A, start, end)))

    def nll(e, params):
        ll = crf_log_likelihood(e, jnp.asarray(tags), jnp.asarray(lengths), *params)
        return -jnp.sum(ll)

    g_e, g_p = jax.jit(jax.grad(nll, argnums=(0, 1)))(jnp.asarray(e, jnp.float32), params)
    g_e = np.asarray(g_e)
    valid = np.arange(T)[None] < lengths[:, None]
    assert np.isfinite(g_e).all() and all(np.isfinite(np.asarray(g)).all() for g in g_p)
    assert (g_e[~valid] == 0).all()  # NaN padding: no value, no gradient
    # d log Z / d E<t> are the tag marginals (each sums to 1), so d(-ll)/dE<t> sums to 0
    np.testing.assert_allclose(g_e.sum(-1)[valid], 0.0, atol=1e-5)
    g_z = np.asarray(jax.grad(lambda e: jnp.sum(log_partition(e, jnp.asarray(lengths), *params)))(
        jnp.asarray(np.nan_to_num(e), jnp.float32)))  # fmt: skip
    np.testing.assert_allclose(g_z.sum(-1), valid.astype(np.float32), atol=1e-5)
    assert (g_z >= 0).all()


def test_training_learns_the_transitions():
    """Uninformative emissions: only the transitions can learn that tag 1 follows tag 0."""
    import optax

    K, T = 3, 6
    tags = jnp.array([[0, 1, 0, 1, 0, 1], [2, 2, 0, 1, 2, 2]])
    lengths = jnp.array([6, 6])
    e = jnp.zeros((2, T, K))

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(lambda p: -jnp.sum(crf_log_likelihood(e, tags, lengths, *p)))(params)  # fmt: skip
        updates, state = opt.update(g, state)
        return optax.apply_updates(params, updates), state, loss

    opt = optax.sgd(0.1)
    params = init_crf(K)
    state = opt.init(params)
    with jax.numpy_dtype_promotion("standard"):  # optax's SGD mixes weak scalars
        losses = []
        for _ in range(100):
            params, state, loss = step(params, state)
            losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert int(jnp.argmax(params.transitions[0])) == 1  # learned: 0 -> 1
    best, _ = crf_decode(jnp.zeros((1, 4, K)), jnp.array([4]), *params)
    assert best[0, 1:].tolist() in ([1, 0, 1], [1, 2, 2], [2, 2, 2], [2, 0, 1])


def test_zero_steps_and_init():
    e = jnp.zeros((2, 0, 3))
    p = init_crf(3)
    assert log_partition(e, jnp.array([0, 0]), *p).tolist() == [0.0, 0.0]
    assert crf_log_likelihood(e, jnp.zeros((2, 0), jnp.int32), jnp.array([0, 0]), *p).tolist() == [0.0, 0.0]  # fmt: skip
    tags, score = crf_decode(e, jnp.array([0, 0]), *p)
    assert tags.shape == (2, 0) and score.tolist() == [0.0, 0.0]
    assert p.transitions.shape == (3, 3) and p.start.shape == p.end.shape == (3,)
    with pytest.raises(ValueError, match="`num_tags` must be a positive int, got 0"):
        init_crf(0)


def test_bad_inputs_raise_value_errors_naming_the_argument():
    B, T, K = 2, 3, 4
    e = jnp.zeros((B, T, K))
    lengths = jnp.array([3, 1])
    tags = jnp.zeros((B, T), jnp.int32)
    A, s, t = init_crf(K)
    with pytest.raises(ValueError, match=r"`emissions` must be floats of shape \(B, T, K\), got shape \(2, 3\)"):  # fmt: skip
        crf_log_partition(e[..., 0], lengths, A, s, t)
    with pytest.raises(ValueError, match="`emissions` must be floats.*dtype int32"):
        crf_decode(jnp.zeros((B, T, K), jnp.int32), lengths, A, s, t)
    with pytest.raises(ValueError, match=r"`lengths` must lie in \[0, T\] = \[0, 3\], got values in \[1, 4\]"):  # fmt: skip
        crf_log_partition(e, jnp.array([4, 1]), A, s, t)
    with pytest.raises(ValueError, match=r"`lengths` must have shape \(B,\) = \(2,\), got \(3,\)"):
        crf_decode(e, jnp.array([1, 1, 1]), A, s, t)
    with pytest.raises(ValueError, match="`lengths` must be integers, got dtype float32"):
        crf_log_likelihood(e, tags, jnp.array([1.0, 2.0]), A, s, t)
    with pytest.raises(ValueError, match=r"`transitions` must be floats of shape \(4, 4\).*got shape \(3, 3\)"):  # fmt: skip
        crf_log_partition(e, lengths, A[:3, :3], s, t)
    with pytest.raises(ValueError, match=r"`start` must be floats of shape \(4,\)"):
        crf_decode(e, lengths, A, s[:2], t)
    with pytest.raises(ValueError, match=r"`end` must be floats of shape \(4,\).*dtype int32"):
        crf_log_likelihood(e, tags, lengths, A, s, jnp.zeros(K, jnp.int32))
    with pytest.raises(ValueError, match=r"`tags` must be integer ids of shape \(B, T\) = \(2, 3\)"):  # fmt: skip
        crf_log_likelihood(e, tags[:, :2], lengths, A, s, t)
    with pytest.raises(ValueError, match=r"`tags` must be integer ids.*dtype float32"):
        crf_log_likelihood(e, tags.astype(jnp.float32), lengths, A, s, t)
    bad = tags.at[1, 0].set(K)
    with pytest.raises(ValueError, match=r"`tags` must lie in \[0, K\) = \[0, 4\) at valid positions, got values in \[0, 4\]"):  # fmt: skip
        crf_log_likelihood(e, bad, lengths, A, s, t)
    # a bad tag at a padded step is fine; at a valid step under jit: NaN value and gradient
    ok = crf_log_likelihood(e, tags.at[1, 2].set(K), lengths, A, s, t)
    assert np.isfinite(np.asarray(ok)).all()
    ll = log_likelihood(e, bad, lengths, A, s, t)
    assert np.isfinite(float(ll[0])) and np.isnan(float(ll[1]))
    g = jax.grad(lambda e: log_likelihood(e, bad, lengths, A, s, t)[1])(e)
    assert np.isnan(np.asarray(g)).any()
