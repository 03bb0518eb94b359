"""The input term of a layer, ``W_ax x<t>`` for every step at once (hoisted out of the loop).

Dense inputs: one matmul, with a hand-written weight gradient that transposes the
narrower operand (:func:`dense_term`). Token ids: the columns ``W_ax[:, id]`` (the
product of ``W_ax`` with a one-hot vector, never built), gathered in sorted-id order by
:func:`rnn_jax.lookup.column_lookup` (``lookup="sorted"``, default) or by a plain
``jnp.take`` (``lookup="take"``, the reference and the ablation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from rnn_jax._checks import is_token_ids
from rnn_jax._sharding import varying_like
from rnn_jax.lookup import column_lookup
from rnn_jax.params import LayerParams

__all__ = [
    "BACKWARDS",
    "LOOKUPS",
    "check_options",
    "forward_mode_hint",
    "dense_term",
    "input_projection",
    "input_term",
    "take_lookup",
]

Inputs = Float[Array, "B T D"] | Int[Array, "B T"]

LOOKUPS = ("sorted", "take")
BACKWARDS = ("bptt", "autodiff")


def check_options(backward: str, lookup: str) -> None:
    """``ValueError`` naming the option if ``backward`` or ``lookup`` is unknown."""
    if backward not in BACKWARDS:
        raise ValueError(f"`backward` must be 'bptt' or 'autodiff', got {backward!r}.")
    if lookup not in LOOKUPS:
        raise ValueError(f"`lookup` must be 'sorted' or 'take', got {lookup!r}.")


def forward_mode_hint(error: TypeError) -> TypeError:
    """The error of ``jax.jvp`` through the default path, with the option that fixes it."""
    if "forward-mode" not in str(error) and "jvp" not in str(error):
        return error
    return TypeError(
        "forward-mode autodiff (jax.jvp, jax.jacfwd, jax.hessian) cannot differentiate the "
        "default hand-written backward pass (a custom_vjp); pass backward='autodiff' (and, "
        "for token ids, lookup='take')."
    )


def input_projection(layer: LayerParams, xs: Inputs, **options) -> Float[Array, "T B H"]:
    """``z<t> = W_ax x<t> + b_a`` for every step at once, time-major ``(T, B, H)``.

    See :func:`input_term` (the same without ``b_a``, which the loop adds itself).
    """
    return input_term(layer, xs, **options) + layer.b_a[None, None, :]


def take_lookup(W: Array, ids: Array, *, offset: int = 0, num_columns: int | None = None) -> Array:
    """``W[:, offset + ids]`` moved to the last axis by a plain ``jnp.take`` (NaN out of range).

    The same values as :func:`~rnn_jax.lookup.column_lookup`, differentiated by ``jax.grad``
    (a strided gather and a transposed scatter-add): the ``lookup="take"`` option.
    """
    if num_columns is None:
        num_columns = W.shape[1] - offset
    valid = (ids >= 0) & (ids < num_columns)
    rows = jnp.where(valid, ids + offset, W.shape[1])
    return jnp.take(W.T, rows, axis=0, mode="fill", fill_value=jnp.nan)


def input_term(
    layer: LayerParams,
    xs: Inputs,
    *,
    mask: Bool[Array, "B T"] | None = None,
    lookup: str = "sorted",
    backward: str = "bptt",
) -> Float[Array, "T B H"]:
    """``W_ax x<t>`` for every step at once, time-major ``(T, B, H)`` (no bias).

    Dense inputs: one matmul. Token ids: one gather of the columns ``W_ax[:, id]``
    (the product of ``W_ax`` with a one-hot vector, without building it). Ids out of
    range under ``jit`` (where they cannot be checked) give NaN, never a silently wrong
    column.

    Args:
        layer: the layer (``W_a = [W_aa | W_ax]``).
        xs: ``(B, T, D)`` floats (cast to the parameters' dtype) or ``(B, T)`` integer ids.
        mask: ``(B, T)``; dense inputs at masked steps are read as zeros, so that
            whatever the padding holds (even NaN or inf) never reaches a gradient. The
            select fuses into the time-major transpose; without a mask nothing changes.
        lookup: ``"sorted"`` (:func:`~rnn_jax.lookup.column_lookup`) or ``"take"``.
        backward: ``"bptt"`` uses the hand-written weight gradient of :func:`dense_term`;
            ``"autodiff"`` a plain matmul (which also supports forward-mode autodiff).
    """
    H = layer.hidden_size
    W_ax = layer.W_a[:, H:]
    if is_token_ids(xs):
        # Columns H + id of the whole W_a (slicing W_ax first would copy the (H, V) block
        # on every call), gathered and scatter-added in sorted-id order: rnn_jax.lookup.
        find = column_lookup if lookup == "sorted" else take_lookup
        return find(layer.W_a, xs.T, offset=H, num_columns=W_ax.shape[1])
    # Float inputs of another precision are cast to the parameters' dtype (float32 data
    # with bfloat16 or float16 parameters): lax.scan needs one carry dtype.
    xs = xs.astype(W_ax.dtype)
    if mask is not None:
        xs = jnp.where(mask[:, :, None], xs, jnp.zeros_like(xs))
    # Transpose the (narrower) inputs to time-major first, then one plain matmul whose
    # output is already (T, B, H): an einsum "btd,hd->tbh" makes XLA:CPU emit a
    # transposing dot that is 4x slower (benchmarks/RESULTS.md).
    xs_tm = jnp.swapaxes(xs, 0, 1)
    if backward == "autodiff":
        return jax.lax.dot_general(xs_tm, W_ax, (((2,), (1,)), ((), ())))
    return dense_term(varying_like(W_ax, xs), xs_tm)


@jax.custom_vjp
def dense_term(W_ax: Float[Array, "H D"], xs_tm: Float[Array, "T B D"]) -> Float[Array, "T B H"]:
    """``xs_tm @ W_ax.T`` for time-major ``(T, B, D)`` inputs.

    Its weight gradient ``sum_n dz[n]^T x[n]`` needs one operand transposed; left to
    itself XLA transposes ``dz`` (``(T*B, H)``, a state-sized copy), here the narrower
    ``x`` is (``(T*B, D)``, usually ``D <= H``).
    """
    return jax.lax.dot_general(xs_tm, W_ax, (((2,), (1,)), ((), ())))


def _dense_term_fwd(W_ax, xs_tm):
    return dense_term(W_ax, xs_tm), (W_ax, xs_tm)


def _dense_term_bwd(residuals, dz):
    W_ax, xs_tm = residuals
    H, D = W_ax.shape
    x = xs_tm.reshape(-1, D)
    d = dz.reshape(-1, H)
    if D <= H:
        dW_ax = (x.T @ d).T
    else:
        dW_ax = d.T @ x
    dxs = jax.lax.dot_general(dz, W_ax, (((2,), (0,)), ((), ())))
    return dW_ax.astype(W_ax.dtype), dxs.astype(xs_tm.dtype)


dense_term.defvjp(_dense_term_fwd, _dense_term_bwd)
