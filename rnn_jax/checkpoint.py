"""Checkpoints that survive a crash, with Orbax.

A run directory holds::

    <directory>/config.json             the run's configuration (written once, compared on restart)
    <directory>/.lock                   held (``fcntl.flock``) by the one live Checkpointer
    <directory>/checkpoints/<step>/     one Orbax checkpoint per saved step:
        state/                          params, optimiser state, step, PRNG key data (arrays)
        files.sha256.json               the sha256 of every file of state/
        meta/                           JSON: data-order position, early-stopping state, config,
                                        metrics, and the shape, dtype and sha256 of every array
        extra/                          JSON: e.g. the vocabulary

Each checkpoint is written into a temporary directory and renamed into place when complete
(Orbax's atomic commit), so a process killed at any moment, even in the middle of a write,
leaves either the previous checkpoints or the new one, never a half-written one; the
leftover temporary directory is ignored and removed on the next start. The last
``max_to_keep`` checkpoints are kept, and the best one by a validation metric as well.

Safety:

- **one writer**: a :class:`Checkpointer` holds an exclusive lock on ``<directory>/.lock``
  for its lifetime (released by :meth:`Checkpointer.close` or when the process dies); a
  second one on the same directory raises :class:`RunDirectoryInUseError` at once;
- **configuration**: a run directory whose ``config.json`` (or a checkpoint's stored
  config) differs from the current configuration raises :class:`ConfigMismatchError`
  naming the differing keys; nothing is written before the configuration is checked;
- **integrity**: the sha256 of every file of ``state/`` and of every array is stored at
  save time and verified at restore; changed bytes, unreadable or truncated files raise
  :class:`CorruptCheckpointError` naming the checkpoint and the file (or the array);
  nothing is deleted or overwritten;
- **templates**: restoring into a template whose model or optimiser differs from the stored
  one raises :class:`TemplateMismatchError` (saying which: parameter or optimiser-state
  structure, or an array's shape or dtype); :meth:`Checkpointer.restore_params` restores
  the parameters alone, whatever the optimiser;
- **failed writes** (a full disk, a read-only directory) raise one :class:`CheckpointError`
  saying the previous checkpoint is kept; a state holding NaN or inf is never written;
- every JSON file is written atomically (temporary file, ``fsync``, ``os.replace``).

Several processes (:mod:`rnn_jax.distributed`): every process creates its Checkpointer on
the same (shared) directory and calls :meth:`~Checkpointer.save` and
:meth:`~Checkpointer.restore` at the same points. Orbax writes each array once (the
replicated train state by process 0; shards of a sharded array by the process holding
them); only process 0 takes the lock and writes ``config.json``, the JSON items and the
file checksums, and every process waits for the checkpoint to be complete before going on.
A state saved on ``P x N`` devices restores on any other number of processes or devices:
the arrays take the shardings of the template they are restored into (a single-device
template gives single-device arrays; a replicated one, replicated arrays).

Nothing is pickled: arrays are stored by Orbax (tensorstore), everything else as JSON.

Example:
    >>> import tempfile, jax, jax.numpy as jnp, optax
    >>> from rnn_jax.train import init_train_state
    >>> opt = optax.adam(1e-3)
    >>> state = init_train_state({"w": jnp.ones(3)}, opt, key=jax.random.key(0))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     ckpt = Checkpointer(d, config={"hidden": 8})
    ...     _ = ckpt.save(state._replace(step=jnp.int32(5)), meta={"epoch": 0, "position": 5})
    ...     restored, meta = ckpt.restore(state)
    ...     params = ckpt.restore_params({"w": jnp.zeros(3)})  # any optimiser
    ...     ckpt.close()
    ...     int(restored.step), meta["position"], ckpt.all_steps(), params["w"].tolist()
    (5, 5, [5], [1.0, 1.0, 1.0])
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import orbax.checkpoint as ocp

from rnn_jax._io import write_json_atomic
from rnn_jax.train import TrainState

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "ConfigMismatchError",
    "CorruptCheckpointError",
    "RunDirectoryInUseError",
    "TemplateMismatchError",
    "config_diff",
]

_LOCK_NAME = ".lock"
_FILE_SUMS = "files.sha256.json"


@contextlib.contextmanager
def _orbax_warnings_silenced():
    """Orbax's warnings about the options chosen here (read-only mode, no save interval) are
    noise for our users: raise the "absl" logger's level for this block only, then restore it."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or used (the base of this module's errors)."""


class ConfigMismatchError(CheckpointError):
    """The run directory belongs to a run with a different configuration."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files cannot be read, or their contents changed since they were saved."""


