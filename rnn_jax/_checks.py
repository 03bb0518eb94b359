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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

__all__ = [
    "check_inputs",
    "check_lengths",
    "check_mask",
    "is_concrete",
    "is_token_ids",
    "lengths_to_mask",
    "positive_int",
    "resolve_mask",
]


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


def check_lengths(lengths: Any, B: int, T: int, *, name: str = "lengths") -> Array:
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


def lengths_to_mask(lengths: Int[Array, " B"], T: int) -> Bool[Array, "B T"]:
    """``mask[b, t] = t < lengths[b]``, with ``lengths`` checked (values when concrete).

    Example:
        >>> import jax.numpy as jnp
        >>> lengths_to_mask(jnp.array([2, 0]), 3).astype(int).tolist()
        [[1, 1, 0], [0, 0, 0]]
    """
    T = positive_int("T", T, minimum=0)
    lengths = jnp.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"`lengths` must have shape (B,), got {tuple(lengths.shape)}.")
    lengths = check_lengths(lengths, lengths.shape[0], T)
    return jnp.arange(T)[None, :] < lengths[:, None]


def resolve_mask(
    lengths: Any, mask: Any, shape: tuple[int, ...], *, what: str | None = None
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
        return jnp.arange(T)[None, :] < check_lengths(lengths, B, T)[:, None]
    return None
