"""Training over several processes (hosts) on JAX's own distributed runtime.

The same data-parallel step as :mod:`rnn_jax.parallel`, over the devices of *every*
process: ``P`` processes with ``N`` devices each form one mesh of ``P x N`` devices, the
model (parameters, optimiser state, step, key) is replicated on all of them, and every
global batch of ``B`` examples is split ``B / (P N)`` rows per device. Each process feeds
only the rows of its own devices; the gradients are summed across all devices (XLA's
all-reduce: NCCL between GPUs, ICI on a TPU slice, gloo over TCP between CPU processes), so
the update is that of the whole global batch on one device, up to float rounding of the
sums (see :func:`rnn_jax.parallel.make_parallel_train_step`).

Every process runs the same program (JAX's "multi-controller" model)::

    from rnn_jax import distributed
    distributed.initialize()                   # from JAX_COORDINATOR_ADDRESS, ...
    mesh = distributed.global_mesh()           # every process's devices, one "batch" axis
    step = make_parallel_train_step(loss_fn, optimizer, mesh, weight_fn=...)
    batches = distributed.process_batches(epoch_batches, mesh)
    fit(state, step, batches, ..., handle_signals=False)

- **Start-up**: :func:`initialize` calls ``jax.distributed.initialize(coordinator_address,
  num_processes, process_id)`` with arguments, or the environment variables
  ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID``, or, with none of them, JAX's own detection (SLURM, Open MPI, Cloud
  TPU, Kubernetes). On CPU it selects the gloo collectives (TCP), without which CPU
  processes cannot all-reduce.
- **Data**: the global batch at ``(epoch, position)`` is a pure function of the data key,
  the epoch and the position (the cursor :func:`rnn_jax.train.fit` checkpoints), the same
  on every process; :func:`process_batches` keeps this process's rows (:func:`process_rows`)
  and assembles the global array from every process's part
  (``jax.make_array_from_process_local_data``). A resumed run restarts from the stored
  cursor on every process, so a relaunch continues bit-identically.
- **Checkpoints**: :class:`rnn_jax.checkpoint.Checkpointer` writes one checkpoint from all
  processes (every process takes part in Orbax's save, only process 0 writes JSON, the
  lock and the checksums) and restores it on any number of processes or devices.
- **Failure**: if a process dies, a process in a collective with it fails at once (gloo:
  "Connection closed by peer", a Python error); every other process stops when JAX's
  coordination service declares the dead one missing, after ``heartbeat_timeout_seconds``
  without a heartbeat (:data:`HEARTBEAT_TIMEOUT_SECONDS` = 30 s here unless
  ``$RNN_JAX_HEARTBEAT_TIMEOUT`` says otherwise; JAX's default is 100 s): the runtime ends
  it with SIGABRT (exit status 134, "Terminating process because the JAX distributed
  service detected fatal errors"). The timeout must exceed the longest time a *live*
  process can go unscheduled: a process paused for 8 s was declared dead under a 10 s
  timeout (process 0 SIGABRT, the other's all-gather "Connection closed by peer"), the
  same failure a heavily loaded host produces. Signals are not caught
  (``fit(handle_signals=False)``): stopping one process cleanly would need all of them to
  agree on the step, and the last checkpoint is complete anyway; a relaunch resumes from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from rnn_jax.parallel import batch_mesh, place_batch, replicate

__all__ = [
    "HEARTBEAT_TIMEOUT_SECONDS",
    "ProcessInfo",
    "devices_description",
    "global_batch",
    "global_mesh",
    "info",
    "initialize",
    "is_primary",
    "process_batches",
    "process_rows",
    "replicate",
    "set_local_devices",
]

PyTree = Any

HEARTBEAT_TIMEOUT_SECONDS = 30
"""After this many seconds without a heartbeat from a process, the others are stopped
(the default of :func:`initialize`; ``$RNN_JAX_HEARTBEAT_TIMEOUT`` overrides it)."""

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_HEARTBEAT_TIMEOUT = "RNN_JAX_HEARTBEAT_TIMEOUT"


class ProcessInfo(NamedTuple):
    """Where this process stands: its index, the process count, its devices and all devices."""

    process_index: int
    process_count: int
    local_device_count: int
    device_count: int


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"the environment variable {name} must be an int, got {text!r}.") from None


def set_local_devices(n: int) -> None:
    """Splits this process's CPU into ``n`` JAX devices (``jax_num_cpu_devices``).

    Must run before JAX starts its backends (before the first computation); only CPU
    devices are affected (accelerators are what the machine has).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive int (CPU devices per process), got {n!r}.")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as err:
        raise ValueError(
            f"`n` = {n} CPU devices cannot be set any more: JAX has already started its "
            f"backends ({err}). Call set_local_devices before the first computation."
        ) from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout_seconds: int | None = None,
    initialization_timeout: int = 120,
) -> ProcessInfo:
    """Joins this process to the others: ``jax.distributed.initialize`` plus the CPU collectives.

    Args:
        coordinator_address: ``host:port`` of process 0 (it listens there); default
            ``$JAX_COORDINATOR_ADDRESS``.
        num_processes: how many processes take part; default ``$JAX_NUM_PROCESSES``.
        process_id: this process's index in ``[0, num_processes)``; default
            ``$JAX_PROCESS_ID``. With none of the three given or set, JAX detects them
            (SLURM, Open MPI, Cloud TPU, Kubernetes).
        heartbeat_timeout_seconds: a process silent this long is declared dead and every
            other process is stopped; default ``$RNN_JAX_HEARTBEAT_TIMEOUT``, else
            :data:`HEARTBEAT_TIMEOUT_SECONDS`. Too short a timeout stops a healthy run on a
            busy host (a live process that is not scheduled for that long looks dead).
        initialization_timeout: how long to wait for all processes to join.

    Returns:
        A :class:`ProcessInfo`.

    Raises:
        ValueError: an incomplete or inconsistent set of arguments (or variables).
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if heartbeat_timeout_seconds is None:
        from_env = _env_int(ENV_HEARTBEAT_TIMEOUT)
        heartbeat_timeout_seconds = HEARTBEAT_TIMEOUT_SECONDS if from_env is None else from_env
    given = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in given) and any(v is None for v in given):
        raise ValueError(
            "`coordinator_address`, `num_processes` and `process_id` must all be given (or "
            f"${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID} all set), got "
            f"{coordinator_address!r}, {num_processes!r}, {process_id!r}."
        )
    if num_processes is not None:
        if (
            isinstance(num_processes, bool)
            or not isinstance(num_processes, int)
            or num_processes < 1
        ):
            raise ValueError(f"`num_processes` must be a positive int, got {num_processes!r}.")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(
                f"`process_id` must be an int in [0, {num_processes}), got {process_id!r}."
            )
        if ":" not in str(coordinator_address):
            raise ValueError(
                f"`coordinator_address` must be 'host:port', got {coordinator_address!r}."
            )
    for name, value in (
        ("heartbeat_timeout_seconds", heartbeat_timeout_seconds),
        ("initialization_timeout", initialization_timeout),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int (seconds), got {value!r}.")
    # Without these collectives CPU processes cannot all-reduce (only CPU is affected).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
    )
    return info()


def info() -> ProcessInfo:
    """This process's :class:`ProcessInfo` (one process when not initialised)."""
    return ProcessInfo(
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count()
    )