class TemplateMismatchError(CheckpointError):
    """The restore template's model or optimiser differs from the stored checkpoint's."""


class RunDirectoryInUseError(CheckpointError):
    """Another live :class:`Checkpointer` (usually another process) holds the run directory.

    Attributes:
        directory: the run directory.
        pid: the process id holding it (``None`` if unknown).
    """

    def __init__(self, directory: Path, pid: int | None):
        self.directory, self.pid = directory, pid
        who = "another process" if pid is None else f"process {pid}"
        if pid == os.getpid():
            who += " (this process: close the other Checkpointer first)"
        super().__init__(
            f"the run directory {directory} is in use by {who}; wait for it to finish, or use "
            "a fresh directory."
        )


def _jsonable(x: Any) -> Any:
    """A JSON round trip (tuples become lists), so stored and current configs compare equal."""
    return json.loads(json.dumps(x, sort_keys=True))


def config_diff(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two flat or nested configs.

    Example:
        >>> config_diff({"a": 1, "b": [1, 2]}, {"a": 2, "b": (1, 2), "c": 0})
        ['a: stored 1, now 2', 'c: stored <missing>, now 0']
    """
    stored, current = _jsonable(stored), _jsonable(current)
    out = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
        elif a != b:
            out.append(
                f"{prefix[:-1]}: stored {a!r}, now {b!r}".replace("'<missing>'", "<missing>")
            )

    walk(stored, current, "")
    return out


def _reason(err: BaseException) -> str:
    """One line saying why an Orbax/tensorstore/OS call failed (no multi-line reprs)."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            where = f" ({seen.filename})" if seen.filename else ""
            return f"{os.strerror(seen.errno)}{where}"
        seen = seen.__cause__ or seen.__context__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _state_to_saveable(state: TrainState) -> dict[str, Any]:
    key = state.key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step, "key": key}


def _multi_process() -> bool:
    return jax.process_count() > 1


def _to_host(tree: Any) -> Any:
    """``tree`` as NumPy arrays: an array split over several processes is gathered first
    (a collective: every process must call this together)."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree_util.tree_map(get, tree)


def _on_all_processes(tree: Any) -> Any:
    """With several processes, arrays of one process's devices become replicated on all
    devices (each process passes its own equal copy), so that Orbax writes them once."""
    if not _multi_process():
        return tree
    from rnn_jax.distributed import global_mesh, replicate

    mesh = global_mesh()

    def place(x):
        return x if isinstance(x, jax.Array) and not x.is_fully_addressable else replicate(x, mesh)

    return jax.tree_util.tree_map(place, tree)


def _barrier(name: str) -> None:
    if _multi_process():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _sha256(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _leaves_with_names(tree: Any) -> list[tuple[str, Any]]:
    """``[(name, leaf)]`` with names like ``params.layers[0][0].W_a`` (top-level dict keys bare)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = []
    for path, leaf in leaves:
        head = path[0] if path else None
        if isinstance(head, jax.tree_util.DictKey) and isinstance(head.key, str):
            out.append((head.key + jax.tree_util.keystr(path[1:]), leaf))
        else:
            out.append((jax.tree_util.keystr(path), leaf))
    return out


