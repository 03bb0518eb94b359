"""A plain loop over the formulation's equations: the reference every test compares to.

    a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a),   ŷ<t> = W_y a<t> + b_y  (logits)

Written for one example at a time with explicit Python loops over valid steps and, for
token ids, the literal one-hot vector x<t> of the formulation. ``xp`` is ``numpy`` (float64
reference values) or ``jax.numpy`` (so ``jax.grad`` can differentiate the reference).
"""

import numpy as np


def _g(name, xp):
    return xp.tanh if name == "tanh" else (lambda z: xp.maximum(z, 0.0))


def ref_layer(W_a, b_a, xs, length, a0, *, reverse=False, activation="tanh", xp=np):
    """One layer, one direction, one example: xs (T, D) dense or (T,) int ids.

    Returns (states (T, H) zero beyond `length`, final state (H,)).
    """
    H = b_a.shape[0]
    W_aa, W_ax = W_a[:, :H], W_a[:, H:]
    D = W_ax.shape[1]
    T = xs.shape[0]
    g = _g(activation, xp)
    a = a0
    rows = [xp.zeros(H, dtype=W_a.dtype) for _ in range(T)]
    steps = reversed(range(length)) if reverse else range(length)
    for t in steps:
        if xs.ndim == 1:  # token id: the formulation's one-hot vector, built literally
            x_t = np.zeros(D)
            x_t[int(xs[t])] = 1.0
            x_t = xp.asarray(x_t, dtype=W_a.dtype)
        else:
            x_t = xs[t]
        a = g(W_aa @ a + W_ax @ x_t + b_a)
        rows[t] = a
    return xp.stack(rows), a


def _merge(name, f, b, xp):
    if name == "concat":
        return xp.concatenate([f, b], axis=-1)
    if name == "sum":
        return f + b
    if name == "mean":
        return 0.5 * (f + b)
    if name == "product":
        return f * b
    raise ValueError(name)


def ref_network(layers, head, xs, lengths, a0=None, *, activation="tanh", merge="concat", xp=np):
    """The whole network for a batch, one example at a time.

    layers: [[(W_a, b_a) per direction] per layer]; head: (W_y, b_y).
    Returns dict(a_seq (B,T,Hout), a_last (L*dirs,B,H), logits (B,T,C) zero at padding,
    class_logits (B,C)).
    """
    B, T = xs.shape[:2]
    dirs = len(layers[0])
    H = layers[0][0][1].shape[0]
    W_y, b_y = head
    seqs, finals_all, logits, cls = [], [], [], []
    for b in range(B):
        h = xs[b]
        L_b = int(lengths[b])
        finals = []
        for l, layer in enumerate(layers):
            outs = []
            for d, (W_a, b_a) in enumerate(layer):
                init = xp.zeros(H, dtype=W_a.dtype) if a0 is None else a0[l * dirs + d, b]
                out, last = ref_layer(
                    W_a, b_a, h, L_b, init, reverse=(d == 1), activation=activation, xp=xp
                )
                outs.append(out)
                finals.append(last)
            h = outs[0] if dirs == 1 else _merge(merge, outs[0], outs[1], xp)
        seqs.append(h)
        finals_all.append(xp.stack(finals))
        valid = xp.asarray((np.arange(T) < L_b)[:, None])
        logits.append(xp.where(valid, h @ W_y.T + b_y[None, :], 0.0))
        top = finals[-1] if dirs == 1 else _merge(merge, finals[-2], finals[-1], xp)
        cls.append(W_y @ top + b_y)
    return dict(
        a_seq=xp.stack(seqs),
        a_last=xp.stack(finals_all, axis=1),
        logits=xp.stack(logits),
        class_logits=xp.stack(cls),
    )


def params_as_numpy(params):
    """RNNParams -> (layers, head) of float64 NumPy arrays for ref_network."""
    layers = [
        [(np.asarray(p.W_a, np.float64), np.asarray(p.b_a, np.float64)) for p in layer]
        for layer in params.layers
    ]
    head = (np.asarray(params.head.W_y, np.float64), np.asarray(params.head.b_y, np.float64))
    return layers, head


