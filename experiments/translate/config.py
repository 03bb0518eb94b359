"""Configuration of the translation experiment (the seed is part of it).

``TranslateConfig(model, train, report)``: checkpoints are tied to ``model`` and ``train``.
"""

from __future__ import annotations

import dataclasses

from experiments import common
from rnn_jax.attention import ATTENTIONS
from rnn_jax.params import CELLS

__all__ = ["ModelConfig", "ReportConfig", "TrainConfig", "TranslateConfig", "default_config"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The encoder–decoder (:func:`rnn_jax.seq2seq.init_seq2seq`).

    Attributes:
        cell: ``"rnn"`` (the classic cell), ``"gru"`` or ``"lstm"``.
        attention: ``"additive"`` (Bahdanau) or ``"none"`` (the final encoder states only).
        hidden_size: encoder ``H`` per direction (the decoder has ``2H`` with a
            bidirectional encoder).
        bidirectional: bidirectional encoder.
    """

    cell: str = "gru"
    attention: str = "additive"
    hidden_size: int = 128
    bidirectional: bool = True

    def __post_init__(self):
        common.check_positive("hidden_size", self.hidden_size)
        common.check_choice("cell", self.cell, CELLS)
        common.check_choice("attention", self.attention, ATTENTIONS)


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TrainConfig):
    """Training (see :class:`experiments.common.TrainConfig` for the common fields).

    Attributes:
        max_words: verses with more words than this (either language) are dropped everywhere.
        train_max_words: training verses are further limited to this many English words
            (shorter verses train faster on 2 CPU cores).
        max_train: at most this many training pairs (a random subset; 0: all).
        src_vocab_size, tgt_vocab_size: the most frequent training words kept; the others
            read ``<UNK>``.
        max_len: most output tokens (``<EOS>`` included).
        num_val: validation verses (from ``val_books``).
        val_books, test_books: whole books held out (OSIS names).
        bucket_multiple: 0 pads every training batch to the longest training verse (source
            and target: one shape, one compile); ``k > 0`` pads each batch's sources and
            targets only to its own longest verse rounded up to a multiple of ``k`` (batches
            are bucketed by source length, so short batches cost less; a few shapes, one
            compile each).
    """

    batch_size: int = 64
    num_epochs: int = 8
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    patience: int = 3
    max_words: int = 40
    train_max_words: int = 40
    max_train: int = 0
    src_vocab_size: int = 6000
    tgt_vocab_size: int = 6000
    max_len: int = 80
    num_val: int = 400
    val_books: tuple[str, ...] = ("Esth", "Col", "Titus")
    test_books: tuple[str, ...] = ("Ruth", "Jonah", "Mark", "Phil", "Jas")
    bucket_multiple: int = 0

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(self, non_negative=("bucket_multiple",))
        common.check_fields(
            self,
            positive=("max_words", "train_max_words", "src_vocab_size", "tgt_vocab_size",
                      "max_len", "num_val"),
        )  # fmt: skip
        if self.max_train < 0:
            raise ValueError(f"`max_train` must be >= 0 (0: all), got {self.max_train}")
        overlap = set(self.val_books) & set(self.test_books)
        if overlap:
            raise ValueError(
                f"`val_books` and `test_books` must not overlap, got {sorted(overlap)}"
            )


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation (see :class:`experiments.common.ReportConfig`).

    Attributes:
        num_test: held-out verses evaluated (0: all of the test books).
        beam_width, alpha: beam search width and length-normalisation exponent.
        ibm_iterations: EM iterations of the IBM Model 1 baseline.
        num_heatmaps: test verses drawn in ``attention.png`` (attention models).
        num_examples: translations shown in the results.
        pad_to_multiple: source lengths are rounded up to a multiple of this (fewer compiles).
        allow_unk: let decoding emit ``<UNK>`` (by default its logit is set to ``-inf``: an
            undertrained model otherwise repeats the most frequent target token, ``<UNK>``).
        unk_replace: attention models are also scored with ``<UNK>`` allowed and then
            replaced: each output ``<UNK>`` becomes the IBM Model 1 translation of the source
            word it attends to most, or that word itself when the lexicon lacks it
            (:func:`experiments.translate.task.replace_unknowns`; extra rows ``greedy+unk``
            and ``beam+unk``).
    """

    eval_batch_size: int = 128
    num_test: int = 0
    beam_width: int = 4
    alpha: float = 0.6
    ibm_iterations: int = 5
    num_heatmaps: int = 3
    num_examples: int = 6
    pad_to_multiple: int = 16
    allow_unk: bool = False
    unk_replace: bool = True

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(self, positive=("beam_width", "ibm_iterations", "pad_to_multiple"))
        if self.num_test < 0:
            raise ValueError(f"`num_test` must be >= 0 (0: all), got {self.num_test}")


@dataclasses.dataclass(frozen=True)
class TranslateConfig:
    """Everything that determines a run: the sections ``model``, ``train``, ``report``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)


#: The quick configuration: a couple of minutes on 2 CPU cores (a small model, short verses).
QUICK = {
    "hidden_size": 32,
    "train_max_words": 16,
    "max_train": 3000,
    "src_vocab_size": 1500,
    "tgt_vocab_size": 1500,
    "num_epochs": 2,
    "num_val": 100,
    "max_len": 40,
    "num_test": 150,
    "beam_width": 3,
    "ibm_iterations": 3,
}


#: ``default_config(quick=False)``: the full configuration, or the quick one (:data:`QUICK`).
default_config = common.quick_or_full(TranslateConfig, QUICK)