def _in_part(name: str, part: str) -> bool:
    return name == part or name.startswith((part + ".", part + "["))


def _manifest(host_tree: Any) -> dict[str, list[Any]]:
    """``{array name: [dtype, shape, sha256]}`` of a tree of NumPy arrays."""
    out = {}
    for name, x in _leaves_with_names(host_tree):
        x = np.asarray(x)
        out[name] = [str(x.dtype), list(x.shape), _sha256(x)]
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _structure(tree: Any) -> str:
    """A short outline of a tree: NamedTuple states by class name (optax's states), e.g.
    ``(EmptyState, (ScaleByAdamState, ScaleByScheduleState))``; other nodes summarised."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree).__name__
    if isinstance(tree, tuple | list):
        return "(" + ", ".join(_structure(x) for x in tree) + ")"
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k}: {_structure(v)}" for k, v in tree.items()) + "}"
    text = str(jax.tree_util.tree_structure(tree))
    return text if len(text) <= 200 else text[:200] + "..."


def _first_non_finite(host_tree: Any) -> str | None:
    for name, x in _leaves_with_names(host_tree):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(x)):
            return name
    return None


def _acquire_lock(directory: Path) -> int:
    """Takes the exclusive lock of ``directory`` and writes this process id into it."""
    path = directory / _LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise CheckpointError(
            f"cannot create the lock file {path}: {_reason(err)}; the run directory must be "
            "writable."
        ) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        try:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        finally:
            os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise CheckpointError(f"cannot lock {path}: {_reason(err)}.") from err
        raise RunDirectoryInUseError(directory, int(text) if text.isdigit() else None) from None
    pid = f"{os.getpid()}\n".encode()
    if os.pread(fd, 64, 0) != pid:  # leave the file (and its mtime) alone when unchanged
        os.ftruncate(fd, 0)
        os.pwrite(fd, pid, 0)
    return fd


Which = int | Literal["best", "latest"] | None


class Checkpointer:
    """Saves and restores :class:`~rnn_jax.train.TrainState` plus JSON metadata.

    Holds the run directory's lock until :meth:`close` (or the end of a ``with`` block, or
    the death of the process).

    Args:
        directory: the run directory (created if missing).
        config: the run's configuration (JSON-serialisable). Stored in ``config.json`` on the
            first use; on later uses it must be equal, else :class:`ConfigMismatchError`.
        max_to_keep: how many of the latest checkpoints to keep.
        best_metric: name of the validation metric that decides the best checkpoint (passed
            as ``metrics`` to :meth:`save`), which is kept besides the latest ones; ``None``:
            none, unless :func:`rnn_jax.train.fit` sets it from its early stopping (see
            :meth:`keep_best`).
        best_mode: ``"max"`` or ``"min"``.
        read_only: only read (e.g. to evaluate a finished run on a read-only disk): nothing
            is created or written, no lock is taken (so it works beside a training run),
            :meth:`save` raises :class:`CheckpointError`.

    Raises:
        RunDirectoryInUseError: another Checkpointer holds ``directory``.
        ConfigMismatchError: ``directory`` holds a run with another configuration.
        CorruptCheckpointError: its ``config.json`` cannot be read.
        CheckpointError: the directory cannot be created or locked.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        config: dict[str, Any],
        max_to_keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
        read_only: bool = False,
    ):
        if max_to_keep < 1:
            raise ValueError(f"`max_to_keep` must be >= 1, got {max_to_keep!r}.")
        if best_mode not in ("max", "min"):
            raise ValueError(f"`best_mode` must be 'max' or 'min', got {best_mode!r}.")
        self.directory = Path(directory).expanduser().resolve()
        self.config = _jsonable(config)
        self.max_to_keep = max_to_keep
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.read_only = read_only
        self._metrics: dict[int, dict[str, float] | None] = {}
        self._lock_fd: int | None = None
        self._closed = False
        # With several processes, process 0 alone locks and writes the files of the run.
        self._primary = jax.process_index() == 0
        if read_only:
            if not self.directory.is_dir():
                raise CheckpointError(f"there is no run directory {self.directory}.")
        else:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise CheckpointError(
                    f"cannot create the run directory {self.directory}: {_reason(err)}."
                ) from err
            self._check_or_write_config(write=False)  # a mismatch touches nothing at all
            if self._primary:
                self._lock_fd = _acquire_lock(self.directory)
        try:
            self._check_or_write_config()
            with _orbax_warnings_silenced():
                self._manager = ocp.CheckpointManager(
                    self.directory / "checkpoints",
                    options=ocp.CheckpointManagerOptions(
                        enable_async_checkpointing=False,
                        cleanup_tmp_directories=not read_only,
                        create=not read_only,
                        read_only=read_only,
                    ),
                    item_names=("state", "meta", "extra"),
                )
        except BaseException:
            self._release_lock()
            raise

    def _check_or_write_config(self, write: bool = True) -> None:
        config_path = self.directory / "config.json"
        if not config_path.exists():
            if write and not self.read_only and self._primary:
                write_json_atomic(config_path, self.config)
            return
        try:
            stored = json.loads(config_path.read_text())
        except (OSError, ValueError) as err:
            raise CorruptCheckpointError(
                f"{config_path} cannot be read ({_reason(err)}); it is left untouched. Move the "
                "run directory aside or use a fresh directory."
            ) from err
        self._check_config(stored, str(config_path))

    def _check_config(self, stored: dict[str, Any], where: str) -> None:
        diff = config_diff(stored, self.config)
        if diff:
            raise ConfigMismatchError(
                f"{where} belongs to a run with a different configuration ("
                + "; ".join(diff)
                + "). Nothing was overwritten. Use a fresh directory, or rerun with the "
                "stored configuration to resume."
            )

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def keep_best(self, metric: str, mode: str) -> None:
        """Keeps the best checkpoint by ``metrics[metric]`` if no ``best_metric`` was given.

        :func:`rnn_jax.train.fit` calls it with its early-stopping metric, so the best step
        it reports is never deleted by ``max_to_keep``. A ``best_metric`` given to the
        constructor takes precedence.
        """
        if self.best_metric is None:
            if mode not in ("max", "min"):
                raise ValueError(f"`mode` must be 'max' or 'min', got {mode!r}.")
            self.best_metric, self.best_mode = metric, mode

    # ------------------------------------------------------------------ queries
    def _path(self, step: int) -> Path:
        return self.directory / "checkpoints" / str(step)

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, ascending."""
        self._manager.reload()
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def _read_meta(self, step: int) -> dict[str, Any]:
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = meta["meta"]
        except Exception as err:  # Orbax raises many kinds of errors
            raise CorruptCheckpointError(
                f"the checkpoint {self._path(step)} cannot be read ({_reason(err)}); it was "
                "left untouched: move it aside to use an earlier one."
            ) from err
        if not isinstance(meta, dict) or "config" not in meta:
            raise CorruptCheckpointError(
                f"the checkpoint {self._path(step)} has no stored config in meta/."
            )
        return meta

    def _step_metrics(self, step: int) -> dict[str, float] | None:
        if step not in self._metrics:
            try:
                self._metrics[step] = self._read_meta(step).get("metrics")
            except CorruptCheckpointError:
                return None
        return self._metrics[step]

    def best_step(self) -> int | None:
        """The step of the best checkpoint by ``best_metric`` (``None`` if none has metrics)."""
        if self.best_metric is None:
            return None
        scored = []
        for step in self.all_steps():
            value = (self._step_metrics(step) or {}).get(self.best_metric)
            if value is not None and np.isfinite(value):
                scored.append((value if self.best_mode == "max" else -value, -step, step))
        return max(scored)[2] if scored else None

    def _resolve(self, step: Which) -> int:
        steps = self.all_steps()
        where = self.directory / "checkpoints"
        if step is None or step == "latest":
            if not steps:
                raise CheckpointError(f"no checkpoint in {where}.")
            return steps[-1]
        if step == "best":
            best = self.best_step()
            if best is None:
                raise CheckpointError(
                    f"no best checkpoint in {where}: no checkpoint has the metric "
                    f"{self.best_metric!r} (available steps: {steps})."
                )
            return best
        if isinstance(step, str) or int(step) not in steps:
            raise CheckpointError(f"no checkpoint at step {step} in {where}; available: {steps}.")
        return int(step)

    # ------------------------------------------------------------------ save
    def save(
        self,
        state: TrainState,
        *,
        meta: dict[str, Any],
        extra: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> int:
        """Writes one checkpoint at ``state.step`` (atomically; blocks until written).

        Args:
            state: the train state to save.
            meta: JSON-serialisable metadata (e.g. the data-order position); the config,
                the metrics and the arrays' shapes, dtypes and sha256 are added.
            extra: further JSON (e.g. ``{"vocab": vocab.to_json_dict()}``).
            metrics: validation metrics of this step; the best checkpoint is chosen by
                ``metrics[best_metric]``.

        Returns:
            The step saved.

        Raises:
            CheckpointError: the step is not after the latest one, the state holds NaN or
                inf (nothing is written), or the write failed (a full disk, a read-only
                directory; the previous checkpoints are kept).
        """
        step = int(state.step)
        if self.read_only:
            raise CheckpointError(
                f"refusing to save step {step}: this Checkpointer of {self.directory} is read-only."
            )
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise CheckpointError(
                f"refusing to save step {step}: the run directory already holds step {latest} "
                f"({self.directory}); checkpoints are never overwritten."
            )
        saveable = _on_all_processes(_state_to_saveable(state))
        host = _to_host(saveable)
        bad = _first_non_finite(host)
        if bad is not None:
            raise CheckpointError(
                f"refusing to save step {step}: the array {bad} holds NaN or inf; the previous "
                f"checkpoint (step {latest}) is kept."
            )
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        full_meta = {
            **meta,
            "config": self.config,
            "step": step,
            "metrics": metrics,
            "arrays": _manifest(host),
            "trees": {"params": _structure(state.params), "opt_state": _structure(state.opt_state)},
        }
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(saveable),
            meta=ocp.args.JsonSave(_jsonable(full_meta)),
            extra=ocp.args.JsonSave(_jsonable(extra or {})),
        )
        try:
            self._manager.save(step, args=args)
            self._manager.wait_until_finished()
        except Exception as err:  # OSError, or Orbax/tensorstore wrapping one
            if self._primary:
                self._remove_partial(step)
            raise CheckpointError(
                f"could not write checkpoint step {step} to {self.directory / 'checkpoints'}: "
                f"{_reason(err)}; the previous checkpoint (step {latest}) is kept."
            ) from err
        if self._primary:
            self._write_file_checksums(step)
        _barrier(f"rnn_jax_checkpoint_{step}")  # the checkpoint is complete for everyone
        self._metrics[step] = metrics
        self._prune(step)
        return step

    def _write_file_checksums(self, step: int) -> None:
        """Stores the sha256 of every file of ``<step>/state`` in ``<step>/files.sha256.json``.

        Written right after Orbax's atomic commit (a crash in between leaves a checkpoint
        without it, still protected by the per-array sha256 in its meta).
        """
        root = self._path(step) / "state"
        sums = {str(f.relative_to(root)): _file_sha256(f) for f in _files(root)}
        write_json_atomic(self._path(step) / _FILE_SUMS, sums)

    def _verify_files(self, step: int) -> None:
        path = self._path(step)
        sums_path = path / _FILE_SUMS
        if not sums_path.exists():
            return
        try:
            sums = json.loads(sums_path.read_text())
        except (OSError, ValueError) as err:
            raise CorruptCheckpointError(
                f"{sums_path} cannot be read ({_reason(err)}); the checkpoint {path} was left "
                "untouched."
            ) from err
        root = path / "state"
        for name, digest in sorted(sums.items()):
            f = root / name
            if not f.is_file():
                raise CorruptCheckpointError(
                    f"the checkpoint {path} is corrupted: the file {f} is missing. It was left "
                    "untouched: move it aside to resume from an earlier one."
                )
            if _file_sha256(f) != digest:
                raise CorruptCheckpointError(
                    f"the checkpoint {path} is corrupted: the file {f} does not match the "
                    "sha256 recorded when it was saved. It was left untouched: move it aside "
                    "to resume from an earlier one."
                )

    def _remove_partial(self, step: int) -> None:
        root = self.directory / "checkpoints"
        for p in root.glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(p, ignore_errors=True)
        with contextlib.suppress(Exception):
            self._manager.reload()

    def _prune(self, saved: int) -> None:
        steps = self.all_steps()
        # Orbax's reload (in all_steps) stats every step directory: with several processes,
        # one listing while the primary deletes a step failed with FileNotFoundError. So all
        # list before any deletes, and none goes on (to list again) before the deletes end.
        _barrier(f"rnn_jax_prune_listed_{saved}")
        keep = set(steps[-self.max_to_keep :])
        best = self.best_step()
        if best is not None:
            keep.add(best)
        for step in steps:
            if step not in keep:
                self._manager.delete(step)
                self._metrics.pop(step, None)
        _barrier(f"rnn_jax_prune_done_{saved}")

    # ------------------------------------------------------------------ restore
    @staticmethod
    def _check_arrays(names: dict[str, Any], stored: dict[str, list[Any]], path: Path) -> None:
        """Raises :class:`TemplateMismatchError` unless shapes and dtypes match the stored ones."""
        for name, leaf in names.items():
            want = stored.get(name)
            if want is None:
                continue  # reported by the structure check
            shape, dtype = list(np.shape(leaf)), str(np.dtype(leaf.dtype))
            if [want[0], want[1]] != [dtype, shape]:
                raise TemplateMismatchError(
                    f"the checkpoint {path} holds {name} as {want[0]}{tuple(want[1])} where the "
                    f"template has {dtype}{tuple(shape)}: the model differs from the one "
                    "that was trained."
                )

    def _check_structure(self, meta, names: dict[str, Any], part: str, template, path) -> None:
        stored = meta.get("arrays")
        if stored is None:
            return  # a checkpoint written before manifests existed
        have = {n for n in stored if _in_part(n, part)}
        want = {n for n in names if _in_part(n, part)}
        if have != want:
            what = "optimizer state" if part == "opt_state" else "model parameters"
            stored_tree = meta.get("trees", {}).get(part, "?")
            given_tree = _structure(template)
            hint = (
                " Build the template with the optimizer used for training, or restore the "
                "parameters alone with restore_params()."
                if part == "opt_state"
                else " The template must come from the same model configuration."
            )
            raise TemplateMismatchError(
                f"the {what} of the template differs from the checkpoint {path}: tree "
                f"structure stored {stored_tree}, given {given_tree}.{hint}"
            )
        self._check_arrays({n: x for n, x in names.items() if n in want}, stored, path)

    def _verify(self, meta: dict[str, Any], host: dict[str, Any], path: Path) -> None:
        stored = meta.get("arrays")
        if stored is None:
            return
        for name, x in host.items():
            if name in stored and _sha256(np.asarray(x)) != stored[name][2]:
                raise CorruptCheckpointError(
                    f"the checkpoint {path} is corrupted: the array {name} read from "
                    f"{path / 'state'} does not match the sha256 recorded when it was saved "
                    "(its files changed on disk). It was left untouched: move it aside to "
                    "resume from an earlier one."
                )

    def restore(
        self, template: TrainState, step: Which = None
    ) -> tuple[TrainState, dict[str, Any]]:
        """Restores a checkpoint into ``template``'s structure, verifying every array's sha256.

        Args:
            template: a :class:`TrainState` of the same structure (e.g. a freshly initialised
                one, with the same optimizer); its arrays give the shapes, dtypes and
                shardings (the restored arrays are placed like the template's, whatever
                devices or processes wrote the checkpoint).
            step: a step, ``"best"`` (by ``best_metric``), or ``None``/``"latest"``.

        Returns:
            ``(state, meta)`` where ``meta`` also holds ``"extra"``.

        Raises:
            CheckpointError: there is no such checkpoint.
            ConfigMismatchError: the checkpoint was written under another configuration.
            TemplateMismatchError: the template's model or optimizer differs from the stored.
            CorruptCheckpointError: its files cannot be read or their contents changed.
        """
        step = self._resolve(step)
        path = self._path(step)
        meta = self._read_meta(step)
        self._check_config(meta["config"], str(path))
        self._verify_files(step)
        target = _state_to_saveable(template)
        names = dict(_leaves_with_names(target))
        self._check_structure(meta, names, "params", template.params, path)
        self._check_structure(meta, names, "opt_state", template.opt_state, path)
        if meta.get("arrays") is not None:
            self._check_arrays({n: names[n] for n in ("step", "key")}, meta["arrays"], path)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()
                ),
            )
            extra, saved = restored["extra"], restored["state"]
        except Exception as err:  # Orbax/tensorstore raise many kinds of errors
            raise CorruptCheckpointError(
                f"the checkpoint {path} cannot be read; it may be corrupted or truncated "
                f"({_reason(err)}). It was left untouched: move it aside to resume from an "
                "earlier one, or use a fresh directory."
            ) from err
        self._verify(meta, dict(_leaves_with_names(_to_host(saved))), path)
        key = saved["key"]
        if jax.dtypes.issubdtype(template.key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key, impl=jax.random.key_impl(template.key))
        state = TrainState(
            params=saved["params"], opt_state=saved["opt_state"], step=saved["step"], key=key
        )
        return state, {**meta, "extra": extra}

    def restore_params(self, template_params: Any, step: Which = None) -> Any:
        """Restores the parameters alone (whatever optimizer trained them), sha256-verified.

        Args:
            template_params: parameters of the same model (e.g. freshly initialised); they
                give the structure, shapes and dtypes.
            step: a step, ``"best"`` (by ``best_metric``), or ``None``/``"latest"``.

        Returns:
            The parameters, in ``template_params``' structure.

        Raises:
            The errors of :meth:`restore`, except an optimizer mismatch.
        """
        step = self._resolve(step)
        path = self._path(step)
        meta = self._read_meta(step)
        self._check_config(meta["config"], str(path))
        self._verify_files(step)
        target = {"params": template_params}
        names = dict(_leaves_with_names(target))
        self._check_structure(meta, names, "params", template_params, path)
        reader = ocp.PyTreeCheckpointer()
        try:
            restored = reader.restore(
                path / "state",
                args=ocp.args.PyTreeRestore(
                    item=target,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                    partial_restore=True,
                ),
            )
        except Exception as err:  # Orbax/tensorstore raise many kinds of errors
            raise CorruptCheckpointError(
                f"the checkpoint {path} cannot be read; it may be corrupted or truncated "
                f"({_reason(err)}). It was left untouched."
            ) from err
        finally:
            reader.close()
        self._verify(meta, dict(_leaves_with_names(_to_host(restored))), path)
        return restored["params"]

    def close(self) -> None:
        """Closes the manager and releases the run directory's lock (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._manager.close()
        finally:
            self._release_lock()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
