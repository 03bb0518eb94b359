"""A hand-written backward pass through time for the recurrence (a ``jax.custom_vjp``).

The forward loop runs the *carried* states of one masked layer, time-major::

    h<-1> = a0
    h<t>  = g(z<t> + h<t-1> W_aa^T)   if m<t>      (z<t> = W_ax x<t> + b_a, hoisted)
          = h<t-1>                    otherwise    (a padded step keeps the state)

``jax.grad`` of a ``lax.scan`` saves every intermediate of the step (pre-activation,
activation, the selects), zero-fills and copies stacked ``T x B x H`` buffers and adds
the ``W_aa`` gradient into an accumulator one step at a time. The backward pass here
uses only what the maths needs:

- the forward saves nothing but the carried states ``h`` (which are its output anyway);
- the backward scan carries only ``c = dL/dh<t>`` from the future::

      g<t>      = dL/dh<t> (from the outputs) + c
      dz<t>     = m<t> * g<t> * g'(h<t>)         tanh' = 1 - h^2, relu' = [h > 0]
      c         = dz<t> W_aa       if m<t>,   g<t> otherwise

- after the loop ``dL/dW_aa = sum_t dz<t>^T h<t-1>`` is a few large matmuls over blocks
  of about 1,024 rows (one matmul over all ``T*B`` rows would make XLA copy two shifted
  ``(T - 1, B, H)`` slices), ``dL/dz = dz`` flows into the input projection (one matmul
  for dense inputs, a sorted scatter-add into the columns of ``W_a`` for token ids:
  :mod:`rnn_jax.lookup`), and ``dL/da0 = c``.

Gradients are exact (the same maths as ``jax.grad`` of the plain scan, up to float
rounding): ``tests/test_bptt.py`` checks them against :func:`scan_reference` for both
directions, masks, ``a0``, both activations, under ``jit`` and ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from rnn_jax._activations import ACTIVATIONS, hidden_activation
from rnn_jax._sharding import varying_like

__all__ = [
    "DERIVATIVES",
    "carried_states",
    "scan_reference",
]

# g'(pre) written as a function of the output a = g(pre), so the forward need not save pre
# (the one activation table, rnn_jax._activations).
DERIVATIVES: dict[str, Callable[[Array], Array]] = {
    name: act.g_prime_of_output for name, act in ACTIVATIONS.items()
}


def scan_reference(
    W_aa: Float[Array, "H H"],
    z: Float[Array, "T B H"],
    a0: Float[Array, "B H"],
    mask: Bool[Array, "T B"] | None,
    *,
    bias: Float[Array, " H"] | None = None,
    activation: str | Callable[[Array], Array] = "tanh",
    reverse: bool = False,
    unroll: int | bool = 1,
    state_mask: Float[Array, "B H"] | None = None,
) -> Float[Array, "T B H"]:
    """The carried states by a plain ``lax.scan``, differentiated by ``jax.grad``.

    The reference the hand-written backward pass is checked against, and the path taken
    for a callable activation (whose derivative is not known in closed form) and for
    recurrent dropout: ``state_mask`` (``(B, H)``, one mask per sequence, already scaled
    by ``1 / (1 - rate)``) multiplies ``h<t-1>`` where it enters the recurrence,
    ``g(z<t> + b + (h<t-1> * m) W_aa^T)``; the carried state itself is not dropped.
    """
    g = hidden_activation(activation)
    W_aa_T = W_aa.T
    b = jnp.zeros(W_aa.shape[:1], z.dtype) if bias is None else bias
    a0 = varying_like(a0, z)

    def recur(a_prev):
        return (a_prev if state_mask is None else a_prev * state_mask) @ W_aa_T

    if mask is None:

        def step(a_prev, z_t):
            a = g(z_t + b[None, :] + recur(a_prev))
            return a, a

        _, h = jax.lax.scan(step, a0, z, reverse=reverse, unroll=unroll)
        return h

    def masked_step(a_prev, inputs):
        z_t, m_t = inputs
        a = jnp.where(m_t[:, None], g(z_t + b[None, :] + recur(a_prev)), a_prev)
        return a, a

    _, h = jax.lax.scan(masked_step, a0, (z, mask), reverse=reverse, unroll=unroll)
    return h


def _in_place_scan(step, a0, buf, extra, *, reverse, unroll, in_place=True):
    """``for t: a, buf[t] = step(a, buf[t], extra[t])``, overwriting ``buf`` in place.

    A ``lax.scan`` would zero-fill a fresh ``(T, B, H)`` output buffer and copy it into
    the loop; here the input sequence (``z`` forward, ``dL/dh`` backward, both dead after
    the loop) is itself the output buffer, read and overwritten one step at a time.
    ``in_place=False`` writes a separate buffer instead (see :func:`_carried_states_bwd`).
    """
    T = buf.shape[0]
    # t is always in [0, T): no index normalisation (one select fewer per access, and
    # per step at small sizes these scalar ops cost as much as the arithmetic).
    get = partial(jax.lax.dynamic_index_in_dim, keepdims=False, allow_negative_indices=False)
    put = partial(jax.lax.dynamic_update_index_in_dim, axis=0, allow_negative_indices=False)

    def body(i, carry):
        a, src, out = carry
        t = T - 1 - i if reverse else i
        x_t = get(src, t)
        e_t = jax.tree_util.tree_map(lambda e: get(e, t), extra)
        a, y_t = step(a, x_t, e_t)
        if out is None:
            return a, put(src, y_t, t), None
        return a, src, put(out, y_t, t)

    out0 = None if in_place else jnp.zeros_like(buf)
    a, src, out = jax.lax.fori_loop(0, T, body, (a0, buf, out0), unroll=unroll)
    return a, (src if in_place else out)


# Rows (steps x batch) per block of the weight-gradient matmul: large enough for a
# matmul near peak, small enough (a few MiB) to stay in cache (benchmarks/RESULTS.md).
_BLOCK_ROWS = 1024


def _shifted_outer_sum(lhs, rhs, *, lhs_offset: int, rhs_offset: int):
    """``sum_j lhs[j + lhs_offset]^T @ rhs[j + rhs_offset]`` over the ``T - 1`` shifted pairs.

    ``lhs[1:]`` and ``rhs[:-1]`` as operands of one matmul would make XLA copy both
    ``(T - 1, B, H)`` slices first (two extra state-sized buffers, ``156 MiB`` at
    ``T = 10,000, B = 16, H = 128``); a loop over blocks of about ``_BLOCK_ROWS`` rows
    copies one cache-sized block at a time and is as fast or faster.
    """
    T, B, H = lhs.shape
    pairs = T - 1
    acc = varying_like(jnp.zeros((H, rhs.shape[-1]), jnp.result_type(lhs, rhs)), lhs)
    if pairs <= 0 or (isinstance(B, int) and B == 0):  # nothing to sum (B = 0: empty batch)
        return acc
    # A symbolic batch (jax.export) has no block size to compute: one row per block.
    K = max(1, min(pairs, _BLOCK_ROWS // max(B, 1))) if isinstance(B, int) else 1
    n_blocks = pairs // K

    def block(j, acc):
        left = jax.lax.dynamic_slice_in_dim(
            lhs, j * K + lhs_offset, K, allow_negative_indices=False
        ).reshape(K * B, H)
        right = jax.lax.dynamic_slice_in_dim(
            rhs, j * K + rhs_offset, K, allow_negative_indices=False
        ).reshape(K * B, -1)
        return acc + left.T @ right

    acc = jax.lax.fori_loop(0, n_blocks, block, acc)
    done = n_blocks * K
    if done < pairs:  # the last, shorter block
        left = lhs[done + lhs_offset : pairs + lhs_offset].reshape(-1, H)
        right = rhs[done + rhs_offset : pairs + rhs_offset].reshape(left.shape[0], -1)
        acc = acc + left.T @ right
    return acc


def _forward(W_aa, z, a0, mask, b, activation, reverse, unroll):
    g = hidden_activation(activation)
    W_aa_T = W_aa.T

    def step(a_prev, z_t, m_t):
        a = g(z_t + b[None, :] + a_prev @ W_aa_T)
        if m_t is not None:
            a = jnp.where(m_t[:, None], a, a_prev)
        return a, a

    _, h = _in_place_scan(step, a0, z, mask, reverse=reverse, unroll=unroll)
    return h


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _carried_states(W_aa, z, a0, mask, b, activation, reverse, unroll):
    return _forward(W_aa, z, a0, mask, b, activation, reverse, unroll)


def _carried_states_fwd(W_aa, z, a0, mask, b, activation, reverse, unroll):
    h = _forward(W_aa, z, a0, mask, b, activation, reverse, unroll)
    # The only residual is h itself (the output buffer; nothing is copied).
    return h, (W_aa, h, a0, mask)


def _carried_states_bwd(activation, reverse, unroll, residuals, dh):
    W_aa, h, a0, mask = residuals
    g_prime = DERIVATIVES[activation]

    def step(carry, dh_t, extra):
        c, db = carry
        h_t, m_t = extra
        g_t = dh_t + c
        if m_t is None:
            dz_t = g_t * g_prime(h_t)
            return (dz_t @ W_aa, db + dz_t.sum(0)), dz_t
        m_t = m_t[:, None]
        dz_t = jnp.where(m_t, g_t * g_prime(h_t), jnp.zeros_like(g_t))
        return (jnp.where(m_t, dz_t @ W_aa, g_t), db + dz_t.sum(0)), dz_t

    # The backward loop runs the other way in time and overwrites dL/dh with dL/dz; the
    # bias gradient is summed step by step while dz<t> is in cache.
    carry0 = (jnp.zeros_like(a0), varying_like(jnp.zeros(dh.shape[-1:], dh.dtype), dh))
    # With B = 1 (or H = 1) the batch sum (or the matmul) is a no-op, XLA recomputes
    # dz<t> inside both of its consumers (the matmul and the in-place write) and then
    # copies the whole buffer on every step to keep the read before the write: 10x slower
    # at B = 1, T = 1,000. A separate output buffer (small when B or H is 1) avoids it.
    (da0, db), dz = _in_place_scan(
        step,
        carry0,
        dh,
        (h, mask),
        reverse=not reverse,
        unroll=unroll,
        # a symbolic batch (jax.export) is taken to be > 1
        in_place=all(not isinstance(n, int) or n > 1 for n in dh.shape[1:]),
    )
    # dW_aa = sum_t dz<t>^T h<t-1> (h<-1> = a0), as block matmuls after the loop.
    if reverse:
        dW_aa = _shifted_outer_sum(dz, h, lhs_offset=0, rhs_offset=1) + dz[-1].T @ a0
    else:
        dW_aa = _shifted_outer_sum(dz, h, lhs_offset=1, rhs_offset=0) + dz[0].T @ a0
    return dW_aa, dz, da0, None, db


_carried_states.defvjp(_carried_states_fwd, _carried_states_bwd)


def carried_states(
    W_aa: Float[Array, "H H"],
    z: Float[Array, "T B H"],
    a0: Float[Array, "B H"],
    mask: Bool[Array, "T B"] | None,
    *,
    bias: Float[Array, " H"] | None = None,
    activation: str | Callable[[Array], Array] = "tanh",
    reverse: bool = False,
    unroll: int | bool = 1,
) -> Float[Array, "T B H"]:
    """The carried states ``h<t>`` (time-major), with the hand-written backward pass.

    ``h<t>`` is the state after step ``t``: ``g(z<t> + b + h<t-1> W_aa^T)`` at a valid step,
    ``h<t-1>`` at a masked one (``h<t+1>`` for ``reverse=True``). A callable activation
    falls back to :func:`scan_reference` (autodiff). ``bias`` (``b``, default zero) is
    added inside the loop, so the ``(T, B, H)`` input term ``z`` is never rewritten for it
    (one pass and one state-sized buffer fewer than adding it to ``z`` first).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> W_aa, z, a0 = jnp.eye(3) * 0.5, jnp.ones((4, 2, 3)), jnp.zeros((2, 3))
        >>> carried_states(W_aa, z, a0, None).shape       # (T, B, H)
        (4, 2, 3)
        >>> loss = lambda W: carried_states(W, z, a0, None).sum()
        >>> jax.grad(loss)(W_aa).shape
        (3, 3)
    """
    if z.shape[0] == 0 or not (isinstance(activation, str) and activation in DERIVATIVES):
        return scan_reference(
            W_aa, z, a0, mask, bias=bias, activation=activation, reverse=reverse, unroll=unroll
        )
    # In z's dtype, so that its gradient (summed from dz) has the primal's dtype.
    b = jnp.zeros(z.shape[-1:], z.dtype) if bias is None else jnp.asarray(bias).astype(z.dtype)
    # Under shard_map: every operand typed like the sharded z (see varying_like).
    W_aa, a0, b = (varying_like(x, z) for x in (W_aa, a0, b))
    return _carried_states(W_aa, z, a0, mask, b, activation, bool(reverse), unroll)
