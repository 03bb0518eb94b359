"""Additive attention (rnn_jax.attention) and the attention encoder–decoder of rnn_jax.seq2seq:
a float64 NumPy loop of the equations, exact masking (padding invariance), gradients,
decoding with attention, and the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import biases_of, ref_gated, ref_layer, ref_step

from rnn_jax.attention import attend, init_attention, project_keys
from rnn_jax.generate import beam_search, greedy_decode
from rnn_jax.seq2seq import (
    decoder_initial_state,
    decoder_step,
    encode,
    init_seq2seq,
    seq2seq_apply,
    seq2seq_loss,
    shift_right,
    start_decoding,
)

BOS, EOS = 2, 3
V_SRC, V_TGT = 13, 11

# The model under jit, compiled once per configuration and shapes (run eagerly, every call
# traced and compiled its scans again); the eager path is the one test_seq2seq runs.
_apply = jax.jit(seq2seq_apply, static_argnames="return_attention")
_step = jax.jit(decoder_step)
_start = jax.jit(start_decoding)


@jax.jit
def _loss(params, src, src_len, tgt, tgt_len):
    return seq2seq_loss(params, src, src_len, tgt, tgt_len, bos_id=BOS)


_loss_grad = jax.jit(jax.grad(_loss))
CONFIGS = {
    "rnn": dict(cell="rnn", bidirectional=True, hidden_size=5),
    "gru": dict(cell="gru", num_layers=2, hidden_size=4, bridge="project", decoder_hidden_size=6),
    "lstm": dict(cell="lstm", bidirectional=True, hidden_size=3, attention_size=4),
}


def _f64(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _batch():
    src = np.array([[4, 5, 6, 7, 8], [9, 10, 11, 0, 0], [5, 0, 0, 0, 0]], np.int32)
    src_len = np.array([5, 3, 1], np.int32)
    tgt = np.array([[4, 5, 6, EOS], [7, EOS, 0, 0], [8, 9, EOS, 0]], np.int32)
    tgt_len = np.array([4, 2, 3], np.int32)
    return src, src_len, tgt, tgt_len


def _onehot(i, n):
    x = np.zeros(n)
    x[int(i)] = 1.0
    return x


def _ref_encoder(params, src, n):
    """(memory (T_x, C) zero beyond n, per layer [(h, c or None) per direction]) for one example."""
    cell = params.cell
    h = src
    finals = []
    for layer in params.encoder:
        outs, lasts = [], []
        for d, p in enumerate(layer):
            H = p.hidden_size
            if cell == "rnn":
                a0 = np.zeros(H)
                W_a, b_a = np.asarray(p.W_a, np.float64), np.asarray(p.b_a, np.float64)
                out, last = ref_layer(W_a, b_a, h, n, a0, reverse=d == 1)
                lasts.append((last, None))
            else:
                carry0 = np.zeros(H) if cell == "gru" else (np.zeros(H), np.zeros(H))
                out, last = ref_gated(cell, p, h, n, carry0, reverse=d == 1)
                lasts.append((last, None) if cell == "gru" else last)
            outs.append(out)
        h = np.concatenate(outs, axis=-1)
        finals.append(lasts)
    return h, finals


def _ref_decoder_start(params, finals):
    a0, c0 = [], []
    L_enc = len(finals)
    for l in range(len(params.decoder)):
        e = l if L_enc == len(params.decoder) else -1
        h = np.concatenate([f[0] for f in finals[e]])
        if params.bridge_type == "project":
            W, b = (np.asarray(x, np.float64) for x in params.bridge[l])
            a0.append(np.tanh(W @ h + b))
            c0.append(np.zeros(params.decoder_hidden_size))
        else:
            a0.append(h)
            if params.cell == "lstm":
                c0.append(np.concatenate([f[1] for f in finals[e]]))
    return a0, c0


def _ref_attend(att, query, memory, n):
    W_q, W_k, v = (np.asarray(x, np.float64) for x in att)
    e = np.array([v @ np.tanh(W_q @ query + W_k @ memory[i]) for i in range(n)])
    w = np.zeros(memory.shape[0])
    if n:
        p = np.exp(e - e.max())
        w[:n] = p / p.sum()
    return w @ memory, w


def _ref_cell(params, l, state, x):
    p = params.decoder[l]
    if params.cell == "rnn":
        W_a, b_a = np.asarray(p.W_a, np.float64), np.asarray(p.b_a, np.float64)
        a = np.tanh(W_a @ np.concatenate([state, x]) + b_a)
        return a, a
    return ref_step(params.cell, p.W_a, biases_of(params.cell, p), state, x)


def _numpy_reference(params, src, src_len, tgt_in, tgt_len):
    """Logits (B, T_y, V) and weights (B, T_y, T_x), one example at a time, in float64."""
    B, T_y = tgt_in.shape
    T_x = src.shape[1]
    W_y, b_y = (np.asarray(x, np.float64) for x in params.head)
    logits, weights = np.zeros((B, T_y, V_TGT)), np.zeros((B, T_y, T_x))
    for b in range(B):
        memory, finals = _ref_encoder(params, src[b], int(src_len[b]))
        a, c = _ref_decoder_start(params, finals)
        states = list(zip(a, c, strict=True)) if params.cell == "lstm" else a
        for t in range(int(tgt_len[b])):
            top = states[-1][0] if params.cell == "lstm" else states[-1]
            ctx, w = _ref_attend(params.attention, top, memory, int(src_len[b]))
            x = np.concatenate([_onehot(tgt_in[b, t], V_TGT), ctx])
            for l in range(len(states)):
                states[l], x = _ref_cell(params, l, states[l], x)
            logits[b, t] = W_y @ np.concatenate([x, ctx]) + b_y
            weights[b, t] = w
    return logits, weights


@pytest.mark.parametrize("cell", list(CONFIGS))
def test_teacher_forcing_and_steps_match_float64_reference(cell, x64):
    params = _f64(
        init_seq2seq(jax.random.key(1), V_SRC, V_TGT, attention="additive", **CONFIGS[cell])
    )
    src, src_len, tgt, tgt_len = _batch()
    tgt_in = np.asarray(shift_right(jnp.asarray(tgt), BOS))
    ref_logits, ref_w = _numpy_reference(params, src, src_len, tgt_in, tgt_len)
    logits, w = _apply(params, src, src_len, tgt_in, tgt_len, return_attention=True)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-10)
    np.testing.assert_allclose(np.asarray(w), ref_w, atol=1e-10)
    # the step function (what greedy and beam search run) gives the same logits
    state = _start(params, src, src_len)
    for t in range(tgt_in.shape[1]):
        state, step_logits = _step(params, state, jnp.asarray(tgt_in[:, t]))
        valid = t < tgt_len
        np.testing.assert_allclose(np.asarray(step_logits)[valid], ref_logits[valid, t], atol=1e-10)


def test_weights_are_a_distribution_over_valid_positions_only():
    params = init_seq2seq(jax.random.key(2), V_SRC, V_TGT, hidden_size=6, attention="additive")
    src, src_len, tgt, tgt_len = _batch()
    _, w = seq2seq_apply(
        params, src, src_len, shift_right(tgt, BOS), tgt_len, return_attention=True
    )
    w = np.asarray(w)
    assert w.shape == (3, 4, 5)
    for b in range(3):
        valid_t = np.arange(4) < tgt_len[b]
        np.testing.assert_allclose(w[b, valid_t].sum(-1), 1.0, rtol=1e-6)
        assert (w[b, :, src_len[b] :] == 0).all()  # exactly zero at padded source positions
        assert (w[b, ~valid_t] == 0).all()


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_padding_invariance(cell):
    """The padding's values and length change nothing: logits, weights and gradients."""
    params = init_seq2seq(
        jax.random.key(3), V_SRC, V_TGT, hidden_size=4, bidirectional=True, attention="additive",
        cell=cell,
    )  # fmt: skip
    src, src_len, tgt, tgt_len = _batch()
    rng = np.random.default_rng(0)
    longer = rng.integers(0, V_SRC, (3, 9)).astype(np.int32)  # garbage in the padding
    for b in range(3):
        longer[b, : src_len[b]] = src[b, : src_len[b]]

    def run(s):
        out = _apply(params, s, src_len, shift_right(tgt, BOS), tgt_len, return_attention=True)
        return out, _loss_grad(params, s, src_len, tgt, tgt_len)

    (logits_a, w_a), g_a = run(src)
    (logits_b, w_b), g_b = run(longer)
    np.testing.assert_allclose(logits_a, logits_b, atol=1e-6)
    np.testing.assert_allclose(w_a, np.asarray(w_b)[:, :, :5], atol=1e-7)
    assert (np.asarray(w_b)[:, :, 5:] == 0).all()
    for x, y in zip(jax.tree_util.tree_leaves(g_a), jax.tree_util.tree_leaves(g_b), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_gradient_matches_finite_differences(cell, x64):
    params = _f64(
        init_seq2seq(jax.random.key(4), V_SRC, V_TGT, attention="additive", **CONFIGS[cell])
    )
    src, src_len, tgt, tgt_len = _batch()

    def loss(p):
        return _loss(p, src, src_len, tgt, tgt_len)

    grads = _loss_grad(params, src, src_len, tgt, tgt_len)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    direction = jax.tree_util.tree_unflatten(
        treedef,
        [jax.random.normal(k, x.shape, jnp.float64) for k, x in zip(keys, leaves, strict=True)],
    )
    eps = 1e-6
    shifted = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * d, params, direction)  # noqa: E731
    fd = (loss(shifted(eps)) - loss(shifted(-eps))) / (2 * eps)
    analytic = sum(
        jnp.vdot(g, d)
        for g, d in zip(
            jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction), strict=True
        )
    )
    np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-6)
    # the attention parameters receive gradient
    assert (
        float(jnp.abs(grads.attention.W_q).sum()) > 0
        and float(jnp.abs(grads.attention.v).sum()) > 0
    )


