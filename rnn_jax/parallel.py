"""Data parallelism: one training step over a batch split across devices (``shard_map``).

Every device holds the whole model (parameters and optimizer state replicated) and runs
the unchanged single-device code (the hand-written backward pass included) on its share
of the batch; the gradients are then summed across devices and every device applies the
same update. With per-shard losses ``L_i`` (means over their own examples or tokens) and
weights ``w_i`` (how many examples or tokens they averaged over), the step minimises

.. math::

    L = \\frac{\\sum_i w_i L_i}{\\sum_i w_i}, \\qquad
    \\nabla L = \\sum_i \\frac{w_i}{\\sum_j w_j} \\nabla L_i,

which is the loss of the whole batch on one device, exactly (up to float rounding): a
masked token mean stays a mean over all valid tokens, however they fall on the shards.

Devices are whatever ``jax.devices()`` holds: GPUs, TPU cores, or CPU "devices". One CPU
runs the per-step ``B x H @ H x H`` product of the recurrence on one core; split into CPU
devices (``jax.config.update("jax_num_cpu_devices", n)`` before JAX starts, or
``XLA_FLAGS=--xla_force_host_platform_device_count=n``) the batch runs on ``n`` cores at
once. The gradients of large embedding tables are summed across devices every step,
which on CPU costs about as much as it saves (``benchmarks/RESULTS.md``).

The same split happens without this module when a batch is sharded over *explicit* mesh
axes (the default of ``jax.make_mesh``) and passed to ``rnn_apply`` / ``rnn_layers`` /
``rnn_classify`` under plain ``jit``: the network then runs one ``shard_map`` shard per
device itself. All of rnn_jax's loops also run inside a user's own ``shard_map`` (with
``check_vma=True``). What this module adds is the exact weighting of per-shard means and
a complete optimiser step.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from rnn_jax.train import init_train_state
    >>> mesh = batch_mesh()                       # every device, one "batch" axis
    >>> def loss_fn(params, batch, *, key):
    ...     x, y = batch
    ...     return jnp.mean((x @ params - y) ** 2)
    >>> optimizer = optax.sgd(0.1)
    >>> state = init_train_state(jnp.zeros(3), optimizer, key=jax.random.key(0))
    >>> step = make_parallel_train_step(loss_fn, optimizer, mesh)
    >>> x = jnp.tile(jnp.eye(3), (len(mesh.devices), 1)); y = x @ jnp.array([1.0, 2.0, 3.0])
    >>> for _ in range(100):
    ...     state, metrics = step(state, (x, y))
    >>> bool(metrics["loss"] < 1e-3)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array

from rnn_jax.train import LossFn, TrainState, guarded_update

__all__ = [
    "batch_mesh",
    "make_parallel_train_step",
    "parallel_sums",
    "place_batch",
    "replicate",
    "shard_batch",
]

PyTree = Any


def batch_mesh(devices: Sequence[jax.Device] | None = None, *, axis_name: str = "batch") -> Mesh:
    """A one-axis mesh over ``devices`` (default: all of ``jax.devices()``) to split batches on."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` must hold at least one device, got none.")
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"`axis_name` must be a non-empty string, got {axis_name!r}.")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def _check_mesh(mesh: Any) -> tuple[str, ...]:
    if not isinstance(mesh, Mesh):
        raise ValueError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    return tuple(mesh.axis_names)


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Put every leaf of ``batch`` on ``mesh``, split along its first axis over all mesh axes.

    Raises ``ValueError`` if a leaf has no first axis or one not divisible by the number
    of devices (pad the batch, or drop the remainder, first).
    """
    return place_batch(batch, mesh, jax.device_put)


def place_batch(
    batch: PyTree, mesh: Mesh, put: Callable[[Any, NamedSharding], jax.Array]
) -> PyTree:
    """Every leaf of ``batch`` as ``put(leaf, sharding)``, ``sharding`` splitting its first
    axis over all axes of ``mesh``; leaves already split so pass unchanged.

    What :func:`shard_batch` (``jax.device_put`` of the whole leaf) and
    :func:`rnn_jax.distributed.global_batch` (each process its own rows) share.

    Raises ``ValueError`` if ``mesh`` is not a mesh, ``batch`` has no leaves, or a leaf has
    no first axis or one not divisible by the number of devices.
    """
    axes = _check_mesh(mesh)
    n = mesh.devices.size
    sharding = NamedSharding(mesh, P(axes))
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    if not leaves:
        raise ValueError("`batch` must hold at least one array, got an empty pytree.")
    placed = []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            placed.append(leaf)
            continue
        shape = np.shape(leaf)
        if len(shape) == 0 or shape[0] % n != 0:
            raise ValueError(
                f"`batch` leaf {i} must have a first (batch) axis divisible by the {n} "
                f"device(s) of `mesh`, got shape {tuple(shape)}."
            )
        placed.append(put(leaf, sharding))
    return jax.tree_util.tree_unflatten(treedef, placed)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every leaf of ``tree`` replicated over ``mesh`` (PRNG keys included; with several
    processes each passes its own, equal, copy); leaves already there pass unchanged."""
    sharding = NamedSharding(mesh, P())

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            # device_put refuses keys on devices of other processes: move their bits.
            return jax.random.wrap_key_data(
                put(jax.random.key_data(x)), impl=jax.random.key_impl(x)
            )
        if jax.process_count() > 1 and not (
            isinstance(x, jax.Array) and not x.is_fully_addressable
        ):
            # this process's copy (device_put cannot move a committed array to other hosts)
            return jax.make_array_from_process_local_data(sharding, np.asarray(x), np.shape(x))
        return jax.device_put(x, sharding)

    return jax.tree_util.tree_map(put, tree)


