"""Configuration of the temperature-forecasting experiment (the seed is part of it).

``WeatherConfig(models, model, train, report)``: checkpoints are tied to ``model`` and
``train`` (and the model's name); ``report`` fields may change freely. ``train.task``
(``daily`` or ``hourly``) picks the task and its defaults (:func:`default_config`).
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "HEADS",
    "ModelConfig",
    "ReportConfig",
    "TrainConfig",
    "WeatherConfig",
    "default_config",
    "parse_model_name",
]

CELLS = ("rnn", "gru", "lstm")
HEADS = ("mse", "gauss")
POOLS = ("last", "mean", "max")
RESIDUALS = ("none", "persistence", "climatology", "ridge_ar")


def parse_model_name(name: str) -> tuple[str, str]:
    """``"gru_gauss"`` -> ``("gru", "gauss")``; ``"rnn"`` -> ``("rnn", "mse")``."""
    cell, _, head = name.partition("_")
    head = head or "mse"
    if cell not in CELLS or head not in HEADS:
        raise ValueError(f"a model name is CELL or CELL_gauss with CELL in {CELLS}, got {name!r}")
    return cell, head


def _check(ok: bool, name: str, expected: str, value) -> None:
    if not ok:
        raise ValueError(f"`{name}` must be {expected}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The recurrent network.

    Attributes:
        hidden_size: ``H``.
        num_layers: stacked recurrent layers.
        pool: many-to-one summary of the top layer (``last``; ``mean``/``max`` need
            ``rnn_classify(..., pool=)``).
    """

    hidden_size: int = 32
    num_layers: int = 1
    pool: str = "last"

    def __post_init__(self):
        _check(self.hidden_size >= 1, "hidden_size", "a positive int", self.hidden_size)
        _check(self.num_layers >= 1, "num_layers", "a positive int", self.num_layers)
        _check(self.pool in POOLS, "pool", f"one of {POOLS}", self.pool)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Data and optimisation.

    Attributes:
        task: ``daily`` (tomorrow's ``temp_max`` from 30 days) or ``hourly`` (the next 24
            hours from 168).
        seed: initialisation, data order and step keys.
        residual: the network predicts the target minus this forecast (``persistence``:
            the value one period before; ``climatology``; ``ridge_ar``: the ridge AR
            baseline's forecast, out-of-fold on the training windows, i.e. a hybrid where
            the RNN learns the ridge's errors; ``none``), standardised by the residual's
            training mean and standard deviation per horizon.
        train_stride: use every N-th training window (hourly windows overlap heavily).
        batch_size, num_epochs, learning_rate, warmup_steps, clip_norm, weight_decay:
            Adam(W) with warm-up and cosine decay (:func:`rnn_jax.train.default_optimizer`).
        patience: early stopping after this many epochs without a better validation score
            (RMSE for the MSE head, CRPS for the Gaussian head); the best state is kept.
    """

    task: str = "daily"
    seed: int = 0
    residual: str = "persistence"
    train_stride: int = 1
    batch_size: int = 32
    num_epochs: int = 60
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    clip_norm: float = 1.0
    weight_decay: float = 0.0
    patience: int = 10

    def __post_init__(self):
        _check(self.task in ("daily", "hourly"), "task", "daily or hourly", self.task)
        _check(self.seed >= 0, "seed", "a non-negative int", self.seed)
        _check(self.residual in RESIDUALS, "residual", f"one of {RESIDUALS}", self.residual)
        for name in ("train_stride", "batch_size", "num_epochs", "patience"):
            _check(getattr(self, name) >= 1, name, "a positive int", getattr(self, name))
        _check(self.learning_rate > 0, "learning_rate", "positive", self.learning_rate)
        _check(self.warmup_steps >= 0, "warmup_steps", "a non-negative int", self.warmup_steps)
        _check(self.clip_norm > 0, "clip_norm", "positive", self.clip_norm)
        _check(self.weight_decay >= 0, "weight_decay", "non-negative", self.weight_decay)


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Evaluation and output.

    Attributes:
        eval_batch_size: batch size of evaluation and prediction.
        log_every: a training-metrics record every N steps.
        progress: progress bars.
        data_dir: the data cache (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        plot_start: first day (``YYYY-MM-DD``) of the test fortnight in ``forecast.png``.
        baselines: which baselines to run (``persistence``, ``climatology``, ``ridge_ar``,
            ``sarimax``).
        sarimax_rows: fit SARIMAX's parameters on the last N training rows only (``None``:
            all; the quick hourly configuration uses 12 weeks to stay fast).
    """

    eval_batch_size: int = 512
    log_every: int = 50
    progress: bool = False
    data_dir: str | None = None
    plot_start: str = ""
    baselines: tuple[str, ...] = ("persistence", "climatology", "ridge_ar", "sarimax")
    sarimax_rows: int | None = None

    def __post_init__(self):
        _check(self.eval_batch_size >= 1, "eval_batch_size", "a positive int", self.eval_batch_size)
        _check(self.log_every >= 1, "log_every", "a positive int", self.log_every)
        known = ("persistence", "climatology", "ridge_ar", "sarimax")
        bad = [b for b in self.baselines if b not in known]
        _check(not bad, "baselines", f"a subset of {known}", self.baselines)


@dataclasses.dataclass(frozen=True)
class WeatherConfig:
    """Everything that determines a run.

    Attributes:
        models: ``CELL`` (MSE head) or ``CELL_gauss`` (mean and log-variance, Gaussian NLL)
            with ``CELL`` in ``rnn``, ``gru``, ``lstm``.
        model, train, report: the sections.
    """

    models: tuple[str, ...] = ("rnn", "rnn_gauss")
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

    def __post_init__(self):
        _check(bool(self.models), "models", "a non-empty list", self.models)
        for name in self.models:
            parse_model_name(name)


#: Per task: the full configuration's values, then the quick one's changes.
TASK_DEFAULTS = {
    "daily": {
        "model": {"hidden_size": 32},
        "train": {"batch_size": 32, "num_epochs": 60, "learning_rate": 3e-3},
        "report": {"plot_start": "2015-01-01"},
    },
    "hourly": {
        "model": {"hidden_size": 64},
        "train": {"batch_size": 64, "num_epochs": 30, "learning_rate": 3e-3, "patience": 6},
        "report": {"plot_start": "2010-11-01"},
    },
}
QUICK = {
    "daily": {"train": {"num_epochs": 25, "patience": 5}},
    "hourly": {
        "model": {"hidden_size": 32},
        "train": {"train_stride": 4, "num_epochs": 8, "patience": 3},
        "report": {"sarimax_rows": 2016},
    },
}


def default_config(quick: bool = False, task: str = "daily") -> WeatherConfig:
    """The full (or quick) configuration of ``task``."""
    if task not in TASK_DEFAULTS:
        raise ValueError(f"`task` must be daily or hourly, got {task!r}")
    sections = {k: dict(v) for k, v in TASK_DEFAULTS[task].items()}
    for k, v in (QUICK[task] if quick else {}).items():
        sections[k] = {**sections.get(k, {}), **v}
    base = WeatherConfig()
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, **sections.get("model", {})),
        train=dataclasses.replace(base.train, task=task, **sections.get("train", {})),
        report=dataclasses.replace(base.report, **sections.get("report", {})),
    )
