"""Checkpoints that survive a crash, with Orbax.

A run directory holds::

    <directory>/config.json             the run's configuration (written once, compared on restart)
    <directory>/checkpoints/<step>/     one Orbax checkpoint per saved step:
        state/                          params, optimiser state, step, PRNG key data (arrays)
        meta/                           JSON: data-order position, early-stopping state, config
        extra/                          JSON: e.g. the vocabulary

Each checkpoint is written into a temporary directory and renamed into place when complete
(Orbax's atomic commit), so a process killed at any moment, even in the middle of a write,
leaves either the previous checkpoints or the new one, never a half-written one; the
leftover temporary directory is ignored and removed on the next start. The last
``max_to_keep`` checkpoints are kept, and the best one by a validation metric as well.

Safety:

- a run directory whose ``config.json`` (or a checkpoint's stored config) differs from the
  current configuration raises :class:`ConfigMismatchError` naming the differing keys; the
  directory is never overwritten;
- a checkpoint that cannot be read (corrupted or truncated files) raises
  :class:`CorruptCheckpointError` naming the path; nothing is deleted or overwritten.

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
    ...     int(restored.step), meta["position"], ckpt.all_steps()
    (5, 5, [5])
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from rnn_jax.train import TrainState


class _DropMissingMetricWarning(logging.Filter):
    # Orbax warns on every save without metrics when a best metric is tracked; here that is
    # the normal case (periodic checkpoints between evaluations).
    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropMissingMetricWarning())

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "ConfigMismatchError",
    "CorruptCheckpointError",
    "config_diff",
]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used."""


class ConfigMismatchError(CheckpointError):
    """The run directory belongs to a run with a different configuration."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files cannot be read."""


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


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _state_to_saveable(state: TrainState) -> dict[str, Any]:
    key = state.key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step, "key": key}


