"""Configuration of the entity-tagging experiment (the seed is part of it).

``EntitiesConfig(models, model, train, report)``: checkpoints are tied to ``model`` and
``train`` (and the model's name), so adding a model to ``models`` or changing a ``report``
field never invalidates the others.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from experiments import common

__all__ = [
    "MODEL_SPECS",
    "EntitiesConfig",
    "ModelConfig",
    "ModelSpec",
    "ReportConfig",
    "TrainConfig",
    "default_config",
]


class ModelSpec(NamedTuple):
    """What a tagger's name says: ``[bi]{rnn,gru,lstm}[_char][_feat][_crf]``.

    Attributes:
        cell: the word-level recurrent cell.
        bidirectional: ``bi``: a bidirectional word-level layer.
        chars: ``_char``: the character-level word features (a char-RNN over each word).
        features: ``_feat``: the CRF baseline's cheap word features of each token
            (:func:`experiments.entities.baselines.token_features`) as extra inputs.
        crf: ``_crf``: a linear-chain CRF output layer (:mod:`rnn_jax.crf`), trained with the
            negative log-likelihood and decoded with Viterbi; otherwise a softmax per token.
    """

    cell: str
    bidirectional: bool
    chars: bool
    features: bool = False
    crf: bool = False


def _model_name(spec: ModelSpec) -> str:
    return (
        f"{'bi' if spec.bidirectional else ''}{spec.cell}{'_char' if spec.chars else ''}"
        f"{'_feat' if spec.features else ''}{'_crf' if spec.crf else ''}"
    )


#: name -> :class:`ModelSpec`, e.g. ``"bigru_char_feat_crf"``.
MODEL_SPECS: dict[str, ModelSpec] = {
    _model_name(spec): spec
    for crf in (False, True)
    for features in (False, True)
    for char in (True, False)
    for cell in ("rnn", "gru", "lstm")
    for bi in (False, True)
    for spec in (ModelSpec(cell, bi, char, features, crf),)
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The taggers' sizes and regularisation.

    Attributes:
        hidden_size: ``H`` of the word-level recurrent layer (each direction).
        word_dim: width of the word vectors of the ``*_char`` and ``*_feat`` models (a column
            lookup in a ``(word_dim, |V|)`` matrix), which are concatenated with the character
            features and/or the word features. Word-only models read token ids directly (the
            lookup is their ``W_ax``).
        char_hidden: ``H`` of the bidirectional character-level RNN run over each word.
        char_dim: width of a word's character features: a linear map of the char-RNN's last
            forward and first backward states.
        input_dropout: dropout on the word-level layer's inputs (features of the ``*_char``
            models' ``[E[:, id]; c]``; the looked-up column of a word-only model).
        output_dropout: dropout on the word-level states before the softmax over the tags.
        recurrent_dropout: dropout on the word-level recurrent state (one mask a sequence).
    """

    hidden_size: int = 64
    word_dim: int = 64
    char_hidden: int = 32
    char_dim: int = 32
    input_dropout: float = 0.3
    output_dropout: float = 0.5
    recurrent_dropout: float = 0.0

    def __post_init__(self):
        common.check_fields(
            self,
            positive=("hidden_size", "word_dim", "char_hidden", "char_dim"),
            probability=("input_dropout", "output_dropout", "recurrent_dropout"),
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TextTrainConfig):
    """Training (see :class:`experiments.common.TextTrainConfig` for the common fields).

    Attributes:
        corpus_file: read this ``token<TAB>tag`` file instead of the fetched WNUT-16 tweets
            (no checksum; tests).
        split_seed: seed of the fixed 80/10/10 train/validation/test split by tweet.
        vocab_size: the most frequent training words kept (case preserved).
        min_count: words seen fewer times in training are unknown.
        lower_words: the word vocabulary is lower-cased (``Apple`` and ``apple`` share a
            vector; the case is still read by the char-RNN of the ``*_char`` models and by
            the unknown-word shapes).
        unk_shapes: split ``<UNK>`` by word shape (``<UNK-Cap>``, ``<UNK-num>``, ``<UNK>``).
        word_dropout: during training, each word is read as unknown (its shape class) with
            this probability, so the models learn to tag words they have never seen.
        max_len: tweets are truncated to this many tokens in training (WNUT-16's longest
            has 39).
        max_word_len: a word's first this-many characters feed the char-RNN.
        pad_to_multiple: batch lengths are rounded up to a multiple of this, in training and
            evaluation: with 40, every batch has one shape and the train step compiles once
            (compiling the two nested RNNs' gradient costs more than the padded steps).
        keep_checkpoints: the latest checkpoints kept (the best is kept as well).
    """

    batch_size: int = 32
    num_epochs: int = 15
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    patience: int = 15
    corpus_file: str | None = None
    vocab_size: int = 20_000
    min_count: int = 2
    lower_words: bool = False
    unk_shapes: bool = True
    word_dropout: float = 0.2
    max_len: int = 40
    max_word_len: int = 16
    pad_to_multiple: int = 40
    keep_checkpoints: int = 1

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(
            self, positive=("min_count", "max_word_len"), probability=("word_dropout",)
        )


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation and output (see :class:`experiments.common.ReportConfig`).

    Attributes:
        data_dir: the data cache root (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        baselines: also fit and score the baselines (most frequent tag, linear-chain CRF).
        decode: how the taggers' per-token probabilities become tags: ``"viterbi"``, the most
            probable sequence that obeys BIO (``I-X`` only after ``B-X``/``I-X``), or
            ``"argmax"``, each token's most probable tag. (It also scores the validation
            tweets that pick the best checkpoint.)
        tensorboard: also write TensorBoard events (if a writer is installed).
    """

    log_every: int = 20
    data_dir: str | None = None
    baselines: bool = True
    decode: str = "viterbi"
    tensorboard: bool = False

    def __post_init__(self):
        super().__post_init__()
        common.check_choice("decode", self.decode, ("viterbi", "argmax"))


@dataclasses.dataclass(frozen=True)
class EntitiesConfig:
    """Everything that determines a run.

    Attributes:
        models: which taggers to train, named ``[bi]{rnn,gru,lstm}[_char][_feat][_crf]``
            (see :class:`ModelSpec`): ``bi`` a bidirectional word-level layer, ``_char`` the
            character-level word features, ``_feat`` the CRF baseline's cheap word features,
            ``_crf`` a CRF output layer.
        model, train, report: the sections (see their classes).
    """

    models: tuple[str, ...] = (
        "rnn_char",
        "birnn_char",
        "gru_char",
        "bigru_char",
        "lstm_char",
        "bilstm_char",
        "birnn",
        "bigru_char_crf",
        "bigru_char_feat_crf",
    )
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

    def __post_init__(self):
        common.check_models(self.models, MODEL_SPECS)


#: The quick configuration: under 3 minutes on 2 CPU cores.
QUICK = {
    "models": ("rnn_char", "birnn_char"),
    "hidden_size": 48,
    "num_epochs": 8,
    "warmup_steps": 50,
}


#: ``default_config(quick=False)``: the full configuration, or the quick one (:data:`QUICK`).
default_config = common.quick_or_full(EntitiesConfig, QUICK)
