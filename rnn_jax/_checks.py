"""Argument validation shared by every public function: one rule per concept.

A leaf module (it imports nothing from rnn_jax). Every check raises a ``ValueError`` that
names the argument, says what was expected and what arrived. Shapes and dtypes are static
and always checked; *values* (token-id ranges, lengths in ``[0, T]``, 0/1 masks) are
checked only when the array is concrete (eager calls; never a host sync under ``jit``).

The conventions enforced here, used by the network, losses, metrics and batching alike:

- ``lengths``: integers of shape ``(B,)`` in ``[0, T]``; step ``t`` of example ``b`` is
  valid iff ``t < lengths[b]``;
- ``mask``: boolean, or integer 0/1 (converted to boolean), of exactly the positions'
  shape; never broadcast;
- at most one of ``lengths`` and ``mask``; neither means every position is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Int

__all__ = [
    "check_inputs",
    "check_label_range",
    "check_lengths",
    "check_mask",
    "is_concrete",
    "is_token_ids",
    "lengths_to_mask",
    "nan_where",
    "positive_int",
    "reject_mask_as_lengths",
    "resolve_mask",
]


#: A size: an int, or a symbolic dimension of ``jax.export`` (a batch exported with a
#: symbolic size reaches the checks as such; JAX exposes no public type for it).
Dim = Any


def is_concrete(x: Any) -> bool:
    """Whether ``x`` has values now (not a tracer under ``jit``/``vmap``/``grad``)."""
    return not isinstance(x, jax.core.Tracer)


def is_token_ids(xs: Any) -> bool:
    return jnp.issubdtype(jnp.asarray(xs).dtype, jnp.integer)


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum`` (``bool`` is rejected), else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"`{name}` must be {what}, got {value!r}.")
    return int(value)


def _host_range(x: Any) -> tuple[int, int]:
    # NumPy, not jnp: under a jit trace even a closed-over constant's jnp.min is traced.
    host = np.asarray(x)
    return int(host.min()), int(host.max())


def check_inputs(xs: Any, input_size: int, *, name: str = "xs") -> Array:
    """Validate ``xs``: floats ``(B, T, D)`` or integer token ids ``(B, T)`` below ``D``."""
    xs = jnp.asarray(xs) if not isinstance(xs, jax.Array) else xs
    if is_token_ids(xs):
        if xs.ndim != 2:
            raise ValueError(
                f"`{name}` as integer token ids must have shape (B, T), got {tuple(xs.shape)}."
            )
        if is_concrete(xs) and xs.size:
            lo, hi = _host_range(xs)
            if lo < 0 or hi >= input_size:
                raise ValueError(
                    f"`{name}` token ids must lie in [0, {input_size}) (the vocabulary size), "
                    f"got values in [{lo}, {hi}]."
                )
        return xs
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise ValueError(
            f"`{name}` must be floats (B, T, D) or integer ids (B, T), got dtype {xs.dtype}."
        )
    if xs.ndim == 2:
        raise ValueError(
            f"`{name}` of shape {tuple(xs.shape)} has dtype {xs.dtype}: token ids must be integers "
            f"(cast with xs.astype(jnp.int32)), and dense inputs must have shape (B, T, D)."
        )
    if xs.ndim != 3:
        raise ValueError(
            f"`{name}` must have shape (B, T, D) or (B, T) for token ids, got {tuple(xs.shape)}."
        )
    if xs.shape[-1] != input_size:
        raise ValueError(
            f"`{name}` must have feature size D = {input_size} (the layer's input size), "
            f"got shape {tuple(xs.shape)}."
        )
    return xs


def check_lengths(lengths: Any, B: Dim, T: Dim, *, name: str = "lengths") -> Array:
    """Validate ``lengths``: integers ``(B,)`` in ``[0, T]`` (values checked when concrete)."""
    lengths = jnp.asarray(lengths)
    if lengths.shape != (B,):
        raise ValueError(f"`{name}` must have shape (B,) = ({B},), got {tuple(lengths.shape)}.")
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"`{name}` must be integers, got dtype {lengths.dtype}.")
    if is_concrete(lengths) and B:
        lo, hi = _host_range(lengths)
        if lo < 0 or hi > T:
            raise ValueError(f"`{name}` must lie in [0, T] = [0, {T}], got values in [{lo}, {hi}].")
    return lengths


def check_mask(
    mask: Any, shape: tuple[int, ...], *, name: str = "mask", what: str | None = None
) -> Bool[Array, "..."]:
    """Validate ``mask``: boolean or integer 0/1 of exactly ``shape``; returned as boolean."""
    mask = jnp.asarray(mask)
    shape = tuple(shape)
    if tuple(mask.shape) != shape:
        if what is not None:
            expected = f"{what}.shape = {shape}"
        else:
            expected = f"(B, T) = {shape}" if len(shape) == 2 else f"{shape}"
        raise ValueError(f"`{name}` must have shape {expected}, got {tuple(mask.shape)}.")
    if mask.dtype == jnp.bool_:
        return mask
    if not jnp.issubdtype(mask.dtype, jnp.integer):
        raise ValueError(f"`{name}` must be boolean (or integer 0/1), got dtype {mask.dtype}.")
    if is_concrete(mask) and mask.size:
        lo, hi = _host_range(mask)
        if lo < 0 or hi > 1:
            raise ValueError(
                f"`{name}` as integers must hold only 0 and 1, got values in [{lo}, {hi}]."
            )
    return mask != 0


def _prefix_mask(lengths: Array, T: int) -> Array:
    """``steps < lengths`` as ``(B, T)``; lengths of any integer width (int64 NumPy lengths
    under x64 too) compare in the dtype of the step index, so strict promotion holds."""
    steps = jnp.arange(T)
    return steps[None, :] < lengths[:, None].astype(steps.dtype)


def lengths_to_mask(
    lengths: Int[ArrayLike, " B"] | Sequence[int], T: int
) -> Bool[Array, "B T"] | Bool[np.ndarray, "B T"]:
    """``mask[b, t] = t < lengths[b]``, with ``lengths`` checked (values when concrete).

    The one ``lengths_to_mask`` of the library (``rnn_jax.lengths_to_mask`` and
    ``rnn_jax.batching.lengths_to_mask`` are this function). The result lives where the input
    does: a JAX array (or tracer, under ``jit``) gives a JAX mask; a NumPy array or a list
    gives a NumPy mask, so host-side batching never touches the device.

    Args:
        lengths: integers ``(B,)`` in ``[0, T]``; an empty list is ``B = 0``.
        T: the number of steps, an int ``>= 0``.

    Returns:
        Boolean ``(B, T)``: ``jax.Array`` for JAX input, ``np.ndarray`` otherwise.

    Raises:
        ValueError: ``lengths`` is not 1-D integers, a length lies outside ``[0, T]`` (checked
            when concrete) or ``T`` is not an int ``>= 0``.

    Example:
        >>> import jax.numpy as jnp
        >>> lengths_to_mask(jnp.array([2, 0]), 3).astype(int).tolist()
        [[1, 1, 0], [0, 0, 0]]
        >>> lengths_to_mask([2, 0, 3], 3)
        array([[ True,  True, False],
               [False, False, False],
               [ True,  True,  True]])
    """
    T = positive_int("T", T, minimum=0)
    if isinstance(lengths, jax.Array):
        if lengths.ndim != 1:
            raise ValueError(f"`lengths` must have shape (B,), got {tuple(lengths.shape)}.")
        return _prefix_mask(check_lengths(lengths, lengths.shape[0], T), T)
    host = np.asarray(lengths)
    if host.ndim != 1:
        raise ValueError(f"`lengths` must have shape (B,), got {tuple(host.shape)}.")
    if host.size == 0:
        host = host.astype(np.int64)  # np.asarray([]) is float64
    if not np.issubdtype(host.dtype, np.integer):
        raise ValueError(f"`lengths` must be integers, got dtype {host.dtype}.")
    if host.size and (host.min() < 0 or host.max() > T):
        raise ValueError(
            f"`lengths` must lie in [0, T] = [0, {T}], got values in "
            f"[{int(host.min())}, {int(host.max())}]."
        )
    return np.arange(T)[None, :] < host[:, None]


def reject_mask_as_lengths(lengths: Any, *, fn: str) -> None:
    """``TypeError`` when ``lengths`` is a mask passed positionally (the pre-0.2 order).

    ``lengths`` is the third positional argument of the losses and metrics, as it is the
    second of the network's functions; a boolean array, or one of two or more axes, in that
    slot is an old call ``fn(x, labels, mask)`` and is refused with the fix in the message.
    Only the static shape and dtype are read, so this also works under ``jit``.
    """
    if lengths is None:
        return
    shape = tuple(np.shape(lengths))
    dtype = getattr(lengths, "dtype", None)
    if dtype is None:
        dtype = np.asarray(lengths).dtype
    if dtype == np.bool_ or len(shape) >= 2:
        raise TypeError(
            f"{fn}() got an array of shape {shape} and dtype {dtype} as `lengths` (its third "
            "positional argument), which must be integer lengths (B,): `mask` is keyword-only "
            f"now, pass mask=... (e.g. {fn}(x, labels, mask=mask))."
        )


def _format_value(v: Any) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):g}"


def check_label_range(
    labels: Any,
    valid: Any,
    lo: int | float,
    hi: int | float,
    *,
    closed: bool = False,
    expected: str,
    name: str = "labels",
) -> Bool[Array, "..."]:
    """Positions that are valid and hold a label outside ``[lo, hi)`` (``[lo, hi]`` if closed).

    On concrete arrays (eager calls) any such position raises a ``ValueError`` naming
    ``name``, the ``expected`` range and the range of the values that arrived at valid
    positions (padding may hold anything). Under ``jit`` nothing can be raised: the returned
    boolean array lets the caller turn those positions into NaN.

    Args:
        labels: the labels, any shape.
        valid: boolean of ``labels.shape`` (``True`` = counted), or ``None`` (all valid).
        lo, hi: the allowed range.
        closed: include ``hi``.
        expected: the range as the message says it, e.g. ``"[0, C) = [0, 5)"``.
        name: the argument, for the message.
    """
    labels = jnp.asarray(labels) if not isinstance(labels, jax.Array) else labels
    compared = labels.astype(jnp.int32) if labels.dtype == jnp.bool_ else labels

    def bound(v: int | float) -> Array:
        # Explicit dtypes (strict dtype promotion): an integer label is compared with an
        # integer bound; an infinite bound is always above (or below) an integer.
        if jnp.issubdtype(compared.dtype, jnp.integer) and np.isinf(v):
            return jnp.asarray(
                np.iinfo(compared.dtype).max if v > 0 else np.iinfo(compared.dtype).min,
                compared.dtype,
            )
        return jnp.asarray(v, compared.dtype)

    hi_, lo_ = bound(hi), bound(lo)
    if jnp.issubdtype(compared.dtype, jnp.integer) and np.isinf(hi) and not closed:
        above = jnp.zeros(compared.shape, bool)  # nothing reaches +inf
    else:
        above = compared > hi_ if closed else compared >= hi_
    bad = ~((compared >= lo_) & ~above)  # NaN counts as bad
    if valid is not None:
        bad = bad & valid
    if is_concrete(labels) and (valid is None or is_concrete(valid)) and labels.size:
        host = np.asarray(labels)
        if valid is not None:
            host = host[np.asarray(valid)]
        host = host.astype(np.float64) if host.dtype == np.bool_ else host
        in_range = (host >= lo) & ((host <= hi) if closed else (host < hi))
        if host.size and not np.all(in_range):
            if np.isnan(host.astype(np.float64)).any():
                got = "NaN"
            else:
                got = f"values in [{_format_value(host.min())}, {_format_value(host.max())}]"
            raise ValueError(f"`{name}` must lie in {expected} at valid positions, got {got}.")
    return bad


def nan_where(bad: Array, x: Array) -> Array:
    """``x`` times NaN where ``bad``, else ``x``: the value *and* its gradient become NaN there.

    (A plain ``jnp.where(bad, nan, x)`` would give a NaN value but a zero gradient, so an
    optimiser step would still look healthy.)
    """
    return x * jnp.where(bad, jnp.nan, 1.0).astype(x.dtype)


def resolve_mask(
    lengths: Any, mask: Any, shape: tuple[Dim, ...], *, what: str | None = None
) -> Bool[Array, "..."] | None:
    """One boolean mask of ``shape`` from ``lengths`` or ``mask`` (not both); ``None``: all valid.

    Args:
        lengths: integers ``(B,)`` in ``[0, T]`` (needs ``shape == (B, T)``), or ``None``.
        mask: boolean or integer 0/1 of exactly ``shape``, or ``None``.
        shape: the positions' shape, ``(B, T)`` for sequences.
        what: the argument whose positions ``shape`` describes, for messages (default:
            the sequence positions ``(B, T)``).
    """
    shape = tuple(shape)
    if lengths is not None and mask is not None:
        raise ValueError("Pass either `lengths` or `mask`, not both.")
    if mask is not None:
        return check_mask(mask, shape, what=what)
    if lengths is not None:
        if len(shape) != 2:
            raise ValueError(
                f"`lengths` needs {what or 'inputs'} with two position axes (B, T), got positions "
                f"of shape {shape}; pass a `mask` of that shape instead."
            )
        B, T = shape
        return _prefix_mask(check_lengths(lengths, B, T), T)
    return None