def test_greedy_and_beam_decoding_with_attention():
    params = init_seq2seq(
        jax.random.key(6), V_SRC, V_TGT, hidden_size=5, attention="additive", cell="gru",
        bidirectional=True,
    )  # fmt: skip
    src, src_len, _, _ = _batch()
    state = start_decoding(params, src, src_len)
    start = jnp.full((3,), BOS, jnp.int32)
    tokens, n = greedy_decode(decoder_step, params, state, start, max_len=6, eos_id=EOS)
    # teacher forcing on its own output reproduces the greedy choices
    tgt_in = shift_right(tokens, BOS)
    logits = seq2seq_apply(params, src, src_len, tgt_in, jnp.full((3,), 6, jnp.int32))
    for b in range(3):
        k = int(n[b])
        np.testing.assert_array_equal(np.argmax(logits[b, :k], -1), np.asarray(tokens[b, :k]))
    beam1 = beam_search(decoder_step, params, state, start, beam_width=1, max_len=6, eos_id=EOS)
    np.testing.assert_array_equal(beam1.tokens[:, 0], tokens)
    beam = beam_search(decoder_step, params, state, start, beam_width=4, max_len=6, eos_id=EOS)
    assert beam.tokens.shape == (3, 4, 6)


def test_attention_free_model_unchanged_and_shared_parameters():
    kw = dict(hidden_size=4, bidirectional=True)
    plain = init_seq2seq(jax.random.key(7), V_SRC, V_TGT, **kw)
    same = init_seq2seq(jax.random.key(7), V_SRC, V_TGT, attention="none", **kw)
    attn = init_seq2seq(jax.random.key(7), V_SRC, V_TGT, attention="additive", **kw)
    assert plain.attention is None and plain.attention_type == "none"
    assert "attention" not in plain.config()
    for x, y in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(same), strict=True):
        assert (x == y).all()
    assert (attn.encoder[0][0].W_a == plain.encoder[0][0].W_a).all()
    assert attn.decoder[0].W_a.shape == (8, 8 + V_TGT + 8)
    assert attn.head.W_y.shape == (V_TGT, 16)
    assert attn.config()["attention"] == "additive" and attn.config()["attention_size"] == 8


