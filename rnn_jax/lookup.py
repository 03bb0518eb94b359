"""Column lookup ``W[:, offset + ids].T`` with a cache-friendly gradient (a ``jax.custom_vjp``).

A one-hot vector times ``W_ax`` is a column of ``W_ax``; for a batch of token ids the
input term of every step is a gather of columns. ``W_a`` is stored ``(H, H + V)``
(row-major), so a column is ``H`` numbers ``H + V`` apart in memory, and both the
gather and its gradient (a scatter-add into the columns) touch one cache line per
number. With ``V = 10,000`` and ``H = 256`` XLA:CPU spends more time on these two than
on the recurrence itself (``benchmarks/RESULTS.md``), and ``jax.grad`` of a plain
``jnp.take(W_a.T, ...)`` adds a strided transpose of the whole ``(H + V, H)`` gradient
into the optimizer's update.

Sorting the ids first makes both passes walk ``W_a`` column by column:

- forward: sort the (flattened) ids once, gather the columns in sorted order (columns
  of neighbouring ids share cache lines), then put each row back in its place with one
  scatter of whole ``H``-vectors;
- backward: reorder ``dL/dz`` the same way and scatter-add it straight into the
  ``(H, H + V)`` layout of ``W_a``, row by row in increasing column order: no
  transposed gradient, nothing for the optimizer to re-read with a stride.

The sort is one single-key sort of ``id * N + position`` (packed into one integer so
XLA takes its fast path for a single primitive key; two keys when that could overflow).
An id outside ``[0, num_columns)`` or negative gives NaN in the output (never a wrong
column) and contributes nothing to the gradient.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from rnn_jax._sharding import varying_like

__all__ = ["column_lookup"]

_INT32_MAX = 2**31 - 1


def _sorted_rows(W: Array, ids: Array, offset: int, num_columns: int):
    """Rows of ``W.T`` to gather, sorted, and the position each came from."""
    n = ids.size
    flat = ids.reshape(-1)
    # Out of range (either side) -> the first row past W.T: the gather fills it with NaN
    # and the scatter-add drops it. Checked before the cast to int32, so that a wide id
    # cannot wrap around into a valid one.
    sentinel = W.shape[1]
    valid = (flat >= 0) & (flat < num_columns)
    rows = jnp.where(valid, flat.astype(jnp.int32) + offset, sentinel)
    position = jnp.arange(n, dtype=jnp.int32)
    # A symbolic size (jax.export with a symbolic batch) cannot be bounded: two keys.
    if isinstance(n, int) and (sentinel + 1) * n <= _INT32_MAX:
        key = jnp.sort(rows * n + position)
        return key // n, key % n
    rows_sorted, order = jax.lax.sort((rows, position), num_keys=1)
    return rows_sorted, order


def _lookup(W, ids, offset, num_columns):
    H = W.shape[0]
    rows, order = _sorted_rows(W, ids, offset, num_columns)
    picked = jnp.take(W.T, rows, axis=0, mode="fill", fill_value=jnp.nan)  # (N, H), sorted
    # Back to the original order: one scatter of whole rows (a second gather would be
    # fused with the first by XLA into the strided gather this avoids).
    out = jnp.zeros_like(picked).at[order].set(picked, unique_indices=True)
    return out.reshape(*ids.shape, H), (rows, order)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _column_lookup(W, ids, offset, num_columns):
    return _lookup(W, ids, offset, num_columns)[0]


def _column_lookup_fwd(W, ids, offset, num_columns):
    out, (rows, order) = _lookup(W, ids, offset, num_columns)
    # W itself is not needed: only its width and dtype (carried by an empty array).
    return out, (jnp.zeros((0, W.shape[1]), W.dtype), rows, order)


def _column_lookup_bwd(offset, num_columns, residuals, g):
    carrier, rows, order = residuals
    H, C, dtype = g.shape[-1], carrier.shape[1], carrier.dtype
    g_sorted = jnp.take(g.reshape(-1, H), order, axis=0)  # (N, H) in sorted-id order
    # Row h of dW gets its columns in increasing order: a streaming write, no transpose.
    dW = (
        jnp.zeros((H, C), dtype)
        .at[:, rows]
        .add(g_sorted.T.astype(dtype), mode="drop", indices_are_sorted=True)
    )
    return dW, None


_column_lookup.defvjp(_column_lookup_fwd, _column_lookup_bwd)


def column_lookup(
    W: Float[Array, "H C"],
    ids: Int[Array, "..."],
    *,
    offset: int = 0,
    num_columns: int | None = None,
) -> Float[Array, "... H"]:
    """``W[:, offset + ids]`` moved to the last axis: ``out[..., :] = W[:, offset + ids[...]]``.

    The product of ``W[:, offset:offset + num_columns]`` with one-hot vectors of ``ids``,
    without building them; differentiable in ``W`` (``ids`` are integers). Ids outside
    ``[0, num_columns)`` give NaN rows and no gradient.

    Args:
        W: ``(H, C)``; for a layer, the stacked ``W_a = [W_aa | W_ax]`` with
            ``offset = H`` (so ``W_a.T`` is never sliced or copied).
        ids: integer ids of any shape.
        offset: index of the first looked-up column.
        num_columns: how many columns from ``offset`` are valid ids
            (default ``C - offset``).

    Example:
        >>> import jax.numpy as jnp
        >>> W = jnp.arange(12.0).reshape(3, 4)
        >>> column_lookup(W, jnp.array([[2, 0]]), offset=1)   # columns 3 and 1
        Array([[[ 3.,  7., 11.],
                [ 1.,  5.,  9.]]], dtype=float32)
        >>> bool(jnp.isnan(column_lookup(W, jnp.array([3]), offset=1)).all())  # out of range
        True
    """
    if W.ndim != 2:
        raise ValueError(f"`W` must be a matrix (H, C), got shape {tuple(W.shape)}.")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"`ids` must be integers, got dtype {ids.dtype}.")
    C = W.shape[1]
    if num_columns is None:
        num_columns = C - offset
    if not 0 <= offset <= C or not 0 <= num_columns <= C - offset:
        raise ValueError(
            f"`offset` and `num_columns` must select columns of `W` (C = {C}), "
            f"got offset={offset}, num_columns={num_columns}."
        )
    if ids.size == 0:
        return jnp.zeros((*ids.shape, W.shape[0]), W.dtype)
    # Under shard_map with sharded ids: W typed device-varying like them (XLA fuses the
    # "+ 0" into the gather; the gradient is summed over devices). See varying_like.
    return _column_lookup(varying_like(W, ids), ids, int(offset), int(num_columns))
