"""Long sequences: training in O(sqrt(T)) memory, and truncated backpropagation through time.

The default training path already keeps only the hidden states for the backward pass
(:mod:`rnn_jax.bptt`), ``T x B x H`` per layer. For very long sequences this module adds:

- :func:`rnn_loss_remat`: the per-step softmax cross-entropy of an RNN, computed chunk by
  chunk inside ``jax.checkpoint``: the forward keeps only the state at each chunk
  boundary, the backward recomputes one chunk at a time. With chunks of
  ``k = ceil(sqrt(T))`` steps the memory is ``O(sqrt(T) * B * H)`` instead of
  ``O(T * B * H)``. Same loss and same gradients as the full computation (up to float
  rounding). Unidirectional networks of any depth run one chunked scan (one extra
  forward pass). One-layer *bidirectional* networks (any cell, any ``merge``) run three:
  the forward direction's state at every chunk start (left to right), the backward
  direction's state at every chunk end (right to left, each chunk read backwards), then
  the loss, one chunk of both directions at a time from those states (two extra forward
  passes)::

      f[0] = 0;  f[i+1] = forward(chunk i, from f[i])          # kept: n states
      b[n] = 0;  b[i]   = backward(chunk i, from b[i+1])       # kept: n states
      loss = sum_i  CE(head(merge(forward(chunk i, f[i]), backward(chunk i, b[i+1]))))

  (A deeper bidirectional stack would need every layer's outputs over the whole
  sequence as the next layer's inputs, ``O(T)`` again, so it is rejected.)
- :func:`truncated_bptt`: split the sequence into chunks, take one optimiser step per
  chunk, and carry the state into the next chunk through ``stop_gradient`` (gradients
  never cross a chunk boundary), the classic truncated BPTT of language models.

Both run every cell of :func:`~rnn_jax.init_rnn`: the state carried from chunk to chunk
is the cell's whole carry, ``h`` (``(L, B, H)``) or, for ``cell="lstm"``, the pair
``(h, c)``, so chunked and one-shot runs compute the same thing. Masked steps (``lengths``
or ``mask``) keep the state and add no loss, as everywhere in the library.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import init_rnn
    >>> params = init_rnn(jax.random.key(0), 50, 16, 50, token_inputs=True)
    >>> ids = jax.random.randint(jax.random.key(1), (2, 30), 0, 50)   # (B, T)
    >>> labels = jnp.roll(ids, -1, axis=1)
    >>> loss = rnn_loss_remat(params, ids, labels, chunk_size=8)
    >>> loss.shape, bool(loss > 0)
    ((), True)
    >>> bi = init_rnn(jax.random.key(0), 50, 16, 50, cell="gru", bidirectional=True,
    ...               token_inputs=True)
    >>> bool(jnp.isfinite(rnn_loss_remat(bi, ids, labels, jnp.array([30, 12]))))
    True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from rnn_jax._checks import positive_int
from rnn_jax._optim import optimizer_step
from rnn_jax.network import check_params
from rnn_jax.params import RNNParams, StackParams
from rnn_jax.stack import check_batch, head_apply, stack_unroll

__all__ = ["chunk_loss", "rnn_loss_remat", "truncated_bptt"]

Inputs = Float[Array, "B T D"] | Int[Array, "B T"]
State = Float[Array, "L B H"] | tuple[Float[Array, "L B H"], Float[Array, "L B H"]]


def chunk_loss(
    params: RNNParams,
    a_prev: State,
    xs: Inputs,
    labels: Int[Array, "B K"],
    mask_tb: Bool[Array, "K B"],
) -> tuple[Float[Array, ""], State]:
    """Summed cross-entropy of one chunk of ``K`` steps and the states after it.

    :func:`rnn_jax.stack.stack_unroll` then :func:`rnn_jax.stack.head_apply`: the same
    layer loop (and optimisations) as :func:`rnn_jax.rnn_apply`.

    Args:
        params: a :class:`~rnn_jax.RNNParams`.
        a_prev: the state of every layer and direction where it starts reading the
            chunk, ``(num_layers * directions, B, H)`` (the stacked-state layout of
            :func:`rnn_jax.rnn_layers`): for a backward direction, its state after the
            steps to the right of the chunk. For ``cell="lstm"`` the pair ``(h, c)`` of
            such arrays.
        xs: the chunk's inputs, batch-major ``(B, K, D)`` or ids ``(B, K)``.
        labels: ``(B, K)`` integer classes.
        mask_tb: time-major validity ``(K, B)``.

    Returns:
        ``(sum of the per-step losses at valid steps, states after the chunk)`` (the pair
        ``(h, c)`` for an LSTM).
    """
    lstm = params.cell == "lstm"
    h0, c0 = a_prev if lstm else (a_prev, None)
    h, finals = stack_unroll(params.stack, xs, mask_tb, h0, c0=c0, return_cell_state=lstm)
    logits = head_apply(params.head, h)  # (K, B, C)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels.T)
    return jnp.sum(jnp.where(mask_tb, ce, jnp.zeros_like(ce))), finals


def _chunked(params, xs, labels, lengths, chunk_size, *, mask=None, bidirectional=False):
    """Validate, pad ``T`` to a multiple of ``chunk_size`` and split into chunks."""
    check_params(params)
    if params.bidirectional and not bidirectional:
        raise ValueError(
            "`params` must be unidirectional: a backward direction needs the whole sequence, "
            "so it cannot be run chunk by chunk."
        )
    if params.bidirectional and params.num_layers != 1:
        raise ValueError(
            "`params` must be unidirectional or a one-layer bidirectional network, got "
            f"num_layers={params.num_layers} with bidirectional=True: layer 2 reads both "
            "directions of layer 1 over the whole sequence, which O(sqrt(T)) memory cannot hold."
        )
    xs, m, _, _ = check_batch(params.stack, xs, lengths, mask)
    B, T = xs.shape[:2]
    if tuple(labels.shape) != (B, T):
        raise ValueError(
            f"`labels` must have shape (B, T) = ({B}, {T}), got {tuple(labels.shape)}."
        )
    if m is None:
        m = jnp.ones((B, T), bool)
    if chunk_size is None:
        chunk_size = max(1, math.ceil(math.sqrt(T)))
    chunk_size = positive_int("chunk_size", chunk_size)
    n = -(-T // chunk_size)
    pad = n * chunk_size - T
    if pad:  # padded steps are masked: they carry the state and add no loss
        xs = jnp.pad(xs, [(0, 0), (0, pad)] + [(0, 0)] * (xs.ndim - 2))
        labels = jnp.pad(labels, [(0, 0), (0, pad)])
        m = jnp.pad(m, [(0, 0), (0, pad)])

    def split(x):  # (B, n*k, ...) -> (n, B, k, ...)
        return jnp.swapaxes(x.reshape(B, n, chunk_size, *x.shape[2:]), 0, 1)

    masks_tb = jnp.swapaxes(split(m), 1, 2)  # (n, k, B)
    return split(xs), split(labels), masks_tb, jnp.sum(m)


def rnn_loss_remat(
    params: RNNParams,
    xs: Inputs,
    labels: Int[Array, "B T"],
    lengths: Int[Array, " B"] | None = None,
    *,
    mask: Bool[Array, "B T"] | Int[Array, "B T"] | None = None,
    chunk_size: int | None = None,
) -> Float[Array, ""]:
    """Mean per-step softmax cross-entropy over valid steps, in ``O(sqrt(T))`` memory.

    The same value as ``masked mean of softmax_cross_entropy(rnn_apply(params, xs,
    lengths), labels)``, and the same gradient, but the forward keeps only the states
    at chunk boundaries (``jax.checkpoint`` around each chunk); the backward recomputes
    one chunk at a time. A one-layer bidirectional network keeps the states of both
    directions at the chunk boundaries (see the module docstring).

    Args:
        params: a unidirectional :class:`~rnn_jax.RNNParams` (any depth), or a one-layer
            bidirectional one (any merge); any cell.
        xs: ``(B, T, D)`` floats or ``(B, T)`` token ids.
        labels: ``(B, T)`` integer classes in ``[0, C)``.
        lengths: ``(B,)`` valid lengths, or ``None``.
        mask: ``(B, T)`` boolean (or integer 0/1) validity instead of ``lengths``.
        chunk_size: steps per chunk; default ``ceil(sqrt(T))``.

    Returns:
        The scalar loss (0 when no step is valid).
    """
    x_chunks, y_chunks, m_chunks, n_valid = _chunked(
        params, xs, labels, lengths, chunk_size, mask=mask, bidirectional=True
    )
    if params.bidirectional:
        losses = _bidirectional_losses(params, x_chunks, y_chunks, m_chunks)
    else:
        B, H, L = x_chunks.shape[1], params.hidden_size, params.num_layers
        zeros = jnp.zeros((L, B, H), params.layers[0][0].W_a.dtype)
        a0 = (zeros, zeros) if params.cell == "lstm" else zeros

        @jax.checkpoint
        def body(a_prev, chunk):
            x, y, m = chunk
            loss, a = chunk_loss(params, a_prev, x, y, m)
            return a, loss

        _, losses = jax.lax.scan(body, a0, (x_chunks, y_chunks, m_chunks))
    total = jnp.sum(losses)
    return total / jnp.maximum(n_valid, 1).astype(total.dtype)


def _chunk_boundaries(stack: StackParams, carry0: Any, x_chunks: Array, m_chunks: Array) -> Any:
    """The carry of a one-layer unidirectional ``stack`` before each chunk, ``(n, 1, B, H)``.

    Each chunk runs under ``jax.checkpoint``, so the gradient keeps only these ``n``
    states and recomputes a chunk's steps when it reaches it.
    """
    lstm = stack.cell == "lstm"

    @jax.checkpoint
    def body(carry, chunk):
        x, m = chunk
        h0, c0 = carry if lstm else (carry, None)
        _, finals = stack_unroll(stack, x, m, h0, c0=c0, return_cell_state=lstm)
        return finals, carry

    return jax.lax.scan(body, carry0, (x_chunks, m_chunks))[1]


def _bidirectional_losses(
    params: RNNParams, x_chunks: Array, y_chunks: Array, m_chunks: Array
) -> Float[Array, " N"]:
    """Per-chunk summed losses of a one-layer bidirectional network (module docstring)."""
    stack = params.stack
    fwd, bwd = (dataclasses.replace(stack, layers=((p,),)) for p in stack.layers[0])
    B, H = x_chunks.shape[1], params.hidden_size
    zeros = jnp.zeros((1, B, H), params.layers[0][0].W_a.dtype)
    carry0 = (zeros, zeros) if params.cell == "lstm" else zeros
    # f[i]: the forward direction before chunk i; b[i]: the backward direction before
    # (to the right of) chunk i, found by reading the chunks in reverse order, each
    # reversed in time (masked steps keep the state, as in the one-shot reverse scan).
    f_starts = _chunk_boundaries(fwd, carry0, x_chunks, m_chunks)
    b_starts = _chunk_boundaries(bwd, carry0, x_chunks[::-1, :, ::-1], m_chunks[::-1, ::-1])
    b_starts = jax.tree_util.tree_map(lambda s: s[::-1], b_starts)

    @jax.checkpoint
    def body(_, chunk):
        x, y, m, f0, b0 = chunk
        a_prev = jax.tree_util.tree_map(lambda f, b: jnp.concatenate([f, b]), f0, b0)
        loss, _ = chunk_loss(params, a_prev, x, y, m)
        return None, loss

    return jax.lax.scan(body, None, (x_chunks, y_chunks, m_chunks, f_starts, b_starts))[1]


def truncated_bptt(
    params: RNNParams,
    opt_state: Any,
    xs: Inputs,
    labels: Int[Array, "B T"],
    lengths: Int[Array, " B"] | None = None,
    *,
    optimizer: optax.GradientTransformation,
    chunk_size: int,
    a0: Float[Array, "L B H"] | None = None,
    c0: Float[Array, "L B H"] | None = None,
    return_cell_state: bool = False,
) -> tuple[RNNParams, Any, Float[Array, " N"], State]:
    """Truncated BPTT: one optimiser step per chunk of ``chunk_size`` steps.

    The state after a chunk starts the next one through ``jax.lax.stop_gradient``, so
    each chunk's gradient stops at its first step. ``jit`` it with
    ``static_argnames=("optimizer", "chunk_size")``.

    Args:
        params, opt_state: a unidirectional :class:`~rnn_jax.RNNParams` and its
            optimiser state.
        xs, labels, lengths: as :func:`rnn_loss_remat`.
        optimizer: the ``optax`` transformation.
        chunk_size: steps per chunk (the truncation length).
        a0: initial states ``(num_layers, B, H)``; zeros if ``None``.
        c0: an LSTM's initial cell states, same layout (``cell="lstm"`` only); zeros if
            ``None``. Within the call the LSTM's ``(h, c)`` is carried from chunk to chunk.
        return_cell_state: return ``a_last`` as the pair ``(h_n, c_n)`` (``cell="lstm"``
            only): what a stream of batches feeds back as ``a0=h_n, c0=c_n``.

    Returns:
        ``(params, opt_state, losses, a_last)``: the updated parameters and state, the
        mean loss of each chunk ``(N,)``, and the final states (to carry into the next
        batch of a stream; ``(h_n, c_n)`` with ``return_cell_state``).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from rnn_jax import init_rnn
        >>> params = init_rnn(jax.random.key(0), 20, 8, 20, token_inputs=True)
        >>> opt = optax.adam(1e-2)
        >>> ids = jax.random.randint(jax.random.key(1), (3, 40), 0, 20)
        >>> params, opt_state, losses, a = truncated_bptt(
        ...     params, opt.init(params), ids, ids, optimizer=opt, chunk_size=10)
        >>> losses.shape, a.shape
        ((4,), (1, 3, 8))
    """
    x_chunks, y_chunks, m_chunks, _ = _chunked(params, xs, labels, lengths, chunk_size)
    B, H, L = x_chunks.shape[1], params.hidden_size, params.num_layers
    lstm = params.cell == "lstm"
    for name, given in (("c0", c0 is not None), ("return_cell_state", return_cell_state)):
        if given and not lstm:
            raise ValueError(f"`{name}` is only for cell='lstm', got cell={params.cell!r}.")
    a0 = _initial_state("a0", a0, (L, B, H), params.layers[0][0].W_a.dtype)
    if lstm:
        a0 = (a0, _initial_state("c0", c0, (L, B, H), params.layers[0][0].W_a.dtype))

    def mean_chunk_loss(params, a_prev, x, y, m):
        loss, a = chunk_loss(params, a_prev, x, y, m)
        return loss / jnp.maximum(jnp.sum(m), 1).astype(loss.dtype), a

    def body(carry, chunk):
        params, opt_state, a_prev = carry
        x, y, m = chunk
        (loss, a), grads = jax.value_and_grad(mean_chunk_loss, has_aux=True)(
            params, jax.lax.stop_gradient(a_prev), x, y, m
        )
        params, opt_state = optimizer_step(optimizer, grads, opt_state, params)
        return (params, opt_state, a), loss

    (params, opt_state, a_last), losses = jax.lax.scan(
        body, (params, opt_state, a0), (x_chunks, y_chunks, m_chunks)
    )
    if lstm and not return_cell_state:
        a_last = a_last[0]
    return params, opt_state, losses, a_last


def _initial_state(name: str, a: Any, shape: tuple[int, ...], dtype: Any) -> Array:
    if a is None:
        return jnp.zeros(shape, dtype)
    if tuple(jnp.shape(a)) != shape:
        raise ValueError(
            f"`{name}` must have shape (num_layers, B, H) = {shape}, got {tuple(jnp.shape(a))}."
        )
    return jnp.asarray(a).astype(dtype)