def test_attend_on_an_empty_memory_is_zero():
    p = init_attention(jax.random.key(8), 3, 4, 5)
    memory = jnp.ones((2, 3, 4))
    mask = jnp.array([[False] * 3, [True, True, False]])
    ctx, w = attend(p, jnp.ones((2, 3)), memory, project_keys(p, memory), mask)
    assert (np.asarray(ctx[0]) == 0).all() and (np.asarray(w[0]) == 0).all()
    np.testing.assert_allclose(np.asarray(ctx[1]), 1.0, rtol=1e-6)


def test_errors_name_the_argument():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`attention` must be one of"):
        init_seq2seq(key, 5, 5, attention="dot")
    with pytest.raises(ValueError, match="`feed_context` must be False"):
        init_seq2seq(key, 5, 5, attention="additive", feed_context=True)
    with pytest.raises(ValueError, match="`attention_size` is only for"):
        init_seq2seq(key, 5, 5, attention_size=3)
    with pytest.raises(ValueError, match="`attention_size` must be a positive int"):
        init_seq2seq(key, 5, 5, attention="additive", attention_size=0)
    plain = init_seq2seq(key, V_SRC, V_TGT, hidden_size=3)
    attn = init_seq2seq(key, V_SRC, V_TGT, hidden_size=3, attention="additive")
    src, src_len, tgt, tgt_len = _batch()
    with pytest.raises(ValueError, match="`return_attention=True` needs an attention model"):
        seq2seq_apply(plain, src, src_len, tgt, tgt_len, return_attention=True)
    c = encode(attn, src, src_len)
    with pytest.raises(ValueError, match="`memory`"):
        decoder_initial_state(attn, c)
    with pytest.raises(ValueError, match="only for attention models"):
        decoder_initial_state(plain, c, memory=jnp.zeros((3, 5, 3)), src_lengths=src_len)
    with pytest.raises(ValueError, match="must carry the attention memory"):
        decoder_step(attn, decoder_initial_state(plain, c), jnp.array([BOS] * 3))
