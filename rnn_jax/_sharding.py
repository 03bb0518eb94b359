"""Data parallelism at the public boundary: one ``shard_map`` shard of the batch per device.

A leaf module (it imports nothing from rnn_jax). Examples never interact in a recurrent
network, so when the batch axis of the inputs is sharded over *explicit* mesh axes
(``jax.make_mesh`` axes are explicit by default) each device can run the single-device
code on its own examples under ``shard_map``; the replicated parameters' gradients are
then summed over the devices by ``shard_map``'s own differentiation. (Under an
auto-sharded mesh XLA's partitioner handles the same code and nothing here applies.)

The loops themselves know nothing about meshes: :func:`batch_sharded` wraps a public
entry point once; :func:`varying_like` is the one typing helper the loops need so that
their carries are accepted by ``shard_map(check_vma=True)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

__all__ = [
    "KEY",
    "batch_sharded",
    "explicit_batch_axes",
    "on_batch_shards",
    "varying_like",
]

KEY = "key"
"""In :func:`batch_sharded`'s ``in_axes``: a replicated PRNG key folded with the shard index."""


def varying_like(x: Array, like: Array) -> Array:
    """``x`` (same value) typed like ``like`` inside ``shard_map``: device-varying over its axes.

    Under ``shard_map`` a loop whose carry starts from a device-invariant value (zeros, a
    replicated ``a0`` or weight) and becomes device-varying (it mixes in the sharded
    inputs) has carry types that differ, which ``check_vma=True`` rejects. Adding a zero
    taken from ``like`` gives ``x`` the varying type; its gradient is summed over the
    devices (the transpose of that broadcast), which is the gradient of a replicated
    value. Outside ``shard_map`` it is ``x + 0``.
    """
    return x + jnp.zeros_like(like, dtype=x.dtype, shape=())


def explicit_batch_axes(xs: Any, axis: int = 0) -> tuple[Any, Any] | None:
    """``(mesh, axes)`` if axis ``axis`` (the batch) of ``xs`` is sharded over explicit mesh axes.

    ``None`` otherwise (one device, auto-sharded meshes, inside ``shard_map``, not a JAX
    value).
    """
    try:
        sharding = jax.typeof(xs).sharding
        spec = sharding.spec
    except AttributeError:  # not a typed JAX value
        return None
    if len(spec) <= axis or spec[axis] is None:
        return None
    return sharding.mesh, spec[axis]


def on_batch_shards(fn: Callable, mesh: Any, args: tuple, in_specs: tuple, out_specs: Any) -> Any:
    """``fn(*args)`` under ``shard_map`` over ``mesh``: one shard of the batch per device.

    Arguments with a non-empty spec are first resharded to it (a no-op when they already
    have it, e.g. a replicated ``a0`` becomes batch-sharded); ``P()`` ones and ``None``
    pass as they are.
    """
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    placed = tuple(
        a if a is None or spec == P() else jax.sharding.reshard(a, NamedSharding(mesh, spec))
        for a, spec in zip(args, in_specs, strict=True)
    )
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)(*placed)


def _spec(axis: Any, axes: Any):
    from jax.sharding import PartitionSpec as P

    if axis is None or axis == KEY:
        return P()
    return P(*([None] * axis), axes)


def batch_sharded(*, in_axes: tuple[Any, ...], out_axes: Any, lead: int) -> Callable:
    """Decorator: run ``fn(*args, **options)`` one batch shard per device when ``args[lead]`` is
    batch-sharded over explicit mesh axes, else call it as is.

    Args:
        in_axes: one entry per positional argument: ``None`` (replicated, e.g. the
            parameters), the int batch axis of that argument, or :data:`KEY` for a
            PRNG key (replicated, then folded with the shard index so every shard draws
            a different dropout mask). ``None`` argument values pass through.
        out_axes: the batch axis of every output (a pytree of ints matching the output).
        lead: the argument whose sharding decides (the inputs ``xs``).

    Keyword arguments are static options, passed to every shard unchanged.
    """

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **options):
            found = explicit_batch_axes(args[lead], in_axes[lead])
            if found is None:
                return fn(*args, **options)
            mesh, axes = found
            key_at = [i for i, a in enumerate(in_axes) if a == KEY]

            def local(*args):
                if key_at:
                    args = list(args)
                    for i in key_at:
                        if args[i] is not None:
                            args[i] = jax.random.fold_in(args[i], jax.lax.axis_index(axes))
                return fn(*args, **options)

            return on_batch_shards(
                local,
                mesh,
                tuple(args),
                in_specs=tuple(_spec(a, axes) for a in in_axes),
                out_specs=jax.tree_util.tree_map(lambda a: _spec(a, axes), out_axes),
            )

        return wrapper

    return decorator
