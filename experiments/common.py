"""What every experiment shares: keys, configs, the run directory, optimiser, checkpoints, fit.

An experiment's configuration is ``Config(model, train, report)`` (frozen dataclasses):

- ``model``: the architecture (sizes, depth, ...);
- ``train``: everything else that changes the trained parameters (seed, data, optimiser,
  schedule); :class:`TrainConfig` holds the fields all experiments have;
- ``report``: how results are computed and shown (evaluation batch size, probes, samples,
  logging, progress bars); :class:`ReportConfig` holds the common ones.

Checkpoints are tied to ``(model, train)`` only (:func:`checkpoint_config`), so changing a
``report`` field never invalidates a run.

Run directory layout (``--workdir DIR``)::

    DIR/run_config.json      the whole configuration of the last ``train`` (read by eval/predict)
    DIR/*vocab.json          the vocabularies built on the training data
    RUN/config.json          the checkpoints' configuration: ``{"model": ..., "train": ...}``
    RUN/checkpoints/         Orbax checkpoints (the latest and the best by validation)
    RUN/metrics.jsonl        training and validation metrics; RUN/curves.png their plot
    DIR/results.json, .md    the evaluation (written only where DIR is writable)

where ``RUN`` is ``DIR`` itself, or ``DIR/<model>`` when one command trains several models.

Data parallelism (``--devices N`` / ``--distributed``, :func:`use_data_parallel`): the
train step of :func:`train_logged` runs on a mesh of every process's devices, each process
feeding its rows of every global batch; only process 0 writes the metrics log, the plots
and the results (the checkpoints are written by all, see :mod:`rnn_jax.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import jax

from rnn_jax._io import atomic_write

__all__ = [
    "Keys",
    "Model",
    "SplitData",
    "ModelRun",
    "Best",
    "ReportConfig",
    "TextTrainConfig",
    "TrainConfig",
    "check_positive",
    "check_choice",
    "check_fields",
    "check_models",
    "check_non_negative",
    "check_probability",
    "check_steps_per_epoch",
    "checkpoint_config",
    "config_from_dict",
    "config_to_dict",
    "data_parallel_mesh",
    "finish",
    "fit_logged",
    "host_local",
    "is_primary",
    "parallel_eval_step",
    "train_logged",
    "train_template",
    "load_vocab",
    "load_vocabs",
    "make_checkpointer",
    "make_keys",
    "make_optimizer",
    "prepare_run_directory",
    "quick_or_full",
    "read_run_config",
    "restore_best_params",
    "row_bucket",
    "start_training",
    "stored_config",
    "train_each",
    "train_models",
    "train_seq2seq",
    "use_data_parallel",
    "write_results",
    "write_run_config",
]

RUN_CONFIG = "run_config.json"


# --------------------------------------------------------------------------- keys and models


class Keys(NamedTuple):
    """The named keys of a run, all derived from its seed."""

    init: jax.Array
    data: jax.Array
    steps: jax.Array
    samples: jax.Array


def make_keys(seed: int, model: str | None = None) -> Keys:
    """``Keys(init, data, steps, samples)`` from ``seed``.

    With ``model`` (several models trained from one seed), ``init``, ``steps`` and
    ``samples`` are drawn from ``fold_in(key(seed), crc32(model))``, so each model has its
    own, while ``data`` is ``fold_in(key(seed), 1)`` for all: every model sees the same
    batches in the same order.

    Example:
        >>> keys = make_keys(0)
        >>> keys._fields
        ('init', 'data', 'steps', 'samples')
        >>> bool((jax.random.key_data(make_keys(0, "a").data)
        ...       == jax.random.key_data(make_keys(0, "b").data)).all())
        True
    """
    root = jax.random.key(seed)
    if model is None:
        return Keys(*jax.random.split(root, 4))
    own = jax.random.fold_in(root, zlib.crc32(model.encode()) & 0x7FFFFFFF)
    k_init, k_steps, k_samples = jax.random.split(own, 3)
    return Keys(k_init, jax.random.fold_in(root, 1), k_steps, k_samples)


class Model(NamedTuple):
    """A model: ``init(key) -> params`` and ``apply(params, *inputs, key=None, train=False)``."""

    init: Callable[[jax.Array], Any]
    apply: Callable[..., Any]


def row_bucket(n: int, cap: int | None = None, smallest: int = 8) -> int:
    """Rows of a batch holding ``n`` examples (or steps of one holding ``n`` tokens): a power
    of two times ``smallest``, the least ``>= n``, at most ``cap`` (``None``: no cap).

    Padding every batch to one of these few sizes keeps jitted functions from compiling again
    for every number of inputs (or every length).

    Example:
        >>> [row_bucket(n, cap=64) for n in (1, 8, 9, 40, 500)]
        [8, 8, 16, 64, 64]
        >>> [row_bucket(n, smallest=16) for n in (0, 16, 17, 100)]
        [16, 16, 32, 128]
    """
    rows = smallest
    while rows < n:
        rows *= 2
    return max(1, rows if cap is None else min(rows, cap))


# --------------------------------------------------------------------------- configs


def _check(condition: bool, name: str, expected: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"`{name}` must be {expected}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training fields every experiment has (experiments subclass it to add theirs).

    Attributes:
        seed: seeds the initialisation, the data order and the step keys.
        batch_size, num_epochs, learning_rate, warmup_steps, clip_norm: the optimiser
            (:func:`rnn_jax.train.default_optimizer`: clipping, Adam, warm-up, cosine decay).
        eval_every: validate every N steps (``None``: once per epoch).
        patience: stop after this many validations without improvement.
    """

    seed: int = 0
    batch_size: int = 64
    num_epochs: int = 10
    learning_rate: float = 3e-3
    warmup_steps: int = 200
    clip_norm: float = 1.0
    eval_every: int | None = None
    patience: int = 3

    def __post_init__(self):
        _check(self.seed >= 0, "seed", "a non-negative int", self.seed)
        check_fields(self, positive=("batch_size", "num_epochs", "patience"))
        _check(self.learning_rate > 0, "learning_rate", "positive", self.learning_rate)
        _check(self.warmup_steps >= 0, "warmup_steps", "a non-negative int", self.warmup_steps)
        _check(self.clip_norm > 0, "clip_norm", "positive", self.clip_norm)
        _check(
            self.eval_every is None or self.eval_every >= 1,
            "eval_every",
            "a positive int or none",
            self.eval_every,
        )


