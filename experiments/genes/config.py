"""Configuration of the gene-tagging experiment (the seed is part of it).

``GenesConfig(models, model, train, report)``: checkpoints are tied to ``model`` and
``train`` (and the model's name), so adding a model to ``models`` or changing a ``report``
field never invalidates the others. ``train.assignment`` picks the position split
(``forward``: test on the last 20 % of the genome; ``reverse``: on the first 20 %).
"""

from __future__ import annotations

import dataclasses

from experiments import common

__all__ = ["GenesConfig", "ModelConfig", "ReportConfig", "TrainConfig", "default_config"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The taggers' size.

    Attributes:
        hidden_size: ``H`` of each direction.
    """

    hidden_size: int = 64

    def __post_init__(self):
        common.check_positive("hidden_size", self.hidden_size)


@dataclasses.dataclass(frozen=True)
class TrainConfig(common.TrainConfig):
    """Training (see :class:`experiments.common.TrainConfig` for the common fields).

    Attributes:
        assignment: ``forward`` or ``reverse`` (see :data:`experiments.genes.data.ASSIGNMENTS`).
        genbank: train on this GenBank file instead of the fetched genome (no checksum; tests).
        window: bases per training window; windows start at random positions of the
            training region and are read as their reverse complement with probability 1/2.
        windows_per_epoch: windows drawn per epoch (``windows_per_epoch // batch_size`` steps).
        backward: ``bptt`` (the library's default backward pass, ``O(window)`` memory) or
            ``remat`` (``O(sqrt(window))`` memory, chunks recomputed under ``jax.checkpoint``,
            about twice the compute: ``python -m experiments.genes memory`` measures both).
        chunk_size: bases per recomputed chunk (``remat``); ``None``: ``ceil(sqrt(window))``.
    """

    batch_size: int = 64
    num_epochs: int = 8
    learning_rate: float = 1e-2
    warmup_steps: int = 20
    eval_every: int | None = 25
    patience: int = 8
    assignment: str = "forward"
    genbank: str | None = None
    window: int = 500
    windows_per_epoch: int = 1600
    backward: str = "bptt"
    chunk_size: int | None = None

    def __post_init__(self):
        super().__post_init__()
        from experiments.genes.data import ASSIGNMENTS
        from experiments.genes.models import MODES

        if self.assignment not in ASSIGNMENTS:
            raise ValueError(
                f"`assignment` must be one of {sorted(ASSIGNMENTS)}, got {self.assignment!r}"
            )
        common.check_choice("backward", self.backward, MODES)
        common.check_fields(self, positive=("window", "windows_per_epoch"))
        if self.chunk_size is not None:
            common.check_positive("chunk_size", self.chunk_size)


@dataclasses.dataclass(frozen=True)
class ReportConfig(common.ReportConfig):
    """Evaluation and output (see :class:`experiments.common.ReportConfig`).

    Attributes:
        data_dir: the data cache root (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``).
        baselines: also run the ORF finder and fit the codon-usage/GC3 logistic model.
        orf_min_codons: the ORF finder's minimum length.
        figure_bases: length of the stretch of the test region drawn in ``track.png``.
        bench_lengths: window lengths of the ``memory`` command.
        bench_batch: windows per batch in the ``memory`` command.
        genbank_files: ``eval`` scores the best model and the ORF finder on these GenBank
            files instead of the test region (``eval --genbank FILE ...`` sets it).
        eval_model: the model ``eval --genbank`` scores (``None``: the best by validation F1).
    """

    log_every: int = 10
    data_dir: str | None = None
    baselines: bool = True
    orf_min_codons: int = 100
    figure_bases: int = 20_000
    bench_lengths: tuple[int, ...] = (1_000, 10_000, 100_000)
    bench_batch: int = 1
    genbank_files: tuple[str, ...] = ()
    eval_model: str | None = None

    def __post_init__(self):
        super().__post_init__()
        common.check_fields(self, positive=("orf_min_codons", "figure_bases", "bench_batch"))
        if not self.bench_lengths or min(self.bench_lengths) < 1:
            raise ValueError(f"`bench_lengths` must be positive ints, got {self.bench_lengths!r}")


@dataclasses.dataclass(frozen=True)
class GenesConfig:
    """Everything that determines a run.

    Attributes:
        models: which models to train (:data:`experiments.genes.models.MODEL_NAMES`):
            ``{cell}bi`` a bidirectional one-layer network of that cell, ``{cell}`` the
            unidirectional one, ``{cell}bi_orf`` a bidirectional one that also reads the ORF
            finder's call of each base (token id ``base + 5 * in_orf``).
        model, train, report: the sections (see their classes).
    """

    models: tuple[str, ...] = ("rnnbi", "grubi", "lstmbi", "grubi_orf")
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

    def __post_init__(self):
        from experiments.genes.models import MODEL_NAMES

        common.check_models(self.models, MODEL_NAMES)


#: The quick configuration: under 3 minutes on 2 CPU cores.
QUICK = {
    "models": ("grubi",),
    "hidden_size": 32,
    "batch_size": 32,
    "windows_per_epoch": 640,
    "num_epochs": 2,
    "warmup_steps": 5,
    "eval_every": 20,
    "bench_lengths": (1_000, 10_000),
}


#: ``default_config(quick=False)``: the full configuration, or the quick one (:data:`QUICK`).
default_config = common.quick_or_full(GenesConfig, QUICK)
