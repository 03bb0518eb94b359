"""Tests of rnn_jax.generate: greedy, sampling and beam search for seq2seq and language models."""

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import init_rnn, rnn_apply
from rnn_jax.generate import (
    BeamSearchResult,
    LMState,
    beam_search,
    greedy_decode,
    lm_initial_state,
    lm_step,
    sample,
)
from rnn_jax.seq2seq import decoder_initial_state, decoder_step, encode, init_seq2seq

PAD, BOS, EOS = 0, 2, 3


def _seq2seq(seed=0, **kw):
    params = init_seq2seq(jax.random.key(seed), 12, 9, hidden_size=8, **kw)
    rng = np.random.default_rng(seed)
    src = jnp.asarray(rng.integers(4, 12, size=(5, 6)), jnp.int32)
    sl = jnp.array([6, 3, 1, 0, 4])
    state = decoder_initial_state(params, encode(params, src, sl))
    return params, state, jnp.full((5,), BOS, jnp.int32)


def _lm(seed=0, V=7, H=8, num_layers=1):
    return init_rnn(jax.random.key(seed), V, H, V, token_inputs=True, num_layers=num_layers)


def _python_greedy(step_fn, params, state, start, max_len, eos_id):
    """The loop greedy_decode replaces, one example at a time."""
    out, step_fn = [], jax.jit(step_fn)
    for b in range(start.shape[0]):
        axes = getattr(state, "batch_axes", jax.tree_util.tree_map(lambda _: 0, state))
        s = jax.tree_util.tree_map(
            lambda x, ax, b=b: jax.lax.slice_in_dim(x, b, b + 1, axis=ax), state, axes
        )
        y, toks = start[b : b + 1], []
        for _ in range(max_len):
            s, logits = step_fn(params, s, y)
            y = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            toks.append(int(y[0]))
            if toks[-1] == eos_id:
                break
        out.append(toks)
    return out


def _check_layout(tokens, lengths, eos_id, pad_id=PAD):
    """tokens[:lengths] content, then <EOS> (unless max_len reached), then padding."""
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    max_len = tokens.shape[-1]
    for row, n in zip(tokens.reshape(-1, max_len), lengths.reshape(-1), strict=True):
        assert not np.any(row[:n] == eos_id)
        if n < max_len:
            assert row[n] == eos_id and np.all(row[n + 1 :] == pad_id)


@pytest.mark.parametrize("kw", [dict(), dict(bidirectional=True, feed_context=True)])
def test_greedy_equals_python_loop(kw):
    params, state, start = _seq2seq(1, **kw)
    tokens, lengths = greedy_decode(decoder_step, params, state, start, max_len=7, eos_id=EOS)
    assert tokens.shape == (5, 7) and lengths.shape == (5,)
    _check_layout(tokens, lengths, EOS)
    ref = _python_greedy(decoder_step, params, state, start, 7, EOS)
    for b, toks in enumerate(ref):
        assert np.asarray(tokens[b, : len(toks)]).tolist() == toks


@pytest.mark.parametrize("seed", range(4))
def test_beam_width_one_equals_greedy(seed):
    params, state, start = _seq2seq(seed)
    tokens, lengths = greedy_decode(decoder_step, params, state, start, max_len=6, eos_id=EOS)
    for alpha in (0.0, 0.8):
        r = beam_search(decoder_step, params, state, start, beam_width=1, max_len=6,
                        eos_id=EOS, alpha=alpha)  # fmt: skip
        np.testing.assert_array_equal(np.asarray(r.tokens[:, 0]), np.asarray(tokens))
        np.testing.assert_array_equal(np.asarray(r.lengths[:, 0]), np.asarray(lengths))


class _Fixed(NamedTuple):
    logits: jax.Array  # (V,) the same distribution at every step