@dataclasses.dataclass(frozen=True)
class TextTrainConfig(TrainConfig):
    """The training fields of the experiments on tokenised text with a fixed split.

    Attributes:
        split_seed: seed of the fixed 80/10/10 split (:func:`experiments.data.split_by_sentence`).
        vocab_size: the most frequent training words kept, plus the special tokens.
        max_len: training sequences are truncated to this many tokens.
        pad_to_multiple: batch lengths are rounded up to a multiple of this (fewer compiles).
        keep_checkpoints: the latest checkpoints kept (the best is kept as well).
    """

    split_seed: int = 0
    vocab_size: int = 10_000
    max_len: int = 64
    pad_to_multiple: int = 16
    keep_checkpoints: int = 2

    def __post_init__(self):
        super().__post_init__()
        check_fields(
            self, positive=("vocab_size", "max_len", "pad_to_multiple", "keep_checkpoints")
        )


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """The report fields every experiment has (experiments subclass it to add theirs).

    Attributes:
        eval_batch_size: batch size of evaluation and prediction.
        log_every: a training-metrics record every N steps.
        progress: show progress bars.
    """

    eval_batch_size: int = 256
    log_every: int = 50
    progress: bool = True

    def __post_init__(self):
        check_fields(self, positive=("eval_batch_size", "log_every"))


def quick_or_full(cls: type, quick: dict[str, Any]) -> Callable[[bool], Any]:
    """An experiment's ``default_config(quick=False)``: ``cls()``, or with ``quick``'s fields.

    ``quick`` maps field names (flat or ``section.name``) to the quick configuration's values.

    Example:
        >>> from experiments.dates.config import DatesConfig
        >>> default_config = quick_or_full(DatesConfig, {"hidden_size": 8})
        >>> default_config().model.hidden_size, default_config(True).model.hidden_size
        (128, 8)
    """
    from experiments.cli import replace_fields

    changes = dict(quick)

    def default_config(quick: bool = False) -> Any:
        return replace_fields(cls(), changes if quick else {})

    default_config.__doc__ = f"The full {cls.__name__}, or the quick one (``{sorted(changes)}``)."
    return default_config


def check_positive(name: str, value: int) -> None:
    """Raises if ``value`` is not a positive int."""
    _check(value >= 1, name, "a positive int", value)