def _default_weight(batch: PyTree) -> Array:
    leaf = jax.tree_util.tree_leaves(batch)[0]
    return jnp.asarray(leaf.shape[0], jnp.float32)


def make_parallel_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    weight_fn: Callable[[PyTree], Array] | None = None,
    has_aux: bool = False,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, Array]]]:
    """:func:`~rnn_jax.make_train_step` with the batch split across the devices of ``mesh``.

    Args:
        loss_fn: ``loss_fn(params, batch, *, key) -> loss`` (or ``(loss, aux)`` with
            ``has_aux``), exactly as for :func:`~rnn_jax.make_train_step`; it sees one
            device's share of the batch and returns the mean loss of that share.
        optimizer: any ``optax.GradientTransformation`` (applied identically on every
            device to the summed gradient).
        mesh: the devices (e.g. :func:`batch_mesh`); the batch is split over all its axes.
        weight_fn: ``weight_fn(shard) -> scalar``, what the mean of ``loss_fn`` on a shard
            is taken over (e.g. the number of valid tokens for a masked token mean).
            Default: the shard's number of examples (exact for means over examples).
        has_aux: whether ``loss_fn`` returns ``(loss, aux)``; ``aux`` scalars are
            combined with the same weights as the loss.

    Returns:
        ``train_step(state, batch) -> (state, metrics)``, compiled, with the metrics of
        :func:`~rnn_jax.make_train_step` (``loss``, ``grad_norm``, ``finite``, aux; a
        non-finite step is skipped in the same way). ``batch`` leaves
        need a first axis divisible by the number of devices; ``state`` and ``batch`` are
        moved onto the mesh if they are not there yet. The key of shard ``i`` at step
        ``s`` is ``fold_in(fold_in(state.key, s), i)`` (only ``fold_in(state.key, s)`` on a
        single device, so a one-device mesh reproduces ``make_train_step``).
    """
    axes = _check_mesh(mesh)
    n = mesh.devices.size
    weigh = _default_weight if weight_fn is None else weight_fn

    def local_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, Array]]:
        key = jax.random.fold_in(state.key, state.step)
        if n > 1:
            key = jax.random.fold_in(key, jax.lax.axis_index(axes))

        def objective(params):
            out = loss_fn(params, batch, key=key)
            return out if has_aux else (out, {})

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        w = jnp.asarray(weigh(batch), jnp.float32)
        total = jax.lax.psum(w, axes)
        share = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)

        def combine(x):
            return jax.lax.psum(x * share.astype(x.dtype), axes)

        grads = jax.tree_util.tree_map(combine, grads)
        loss = combine(loss)
        aux = {k: combine(jnp.asarray(v)) for k, v in dict(aux).items()}
        # As make_train_step: a non-finite step is skipped (the same on every device, since
        # loss, gradients and parameters are replicated after the sums).
        params, opt_state, finite = guarded_update(optimizer, loss, grads, state)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux, "finite": finite}
        return TrainState(params, opt_state, state.step + 1, state.key), metrics

    # check_vma=False: `loss_fn` is arbitrary single-device code (a user's loop may start
    # from device-invariant zeros); the cross-device sums above are explicit.
    step = jax.jit(
        jax.shard_map(
            local_step, mesh=mesh, in_specs=(P(), P(axes)), out_specs=(P(), P()), check_vma=False
        )
    )

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, Array]]:
        return step(replicate(state, mesh), shard_batch(batch, mesh))

    return train_step


def parallel_sums(
    sums_fn: Callable[[PyTree, Any], PyTree], mesh: Mesh
) -> Callable[[PyTree, Any], PyTree]:
    """``sums_fn(params, batch)`` over a batch split across ``mesh``: the per-shard sums, added.

    For statistics that add up (masked loss sums, token counts, confusion counts): the
    result equals ``sums_fn`` on the whole batch on one device. It is the ``eval_step`` of
    :func:`~rnn_jax.evaluate` run on several devices.
    """
    axes = _check_mesh(mesh)

    def local(params, batch):
        return jax.tree_util.tree_map(lambda x: jax.lax.psum(x, axes), sums_fn(params, batch))

    fn = jax.jit(
        jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axes)), out_specs=P(), check_vma=False)
    )

    def run(params, batch):
        return fn(replicate(params, mesh), shard_batch(batch, mesh))

    return run
