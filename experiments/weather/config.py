"""Configuration of the temperature-forecasting experiment (the seed is part of it).

``WeatherConfig(models, model, train, report)``: checkpoints are tied to ``model`` and
``train`` (and the model's name); ``report`` fields may change freely. ``train.task``
(``daily`` or ``hourly``) picks the task and its defaults (:func:`default_config`).
"""

from __future__ import annotations

import dataclasses

from experiments import common
from rnn_jax.params import CELLS

__all__ = [
    "HEADS",
    "ModelConfig",
    "ReportConfig",
    "TrainConfig",
    "WeatherConfig",
    "default_config",
    "parse_model_name",
]

HEADS = ("mse", "gauss")
POOLS = ("last", "mean", "max")
RESIDUALS = ("none", "persistence", "climatology", "ridge_ar")
BASELINES = ("persistence", "climatology", "ridge_ar", "sarimax")


def parse_model_name(name: str) -> tuple[str, str]:
    """``"gru_gauss"`` -> ``("gru", "gauss")``; ``"rnn"`` -> ``("rnn", "mse")``."""
    cell, _, head = name.partition("_")
    head = head or "mse"
    if cell not in CELLS or head not in HEADS:
        raise ValueError(f"a model name is CELL or CELL_gauss with CELL in {CELLS}, got {name!r}")
    return cell, head


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
        common.check_fields(self, positive=("hidden_size", "num_layers"))
        common.check_choice("pool", self.pool, POOLS)


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TrainConfig):
    """Data and optimisation (see :class:`experiments.common.TrainConfig` for the common fields).

    Attributes:
        task: ``daily`` (tomorrow's ``temp_max`` from 30 days) or ``hourly`` (the next 24
            hours from 168).
        residual: the network predicts the target minus this forecast (``persistence``:
            the value one period before; ``climatology``; ``ridge_ar``: the ridge AR
            baseline's forecast, out-of-fold on the training windows, i.e. a hybrid where
            the RNN learns the ridge's errors; ``none``), standardised by the residual's
            training mean and standard deviation per horizon.
        train_stride: use every N-th training window (hourly windows overlap heavily).
        weight_decay: AdamW's decoupled weight decay (0: Adam).
        patience: early stopping after this many epochs without a better validation score
            (RMSE for the MSE head, CRPS for the Gaussian head); the best state is kept.
    """

    batch_size: int = 32
    num_epochs: int = 60
    warmup_steps: int = 50
    patience: int = 10
    task: str = "daily"
    residual: str = "persistence"
    train_stride: int = 1
    weight_decay: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        common.check_choice("task", self.task, ("daily", "hourly"))
        common.check_choice("residual", self.residual, RESIDUALS)
        common.check_fields(self, positive=("train_stride",), non_negative=("weight_decay",))


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation and output (see :class:`experiments.common.ReportConfig`).

    Attributes:
        data_dir: the data cache (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        plot_start: first day (``YYYY-MM-DD``) of the test fortnight in ``forecast.png``.
        baselines: which baselines to run (``persistence``, ``climatology``, ``ridge_ar``,
            ``sarimax``).
        sarimax_rows: fit SARIMAX's parameters on the last N training rows only (``None``:
            all; the quick hourly configuration uses 12 weeks to stay fast).
    """

    eval_batch_size: int = 512
    progress: bool = False
    data_dir: str | None = None
    plot_start: str = ""
    baselines: tuple[str, ...] = BASELINES
    sarimax_rows: int | None = None

    def __post_init__(self):
        super().__post_init__()
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise ValueError(f"`baselines` must be a subset of {BASELINES}, got {self.baselines!r}")


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
        if not self.models:
            raise ValueError(f"`models` must be a non-empty list, got {self.models!r}")
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