def is_primary() -> bool:
    """Whether this is process 0, the one that writes files shared by all processes."""
    return jax.process_index() == 0


def global_mesh(devices_per_process: int | None = None, *, axis_name: str = "batch") -> Mesh:
    """A one-axis mesh over the devices of all processes, each process's devices together.

    Args:
        devices_per_process: use only the first this many devices of every process
            (default: all of them); every process must have at least as many.
        axis_name: the mesh axis the batch is split on.

    The devices are ordered by process, so process ``p`` holds a contiguous block of rows
    of every global batch (:func:`process_rows`).
    """
    by_process: dict[int, list[jax.Device]] = {}
    for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        by_process.setdefault(d.process_index, []).append(d)
    if devices_per_process is not None:
        if (
            isinstance(devices_per_process, bool)
            or not isinstance(devices_per_process, int)
            or devices_per_process < 1
        ):
            raise ValueError(
                f"`devices_per_process` must be a positive int, got {devices_per_process!r}."
            )
        fewest = min(len(v) for v in by_process.values())
        if devices_per_process > fewest:
            raise ValueError(
                f"`devices_per_process` = {devices_per_process} exceeds the {fewest} device(s) "
                "of a process; start JAX with more (set_local_devices on CPU)."
            )
        by_process = {p: v[:devices_per_process] for p, v in by_process.items()}
    devices = [d for p in sorted(by_process) for d in by_process[p]]
    return batch_mesh(devices, axis_name=axis_name)