def _fixed_step(params, state, y_prev):
    B = y_prev.shape[0]
    return state, jnp.broadcast_to(params.logits, (B, params.logits.shape[0]))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exhaustive_beam_finds_the_exact_best_sequence(alpha, seed):
    """V = 3 (<PAD>, <EOS>, a), max_len = 3: 15 hypotheses, all enumerable."""
    V, EOS_ID, max_len = 3, 1, 3
    lm = init_rnn(jax.random.key(seed), V, 4, V, token_inputs=True)
    # Make <EOS> likely enough that short and long outputs compete.
    lm = lm.__class__(lm.layers, lm.head._replace(b_y=lm.head.b_y.at[EOS_ID].set(0.5)),
                      lm.activation, lm.merge, lm.token_inputs)  # fmt: skip
    start = jnp.array([2], jnp.int32)
    state = LMState(jnp.zeros((1, 1, 4)))

    apply = jax.jit(rnn_apply)

    def log_prob(seq):  # through rnn_apply, independent of lm_step
        ids = jnp.asarray([[2, *seq, 0, 0, 0][:max_len]], jnp.int32)
        z = np.asarray(apply(lm, ids)[0], np.float64)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return float(sum(logp[t, s] for t, s in enumerate(seq)))

    hyps = []
    for n in range(max_len + 1):
        for content in itertools.product([0, 2], repeat=n):
            seq = list(content) + ([EOS_ID] if n < max_len else [])
            lp = log_prob(seq)
            hyps.append((lp / len(seq) ** alpha, lp, list(content)))
    assert len(hyps) == 15
    best_score, best_lp, best = max(hyps, key=lambda h: h[0])

    r = beam_search(lm_step, lm, state, start, beam_width=16, max_len=max_len,
                    eos_id=EOS_ID, alpha=alpha, pad_id=0)  # fmt: skip
    n = int(r.lengths[0, 0])
    assert np.asarray(r.tokens[0, 0, :n]).tolist() == best
    np.testing.assert_allclose(float(r.scores[0, 0]), best_score, rtol=1e-4)
    np.testing.assert_allclose(float(r.log_probs[0, 0]), best_lp, rtol=1e-4)
    # every hypothesis is in the beam: all 15 scores, sorted
    finite = np.sort(np.asarray(r.scores[0])[np.isfinite(np.asarray(r.scores[0]))])[::-1]
    np.testing.assert_allclose(finite, sorted((h[0] for h in hyps), reverse=True), rtol=1e-4)


def test_beam_search_shapes_and_layout():
    params, state, start = _seq2seq(3, bidirectional=True)
    r = beam_search(decoder_step, params, state, start, beam_width=4, max_len=6, eos_id=EOS,
                    alpha=0.7)  # fmt: skip
    assert isinstance(r, BeamSearchResult)
    assert r.tokens.shape == (5, 4, 6) and r.scores.shape == r.lengths.shape == (5, 4)
    _check_layout(r.tokens, r.lengths, EOS)
    assert bool(jnp.all(r.scores[:, :-1] >= r.scores[:, 1:]))  # best first
    greedy, _ = greedy_decode(decoder_step, params, state, start, max_len=6, eos_id=EOS)
    # the best beam scores at least as well as the greedy output under the same score
    g = beam_search(decoder_step, params, state, start, beam_width=1, max_len=6, eos_id=EOS,
                    alpha=0.7)  # fmt: skip
    assert bool(jnp.all(r.scores[:, 0] >= g.scores[:, 0] - 1e-6))


def test_sampling_is_reproducible_and_key_dependent():
    params, state, start = _seq2seq(4)
    kw = dict(max_len=8, eos_id=EOS, temperature=1.5)
    a = sample(decoder_step, params, state, start, key=jax.random.key(7), **kw)
    b = sample(decoder_step, params, state, start, key=jax.random.key(7), **kw)
    c = sample(decoder_step, params, state, start, key=jax.random.key(8), **kw)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    _check_layout(*a, EOS)


