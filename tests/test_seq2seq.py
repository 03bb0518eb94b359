"""Tests of rnn_jax.seq2seq: the encoder–decoder (classic, GRU and LSTM cells) against a
float64 loop of the equations and against its own step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference import biases_of, ref_gated, ref_layer, ref_step

from rnn_jax.seq2seq import (
    DecoderState,
    Seq2SeqParams,
    decoder_initial_state,
    decoder_step,
    encode,
    init_seq2seq,
    seq2seq_apply,
    seq2seq_loss,
    shift_right,
)
from rnn_jax.train import optimizer_step

V_SRC, V_TGT, BOS, EOS = 13, 11, 2, 3

apply_jit = jax.jit(seq2seq_apply)

CONFIGS = [
    dict(hidden_size=8),
    dict(hidden_size=6, bidirectional=True),
    dict(hidden_size=5, num_layers=2, bidirectional=True, feed_context=True),
    dict(hidden_size=7, num_layers=2, decoder_layers=1, bridge="project", decoder_hidden_size=9),
    dict(hidden_size=4, num_layers=1, decoder_layers=2, bidirectional=True, bridge="project",
         feed_context=True, activation="relu"),
]  # fmt: skip


def _batch(rng, B=4, T_x=7, T_y=5):
    src_lengths = rng.integers(0, T_x + 1, size=B)
    src_lengths[0] = T_x
    tgt_lengths = rng.integers(1, T_y + 1, size=B)
    tgt_lengths[-1] = T_y
    src = rng.integers(0, V_SRC, size=(B, T_x))
    tgt = rng.integers(4, V_TGT, size=(B, T_y))
    tgt[np.arange(B), tgt_lengths - 1] = EOS
    return (
        jnp.asarray(src, jnp.int32),
        jnp.asarray(src_lengths, jnp.int32),
        jnp.asarray(tgt, jnp.int32),
        jnp.asarray(tgt_lengths, jnp.int32),
    )


def _numpy_reference(params: Seq2SeqParams, src, src_lengths, tgt_in, tgt_lengths):
    """The encoder–decoder, one example at a time, float64, the one-hot built literally."""
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    g = np.tanh if params.activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    B, T_y = tgt_in.shape
    H_dec, V = params.decoder_hidden_size, params.target_vocab_size
    out = np.zeros((B, T_y, V))
    for b in range(B):
        h, c = np.asarray(src[b]), []
        for layer in params.encoder:
            outs, finals = [], []
            for d, p in enumerate(layer):
                H = p.b_a.shape[0]
                o, last = ref_layer(f64(p.W_a), f64(p.b_a), h, int(src_lengths[b]), np.zeros(H),
                                    reverse=(d == 1), activation=params.activation)  # fmt: skip
                outs.append(o)
                finals.append(last)
            h = np.concatenate(outs, axis=-1)
            c.append(np.concatenate(finals))
        L_enc, L_dec = len(params.encoder), len(params.decoder)
        a = []
        for l in range(L_dec):
            c_l = c[l] if L_enc == L_dec else c[-1]
            if params.bridge_type == "project":
                c_l = np.tanh(f64(params.bridge[l].W_y) @ c_l + f64(params.bridge[l].b_y))
            a.append(c_l)
        for t in range(int(tgt_lengths[b])):
            x = np.zeros(V)
            x[int(tgt_in[b, t])] = 1.0
            if params.feed_context:
                x = np.concatenate([x, c[-1]])
            for l, p in enumerate(params.decoder):
                W_a = f64(p.W_a)
                a[l] = g(W_a[:, :H_dec] @ a[l] + W_a[:, H_dec:] @ x + f64(p.b_a))
                x = a[l]
            out[b, t] = f64(params.head.W_y) @ a[-1] + f64(params.head.b_y)
    return out


@pytest.mark.parametrize("cfg", CONFIGS)
def test_teacher_forcing_matches_float64_reference(cfg):
    params = init_seq2seq(jax.random.key(1), V_SRC, V_TGT, **cfg)
    src, sl, tgt, tl = _batch(np.random.default_rng(0))
    tgt_in = shift_right(tgt, BOS)
    logits = apply_jit(params, src, sl, tgt_in, tl)
    ref = _numpy_reference(params, np.asarray(src), np.asarray(sl), np.asarray(tgt_in), tl)
    np.testing.assert_allclose(np.asarray(logits), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_teacher_forcing_equals_step_by_step_loop(cfg):
    params = init_seq2seq(jax.random.key(2), V_SRC, V_TGT, **cfg)
    src, sl, tgt, tl = _batch(np.random.default_rng(1))
    tgt_in = shift_right(tgt, BOS)
    logits = apply_jit(params, src, sl, tgt_in, tl)
    state = decoder_initial_state(params, encode(params, src, sl))
    steps = []
    step = jax.jit(decoder_step)
    for t in range(tgt_in.shape[1]):
        state, logits_t = step(params, state, tgt_in[:, t])
        steps.append(logits_t)
    steps = jnp.stack(steps, axis=1)
    valid = (jnp.arange(tgt_in.shape[1])[None, :] < tl[:, None])[:, :, None]
    np.testing.assert_allclose(
        np.asarray(jnp.where(valid, steps, 0.0)), np.asarray(logits), atol=1e-5, rtol=1e-5
    )
    assert bool(jnp.all(jnp.where(valid, 0.0, logits) == 0.0))  # padding emits exactly zero


def test_padding_contents_do_not_matter():
    params = init_seq2seq(jax.random.key(3), V_SRC, V_TGT, hidden_size=6, bidirectional=True)
    rng = np.random.default_rng(2)
    src, sl, tgt, tl = _batch(rng)
    src_pad = jnp.where(jnp.arange(src.shape[1])[None, :] < sl[:, None], src,
                        jnp.asarray(rng.integers(0, V_SRC, size=src.shape), jnp.int32))  # fmt: skip
    tgt_pad = jnp.where(jnp.arange(tgt.shape[1])[None, :] < tl[:, None], tgt,
                        jnp.asarray(rng.integers(0, V_TGT, size=tgt.shape), jnp.int32))  # fmt: skip
    a = apply_jit(params, src, sl, shift_right(tgt, BOS), tl)
    b = apply_jit(params, src_pad, sl, shift_right(tgt_pad, BOS), tl)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_encode_shapes_and_bidirectional_context():
    params = init_seq2seq(jax.random.key(4), V_SRC, V_TGT, hidden_size=5, num_layers=2,
                          bidirectional=True)  # fmt: skip
    src, sl, _, _ = _batch(np.random.default_rng(3))
    c = encode(params, src, sl)
    assert c.shape == (2, src.shape[0], 10)
    state = decoder_initial_state(params, c)
    assert isinstance(state, DecoderState)
    # One stacked-state layout everywhere: (L_dec, B, H_dec), as rnn_layers' finals.
    assert state.a.shape == (2, src.shape[0], 10) and state.context.shape == (src.shape[0], 10)
    np.testing.assert_array_equal(np.asarray(state.a[1]), np.asarray(c[1]))
    # A state in another layout raises instead of giving wrong logits.
    bad = DecoderState(a=jnp.swapaxes(state.a, 0, 1), context=state.context)
    with pytest.raises(ValueError, match=r"`state` must be a DecoderState whose `a` has shape"):
        decoder_step(params, bad, jnp.zeros((src.shape[0],), jnp.int32))


def test_empty_source_gives_zero_context_not_a_crash():
    params = init_seq2seq(jax.random.key(5), V_SRC, V_TGT, hidden_size=4, bidirectional=True)
    c = encode(params, jnp.zeros((2, 3), jnp.int32), jnp.array([0, 0]))
    assert bool(jnp.all(c == 0.0))
    c = encode(params, jnp.zeros((2, 0), jnp.int32), jnp.array([0, 0]))  # T_x = 0
    assert c.shape == (1, 2, 8) and bool(jnp.all(c == 0.0))
    logits = seq2seq_apply(params, jnp.zeros((2, 0), jnp.int32), jnp.array([0, 0]),
                           jnp.full((2, 1), BOS), jnp.array([1, 0]))  # fmt: skip
    assert logits.shape == (2, 1, V_TGT) and bool(jnp.all(jnp.isfinite(logits)))


def test_loss_is_masked_cross_entropy_of_shifted_targets():
    params = init_seq2seq(jax.random.key(6), V_SRC, V_TGT, hidden_size=6)
    src, sl, tgt, tl = _batch(np.random.default_rng(4))
    loss = jax.jit(seq2seq_loss, static_argnames="bos_id")(params, src, sl, tgt, tl, bos_id=BOS)
    logits = np.asarray(apply_jit(params, src, sl, shift_right(tgt, BOS), tl), np.float64)
    total, count = 0.0, 0
    for b in range(src.shape[0]):
        for t in range(int(tl[b])):
            z = logits[b, t]
            total += np.log(np.sum(np.exp(z - z.max()))) + z.max() - z[int(tgt[b, t])]
            count += 1
    np.testing.assert_allclose(float(loss), total / count, rtol=1e-5)


def test_one_training_step_changes_every_parameter():
    params = init_seq2seq(jax.random.key(7), V_SRC, V_TGT, hidden_size=4, num_layers=2,
                          bidirectional=True, bridge="project", feed_context=True)  # fmt: skip
    src, sl, tgt, tl = _batch(np.random.default_rng(5))
    grads = jax.jit(jax.grad(seq2seq_loss), static_argnames="bos_id")(
        params, src, sl, tgt, tl, bos_id=BOS
    )
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isfinite(g))), path
        assert float(jnp.max(jnp.abs(g))) > 0.0, path


def test_learns_to_reverse_short_sequences():
    """A plain encoder–decoder learns to reverse 3-token sequences in a few hundred steps."""
    V = 8  # specials 0-3, symbols 4-7
    params = init_seq2seq(jax.random.key(8), V, V, hidden_size=32)
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)
    rng = np.random.default_rng(6)

    def data(n):
        x = rng.integers(4, V, size=(n, 3))
        y = np.concatenate([x[:, ::-1], np.full((n, 1), EOS)], axis=1)
        return jnp.asarray(x, jnp.int32), jnp.asarray(y, jnp.int32)

    @jax.jit
    def step(params, opt_state, x, y):
        B = x.shape[0]
        loss, g = jax.value_and_grad(seq2seq_loss)(
            params, x, jnp.full((B,), 3), y, jnp.full((B,), 4), bos_id=BOS
        )
        params, opt_state = optimizer_step(opt, g, opt_state, params)
        return params, opt_state, loss

    for _ in range(250):
        params, opt_state, loss = step(params, opt_state, *data(32))
    x, y = data(64)
    logits = apply_jit(params, x, jnp.full((64,), 3), shift_right(y, BOS), jnp.full((64,), 4))
    acc = float(jnp.mean(jnp.all(jnp.argmax(logits, -1) == y, axis=1)))
    assert acc > 0.9, (acc, float(loss))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="`bridge` must be one of"):
        init_seq2seq(jax.random.key(0), 5, 5, bridge="attention")
    with pytest.raises(ValueError, match=r"`decoder_hidden_size` must equal .* = 8"):
        init_seq2seq(jax.random.key(0), 5, 5, hidden_size=4, bidirectional=True,
                     decoder_hidden_size=6)  # fmt: skip
    with pytest.raises(ValueError, match="`hidden_size` must be a positive int"):
        init_seq2seq(jax.random.key(0), 5, 5, hidden_size=0)
    with pytest.raises(ValueError, match="`key` must be a jax.random key"):
        init_seq2seq(0, 5, 5)
    params = init_seq2seq(jax.random.key(0), V_SRC, V_TGT, hidden_size=4)
    src, sl, tgt, tl = _batch(np.random.default_rng(7))
    with pytest.raises(
        ValueError, match=r"`src_lengths` must have shape \(B,\) = \(4,\), got \(3,\)"
    ):
        encode(params, src, sl[:3])
    with pytest.raises(ValueError, match=r"`src_lengths` must lie in \[0, T\]"):
        encode(params, src, sl + 100)
    with pytest.raises(ValueError, match=r"`src` token ids must lie in \[0, 13\)"):
        encode(params, src + V_SRC, sl)
    with pytest.raises(
        ValueError, match=r"`tgt_in` must be integer ids of shape \(B, T_y\) with B = 4"
    ):
        seq2seq_apply(params, src, sl, tgt[:2], tl[:2])
    with pytest.raises(ValueError, match=r"`tgt_lengths` must have shape \(B,\)"):
        seq2seq_apply(params, src, sl, tgt, tl[:2])


def test_key_first_positional_or_keyword():
    a = init_seq2seq(jax.random.key(3), 7, 6, hidden_size=4)
    b = init_seq2seq(key=jax.random.key(3), source_vocab_size=7, target_vocab_size=6, hidden_size=4)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --------------------------------------------------------------------------- gated cells

GATED_CONFIGS = [
    dict(hidden_size=4, num_layers=2, bidirectional=True, feed_context=True),
    dict(hidden_size=5, num_layers=2, decoder_layers=1, bridge="project", decoder_hidden_size=6,
         feed_context=True),
    dict(hidden_size=3, num_layers=1, decoder_layers=2, bidirectional=True),
]  # fmt: skip


def _gated_reference(params: Seq2SeqParams, src, src_lengths, tgt_in, tgt_lengths):
    """The GRU/LSTM encoder–decoder in float64, one example at a time: PyTorch's equations
    (``tests/reference.py``), one-hot vectors built literally, the context concatenated to
    the decoder's input, an LSTM's (h, c) handed over by the concat bridge."""
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    cell, lstm = params.cell, params.cell == "lstm"
    B, T_y = tgt_in.shape
    V = params.target_vocab_size
    out = np.zeros((B, T_y, V))
    for b in range(B):
        h, ctx, cst = np.asarray(src[b]), [], []
        for layer in params.encoder:
            outs, fh, fc = [], [], []
            for d, p in enumerate(layer):
                zero = np.zeros(p.hidden_size)
                o, last = ref_gated(cell, p, h, int(src_lengths[b]), (zero, zero) if lstm else zero,
                                    reverse=(d == 1))  # fmt: skip
                outs.append(o)
                fh.append(last[0] if lstm else last)
                fc.append(last[1] if lstm else None)
            h = np.concatenate(outs, axis=-1)
            ctx.append(np.concatenate(fh))
            cst.append(np.concatenate(fc) if lstm else None)
        L_enc, L_dec = len(params.encoder), len(params.decoder)
        carries = []
        for l in range(L_dec):
            e = l if L_enc == L_dec else -1
            a = ctx[e]
            if params.bridge_type == "project":
                a = np.tanh(f64(params.bridge[l].W_y) @ a + f64(params.bridge[l].b_y))
                c0 = np.zeros_like(a)
            else:
                c0 = cst[e]
            carries.append((a, c0) if lstm else a)
        for t in range(int(tgt_lengths[b])):
            x = np.zeros(V)
            x[int(tgt_in[b, t])] = 1.0
            if params.feed_context:
                x = np.concatenate([x, ctx[-1]])
            for l, p in enumerate(params.decoder):
                carries[l], x = ref_step(cell, p.W_a, biases_of(cell, p), carries[l], x)
            out[b, t] = f64(params.head.W_y) @ x + f64(params.head.b_y)
    return out


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("cfg", GATED_CONFIGS)
def test_gated_teacher_forcing_and_steps_match_float64_reference(cell, cfg):
    """init_seq2seq(cell=...): seq2seq_apply and a loop of decoder_step (which carries the
    LSTM's c) both equal the equations written out."""
    params = init_seq2seq(jax.random.key(1), V_SRC, V_TGT, cell=cell, **cfg)
    assert params.cell == cell and params.config()["cell"] == cell
    G = 3 if cell == "gru" else 4
    assert params.decoder[0].W_a.shape[0] == G * params.decoder_hidden_size
    src, sl, tgt, tl = _batch(np.random.default_rng(0))
    tgt_in = shift_right(tgt, BOS)
    logits = apply_jit(params, src, sl, tgt_in, tl)
    ref = _gated_reference(params, np.asarray(src), np.asarray(sl), np.asarray(tgt_in), tl)
    np.testing.assert_allclose(np.asarray(logits), ref, atol=2e-5, rtol=1e-4)

    state = decoder_initial_state(params, encode(params, src, sl, return_cell_state=cell == "lstm"))
    assert (state.c is not None) == (cell == "lstm")
    step = jax.jit(decoder_step)
    steps = []
    for t in range(tgt_in.shape[1]):
        state, logits_t = step(params, state, tgt_in[:, t])
        steps.append(logits_t)
    valid = (jnp.arange(tgt_in.shape[1])[None, :] < tl[:, None])[:, :, None]
    np.testing.assert_allclose(
        np.asarray(jnp.where(valid, jnp.stack(steps, axis=1), 0.0)), ref, atol=2e-5, rtol=1e-4
    )


def test_lstm_decoder_state_carries_the_cell_state_and_generates():
    from rnn_jax.generate import beam_search, greedy_decode

    params = init_seq2seq(jax.random.key(2), V_SRC, V_TGT, hidden_size=4, bidirectional=True,
                          cell="lstm")  # fmt: skip
    src, sl, _, _ = _batch(np.random.default_rng(1))
    B = src.shape[0]
    h, c = encode(params, src, sl, return_cell_state=True)
    assert h.shape == c.shape == (1, B, 8)
    np.testing.assert_array_equal(np.asarray(encode(params, src, sl)), np.asarray(h))
    state = decoder_initial_state(params, (h, c))
    np.testing.assert_array_equal(np.asarray(state.c), np.asarray(c))
    assert state.batch_axes == DecoderState(a=1, context=0, c=1)
    # Dropping the cell state changes the next logits: c is really read.
    _, with_c = decoder_step(params, state, jnp.full((B,), BOS))
    _, zero_c = decoder_step(params, state._replace(c=jnp.zeros_like(state.c)), jnp.full((B,), BOS))
    assert not np.allclose(np.asarray(with_c), np.asarray(zero_c))
    tokens, lengths = greedy_decode(decoder_step, params, state, jnp.full((B,), BOS), max_len=5,
                                    eos_id=EOS)  # fmt: skip
    assert tokens.shape == (B, 5) and lengths.shape == (B,)
    beams = beam_search(decoder_step, params, state, jnp.full((B,), BOS), max_len=5, eos_id=EOS,
                        beam_width=3)  # fmt: skip
    assert beams.tokens.shape == (B, 3, 5)
    # The greedy path is the beam search's first step argmax, step by step equal to decoder_step.
    st, first = decoder_step(params, state, jnp.full((B,), BOS))
    np.testing.assert_array_equal(np.asarray(tokens[:, 0]), np.asarray(jnp.argmax(first, -1)))


def test_gated_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"`cell` must be one of \('rnn', 'gru', 'lstm'\)"):
        init_seq2seq(jax.random.key(0), 5, 5, cell="transformer")
    lstm = init_seq2seq(jax.random.key(0), V_SRC, V_TGT, hidden_size=4, cell="lstm")
    gru = init_seq2seq(jax.random.key(0), V_SRC, V_TGT, hidden_size=4, cell="gru")
    src, sl, _, _ = _batch(np.random.default_rng(7))
    with pytest.raises(ValueError, match=r"pair \(c, cell_states\) of encode\(\.\.\., return_cell"):
        decoder_initial_state(lstm, encode(lstm, src, sl))
    with pytest.raises(ValueError, match=r"`return_cell_state=True` is only for cell='lstm'"):
        encode(gru, src, sl, return_cell_state=True)
    pair = encode(lstm, src, sl, return_cell_state=True)
    with pytest.raises(ValueError, match=r"got a tuple of 2 for cell='gru'"):
        decoder_initial_state(gru, pair)
    state = decoder_initial_state(lstm, pair)
    y = jnp.zeros((src.shape[0],), jnp.int32)
    with pytest.raises(ValueError, match=r"`state.c` must be the \(L_dec, B, H_dec\)"):
        decoder_step(lstm, state._replace(c=None), y)
    with pytest.raises(ValueError, match=r"`state.c` must be .* None otherwise"):
        decoder_step(gru, decoder_initial_state(gru, encode(gru, src, sl))._replace(c=state.c), y)
    # The project bridge starts the LSTM decoder's cell states at zero, from either form.
    proj = init_seq2seq(jax.random.key(0), V_SRC, V_TGT, hidden_size=4, cell="lstm",
                        bridge="project")  # fmt: skip
    s1 = decoder_initial_state(proj, encode(proj, src, sl))
    s2 = decoder_initial_state(proj, encode(proj, src, sl, return_cell_state=True))
    assert bool(jnp.all(s1.c == 0)) and bool(jnp.all(s2.c == 0))
    np.testing.assert_array_equal(np.asarray(s1.a), np.asarray(s2.a))


def test_gate_init_keras_in_seq2seq():
    p = init_seq2seq(jax.random.key(0), V_SRC, V_TGT, hidden_size=4, cell="lstm", gate_init="keras")
    for layer in (p.encoder[0][0], p.decoder[0]):
        np.testing.assert_array_equal(np.asarray(layer.b_a[4:8]), np.ones(4, np.float32))
        np.testing.assert_array_equal(np.asarray(layer.b_a[:4]), np.zeros(4, np.float32))
    with pytest.raises(
        ValueError, match=r"`gate_init` must be one of .* got 'keras' with cell='rnn'"
    ):
        init_seq2seq(jax.random.key(0), V_SRC, V_TGT, gate_init="keras")