def _check_mesh(mesh: Any) -> None:
    if not isinstance(mesh, Mesh):
        raise ValueError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}.")


def process_rows(global_batch_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch of ``global_batch_size`` that this process's devices hold.

    Raises ``ValueError`` if the size is not divisible by the mesh's device count, or if this
    process's devices are not one contiguous block of the mesh (build it with
    :func:`global_mesh`).

    Example:
        >>> mesh = global_mesh()                  # one process: every row is its own
        >>> process_rows(8, mesh)
        slice(0, 8, None)
    """
    _check_mesh(mesh)
    n = mesh.devices.size
    if (
        isinstance(global_batch_size, bool)
        or not isinstance(global_batch_size, int | np.integer)
        or global_batch_size < 1
        or global_batch_size % n
    ):
        raise ValueError(
            f"`global_batch_size` must be a positive multiple of the {n} device(s) of `mesh`, "
            f"got {global_batch_size!r}."
        )
    flat = list(mesh.devices.flat)
    mine = [i for i, d in enumerate(flat) if d.process_index == jax.process_index()]
    if not mine:
        raise ValueError(f"`mesh` holds no device of process {jax.process_index()}.")
    if mine != list(range(mine[0], mine[-1] + 1)):
        raise ValueError(
            "`mesh` must hold each process's devices in one contiguous block (build it with "
            f"global_mesh()), got process {jax.process_index()} at positions {mine}."
        )
    rows = int(global_batch_size) // n
    return slice(mine[0] * rows, (mine[-1] + 1) * rows)


def global_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """The global batch as arrays split over ``mesh``, from this process's rows of it.

    ``batch`` is the *whole* global batch on the host, the same on every process (NumPy
    arrays, or JAX arrays of one device); only this process's rows (:func:`process_rows`)
    are read and copied to its devices (:func:`rnn_jax.parallel.place_batch`). Leaves
    already split over ``mesh`` pass unchanged.
    """

    def put(leaf: Any, sharding: NamedSharding) -> jax.Array:
        shape = tuple(np.shape(leaf))
        local = np.asarray(leaf[process_rows(shape[0], mesh)])
        return jax.make_array_from_process_local_data(sharding, local, shape)

    return place_batch(batch, mesh, put)


def process_batches(
    epoch_batches: Callable[[int, int], Iterator[PyTree]], mesh: Mesh
) -> Callable[[int, int], Iterator[PyTree]]:
    """``epoch_batches(epoch, start)`` (as :func:`rnn_jax.train.fit` takes) with every batch
    made global by :func:`global_batch`: each process feeds its own rows.

    ``epoch_batches`` must give the same global batches on every process (derive the order
    from the data key and the epoch, as ``fit`` requires anyway).
    """
    _check_mesh(mesh)

    def batches(epoch: int, start: int) -> Iterator[PyTree]:
        for batch in epoch_batches(epoch, start):
            yield global_batch(batch, mesh)

    return batches


def devices_description(devices: Sequence[jax.Device] | None = None) -> str:
    """One line: processes x devices per process, and the platform."""
    devices = list(jax.devices() if devices is None else devices)
    procs = sorted({d.process_index for d in devices})
    per = len(devices) // max(len(procs), 1)
    return f"{len(procs)} process(es) x {per} {devices[0].platform} device(s)"