class Checkpointer:
    """Saves and restores :class:`~rnn_jax.train.TrainState` plus JSON metadata.

    Args:
        directory: the run directory (created if missing).
        config: the run's configuration (JSON-serialisable). Stored in ``config.json`` on the
            first use; on later uses it must be equal, else :class:`ConfigMismatchError`.
        max_to_keep: how many of the latest checkpoints to keep.
        best_metric: name of the validation metric that decides the best checkpoint (passed
            as ``metrics`` to :meth:`save`); ``None``: no best checkpoint is kept.
        best_mode: ``"max"`` or ``"min"``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        config: dict[str, Any],
        max_to_keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
    ):
        if max_to_keep < 1:
            raise ValueError(f"`max_to_keep` must be >= 1, got {max_to_keep!r}.")
        if best_mode not in ("max", "min"):
            raise ValueError(f"`best_mode` must be 'max' or 'min', got {best_mode!r}.")
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = _jsonable(config)
        self.best_metric = best_metric
        config_path = self.directory / "config.json"
        if config_path.exists():
            try:
                stored = json.loads(config_path.read_text())
            except (OSError, ValueError) as err:
                raise CorruptCheckpointError(
                    f"{config_path} cannot be read ({err}); it is left untouched. Move the run "
                    "directory aside or use a fresh --workdir."
                ) from err
            self._check_config(stored, str(config_path))
        else:
            _write_json_atomic(config_path, self.config)
        policies: list[pp.PreservationPolicy] = [pp.LatestN(n=max_to_keep)]
        if best_metric is not None:
            policies.append(
                pp.BestN(
                    get_metric_fn=lambda m: m[best_metric],
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            # best_fn makes the manager store the metrics the BestN policy reads.
            best_fn=None if best_metric is None else (lambda m: m[best_metric]),
            best_mode=best_mode,
            keep_checkpoints_without_metrics=False,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            preservation_policy=pp.AnyPreservationPolicy(policies),
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory / "checkpoints",
            options=options,
            item_names=("state", "meta", "extra"),
        )

    def _check_config(self, stored: dict[str, Any], where: str) -> None:
        diff = config_diff(stored, self.config)
        if diff:
            raise ConfigMismatchError(
                f"{where} belongs to a run with a different configuration ("
                + "; ".join(diff)
                + "). Nothing was overwritten. Use a fresh --workdir, or rerun with the "
                "stored configuration to resume."
            )

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, ascending."""
        self._manager.reload()
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The step of the best checkpoint by ``best_metric`` (``None`` if none has metrics)."""
        if self.best_metric is None:
            return None
        self._manager.reload()
        if all(self._manager.metrics(s) is None for s in self._manager.all_steps()):
            return None
        step = self._manager.best_step()
        return None if step is None else int(step)

    # ------------------------------------------------------------------ save / restore
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
            meta: JSON-serialisable metadata (e.g. the data-order position); the config is
                added under ``"config"``.
            extra: further JSON (e.g. ``{"vocab": vocab.to_json_dict()}``).
            metrics: validation metrics of this step; the best checkpoint is chosen by
                ``metrics[best_metric]``.

        Returns:
            The step saved.
        """
        step = int(state.step)
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise CheckpointError(
                f"refusing to save step {step}: the run directory already holds step {latest} "
                f"({self.directory}); checkpoints are never overwritten."
            )
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_state_to_saveable(state)),
            meta=ocp.args.JsonSave(_jsonable({**meta, "config": self.config, "step": step})),
            extra=ocp.args.JsonSave(_jsonable(extra or {})),
        )
        self._manager.save(step, args=args, metrics=None if metrics is None else dict(metrics))
        self._manager.wait_until_finished()
        return step

    def restore(
        self, template: TrainState, step: int | None = None
    ) -> tuple[TrainState, dict[str, Any]]:
        """Restores the checkpoint at ``step`` (default: the latest) into ``template``'s structure.

        Args:
            template: a :class:`TrainState` of the same structure (e.g. a freshly initialised
                one); its arrays give the shapes and dtypes.
            step: which checkpoint; ``None`` for the latest.

        Returns:
            ``(state, meta)`` where ``meta`` also holds ``"extra"``.

        Raises:
            CheckpointError: there is no checkpoint at ``step``.
            ConfigMismatchError: the checkpoint was written under another configuration.
            CorruptCheckpointError: its files cannot be read, or do not match ``template``.
        """
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no checkpoint in {self.directory / 'checkpoints'}.")
            step = steps[-1]
        if step not in steps:
            raise CheckpointError(
                f"no checkpoint at step {step} in {self.directory / 'checkpoints'}; "
                f"available: {steps}."
            )
        path = self.directory / "checkpoints" / str(step)
        target = _state_to_saveable(template)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract),
                    meta=ocp.args.JsonRestore(),
                    extra=ocp.args.JsonRestore(),
                ),
            )
            meta, extra, saved = restored["meta"], restored["extra"], restored["state"]
        except Exception as err:  # Orbax/tensorstore raise many kinds of errors
            raise CorruptCheckpointError(
                f"the checkpoint {path} cannot be read; it may be corrupted or truncated, or "
                f"from a model of another shape ({type(err).__name__}: {str(err)[:300]}). "
                "It was left untouched: move it aside to resume from an earlier one, or use a "
                "fresh --workdir."
            ) from err
        if not isinstance(meta, dict) or "config" not in meta:
            raise CorruptCheckpointError(f"the checkpoint {path} has no stored config in meta/.")
        self._check_config(meta["config"], str(path))
        for leaf_t, leaf_s in zip(
            jax.tree_util.tree_leaves(target), jax.tree_util.tree_leaves(saved), strict=True
        ):
            if np.shape(leaf_t) != np.shape(leaf_s):
                raise CorruptCheckpointError(
                    f"the checkpoint {path} holds an array of shape {np.shape(leaf_s)} where "
                    f"the model has {np.shape(leaf_t)}."
                )
        key = saved["key"]
        if jax.dtypes.issubdtype(template.key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key, impl=jax.random.key_impl(template.key))
        state = TrainState(
            params=saved["params"], opt_state=saved["opt_state"], step=saved["step"], key=key
        )
        return state, {**meta, "extra": extra}

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