def check_non_negative(name: str, value: float) -> None:
    """Raises if ``value`` is negative."""
    _check(value >= 0, name, "non-negative", value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raises unless ``value`` is one of ``choices``."""
    _check(value in choices, name, f"one of {tuple(choices)}", value)


def check_probability(name: str, value: float) -> None:
    """Raises if ``value`` is not in ``[0, 1)`` (a dropout rate)."""
    _check(0.0 <= value < 1.0, name, "in [0, 1)", value)


def check_fields(
    config: Any,
    *,
    positive: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    probability: Iterable[str] = (),
) -> None:
    """Raises unless every field of ``config`` named in ``positive`` is a positive int
    (:func:`check_positive`), in ``non_negative`` non-negative, in ``probability`` in
    ``[0, 1)``; checked in that order (a config's ``__post_init__``).

    Example:
        >>> from experiments.names.config import ModelConfig
        >>> check_fields(ModelConfig(), positive=["hidden_size"], probability=["dropout"])
        >>> check_fields(TrainConfig(), non_negative=["warmup_steps"], positive=["seed"])
        Traceback (most recent call last):
        ...
        ValueError: `seed` must be a positive int, got 0
    """
    for name in positive:
        check_positive(name, getattr(config, name))
    for name in non_negative:
        check_non_negative(name, getattr(config, name))
    for name in probability:
        check_probability(name, getattr(config, name))


def check_models(models: Sequence[str], known: Iterable[str]) -> None:
    """Raises unless ``models`` is a non-empty subset of ``known`` (the model names)."""
    unknown = [m for m in models if m not in known]
    _check(bool(models) and not unknown, "models", f"a non-empty subset of {sorted(known)}", models)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuilds a config dataclass from :func:`config_to_dict` output (lists become tuples)."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            value = config_from_dict(hints[f.name], value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}")
    return cls(**kwargs)


def checkpoint_config(config: Any, **extra: Any) -> dict[str, Any]:
    """The part of ``config`` checkpoints are tied to: ``{"model": ..., "train": ..., **extra}``."""
    return {
        **extra,
        "model": config_to_dict(config.model),
        "train": config_to_dict(config.train),
    }


# --------------------------------------------------------------------------- run directory


def _train_first(workdir: Path, experiment: str) -> str:
    return f"train first with `python -m experiments.{experiment} train --workdir {workdir}`"


def _read_json(path: Path, experiment: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {_train_first(path.parent, experiment)}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); it was left untouched: restore it, or train "
            "into a fresh run directory."
        ) from None


def read_run_config(workdir: Path, cls: type, experiment: str) -> Any:
    """The configuration the last ``train`` stored in ``workdir`` (a clear error if none)."""
    path = Path(workdir) / RUN_CONFIG
    try:
        return config_from_dict(cls, _read_json(path, experiment))
    except (TypeError, ValueError) as err:
        if isinstance(err, ValueError) and str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path} is not a {experiment} configuration: {err}") from None


def load_vocab(workdir: Path, experiment: str, filename: str = "vocab.json"):
    """The vocabulary a training run stored in ``workdir`` (a clear error if none or corrupt)."""
    from rnn_jax.vocab import Vocabulary

    path = Path(workdir) / filename
    doc = _read_json(path, experiment)
    try:
        return Vocabulary.from_json_dict(doc)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is not a vocabulary: {err}") from None


def stored_config(workdir: Path, cls: type, experiment: str, overrides: dict[str, str]) -> Any:
    """The stored configuration with the command line's ``overrides`` applied.

    ``report`` fields may be changed freely; a ``model`` or ``train`` field must equal the
    stored value (evaluation and prediction use the trained model).
    """
    from experiments.cli import apply_overrides
    from rnn_jax.checkpoint import ConfigMismatchError, config_diff

    stored = read_run_config(workdir, cls, experiment)
    merged = apply_overrides(stored, overrides)
    diff = config_diff(checkpoint_config(stored), checkpoint_config(merged))
    if diff:
        raise ConfigMismatchError(
            f"{Path(workdir) / RUN_CONFIG} was trained with another configuration "
            f"({'; '.join(diff)}); evaluation uses the stored one: drop those overrides."
        )
    return merged


def prepare_run_directory(workdir: Path, config: Any, experiment: str) -> None:
    """Checks, before anything is written, that ``workdir`` can hold a run of ``config``.

    Raises (nothing written) if ``workdir`` is not a directory, is not writable, or holds a
    run of another ``(model, train)`` configuration; then creates it.
    """
    from rnn_jax.checkpoint import ConfigMismatchError, config_diff

    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"--workdir {workdir} is a file, not a directory")
    if (workdir / RUN_CONFIG).exists():
        stored = read_run_config(workdir, type(config), experiment)
        diff = config_diff(checkpoint_config(stored), checkpoint_config(config))
        if diff:
            raise ConfigMismatchError(
                f"{workdir} belongs to a run with a different configuration ("
                + "; ".join(diff)
                + "). Nothing was overwritten. Use a fresh run directory, or rerun with the "
                "stored configuration to resume."
            )
    workdir.mkdir(parents=True, exist_ok=True)
    if not os.access(workdir, os.W_OK):
        raise PermissionError(f"--workdir {workdir} is not writable")


def write_run_config(workdir: Path, config: Any) -> None:
    """Stores the whole configuration as ``workdir/run_config.json`` (atomically)."""
    atomic_write(Path(workdir) / RUN_CONFIG, json.dumps(config_to_dict(config), indent=2) + "\n")


def write_results(
    workdir: Path,
    results: dict[str, Any],
    markdown: str,
    extra: Iterable[tuple[str, Callable[[Path], Any]]] = (),
) -> bool:
    """Writes ``results.json``, ``results.md`` (and ``extra`` ``(name, writer)`` files).

    Evaluation never needs write access: on a read-only run directory this says so in one
    line on stderr and returns ``False``. With several processes only process 0 writes.
    """
    if not is_primary():
        return False
    workdir = Path(workdir)
    try:
        atomic_write(
            workdir / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n"
        )
        atomic_write(workdir / "results.md", markdown + "\n")
        for name, writer in extra:
            writer(workdir / name)
    except OSError as err:
        print(
            f"note: results printed only, not written to {workdir} ({err.strerror or err})",
            file=sys.stderr,
        )
        return False
    return True


class TrainingData(Protocol):
    """What :func:`start_training` needs of an experiment's data."""

    @property
    def vocabs(self) -> tuple[Any, ...]: ...  # built on the training data, stored in DIR

    @property
    def num_train(self) -> int: ...  # training examples

    def describe(self) -> str: ...  # one line: the sizes of the splits and vocabularies


@dataclasses.dataclass
class SplitData:
    """A fixed train/validation/test split and the vocabulary built on its training part.

    What :func:`start_training` needs, for experiments whose splits hold ``ids`` (one token-id
    array an example); experiments subclass it to add fields and ``describe()``.
    """

    vocab: Any
    train: Any
    val: Any
    test: Any

    @property
    def vocabs(self) -> tuple[Any, ...]:
        return (self.vocab,)

    @property
    def num_train(self) -> int:
        return len(self.train.ids)


def load_vocabs(workdir: Path, experiment: str, filenames: Sequence[str]) -> tuple[Any, ...]:
    """The vocabularies a training run stored in ``workdir``, in ``filenames`` order."""
    return tuple(load_vocab(workdir, experiment, name) for name in filenames)


def start_training(
    run: Any,
    experiment: str,
    load_data: Callable[[Any, tuple[Any, ...] | None], TrainingData],
    vocab_files: Sequence[str] = ("vocab.json",),
) -> Any:
    """The start of every ``train`` command: check, load, and only then write.

    Checks the run directory (:func:`prepare_run_directory`), loads the data (with the stored
    vocabularies when the run directory has them), checks that the data fill a batch, and
    only then stores the vocabularies and ``run_config.json``. Returns the data.
    """
    config, workdir = run.config, Path(run.workdir)
    prepare_run_directory(workdir, config, experiment)
    stored = all((workdir / name).exists() for name in vocab_files)
    data = load_data(config, load_vocabs(workdir, experiment, vocab_files) if stored else None)
    check_steps_per_epoch(data.num_train, config.train.batch_size)
    if not stored:
        for name, vocab in zip(vocab_files, data.vocabs, strict=True):
            vocab.save(workdir / name)
    write_run_config(workdir, config)
    print(f"data: {data.describe()}", file=sys.stderr)
    return data


def finish(
    workdir: Path,
    results: dict[str, Any],
    markdown: str,
    extra: Iterable[tuple[str, Callable[[Path], Any]]] = (),
    *,
    write: bool = True,
) -> int:
    """Writes the results (where the run directory is writable; :func:`write_results` with
    ``extra``), process 0 prints them; exit status 0. ``write=False``: already written."""
    if write:
        write_results(workdir, results, markdown, extra)
    if is_primary():
        print(markdown)
    return 0


# --------------------------------------------------------------------------- data parallel

_MESH: Any = None  # set once per process by use_data_parallel (the command line's flags)


def use_data_parallel(devices: int | None, distributed: bool) -> Any:
    """Train on ``devices`` devices per process (CPU: split into that many), over all
    processes with ``distributed`` (:func:`rnn_jax.distributed.initialize`); returns the
    mesh :func:`train_logged` and :func:`parallel_eval_step` then use. Call it before JAX
    computes anything."""
    from rnn_jax import distributed as dist

    global _MESH
    if devices is not None:
        dist.set_local_devices(devices)
    if distributed:
        dist.initialize()
    per = devices if devices is not None and jax.local_device_count() > devices else None
    _MESH = dist.global_mesh(per)
    print(f"data parallel: {dist.devices_description(list(_MESH.devices.flat))}", file=sys.stderr)
    return _MESH


def data_parallel_mesh() -> Any:
    """The mesh of :func:`use_data_parallel`, or ``None`` (one device, the plain path)."""
    return _MESH


def is_primary() -> bool:
    """Whether this process writes the run's shared files (always, with one process)."""
    return _MESH is None or jax.process_index() == 0


def parallel_eval_step(eval_step: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``eval_step(params, batch) -> sums`` over the batch split across the mesh of
    :func:`use_data_parallel` (:func:`rnn_jax.parallel.parallel_sums`), or unchanged."""
    if _MESH is None:
        return eval_step
    from rnn_jax.parallel import parallel_sums

    return parallel_sums(eval_step, _MESH)


# --------------------------------------------------------------------------- training pieces


def check_steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch; a clear error when the batch is larger than the data."""
    if batch_size > num_examples:
        raise ValueError(
            f"`batch_size` = {batch_size} is larger than the {num_examples} training examples: "
            "lower --config.batch_size or use more data"
        )
    return num_examples // batch_size


def make_optimizer(train: TrainConfig, steps_per_epoch: int):
    """:func:`rnn_jax.train.default_optimizer` for ``train`` (``steps_per_epoch`` sets decay).

    AdamW when ``train`` has a positive ``weight_decay`` field (e.g. the weather experiment's).
    """
    from rnn_jax.train import default_optimizer

    return default_optimizer(
        train.learning_rate,
        clip_norm=train.clip_norm,
        warmup_steps=train.warmup_steps,
        total_steps=max(train.num_epochs * steps_per_epoch, train.warmup_steps + 1),
        weight_decay=getattr(train, "weight_decay", 0.0),  # where the experiment has it
    )


class Best(NamedTuple):
    """The validation metric that picks the best checkpoint and stops early: ``"max"``/``"min"``."""

    metric: str
    mode: str


def make_checkpointer(
    directory: Path,
    config: dict[str, Any],
    best: Best,
    max_to_keep: int = 2,
    *,
    read_only: bool = False,
):
    """A :class:`rnn_jax.checkpoint.Checkpointer` keeping the latest and the ``best`` checkpoints.

    ``read_only=True`` (evaluation, prediction, sampling) takes no lock and writes nothing, so
    it works beside a running training and on a read-only disk.
    """
    from rnn_jax.checkpoint import Checkpointer

    return Checkpointer(
        directory,
        config=config,
        max_to_keep=max_to_keep,
        best_metric=best.metric,
        best_mode=best.mode,
        read_only=read_only,
    )


def restore_best_params(checkpointer, template, *, experiment: str, workdir: Path) -> Any:
    """Parameters of the best checkpoint (else the latest); closes ``checkpointer``.

    Raises:
        FileNotFoundError: there is no checkpoint (the message says how to train).
    """
    try:
        step = checkpointer.best_step() or checkpointer.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"no checkpoint in {checkpointer.directory}: {_train_first(workdir, experiment)}."
            )
        state, _ = checkpointer.restore(template, step=step)
        return state.params
    finally:
        checkpointer.close()


def train_template(config: Any, params: Any, keys: Keys):
    """A train state of ``params`` shaped like the run's: the template checkpoints restore into."""
    from rnn_jax.train import init_train_state

    return init_train_state(params, make_optimizer(config.train, 1), key=keys.steps)


def train_logged(
    config: Any,
    loss_fn: Callable[..., Any],
    epoch_batches: Callable[[int, int], Any],
    *,
    params: Any,
    keys: Keys,
    num_train: int,
    weight_fn: Callable[[Any], Any] | None = None,
    **fit_logged_kwargs: Any,
) -> dict[str, Any]:
    """Trains ``params`` on ``loss_fn(params, batch, *, key)``: the whole run, logged.

    The optimiser of ``config.train`` (its decay over ``num_train // batch_size`` steps an
    epoch), a fresh train state keyed by ``keys.steps``, the jitted train step, then
    :func:`fit_logged` (which takes ``fit_logged_kwargs``). Returns its summary and the
    parameter count. With a mesh (:func:`use_data_parallel`) the step is
    :func:`rnn_jax.parallel.make_parallel_train_step` with ``weight_fn`` (what the loss of a
    batch is a mean over, e.g. its valid tokens; default its examples) and each process feeds
    its rows; ``evaluate_fn`` gets this process's copy of the replicated parameters
    (:func:`host_local`), so an experiment's single-device evaluation runs unchanged.
    """
    from rnn_jax.params import count_params
    from rnn_jax.train import init_train_state, make_train_step

    steps_per_epoch = check_steps_per_epoch(num_train, config.train.batch_size)
    optimizer = make_optimizer(config.train, steps_per_epoch)
    state = init_train_state(params, optimizer, key=keys.steps)
    if _MESH is None:
        train_step = make_train_step(loss_fn, optimizer)
    else:
        from rnn_jax.distributed import process_batches
        from rnn_jax.parallel import make_parallel_train_step

        n = _MESH.devices.size
        if config.train.batch_size % n:
            raise ValueError(
                f"`batch_size` = {config.train.batch_size} must be a multiple of the {n} "
                "devices of --devices/--distributed (each device takes an equal share)"
            )

        train_step = make_parallel_train_step(loss_fn, optimizer, _MESH, weight_fn=weight_fn)
        epoch_batches = process_batches(epoch_batches, _MESH)
        evaluate_fn = fit_logged_kwargs.get("evaluate_fn")
        if evaluate_fn is not None:  # the experiment's single-device evaluation, on every process
            fit_logged_kwargs["evaluate_fn"] = lambda params: evaluate_fn(host_local(params))
        # One process cannot stop alone on a signal (the others wait in the all-reduce):
        # signals end every process at once, and a relaunch resumes from the last checkpoint.
        fit_logged_kwargs.setdefault("handle_signals", jax.process_count() == 1)
    summary = fit_logged(state, train_step, epoch_batches, config=config,
                         steps_per_epoch=steps_per_epoch, **fit_logged_kwargs)  # fmt: skip
    return {**summary, "num_params": count_params(params)}


def fit_logged(
    state,
    train_step,
    epoch_batches,
    *,
    config: Any,
    workdir: Path,
    checkpointer,
    best: Best,
    name: str,
    **fit_kwargs,
) -> dict[str, Any]:
    """:func:`rnn_jax.train.fit` with the run directory's metrics log, curves and summary.

    The schedule comes from ``config`` (``train.num_epochs``, ``train.eval_every``,
    ``train.patience`` on ``best``, ``report.progress``, ``report.log_every``,
    ``report.tensorboard`` where it exists); ``fit_kwargs`` go to ``fit`` as they are
    (``steps_per_epoch``, ``evaluate_fn``, ...). Logs metrics to ``workdir/metrics.jsonl``
    (and TensorBoard if asked and installed), closes the log and the checkpointer however
    training ends, plots ``curves.png`` and returns the summary every experiment reports.
    """
    from rnn_jax.progress import MetricsLogger, plot_metrics
    from rnn_jax.train import EarlyStopping, fit

    train, report = config.train, config.report
    tensorboard = getattr(report, "tensorboard", False)
    workdir = Path(workdir)
    primary = is_primary()
    logger = MetricsLogger(workdir, tensorboard=tensorboard) if primary else None
    if tensorboard and primary and not logger.tensorboard_enabled:
        print(
            "tensorboard=true but no writer is installed (pip install tensorboardX); "
            "metrics go to metrics.jsonl only",
            file=sys.stderr,
        )
    try:
        result = fit(
            state,
            train_step,
            epoch_batches,
            checkpointer=checkpointer,
            logger=logger,
            description=name,
            num_epochs=train.num_epochs,
            eval_every=train.eval_every,
            early_stopping=EarlyStopping(best.metric, mode=best.mode, patience=train.patience),
            progress=report.progress and primary,
            log_every=report.log_every,
            **fit_kwargs,
        )
        # Steps taken: the end of training is always checkpointed (with `fit(restore_best=...)`
        # `result.state` may be the best state, an earlier step).
        steps = max(int(result.state.step), checkpointer.latest_step() or 0)
    finally:
        if logger is not None:
            logger.close()
        checkpointer.close()
    if primary:
        plot_metrics(workdir / "metrics.jsonl", workdir / "curves.png", title=name)
    return {
        "train_seconds": result.train_seconds,
        "best_step": result.best_step,
        "steps": steps,
        "stopped_early": result.stopped_early,
        "val": result.best_metrics,
    }


# --------------------------------------------------------------------------- one model's run


class ModelRun:
    """One model's training run in ``<workdir>/<name>``, for experiments that train several.

    Holds the model (:class:`Model`-like: ``init(key)``), its :class:`Keys` (from the seed and
    the model's name, :func:`make_keys`), the initial parameters, and the run directory's
    checkpointer (best by ``best``, the class attribute or one set before ``__init__``;
    ``train.keep_checkpoints`` latest ones where the config has that field, else 2).
    Subclasses add the experiment's loss, batches and evaluation and call :meth:`fit`.
    """

    experiment: str = "experiment"
    best: Best = Best("loss", "min")

    def __init__(self, config: Any, name: str, workdir: Path, model: Any):
        from rnn_jax.params import count_params

        self.config, self.name, self.model = config, name, model
        self.workdir = Path(workdir)
        self.dir = self.workdir / name
        self.keys = self.make_keys()
        self.params0 = model.init(self.keys.init)
        self.num_params = count_params(self.params0)

    def make_keys(self) -> Keys:
        """The run's keys: :func:`make_keys` of the seed and the model's name."""
        return make_keys(self.config.train.seed, self.name)

    def checkpoint_config(self) -> dict[str, Any]:
        """What this run's checkpoints are tied to: ``{"name", "model", "train"}``."""
        return checkpoint_config(self.config, name=self.name)

    def checkpointer(self, *, read_only: bool = False):
        """The run directory's checkpointer, tied to :meth:`checkpoint_config`."""
        return make_checkpointer(
            self.dir,
            self.checkpoint_config(),
            self.best,
            max_to_keep=getattr(self.config.train, "keep_checkpoints", 2),
            read_only=read_only,
        )

    def template(self):
        """The train state checkpoints of this run restore into."""
        return train_template(self.config, self.params0, self.keys)

    def best_params(self) -> Any:
        """Parameters of the best checkpoint (else the latest), or ``None`` if untrained."""
        if not (self.dir / "checkpoints").exists():
            return None
        return restore_best_params(
            self.checkpointer(read_only=True),
            self.template(),
            experiment=self.experiment,
            workdir=self.workdir,
        )

    def train_info(self) -> dict[str, Any]:
        """The summary :func:`train_models` stored (``{}`` if none)."""
        path = self.dir / "train.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def token_batches(
        self,
        *fields: Sequence[Any],
        pad_values: Any,
        convert: Callable[[Any], Any],
        extras: Sequence[Any] = (),
    ) -> Callable[[int, int], Any]:
        """``epoch_batches(epoch, start)`` for :meth:`fit`: shuffled, length-bucketed batches.

        :func:`rnn_jax.batching.iterate_batches` of the token sequences ``fields`` (and the
        per-example ``extras``) with ``train.batch_size``, ``train.pad_to_multiple`` and
        ``train.max_len``, shuffled by ``fold_in(keys.data, epoch)``, full batches only; each
        :class:`~rnn_jax.batching.Batch` is passed through ``convert`` (to the loss's batch).
        """
        from rnn_jax.batching import iterate_batches

        c = self.config.train

        def epoch_batches(epoch: int, start: int):
            for b in iterate_batches(
                *fields,
                batch_size=c.batch_size,
                key=jax.random.fold_in(self.keys.data, epoch),
                pad_values=pad_values,
                extras=extras,
                drop_last=True,
                start=start,
                pad_to_multiple=c.pad_to_multiple,
                max_len=c.max_len,
            ):
                yield convert(b)

        return epoch_batches

    def fit(self, loss_fn, epoch_batches, *, num_train: int, params: Any = None, **kwargs):
        """:func:`train_logged` into this run's directory, from ``params`` (default: initial)."""
        return train_logged(
            self.config,
            loss_fn,
            epoch_batches,
            params=self.params0 if params is None else params,
            keys=self.keys,
            num_train=num_train,
            workdir=self.dir,
            checkpointer=self.checkpointer(),
            best=self.best,
            name=self.name,
            **kwargs,
        )


def train_models(config: Any, data: Any, make_run: Callable[[str], Any]) -> dict[str, Any]:
    """Trains every model of ``config.models`` (each resumes from its latest checkpoint).

    ``make_run(name)`` gives a :class:`ModelRun` with ``train(data) -> summary``; each
    summary is stored as ``<run dir>/train.json`` (:func:`train_each`) and returned by name.
    """

    def train_one(name: str) -> tuple[Path, dict[str, Any]]:
        run = make_run(name)
        print(f"training {name} ({run.num_params:,} parameters)", file=sys.stderr)
        return run.dir, run.train(data)

    return train_each(config.models, train_one)


def train_each(
    names: Iterable[str], train_one: Callable[[str], tuple[Path, dict[str, Any]]]
) -> dict[str, Any]:
    """``train_one(name) -> (run directory, summary)`` for every name, in order; process 0
    stores each summary as ``<run directory>/train.json``. Returns the summaries by name."""
    summaries = {}
    for name in names:
        directory, summary = train_one(name)
        if is_primary():  # one writer of the shared run directory
            atomic_write(Path(directory) / "train.json", json.dumps(summary, indent=2) + "\n")
        summaries[name] = summary
    return summaries


# --------------------------------------------------------------------------- evaluation and reports
# What the experiments' eval/predict/summary commands share (not training).

__all__ += [
    "best_trained",
    "mean_sd",
    "read_results",
    "save_figure",
    "summarize_runs",
    "summary_command",
    "table_head",
    "trained_params",
    "trained_runs",
]


def trained_params(run: Any) -> Any:
    """``run.best_params()`` of a :class:`ModelRun`-like run; a clear error if it is untrained.

    Raises:
        FileNotFoundError: ``run`` has no checkpoint (the message names the model).
    """
    params = run.best_params()
    if params is None:
        raise FileNotFoundError(f"{run.dir} has no checkpoint: train {run.name} first.")
    return params


def trained_runs(
    names: Iterable[str], make_run: Callable[[str], Any]
) -> typing.Iterator[tuple[str, Any, Any]]:
    """``(name, run, params)`` for every model of ``names`` that has a checkpoint, in order.

    ``make_run(name)`` gives a :class:`ModelRun`-like run; ``params`` are its best
    parameters. Models without a checkpoint (not trained yet) are skipped.
    """
    for name in names:
        run = make_run(name)
        params = run.best_params()
        if params is not None:
            yield name, run, params


def best_trained(
    workdir: Path,
    names: Iterable[str],
    metric: str,
    *,
    mode: str = "max",
    experiment: str | None = None,
    what: str = "model",
) -> str | None:
    """The model of ``names`` with the best validation ``metric`` (``"max"``/``"min"``).

    Reads each ``<workdir>/<name>/train.json`` (the summary :func:`train_models` stores); a
    model without one is not trained and is skipped, one without ``metric`` ranks last, ties
    go to the first. With none trained: ``None``, or with ``experiment`` a
    ``FileNotFoundError`` naming the command that trains (``what`` names the models in it).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for name, f1 in (("a", 0.5), ("b", 0.7)):
        ...     (d / name).mkdir()
        ...     _ = (d / name / "train.json").write_text(json.dumps({"val": {"f1": f1}}))
        >>> best_trained(d, ["a", "b", "c"], "f1"), best_trained(d, ["a", "b"], "f1", mode="min")
        ('b', 'a')
        >>> best_trained(d, ["c"], "f1") is None
        True
    """
    check_choice("mode", mode, ("max", "min"))
    sign = 1.0 if mode == "max" else -1.0
    scored = {}
    for name in names:
        path = Path(workdir) / name / "train.json"
        if path.exists():
            val = json.loads(path.read_text()).get("val") or {}
            scored[name] = sign * val.get(metric, -sign * float("inf"))
    if scored:
        return max(scored, key=lambda n: scored[n])
    if experiment is None:
        return None
    raise FileNotFoundError(f"no trained {what} in {workdir}: {_train_first(workdir, experiment)}.")


def summarize_runs(
    runs: Sequence[dict[str, Any]], entry: Callable[[list[dict[str, Any]]], dict[str, Any]]
) -> dict[str, Any]:
    """Every model and baseline of several runs' results (seeds), summarised by ``entry``.

    ``runs`` are ``results.json`` documents with ``"models"`` and ``"baselines"`` sections;
    each name (in the order first seen) gets ``{"runs": n, **entry(rows)}`` where ``rows``
    are its ``n`` results in the runs that have it.

    Example:
        >>> runs = [{"models": {"a": {"f1": 0.5}}, "baselines": {}},
        ...         {"models": {"a": {"f1": 0.7}, "b": {"f1": 0.1}}, "baselines": {}}]
        >>> summarize_runs(runs, lambda rows: {"f1": [r["f1"] for r in rows]})["models"]
        {'a': {'runs': 2, 'f1': [0.5, 0.7]}, 'b': {'runs': 1, 'f1': [0.1]}}
    """
    out: dict[str, Any] = {"models": {}, "baselines": {}}
    for section in out:
        for name in dict.fromkeys(n for r in runs for n in r[section]):
            rows = [r[section][name] for r in runs if name in r[section]]
            out[section][name] = {"runs": len(rows), **entry(rows)}
    return out


def mean_sd(values: Iterable[float]) -> list[float]:
    """``[mean, sample sd]`` of ``values`` (sd 0 for a single value): a summary over seeds.

    Computed by :mod:`statistics` (correctly rounded: equal values have sd exactly 0).

    Example:
        >>> mean_sd([1.0, 2.0, 3.0])
        [2.0, 1.0]
        >>> mean_sd([0.5, 0.5]), mean_sd([0.7])
        ([0.5, 0.0], [0.7, 0.0])
    """
    import statistics

    values = [float(v) for v in values]
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def read_results(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``results.json`` an evaluation wrote in the run directory ``directory``.

    Raises:
        FileNotFoundError: there is none (the message says to train or evaluate first).
    """
    path = Path(directory) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: train or evaluate {directory} first")
    return json.loads(path.read_text(encoding="utf-8"))


def summary_command(
    run: Any,
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]],
    format_summary: Callable[[dict[str, Any]], str],
    *,
    read: Callable[[str], dict[str, Any]] = read_results,
    plots: Iterable[tuple[str, Callable[[list[dict[str, Any]], Path], Any]]] = (),
) -> int:
    """``summary --workdir OUT RUN_DIR ...``: ``summarize`` over the runs' results (seeds).

    Reads every input with ``read`` (default :func:`read_results`), writes
    ``OUT/results.json`` (``{"runs": inputs, **summary}``) and ``OUT/results.md`` (the
    Markdown of ``format_summary``), then each ``(filename, plot)`` of ``plots`` as
    ``plot(runs, OUT / filename)``, and prints the Markdown.

    Raises:
        ValueError: no run directories were given.
    """
    if not run.inputs:
        raise ValueError("`summary` needs the run directories to combine, e.g. runs/s0 runs/s1")
    runs = [read(directory) for directory in run.inputs]
    summary = summarize(runs)
    markdown = format_summary(summary)
    out = Path(run.workdir)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, {"runs": list(run.inputs), **summary}, markdown)
    for filename, plot in plots:
        plot(runs, out / filename)
    print(markdown)
    return 0


def table_head(columns: Iterable[str]) -> list[str]:
    """The two header lines of a Markdown table: the first column left-aligned, the others
    right-aligned (numbers).

    Example:
        >>> table_head(["model", "F1", "recall"])
        ['| model | F1 | recall |', '|---|---:|---:|']
    """
    columns = list(columns)
    return ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lays out, saves and closes a Matplotlib figure; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- shared config sections

__all__ += ["StackConfig"]


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """A ``model`` section for a stack of recurrent layers (experiments subclass it to set
    their defaults or add fields).

    Attributes:
        hidden_size: ``H`` of every layer.
        num_layers: stacked recurrent layers.
        dropout: dropout between stacked layers.
    """

    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0

    def __post_init__(self):
        check_fields(self, positive=("hidden_size", "num_layers"), probability=("dropout",))


# --------------------------------------------------------------------------- data parallel, more


def host_local(tree: Any) -> Any:
    """``tree`` with every array replicated over several devices replaced by this process's
    copy of it (on its first device): what single-device code (an experiment's evaluation,
    prediction) can take, with one process or several. Other leaves pass unchanged.

    Raises:
        ValueError: a leaf is split over devices rather than replicated (no process holds
            all of it).
    """

    def local(x):
        if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
            if not x.is_fully_replicated:
                raise ValueError(
                    "`tree` must hold arrays replicated over the mesh (parameters), got one "
                    f"of shape {x.shape} split as {x.sharding}."
                )
            return x.addressable_data(0)
        return x

    return jax.tree_util.tree_map(local, tree)


def train_seq2seq(
    config: Any,
    src_ids: Sequence[Any],
    tgt_ids: Sequence[Any],
    *,
    bos_id: int,
    src_pad_id: int,
    src_pad_to_multiple: int | None,
    tgt_width: int | None = None,
    tgt_pad_to_multiple: int | None = None,
    params: Any,
    keys: Keys,
    **train_logged_kwargs: Any,
) -> dict[str, Any]:
    """Teacher-forced training of an encoder-decoder (:func:`rnn_jax.seq2seq.seq2seq_loss`)
    on ``(src_ids[i], tgt_ids[i])`` pairs, through :func:`train_logged` (one device or a mesh).

    Batches: ``train.batch_size`` pairs shuffled by ``fold_in(keys.data, epoch)`` and
    bucketed by source length, sources padded with ``src_pad_id`` to a multiple of
    ``src_pad_to_multiple``, targets (ending in ``<EOS>``) padded with 0 to the longest
    target of the batch (rounded up to a multiple of ``tgt_pad_to_multiple`` when given), or
    to ``tgt_width`` exactly. The loss is the mean over the batch's
    target tokens, so on a mesh each shard weighs by its target tokens (exact). The rest of
    ``train_logged_kwargs`` (``workdir``, ``checkpointer``, ``best``, ``name``,
    ``evaluate_fn``, ...) goes to :func:`train_logged`.
    """
    import jax.numpy as jnp

    from rnn_jax.batching import iterate_batches, pad_batch
    from rnn_jax.seq2seq import seq2seq_loss

    if len(src_ids) != len(tgt_ids):
        raise ValueError(
            f"`src_ids` and `tgt_ids` must be pairs, got {len(src_ids)} sources and "
            f"{len(tgt_ids)} targets."
        )
    batch_size = config.train.batch_size

    def loss_fn(params, batch, *, key):
        src, src_lengths, tgt, tgt_lengths = batch
        return seq2seq_loss(params, src, src_lengths, tgt, tgt_lengths, bos_id=bos_id)

    def target_tokens(batch):
        return jnp.sum(batch[3])

    def epoch_batches(epoch: int, start: int):
        for b in iterate_batches(
            src_ids,
            batch_size=batch_size,
            key=jax.random.fold_in(keys.data, epoch),
            pad_values=src_pad_id,
            drop_last=True,
            start=start,
            pad_to_multiple=src_pad_to_multiple,
        ):
            tgt, tgt_lengths = pad_batch([tgt_ids[i] for i in b.indices], max_len=tgt_width,
                                         pad_to_multiple=tgt_pad_to_multiple)  # fmt: skip
            yield (jnp.asarray(b.fields[0]), jnp.asarray(b.lengths), jnp.asarray(tgt),
                   jnp.asarray(tgt_lengths))  # fmt: skip

    return train_logged(config, loss_fn, epoch_batches, params=params, keys=keys,
                        num_train=len(src_ids), weight_fn=target_tokens, **train_logged_kwargs)  # fmt: skip


# --------------------------------------------------------------------------- sequence-to-sequence
# What the two encoder-decoder experiments (dates, translate) share besides the training loop
# (:func:`train_seq2seq`): their data's vocabulary pair, the best checkpoint and the commands.

__all__ += ["PairData", "decode_inputs", "restore_best", "run_checkpointer"]


@dataclasses.dataclass
class PairData:
    """Source/target pairs per split with the two vocabularies (subclassed per experiment;
    ``cls(src_vocab, tgt_vocab)`` holds the vocabularies only, as prediction needs)."""

    src_vocab: Any
    tgt_vocab: Any
    splits: dict[str, list[Any]] = dataclasses.field(default_factory=dict)

    @property
    def vocabs(self) -> tuple[Any, Any]:
        return (self.src_vocab, self.tgt_vocab)

    @property
    def num_train(self) -> int:
        return len(self.splits["train"])


def run_checkpointer(
    config: Any,
    workdir: Path,
    best: Best,
    *,
    model: str | None = None,
    read_only: bool = False,
    **extra: Any,
):
    """The checkpointer of a run directory: ``workdir``, or ``workdir/model`` for one of
    several models, tied to :func:`checkpoint_config` ``(config, **extra)`` (see
    :func:`make_checkpointer`)."""
    directory = Path(workdir) if model is None else Path(workdir) / model
    return make_checkpointer(
        directory, checkpoint_config(config, **extra), best, read_only=read_only
    )


def restore_best(
    config: Any,
    init: Callable[[Any], Any],
    best: Best,
    *,
    experiment: str,
    workdir: Path,
    model: str | None = None,
    **extra: Any,
) -> Any:
    """The best checkpoint's parameters of the run directory of :func:`run_checkpointer`
    (``init(key)`` builds the template from the keys of the run's seed and ``model``,
    :func:`make_keys`)."""
    keys = make_keys(config.train.seed, model)
    template = train_template(config, init(keys.init), keys)
    checkpointer = run_checkpointer(config, workdir, best, model=model, read_only=True, **extra)
    return restore_best_params(checkpointer, template, experiment=experiment, workdir=workdir)


def decode_inputs(
    run: Any,
    pieces: Pieces,
    data_cls: Callable[[Any, Any], PairData],
    best_params: Callable[[Any, PairData, Path], Any],
    decode: Callable[..., list[Any]],
    encode: Callable[[str], Any] | None = None,
) -> tuple[list[str], list[Any], Any, list[Any], list[Any]]:
    """What the encoder-decoder experiments' ``predict`` commands share.

    The inputs (``run.inputs``, or the lines of standard input), the stored configuration
    and vocabularies (``pieces``), the best parameters ``best_params(config,
    data_cls(src_vocab, tgt_vocab), workdir)``, then the greedy and the beam decoding
    ``decode(params, config, src_vocab, tgt_vocab, sources, method=...)`` of the sources
    (``encode(text)`` of each input; default the text itself). Returns ``(texts, sources,
    src_vocab, greedy, beam)``.
    """
    from experiments.cli import read_inputs

    texts = read_inputs(run.inputs)
    config = pieces.stored_config(run)
    data = data_cls(*pieces.stored_vocabs(run.workdir))
    params = best_params(config, data, run.workdir)
    sources = texts if encode is None else [encode(t) for t in texts]
    greedy, beam = (
        decode(params, config, data.src_vocab, data.tgt_vocab, sources, method=method)
        for method in ("greedy", "beam")
    )
    return texts, sources, data.src_vocab, greedy, beam


# --------------------------------------------------------------------------- standard commands

__all__ += ["Pieces"]


class Pieces(NamedTuple):
    """An experiment's pieces, and the standard ``train`` and ``eval`` commands made of them.

    - ``train`` (:meth:`train_command`): :func:`start_training` (checks the run directory,
      ``load_data(config, stored vocabularies or None)``, then stores the ``vocab_files`` and
      ``run_config.json``), ``train(config, data, workdir)`` (resuming from the checkpoints),
      then ``evaluate(config, data, workdir)``; a summary ``train`` returns (not ``None``)
      is added to the results as ``"train"``.
    - ``eval`` (:meth:`eval_command`): the stored configuration with the command line's
      ``report`` overrides (:func:`stored_config`), ``load_data(config, stored
      vocabularies)``, then ``evaluate``.

    Both end in :meth:`finish`: the results are written (``results.json``/``.md`` and the
    ``figures``, :func:`write_results`) unless ``evaluate`` wrote them itself
    (``writes_results``), and process 0 prints their Markdown (``format_results``).
    """

    experiment: str
    config_cls: type
    load_data: Callable[[Any, tuple[Any, ...] | None], Any]
    train: Callable[[Any, Any, Path], dict[str, Any] | None]
    evaluate: Callable[[Any, Any, Path], dict[str, Any]]
    format_results: Callable[[dict[str, Any]], str]
    vocab_files: tuple[str, ...] = ("vocab.json",)
    writes_results: bool = False  # `evaluate` writes the results (and its figures) itself
    figures: Callable[[dict[str, Any]], Iterable[tuple[str, Callable[[Path], Any]]]] | None = None

    @classmethod
    def of_models(
        cls,
        experiment: str,
        config_cls: type,
        load_data: Callable[[Any, tuple[Any, ...] | None], Any],
        make_run: Callable[[Any, str, Any, Path], Any],
        evaluate_all: Callable[[Any, Path, Any], dict[str, Any]],
        format_results: Callable[[dict[str, Any]], str],
        vocab_files: tuple[str, ...] = ("vocab.json",),
        *,
        writes_results: bool = True,
    ) -> Pieces:
        """The pieces of an experiment that trains several models: ``train`` is
        :func:`train_models` of the runs ``make_run(config, name, data, workdir)`` (their
        summaries go to their ``train.json``, not into the results), ``evaluate`` is
        ``evaluate_all(config, workdir, data)``, which writes the results (with its figures)
        itself unless ``writes_results=False``."""

        def train(config: Any, data: Any, workdir: Path) -> None:
            train_models(config, data, lambda name: make_run(config, name, data, workdir))

        def evaluate(config: Any, data: Any, workdir: Path) -> dict[str, Any]:
            return evaluate_all(config, workdir, data)

        return cls(experiment, config_cls, load_data, train, evaluate, format_results,
                   tuple(vocab_files), writes_results)  # fmt: skip

    def read_config(self, workdir: Path) -> Any:
        """The configuration the last ``train`` stored in ``workdir`` (:func:`read_run_config`)."""
        return read_run_config(workdir, self.config_cls, self.experiment)

    def stored_config(self, run: Any) -> Any:
        """The configuration stored in ``run.workdir`` with ``run``'s overrides
        (:func:`stored_config`)."""
        return stored_config(run.workdir, self.config_cls, self.experiment, run.overrides)

    def stored_vocabs(self, workdir: Path) -> tuple[Any, ...]:
        """The vocabularies ``vocab_files`` of ``workdir`` (:func:`load_vocabs`)."""
        return load_vocabs(workdir, self.experiment, self.vocab_files)

    def finish(self, workdir: Path, results: dict[str, Any]) -> int:
        """Writes the results (unless ``evaluate`` did), process 0 prints them; exit status 0."""
        extra = () if self.figures is None else self.figures(results)
        markdown = self.format_results(results)
        return finish(workdir, results, markdown, extra, write=not self.writes_results)

    def train_command(self, run: Any) -> int:
        """Trains (resuming if the run directory holds checkpoints), then evaluates."""
        data = start_training(run, self.experiment, self.load_data, self.vocab_files)
        summary = self.train(run.config, data, run.workdir)
        results = self.evaluate(run.config, data, run.workdir)
        if summary is not None:
            results["train"] = summary
        return self.finish(run.workdir, results)

    def eval_command(self, run: Any) -> int:
        """Evaluates the best checkpoints of the run directory with its stored configuration."""
        config = self.stored_config(run)
        data = self.load_data(config, self.stored_vocabs(run.workdir))
        return self.finish(run.workdir, self.evaluate(config, data, run.workdir))
