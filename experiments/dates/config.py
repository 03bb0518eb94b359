"""Configuration of the dates experiment (the seed is part of it).

``DatesConfig(model, train, report)``: checkpoints are tied to ``model`` and ``train``.
"""

from __future__ import annotations

import dataclasses

from experiments import common

__all__ = ["DatesConfig", "ModelConfig", "ReportConfig", "TrainConfig", "default_config"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The encoder–decoder.

    Attributes:
        hidden_size: encoder ``H`` (per direction).
        num_layers: encoder and decoder depth.
        bidirectional: bidirectional encoder (its two final states are concatenated into the
            decoder's initial state, so the decoder has ``2H`` units).
        bridge: ``"concat"`` or ``"project"`` (see :mod:`rnn_jax.seq2seq`).
        feed_context: the decoder also reads the encoder's final states at every step.
        reverse_source: read the source right to left.
    """

    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    bridge: str = "concat"
    feed_context: bool = True
    reverse_source: bool = False

    def __post_init__(self):
        common.check_fields(self, positive=("hidden_size", "num_layers"))


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TrainConfig):
    """Training (see :class:`experiments.common.TrainConfig` for the common fields).

    Attributes:
        data_seed: seeds the generated date pairs (train, validation and test use
            ``data_seed``, ``data_seed + 1``, ``data_seed + 2``; held-out inputs that also
            occur in the training set are dropped).
        locales: babel locales the dates are written in.
        num_train, num_val: pairs generated for training and validation.
        max_len: most output characters (ISO dates have 10, plus ``<EOS>``).
    """

    eval_every: int | None = 1000
    patience: int = 6
    data_seed: int = 1000
    locales: tuple[str, ...] = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT")
    num_train: int = 50_000
    num_val: int = 1_000
    max_len: int = 12

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(self, positive=("num_train", "num_val", "max_len"))


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation (see :class:`experiments.common.ReportConfig`).

    Attributes:
        num_test: held-out pairs generated.
        beam_width, alpha: beam search width and length-normalisation exponent.
        num_failures: failure cases shown in the results.
        pad_to_multiple: source lengths are rounded up to a multiple of this (fewer compiles).
    """

    eval_batch_size: int = 500
    num_test: int = 20_000
    beam_width: int = 5
    alpha: float = 0.6
    num_failures: int = 15
    pad_to_multiple: int = 8

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(self, positive=("num_test", "beam_width", "pad_to_multiple"))


@dataclasses.dataclass(frozen=True)
class DatesConfig:
    """Everything that determines a run: the sections ``model``, ``train``, ``report``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)


#: The quick configuration: a couple of minutes on 2 CPU cores.
QUICK = {
    "hidden_size": 64,
    "num_train": 10_000,
    "num_val": 300,
    "num_epochs": 4,
    "learning_rate": 5e-3,
    "warmup_steps": 50,
    "eval_every": None,
    "patience": 3,
    "num_test": 1_000,
    "beam_width": 3,
    "num_failures": 8,
}


#: ``default_config(quick=False)``: the full configuration, or the quick one (:data:`QUICK`).
default_config = common.quick_or_full(DatesConfig, QUICK)
