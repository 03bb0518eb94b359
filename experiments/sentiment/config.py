"""Configuration of the sentiment experiment (the seed is part of it).

``SentimentConfig(models, model, train, report)``: checkpoints are tied to ``model`` and
``train`` (and the model's name), so adding a model to ``models`` or changing a ``report``
field never invalidates the others.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from experiments import common

__all__ = [
    "CV_FOLDS",
    "MODEL_SPECS",
    "Spec",
    "ModelConfig",
    "ReportConfig",
    "SentimentConfig",
    "TrainConfig",
    "WIDE_FIELDS",
    "default_config",
]

#: Folds of the cross-validation (``train.fold``).
CV_FOLDS = 10


class Spec(NamedTuple):
    """What a model name says: ``[wide_]{cell}[bi][2]_{pool}[_lm][_score]``, or ``wide_only``."""

    cell: str  # rnn, gru or lstm
    num_layers: int
    bidirectional: bool
    pool: str  # last, mean or max
    pretrained: bool  # _lm: the recurrent layer(s) pre-trained as language models
    target: str = "label"  # label: positive/negative (softmax); score (_score): the mean
    #                        rating in [-4, 4], regressed (the stars are its five bins)
    wide: bool = False  # wide_: plus a linear term over the bag of unigrams and hashed
    #                     bigrams (wide_only: that term alone, cell "none", pool "none")


MODEL_SPECS: dict[str, Spec] = {
    f"{cell}{'bi' if bi else ''}{layers if layers > 1 else ''}_{pool}{'_lm' if lm else ''}"
    f"{'_score' if target == 'score' else ''}": Spec(cell, layers, bi, pool, lm, target)
    for cell in ("rnn", "gru", "lstm")
    for layers in (1, 2)
    for bi in (False, True)
    for pool in ("last", "mean", "max")
    for lm in (False, True)
    for target in ("label", "score")
    if not lm or (cell == "rnn" and layers == 1)  # pre-training: 1-layer classic RNNs
}
# Wide & deep: the 1-layer label models (pre-trained ones included), plus the n-gram linear term.
MODEL_SPECS |= {
    f"wide_{name}": spec._replace(wide=True)
    for name, spec in list(MODEL_SPECS.items())
    if spec.num_layers == 1 and spec.target == "label"
}
MODEL_SPECS["wide_only"] = Spec("none", 0, False, "none", False, "label", True)


#: The :class:`ModelConfig` fields of the ``wide_`` models only.
WIDE_FIELDS = ("bigram_buckets", "ngram_dropout", "wide_norm", "wide_scale", "wide_weight")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The classifiers' sizes and regularisation.

    Attributes:
        hidden_size: ``H`` of every recurrent layer (each direction).
        input_dropout: each word is read as ``<UNK>`` with this probability during
            training (word dropout through ``rnn_classify(..., input_dropout, unk_id)``).
        recurrent_dropout: dropout on the recurrent state ``a<t-1>`` (one mask a sequence).
        output_dropout: dropout on the pooled state, before the head.
        dropout: dropout between stacked layers (2-layer models only).
        bigram_buckets: the ``wide_`` models' bigram hash buckets (``(a * V + b) mod
            bigram_buckets``, :func:`experiments.sentiment.models.bigram_ids`).
        ngram_dropout: the ``wide_`` models' dropout on each unigram and bigram term of
            the linear part during training (its regulariser).
        wide_norm: the linear term's sum over the snippet's n-grams divided by the number
            of tokens (``mean``) or its square root (``sqrt``).
        wide_scale: the linear term is multiplied by this constant: with Adam, whose steps
            do not depend on the gradient's scale, it is the linear part's step size
            relative to the recurrent part's (its sparse weights move little otherwise).
        wide_weight: each n-gram term of the linear part counts once per occurrence
            (``count``) or is weighted by its inverse document frequency on the training
            split (``idf``: ``log((1 + N) / (1 + df)) + 1``, divided by its mean over the
            training occurrences, so the term's overall scale stays that of ``count``;
            :func:`experiments.sentiment.models.ngram_idf`).

    The ``wide_`` fields are left out of the checkpoint ties of the other models.
    """

    hidden_size: int = 128
    input_dropout: float = 0.5
    recurrent_dropout: float = 0.3
    output_dropout: float = 0.5
    dropout: float = 0.3
    bigram_buckets: int = 2**18
    ngram_dropout: float = 0.7
    wide_norm: str = "sqrt"
    wide_scale: float = 8.0
    wide_weight: str = "count"

    def __post_init__(self):
        common.check_fields(
            self,
            positive=("hidden_size", "bigram_buckets"),
            probability=(
                "input_dropout",
                "recurrent_dropout",
                "output_dropout",
                "dropout",
                "ngram_dropout",
            ),
        )
        common.check_choice("wide_norm", self.wide_norm, ("mean", "sqrt"))
        common.check_choice("wide_weight", self.wide_weight, ("count", "idf"))
        if not self.wide_scale > 0:
            raise ValueError(f"`wide_scale` must be a positive number, got {self.wide_scale!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TextTrainConfig):
    """Training (see :class:`experiments.common.TextTrainConfig` for the common fields).

    Attributes:
        corpus_dir: read ``*_GroundTruth.txt`` files from this directory without checksums
            instead of the fetched cache (tests); a missing cross-domain file is skipped.
        lm_epochs, lm_targets, lm_learning_rate: the language models that pre-train the
            ``*_lm`` models (:mod:`experiments.sentiment.pretrain`): epochs, the number of
            most frequent words predicted (rarer ones are ``<UNK>``), Adam's step size.
        lm_file: use the language models another run of the same data and sizes stored
            (its ``language_models.npz``) instead of pre-training them again.
        fold: ``None``: the fixed 80/10/10 split; ``k`` in ``0..9``: fold ``k`` of the
            10-fold cross-validation over the same permutation (test: part ``k`` of ten
            equal parts, validation: part ``k + 1 mod 10``, training: the other eight).

    The vocabulary is lower-cased; snippets are cut at ``max_len`` = 64 tokens (99 % have at
    most 47).
    """

    batch_size: int = 64
    num_epochs: int = 20
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    patience: int = 5
    keep_checkpoints: int = 1
    corpus_dir: str | None = None
    lm_epochs: int = 2
    lm_targets: int = 2000
    lm_learning_rate: float = 2e-3
    lm_file: str | None = None
    fold: int | None = None

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(self, positive=("lm_epochs", "lm_targets"))
        if self.fold is not None:
            common.check_choice("fold", self.fold, range(CV_FOLDS))


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation and output (see :class:`experiments.common.ReportConfig`).

    Attributes:
        data_dir: the data cache root (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        cross_domains: the other domains every model and baseline is also tested on.
        baselines: also fit and score the baselines (majority, VADER, BoW LR, tf-idf LR).
        tensorboard: also write TensorBoard events (if a writer is installed).
    """

    log_every: int = 50
    data_dir: str | None = None
    cross_domains: tuple[str, ...] = ("amazon", "nyt", "tweets")
    baselines: bool = True
    tensorboard: bool = False


@dataclasses.dataclass(frozen=True)
class SentimentConfig:
    """Everything that determines a run.

    Attributes:
        models: which models to train, named ``{cell}[bi][2]_{pool}[_lm][_score]`` (see
            :data:`MODEL_SPECS`), e.g. ``rnnbi_mean``: a bidirectional 1-layer classic RNN
            whose outputs are mean-pooled; ``_lm``: its layers pre-trained as language models;
            ``_score``: it regresses the rating instead of classifying the sign.
            ``wide_`` (e.g. ``wide_rnnbi_mean``): plus a linear term over the snippet's unigrams
            and hashed bigrams, trained jointly; ``wide_only``: that linear term alone.
        model, train, report: the sections (see their classes).
    """

    models: tuple[str, ...] = (
        "rnn_last",
        "rnn_mean",
        "rnn_max",
        "rnnbi_last",
        "rnnbi_mean",
        "rnnbi_max",
        "rnnbi2_mean",
    )
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

    def __post_init__(self):
        common.check_models(self.models, MODEL_SPECS)
        from experiments.sentiment.data import DOMAINS

        bad = [d for d in self.report.cross_domains if d not in DOMAINS or d == "movies"]
        if bad:
            raise ValueError(
                f"`cross_domains` must be among {DOMAINS[1:]}, got {self.report.cross_domains!r}"
            )


#: The quick configuration: under 3 minutes on 2 CPU cores.
QUICK = {
    "models": ("rnn_mean", "rnnbi_mean"),
    "hidden_size": 64,
    "num_epochs": 3,
    "warmup_steps": 50,
}


#: ``default_config(quick=False)``: the full configuration, or the quick one (:data:`QUICK`).
default_config = common.quick_or_full(SentimentConfig, QUICK)
