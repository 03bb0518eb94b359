"""Configuration of the speech experiment (the seed is part of it).

``SpeechConfig(models, model, train, report)``: checkpoints are tied to ``model`` and
``train`` (and the cell's name), so adding a cell or changing a ``report`` field (beam width,
the baseline, the figure) never invalidates a run.
"""

from __future__ import annotations

import dataclasses

from experiments import common

__all__ = ["CELLS", "ModelConfig", "ReportConfig", "SpeechConfig", "TrainConfig", "default_config"]

#: The models: one bidirectional CTC recogniser per recurrent cell.
CELLS = ("rnn", "gru", "lstm")


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"`{name}` must be two numbers lo,hi with {low} <= lo <= hi <= {high}, "
                         f"got {value!r}")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Features and the recogniser.

    Attributes:
        n_mels: log-mel channels (25 ms frames every 10 ms at 16 kHz).
        stack: consecutive frames stacked into one input step (``stack`` x 10 ms a step):
            fewer steps, same information.
        hidden_size, num_layers: the bidirectional stack (``H`` per direction).
        dropout: dropout between stacked layers (training only).
    """

    n_mels: int = 40
    stack: int = 3
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.1

    def __post_init__(self):
        common.check_fields(
            self,
            positive=("n_mels", "stack", "hidden_size", "num_layers"),
            probability=("dropout",),
        )
        if self.dropout > 0 and self.num_layers == 1:
            raise ValueError(
                f"`dropout` acts between stacked layers: with num_layers=1 it must be 0, got "
                f"{self.dropout!r}"
            )


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TrainConfig):
    """Training (see :class:`experiments.common.TrainConfig` for the common fields).

    Attributes:
        corpus_file: read this corpus manifest (written by ``corpus.write_corpus``) instead of
            the fetched one (tests).
        max_train: use only the first N training clips (``None``: all).
        noise_prob, snr_db: probability of additive noise (white or brown) and its SNR range.
        reverb_prob, rt60: probability of reverberation and its RT60 range in seconds.
        gain_db: random gain range.
    """

    batch_size: int = 32
    num_epochs: int = 12
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    patience: int = 3
    corpus_file: str | None = None
    max_train: int | None = None
    noise_prob: float = 0.5
    snr_db: tuple[float, ...] = (5.0, 30.0)
    reverb_prob: float = 0.3
    rt60: tuple[float, ...] = (0.1, 0.6)
    gain_db: tuple[float, ...] = (-12.0, 6.0)

    def __post_init__(self):
        super().__post_init__()
        if self.max_train is not None:
            common.check_positive("max_train", self.max_train)
        for name in ("noise_prob", "reverb_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {getattr(self, name)!r}")
        _check_range("snr_db", self.snr_db, -20.0, 80.0)
        _check_range("rt60", self.rt60, 0.01, 3.0)
        _check_range("gain_db", self.gain_db, -40.0, 20.0)


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation (see :class:`experiments.common.ReportConfig`).

    Attributes:
        data_dir: the cache root (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        beam_width: prefixes kept by CTC prefix beam search.
        baseline: run PocketSphinx on the test clips (needs the ``pocketsphinx`` package).
        baseline_clips: how many test clips (the first ones) the unrestricted PocketSphinx
            decodes (about 0.5 s a clip; ``None``: all); the grammar decodes them all.
        real_speech: also transcribe the recorded speech shipped in pocketsphinx's source
            archive (when it has been fetched).
        num_examples: transcripts shown in ``results.md``.
        decode: ``predict``'s decoding, ``greedy`` or ``beam``.
        model_name: the cell ``predict`` uses (``best``: lowest validation WER).
    """

    eval_batch_size: int = 128
    data_dir: str | None = None
    beam_width: int = 8
    baseline: bool = True
    baseline_clips: int | None = 100
    real_speech: bool = True
    num_examples: int = 8
    decode: str = "greedy"
    model_name: str = "best"

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(self, positive=("beam_width",), non_negative=("num_examples",))
        if self.baseline_clips is not None:
            common.check_positive("baseline_clips", self.baseline_clips)
        common.check_choice("decode", self.decode, ("greedy", "beam"))
        common.check_choice("model_name", self.model_name, ("best", *CELLS))


@dataclasses.dataclass(frozen=True)
class SpeechConfig:
    """Everything that determines a run.

    Attributes:
        models: the cells to train, from ``rnn, gru, lstm`` (``--config.models=rnn,gru,lstm``
            trains all three, one after the other).
        model, train, report: the sections (see their classes).
    """

    models: tuple[str, ...] = ("gru",)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

    def __post_init__(self):
        common.check_models(self.models, CELLS)


#: The quick configuration: one GRU layer on 1,000 clips, under 3 minutes on 2 CPU cores.
QUICK = {
    "hidden_size": 96,
    "num_layers": 1,
    "dropout": 0.0,
    "max_train": 1000,
    "num_epochs": 5,
    "warmup_steps": 50,
    "baseline_clips": 10,
}


#: ``default_config(quick=False)``: the full configuration, or the quick one (:data:`QUICK`).
default_config = common.quick_or_full(SpeechConfig, QUICK)