def test_top_k_one_is_greedy():
    params, state, start = _seq2seq(5)
    greedy = greedy_decode(decoder_step, params, state, start, max_len=6, eos_id=EOS)
    s = sample(decoder_step, params, state, start, max_len=6, eos_id=EOS, key=jax.random.key(0),
               top_k=1, temperature=3.0)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(s[0]), np.asarray(greedy[0]))


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, 2)])
def test_sampling_distribution(temperature, top_k):
    logits = jnp.array([0.5, -1.0, 1.0, 0.0])
    B = 20_000
    tokens, _ = sample(_fixed_step, _Fixed(logits), jnp.zeros((B, 1)), jnp.zeros((B,), jnp.int32),
                       max_len=1, eos_id=None, key=jax.random.key(1), temperature=temperature,
                       top_k=top_k)  # fmt: skip
    freq = np.bincount(np.asarray(tokens[:, 0]), minlength=4) / B
    z = np.asarray(logits, np.float64) / temperature
    if top_k is not None:
        z[np.argsort(z)[:-top_k]] = -np.inf
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(freq, p, atol=0.015)
    assert np.all(freq[p == 0] == 0)


def test_early_stop_and_eos_never_counted():
    logits = jnp.array([-5.0, -5.0, -5.0, 5.0])  # <EOS> = 3 always
    tokens, lengths = greedy_decode(_fixed_step, _Fixed(logits), jnp.zeros((2, 1)),
                                    jnp.zeros((2,), jnp.int32), max_len=4, eos_id=EOS)  # fmt: skip
    assert tokens.tolist() == [[3, 0, 0, 0]] * 2 and lengths.tolist() == [0, 0]
    r = beam_search(_fixed_step, _Fixed(logits), jnp.zeros((2, 1)), jnp.zeros((2,), jnp.int32),
                    beam_width=3, max_len=4, eos_id=EOS)  # fmt: skip
    assert r.tokens[:, 0].tolist() == [[3, 0, 0, 0]] * 2 and r.lengths[:, 0].tolist() == [0, 0]
    # eos_id=None: always max_len tokens
    tokens, lengths = greedy_decode(_fixed_step, _Fixed(logits), jnp.zeros((2, 1)),
                                    jnp.zeros((2,), jnp.int32), max_len=4, eos_id=None)  # fmt: skip
    assert tokens.tolist() == [[3] * 4] * 2 and lengths.tolist() == [4, 4]


def test_under_jit_without_retracing():
    params, state, start = _seq2seq(6)

    @jax.jit
    def run(params, state, start):
        g = greedy_decode(decoder_step, params, state, start, max_len=5, eos_id=EOS)
        b = beam_search(decoder_step, params, state, start, beam_width=2, max_len=5, eos_id=EOS)
        return g, b

    g, b = run(params, state, start)
    g2 = greedy_decode(decoder_step, params, state, start, max_len=5, eos_id=EOS)
    np.testing.assert_array_equal(np.asarray(g[0]), np.asarray(g2[0]))
    params2, state2, _ = _seq2seq(7)
    run(params2, state2, start)
    assert run._cache_size() == 1


def test_padding_only_and_empty_inputs_give_a_clear_result():
    params, _, _ = _seq2seq(8)
    # a source that is all padding (length 0): the decoder starts from the zero state
    c = encode(params, jnp.zeros((2, 4), jnp.int32), jnp.array([0, 0]))
    state = decoder_initial_state(params, c)
    start = jnp.full((2,), BOS, jnp.int32)
    tokens, lengths = greedy_decode(decoder_step, params, state, start, max_len=5, eos_id=EOS)
    assert tokens.shape == (2, 5) and tokens[0].tolist() == tokens[1].tolist()
    _check_layout(tokens, lengths, EOS)
    # an empty batch: empty outputs of the documented shapes
    c = encode(params, jnp.zeros((0, 4), jnp.int32), jnp.zeros((0,), jnp.int32))
    state = decoder_initial_state(params, c)
    start = jnp.zeros((0,), jnp.int32)
    tokens, lengths = greedy_decode(decoder_step, params, state, start, max_len=5, eos_id=EOS)
    assert tokens.shape == (0, 5) and lengths.shape == (0,)
    r = beam_search(decoder_step, params, state, start, beam_width=3, max_len=5, eos_id=EOS)
    assert r.tokens.shape == (0, 3, 5)
    s, _ = sample(decoder_step, params, state, start, max_len=5, eos_id=EOS, key=jax.random.key(0))
    assert s.shape == (0, 5)


