"""Configuration of the dates experiment (the seed is part of it)."""

from __future__ import annotations

import dataclasses

__all__ = ["DatesConfig", "default_config"]


@dataclasses.dataclass(frozen=True)
class DatesConfig:
    """Everything that determines a run.

    Attributes:
        seed: seeds the initialisation, the data order and the step keys.
        data_seed: seeds the generated date pairs (train, validation and test use
            ``data_seed``, ``data_seed + 1``, ``data_seed + 2``; held-out inputs that also
            occur in the training set are dropped).
        locales: babel locales the dates are written in.
        num_train, num_val, num_test: pairs generated per split.
        hidden_size: encoder ``H`` (per direction).
        num_layers: encoder and decoder depth.
        bidirectional: bidirectional encoder (its two final states are concatenated into the
            decoder's initial state, so the decoder has ``2H`` units).
        bridge: ``"concat"`` or ``"project"`` (see :mod:`rnn_jax.seq2seq`).
        feed_context: the decoder also reads the encoder's final states at every step.
        reverse_source: read the source right to left.
        batch_size, num_epochs, learning_rate, warmup_steps, clip_norm: training.
        eval_every: validate (greedy exact match) every N steps (``None``: once per epoch).
        patience: stop after this many validations without improvement.
        beam_width, alpha: beam search width and length-normalisation exponent.
        max_len: most output characters (ISO dates have 10, plus ``<EOS>``).
        num_failures: failure cases shown in the results.
        eval_batch_size: batch size of evaluation and prediction.
        pad_to_multiple: source lengths are rounded up to a multiple of this (fewer compiles).
        log_every, progress: logging.
    """

    seed: int = 0
    data_seed: int = 1000
    locales: tuple[str, ...] = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT")
    num_train: int = 50_000
    num_val: int = 1_000
    num_test: int = 20_000
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    bridge: str = "concat"
    feed_context: bool = True
    reverse_source: bool = False
    batch_size: int = 64
    num_epochs: int = 10
    learning_rate: float = 3e-3
    warmup_steps: int = 200
    clip_norm: float = 1.0
    eval_every: int | None = 1000
    patience: int = 6
    beam_width: int = 5
    alpha: float = 0.6
    max_len: int = 12
    num_failures: int = 15
    eval_batch_size: int = 500
    pad_to_multiple: int = 8
    log_every: int = 50
    progress: bool = True


def default_config(quick: bool = False) -> DatesConfig:
    """The full configuration, or the quick one (a couple of minutes on 2 CPU cores)."""
    if not quick:
        return DatesConfig()
    return DatesConfig(
        num_train=10_000,
        num_val=300,
        num_test=1_000,
        hidden_size=64,
        num_epochs=4,
        learning_rate=5e-3,
        warmup_steps=50,
        eval_every=None,
        patience=3,
        beam_width=3,
        num_failures=8,
    )
