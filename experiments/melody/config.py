"""Configuration of the melody experiment (the seed is part of it).

``MelodyConfig(models, model, train, report)``: checkpoints are tied to ``model`` and
``train`` (and the model's name), so adding a model or changing a ``report`` field (sampling,
prompts, the sanity table) never invalidates a run.
"""

from __future__ import annotations

import dataclasses

from experiments import common
from rnn_jax.params import CELLS

__all__ = [
    "CELLS",
    "MelodyConfig",
    "ModelConfig",
    "ReportConfig",
    "TrainConfig",
    "default_config",
]

# The models (CELLS, from rnn_jax.params): one event-level language model per recurrent cell.
TRANSPOSE = ("c", "none")


@dataclasses.dataclass(frozen=True)
class ModelConfig(common.StackConfig):
    """The event LM: ``hidden_size``, ``num_layers``, ``dropout`` between stacked layers."""

    hidden_size: int = 192


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TrainConfig):
    """Training (see :class:`experiments.common.TrainConfig` for the common fields).

    Attributes:
        tunes_file: read this tune cache (written by ``data.write_cache``) instead of the
            fetched one (tests).
        split_seed: seed of the fixed 80/10/10 split by tune.
        transpose: ``"c"`` moves every tune to C major / A minor (by its analysed key) before
            anything else, training and evaluation alike; ``"none"`` keeps the written keys.
        min_count: events seen fewer times in the training tunes read as ``<UNK>`` (so the
            models, like the n-grams, learn a probability for unseen events).
        prompt_dropout: during training each prompt field (style, mode, metre) is replaced by
            its wildcard ``*`` with this probability, so a model also runs with a partial or
            an empty prompt (and its unconditional NLL can be measured).
        max_train_tunes: use only the first N training tunes (``None``: all).
        max_len: training tunes are cut to this many events (evaluation reads them whole).
    """

    batch_size: int = 32
    num_epochs: int = 20
    learning_rate: float = 1e-2
    warmup_steps: int = 100
    patience: int = 4
    tunes_file: str | None = None
    split_seed: int = 0
    transpose: str = "c"
    min_count: int = 2
    prompt_dropout: float = 0.25
    max_train_tunes: int | None = None
    max_len: int = 256

    def __post_init__(self):
        super().__post_init__()
        common.check_choice("transpose", self.transpose, TRANSPOSE)
        common.check_fields(
            self, positive=("min_count", "max_len"), probability=("prompt_dropout",)
        )
        if self.max_train_tunes is not None:
            common.check_positive("max_train_tunes", self.max_train_tunes)


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation, the sanity table and sampling (see :class:`experiments.common.ReportConfig`).

    Attributes:
        data_dir: where the tunes are cached (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        bigram_smoothing: add-k values of the add-k n-grams (chosen on validation).
        interpolation: weights λ of the interpolated n-grams (chosen on validation).
        sanity_prompts: the prompts of the sanity table (``;``-free prompt strings).
        sanity_samples: samples per prompt in the sanity table.
        temperature, top_k: sampling (``top_k`` 0: the whole distribution).
        sample_len: most events per sample.
        num_samples: samples written by ``sample`` (``--num``).
        prime: ``sample``'s opening, e.g. ``"C4:1 E4:1 G4:2"`` (``--prime``; empty: nothing).
        prompt: ``sample``'s prompt, e.g. ``"style=folk,mode=major"`` (``--prompt``).
        sample_model: the model ``sample`` uses (``best``: lowest validation NLL).
        out: where ``sample`` writes its ``.mid`` and ``.png`` files (``--out``; empty:
            ``<workdir>/samples``).
    """

    eval_batch_size: int = 128
    data_dir: str | None = None
    bigram_smoothing: tuple[float, ...] = (0.001, 0.01, 0.03, 0.1, 0.3, 1.0)
    interpolation: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    sanity_prompts: tuple[str, ...] = (
        "style=chorale,mode=major",
        "style=chorale,mode=minor",
        "style=folk,mode=major",
        "style=folk,mode=minor",
        "",
    )
    sanity_samples: int = 64
    temperature: float = 1.0
    top_k: int = 0
    sample_len: int = 128
    num_samples: int = 4
    prime: str = ""
    prompt: str = ""
    sample_model: str = "best"
    out: str = ""

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(self, positive=("sanity_samples", "sample_len", "num_samples"))
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {self.temperature!r}")
        if self.top_k < 0:
            raise ValueError(f"`top_k` must be >= 0 (0: no cut), got {self.top_k!r}")
        from experiments.melody.tokens import parse_prime, parse_prompt

        for text in (self.prompt, *self.sanity_prompts):
            parse_prompt(text)
        parse_prime(self.prime)
        if self.sample_model not in ("best", *CELLS):
            raise ValueError(
                f"`sample_model` must be 'best' or one of {CELLS}, got {self.sample_model!r}"
            )


@dataclasses.dataclass(frozen=True)
class MelodyConfig:
    """Everything that determines a run.

    Attributes:
        models: which cells to train, from ``rnn, gru, lstm``.
        model, train, report: the sections (see their classes).
    """

    models: tuple[str, ...] = CELLS
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

    def __post_init__(self):
        unknown = [m for m in self.models if m not in CELLS]
        if unknown or not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"`models` must be distinct names from {CELLS}, got {self.models!r}")


#: The quick configuration: about 3 minutes on 2 CPU cores (all three cells).
QUICK = {
    "hidden_size": 96,
    "max_train_tunes": 800,
    "max_len": 128,
    "num_epochs": 8,
    "warmup_steps": 30,
    "sanity_samples": 24,
}


#: ``default_config(quick=False)``: the full configuration, or the quick one (:data:`QUICK`).
default_config = common.quick_or_full(MelodyConfig, QUICK)