def cell_scan_reference(layer, xs, lengths, a0=None, *, reverse=False, activation="tanh"):
    """One layer over a batch as the cell itself: ``vmap`` over the batch of
    ``lax.scan(partial(rnn_cell, layer), a0, x)`` (STYLE 2 and 4: one example per function,
    the batch in one place). Masked steps keep the state and emit zero; ``reverse`` reverses
    the valid part of each sequence (padding stays at the end).

    Returns (a_seq (B, T, H), a_last (B, H)), as ``rnn_jax.rnn_unroll``.
    """
    from functools import partial

    import jax
    import jax.numpy as jnp

    from rnn_jax import rnn_cell

    H = layer.b_a.shape[-1]
    B, T = xs.shape[:2]
    if a0 is None:
        a0 = jnp.zeros((B, H), layer.W_a.dtype)
    cell = partial(rnn_cell, layer, activation=activation)

    def one_example(x, n, a_init):
        valid = jnp.arange(T) < n
        if reverse:  # reverse the valid part: position t reads x[n - 1 - t]
            order = jnp.where(valid, n - 1 - jnp.arange(T), jnp.arange(T))
            x = jnp.take(x, order, axis=0)

        def step(a_prev, inputs):
            x_t, m_t = inputs
            a, y = cell(a_prev, x_t)
            return jnp.where(m_t, a, a_prev), jnp.where(m_t, y, jnp.zeros_like(y))

        a_last, ys = jax.lax.scan(step, a_init, (x, valid))
        if reverse:
            ys = jnp.take(ys, order, axis=0)
        return ys, a_last

    return jax.vmap(one_example)(xs, lengths, a0)


# --------------------------------------------------------------------------- gated cells


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_step(cell, W_a, biases, carry, x_t):
    """PyTorch's equations for one example in float64; ``x_t`` dense ``(D,)``."""
    W_a = np.asarray(W_a, np.float64)
    H = W_a.shape[1] - x_t.shape[0]
    W_h, W_x = W_a[:, :H], W_a[:, H:]
    if cell == "gru":
        b_x, b_h = (np.asarray(b, np.float64) for b in biases)
        h = carry
        W_ir, W_iz, W_in = np.split(W_x, 3)
        W_hr, W_hz, W_hn = np.split(W_h, 3)
        b_ir, b_iz, b_in = np.split(b_x, 3)
        b_hr, b_hz, b_hn = np.split(b_h, 3)
        r = _sigmoid(W_ir @ x_t + b_ir + W_hr @ h + b_hr)
        z = _sigmoid(W_iz @ x_t + b_iz + W_hz @ h + b_hz)
        n = np.tanh(W_in @ x_t + b_in + r * (W_hn @ h + b_hn))
        h = (1 - z) * n + z * h
        return h, h
    (b_a,) = (np.asarray(b, np.float64) for b in biases)
    h, c = carry
    W_ii, W_if, W_ig, W_io = np.split(W_x, 4)
    W_hi, W_hf, W_hg, W_ho = np.split(W_h, 4)
    b_i, b_f, b_g, b_o = np.split(b_a, 4)
    i = _sigmoid(W_ii @ x_t + W_hi @ h + b_i)
    f = _sigmoid(W_if @ x_t + W_hf @ h + b_f)
    g = np.tanh(W_ig @ x_t + W_hg @ h + b_g)
    o = _sigmoid(W_io @ x_t + W_ho @ h + b_o)
    c = f * c + i * g
    h = o * np.tanh(c)
    return (h, c), h


def biases_of(cell, layer):
    return (layer.b_x, layer.b_h) if cell == "gru" else (layer.b_a,)


def ref_gated(cell, layer, xs, length, carry0, *, reverse=False):
    """One example: xs (T, D) dense or (T,) ids. Returns (h_seq (T, H) zero beyond
    ``length``, final carry) in float64, over the valid steps only."""
    H = layer.hidden_size
    D = layer.input_size
    T = xs.shape[0]
    carry = (
        np.asarray(carry0, np.float64)
        if cell == "gru"
        else tuple(np.asarray(a, np.float64) for a in carry0)
    )
    out = np.zeros((T, H))
    for t in reversed(range(length)) if reverse else range(length):
        if xs.ndim == 1:
            x_t = np.zeros(D)
            x_t[int(xs[t])] = 1.0  # the one-hot vector, literally
        else:
            x_t = np.asarray(xs[t], np.float64)
        carry, h = ref_step(cell, layer.W_a, biases_of(cell, layer), carry, x_t)
        out[t] = h
    return out, carry