def test_lm_from_nothing_and_from_a_seed():
    lm = _lm(9, num_layers=2)
    seed = jnp.array([[4, 5, 6], [5, 0, 0], [0, 0, 0]], jnp.int32)
    lengths = jnp.array([3, 1, 0])
    state, start = lm_initial_state(lm, seed, lengths, bos_id=BOS)
    assert isinstance(state, LMState) and state.a.shape == (2, 3, 8)  # (L, B, H)
    assert start.tolist() == [6, 5, BOS]
    assert bool(jnp.all(state.a[:, 2] == 0.0)) and bool(jnp.all(state.a[:, 1] == 0.0)) is False
    # A state in another layout raises instead of giving wrong logits.
    with pytest.raises(ValueError, match=r"`state` must be an LMState whose `a` has shape"):
        lm_step(lm, LMState(jnp.swapaxes(state.a, 0, 1)), start)
    with pytest.raises(ValueError, match=r"`state` must be an LMState"):
        lm_step(lm, state.a, start)
    # the primed state continues exactly as the teacher-forced LM does
    s, logits = lm_step(lm, state, start)
    full = rnn_apply(lm, jnp.array([[BOS, 4, 5, 6]]), jnp.array([4]))
    np.testing.assert_allclose(np.asarray(logits[0]), np.asarray(full[0, 3]), atol=1e-5)
    tokens, _ = greedy_decode(lm_step, lm, state, start, max_len=6, eos_id=EOS)
    assert tokens.shape == (3, 6)


def test_errors_name_the_argument():
    params, state, start = _seq2seq(10)
    with pytest.raises(ValueError, match="`max_len` must be a positive int, got 0"):
        greedy_decode(decoder_step, params, state, start, max_len=0, eos_id=EOS)
    with pytest.raises(ValueError, match="`beam_width` must be a positive int"):
        beam_search(decoder_step, params, state, start, beam_width=0, max_len=3, eos_id=EOS)
    with pytest.raises(ValueError, match="`alpha` must be >= 0"):
        beam_search(decoder_step, params, state, start, beam_width=2, max_len=3, eos_id=EOS,
                    alpha=-1.0)  # fmt: skip
    with pytest.raises(ValueError, match="`temperature` must be > 0, got 0"):
        sample(decoder_step, params, state, start, max_len=3, eos_id=EOS, key=jax.random.key(0),
               temperature=0.0)  # fmt: skip
    with pytest.raises(ValueError, match="`top_k` must be a positive int"):
        sample(decoder_step, params, state, start, max_len=3, eos_id=EOS, key=jax.random.key(0),
               top_k=0)  # fmt: skip
    with pytest.raises(ValueError, match="`key` must be a jax.random key"):
        sample(decoder_step, params, state, start, max_len=3, eos_id=EOS, key=0)
    with pytest.raises(ValueError, match=r"`start_ids` must be integer ids of shape \(B,\)"):
        greedy_decode(decoder_step, params, state, start[:, None], max_len=3, eos_id=EOS)
    with pytest.raises(ValueError, match=r"its batch axis \(1\) of size B = 2"):
        greedy_decode(decoder_step, params, state, start[:2], max_len=3, eos_id=EOS)
    bi = init_rnn(jax.random.key(0), 7, 4, 7, token_inputs=True, bidirectional=True)
    with pytest.raises(ValueError, match="uni-directional"):
        lm_initial_state(bi, jnp.zeros((1, 2), jnp.int32), jnp.array([2]), bos_id=BOS)
    with pytest.raises(ValueError, match=r"`seed_lengths` must have shape \(B,\) = \(1,\)"):
        lm_initial_state(_lm(), jnp.zeros((1, 2), jnp.int32), jnp.array([2, 2]), bos_id=BOS)
