"""Training, evaluation, the memory benchmark and the figure of the gene-tagging experiment.

Run directory layout (``--workdir DIR``; one position assignment per directory)::

    DIR/run_config.json      the whole configuration of the last ``train``
    DIR/<model>/             config.json, checkpoints/ (latest and best), metrics.jsonl,
                             curves.png, train.json
    DIR/results.json, .md    per-base P/R/F1 and per-gene recall of every model and baseline
    DIR/track.png            truth vs predictions over a stretch of the test region
    DIR/memory.json, .md     the ``memory`` command: compiled memory and step time by length
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.cli import Experiment, Invocation
from experiments.genes.baselines import CodonLogistic, orf_coding
from experiments.genes.config import GenesConfig, default_config
from experiments.genes.data import (
    Genome,
    Region,
    fetch_genome,
    load_genbank,
    region,
    reverse_complement_ids,
    shared_kmers,
    split_regions,
)
from experiments.genes.models import GeneModel, coding_probability, make_model, sequence_loss
from rnn_jax._io import atomic_write

__all__ = [
    "EXPERIMENT",
    "Data",
    "ModelRun",
    "base_scores",
    "evaluate_all",
    "gene_recall",
    "load_data",
    "measure_memory",
]

EXPERIMENT_NAME = "genes"
BEST = common.Best("f1", "max")


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class Data:
    """The genome, its three regions and the ORF finder's call of every base of each."""

    genome: Genome
    train: Region
    val: Region
    test: Region
    orf: dict[str, np.ndarray]  # region name ("train", "val", "test") -> 0/1 per base
    min_codons: int

    @property
    def vocabs(self) -> tuple[()]:
        return ()

    @property
    def num_train(self) -> int:
        return len(self.train)

    def describe(self) -> str:
        return (
            f"{self.genome.name}: {len(self.genome):,} bases, {len(self.genome.genes)} CDS; "
            f"train [{self.train.start}, {self.train.end}), validation [{self.val.start}, "
            f"{self.val.end}), test [{self.test.start}, {self.test.end})"
        )


def load_data(config: GenesConfig, vocabs: Any = None) -> Data:
    """The genome (fetched, or ``train.genbank``) split by ``train.assignment``."""
    path = config.train.genbank or fetch_genome(config.report.data_dir)
    genome = load_genbank(path)
    train, val, test = split_regions(genome, config.train.assignment)
    k = config.report.orf_min_codons
    orf = {n: orf_coding(r.ids, k) for n, r in (("train", train), ("val", val), ("test", test))}
    return Data(genome, train, val, test, orf, k)


# ----------------------------------------------------------------------------- metrics
def base_scores(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Per-base precision, recall and F1 of the coding class (0/0 := 0).

    Example:
        >>> base_scores(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
        {'precision': 0.5, 'recall': 0.5, 'f1': 0.5}
    """
    pred, labels = np.asarray(pred).astype(bool), np.asarray(labels).astype(bool)
    tp = float(np.sum(pred & labels))
    p = tp / max(float(pred.sum()), 1.0)
    r = tp / max(float(labels.sum()), 1.0)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def gene_recall(pred: np.ndarray, r: Region) -> dict[str, Any]:
    """Fraction of the region's CDS with at least half their (in-region) bases predicted coding."""
    found = []
    for _, parts in r.genes:
        bases = np.concatenate([pred[s:e] for s, e in parts])
        found.append(bool(np.mean(bases) >= 0.5))
    return {"gene_recall": float(np.mean(found)) if found else 0.0, "genes": len(found)}


def scores(pred: np.ndarray, r: Region, novel: np.ndarray | None = None) -> dict[str, Any]:
    """Per-base P/R/F1, per-gene recall, and with ``novel`` the F1 over those bases alone."""
    out = {**base_scores(pred, r.labels), **gene_recall(pred, r)}
    if novel is not None:
        out["novel_f1"] = base_scores(pred[novel], r.labels[novel])["f1"]
        out["novel_bases"] = int(novel.sum())
    return out


# ----------------------------------------------------------------------------- models
@functools.cache
def _loss_fn(mode: str, chunk_size: int | None):
    def loss_fn(params, batch, *, key):
        ids, labels = batch
        return sequence_loss(params, ids, labels, mode=mode, chunk_size=chunk_size)

    return loss_fn


class ModelRun(common.ModelRun):
    """One model's training run in ``<workdir>/<name>``: keys, checkpoints (the best by
    validation F1) and their restore as :class:`experiments.common.ModelRun`."""

    experiment = EXPERIMENT_NAME
    best = BEST

    def __init__(self, config: GenesConfig, name: str, workdir: Path):
        self.model: GeneModel
        super().__init__(config, name, workdir, make_model(name, config.model.hidden_size))

    def probability(self, params, ids: np.ndarray, orf: np.ndarray | None) -> np.ndarray:
        """``P(coding)`` of every base of ``ids``, read as one sequence."""
        tokens = self.model.tokens(ids, orf)
        return np.asarray(coding_probability(params, jnp.asarray(tokens)[None]))[0]

    def evaluate(self, params, r: Region, orf: np.ndarray) -> dict[str, float]:
        p = self.probability(params, r.ids, orf)
        y = r.labels
        nll = -np.mean(np.log(np.clip(np.where(y == 1, p, 1 - p), 1e-12, 1.0)))
        return {**base_scores(p > 0.5, y), "loss": float(nll)}

    def windows(self, data: Data, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A batch of random training windows, each reverse-complemented with probability 1/2."""
        c = self.config.train
        n = len(data.train)
        if c.window > n:
            raise ValueError(
                f"`window` = {c.window} is longer than the training region ({n} bases)"
            )
        k_start, k_flip = jax.random.split(key)
        starts = np.asarray(jax.random.randint(k_start, (c.batch_size,), 0, n - c.window + 1))
        flips = np.asarray(jax.random.bernoulli(k_flip, 0.5, (c.batch_size,)))
        idx = starts[:, None] + np.arange(c.window)
        ids, labels, orf = data.train.ids[idx], data.train.labels[idx], data.orf["train"][idx]
        ids = np.where(flips[:, None], reverse_complement_ids(ids), ids)
        labels = np.where(flips[:, None], labels[:, ::-1], labels)
        orf = np.where(flips[:, None], orf[:, ::-1], orf)  # the six frames are symmetric
        return jnp.asarray(self.model.tokens(ids, orf)), jnp.asarray(labels)

    def train(self, data: Data) -> dict[str, Any]:
        c = self.config.train
        steps = common.check_steps_per_epoch(c.windows_per_epoch, c.batch_size)

        def epoch_batches(epoch: int, start: int):
            k_epoch = jax.random.fold_in(self.keys.data, epoch)
            for b in range(start, steps):
                yield self.windows(data, jax.random.fold_in(k_epoch, b))

        return self.fit(
            _loss_fn(c.backward, c.chunk_size),
            epoch_batches,
            num_train=c.windows_per_epoch,
            evaluate_fn=lambda params: self.evaluate(params, data.val, data.orf["val"]),
        )


# ----------------------------------------------------------------------------- evaluation
#: Minimum ORF lengths (codons) tried on the validation region by the tuned ORF finder.
ORF_LENGTHS = (30, 40, 50, 60, 75, 100, 125, 150, 200)
#: Decision thresholds on P(coding) tried on the validation region.
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2).tolist())


def tune_threshold(proba: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold of :data:`THRESHOLDS` with the best F1 on ``(proba, labels)``, and that F1.

    Example:
        >>> tune_threshold(np.array([0.1, 0.3, 0.35, 0.9]), np.array([0, 1, 1, 1]))
        (0.1, 1.0)
    """
    f1s = [base_scores(proba > t, labels)["f1"] for t in THRESHOLDS]
    best = int(np.argmax(f1s))
    return THRESHOLDS[best], f1s[best]


def baseline_predictions(
    data: Data, r: Region, orf: np.ndarray, min_codons: int
) -> dict[str, dict[str, Any]]:
    """The baselines' predictions of ``r``, with timings: the ORF finder (``min_codons``, and
    the length of :data:`ORF_LENGTHS` best on the validation region) and the codon logistic
    model (its threshold tuned on the validation region like the networks')."""
    f1s = [base_scores(orf_coding(data.val.ids, k), data.val.labels)["f1"] for k in ORF_LENGTHS]
    k_best = ORF_LENGTHS[int(np.argmax(f1s))]
    t0 = time.perf_counter()
    codon = CodonLogistic().fit(data.train)
    threshold, _ = tune_threshold(codon.predict_proba(data.val.ids), data.val.labels)
    proba = codon.predict_proba(r.ids)
    return {
        "orf_finder": {"pred": orf, "seconds": None, "min_codons": min_codons},
        "orf_finder_tuned": {
            "pred": orf_coding(r.ids, k_best),
            "seconds": None,
            "min_codons": k_best,
        },
        "codon_logistic": {
            "pred": (proba > threshold).astype(np.int32),
            "seconds": time.perf_counter() - t0,
            "threshold": threshold,
        },
    }


def evaluate_all(config: GenesConfig, workdir: Path, data: Data) -> dict[str, Any]:
    """Every trained model and the baselines on the test region; ``track.png``."""
    r, orf = data.test, data.orf["test"]
    # Bases of the test region not repeated in the training region (the chloroplast's inverted
    # repeats are copies of each other): scored separately, as "novel".
    novel = ~shared_kmers(r.ids, data.train.ids)
    results: dict[str, Any] = {
        "assignment": config.train.assignment,
        "test_region": [r.start, r.end],
        "test_coding_fraction": float(r.labels.mean()),
        "test_kmers_in_train": float(1.0 - novel.mean()),
        "models": {},
        "baselines": {},
    }
    predictions = {"truth": r.labels}
    for name in config.models:
        run = ModelRun(config, name, workdir)
        params = run.best_params()
        if params is None:
            print(f"note: {name} has no checkpoint in {run.dir}; skipped", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        proba = run.probability(params, r.ids, orf)
        predict_seconds = time.perf_counter() - t0
        threshold, val_f1 = tune_threshold(
            run.probability(params, data.val.ids, data.orf["val"]), data.val.labels
        )
        pred = (proba > threshold).astype(np.int32)
        entry = scores(pred, r, novel)
        entry["f1_at_half"] = base_scores(proba > 0.5, r.labels)["f1"]
        entry["threshold"], entry["val"] = threshold, val_f1
        entry["predict_seconds"] = predict_seconds
        entry["train_seconds"] = run.train_info().get("train_seconds")
        results["models"][name] = entry
        predictions[name] = pred
    if config.report.baselines:
        for name, b in baseline_predictions(data, r, orf, config.report.orf_min_codons).items():
            extra = {k: v for k, v in b.items() if k != "pred"}
            results["baselines"][name] = {**scores(b["pred"], r, novel), **extra}
            predictions[name] = b["pred"]
    if len(predictions) > 1:
        plot_track(predictions, r, Path(workdir) / "track.png", config.report.figure_bases)
    return results


def format_results(results: dict[str, Any]) -> str:
    lines = [
        f"assignment {results['assignment']}: test region {results['test_region']} "
        f"({results['test_coding_fraction']:.1%} coding; "
        f"{results['test_kmers_in_train']:.1%} of its 32-mers occur in the training region; "
        "F1 novel: over the other bases alone; thresholds and the tuned ORF length chosen "
        "on the validation region)",
        "",
        "| model | threshold | val F1 | test precision | recall | F1 | F1 at 0.5 | F1 novel "
        "| gene recall | genes | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results["models"].items():
        ts = "" if e.get("train_seconds") is None else f"{e['train_seconds']:.0f}"
        lines.append(
            f"| {name} | {e['threshold']:.2f} | {e['val']:.3f} | {e['precision']:.3f} | "
            f"{e['recall']:.3f} | {e['f1']:.3f} | {e['f1_at_half']:.3f} | {e['novel_f1']:.3f} | "
            f"{e['gene_recall']:.3f} | {e['genes']} | {ts} |"
        )
    for name, e in results["baselines"].items():
        setting = f"{e['min_codons']} codons" if "min_codons" in e else f"{e['threshold']:.2f}"
        lines.append(
            f"| {name} (baseline) | {setting} | | {e['precision']:.3f} | {e['recall']:.3f} | "
            f"{e['f1']:.3f} | | {e['novel_f1']:.3f} | {e['gene_recall']:.3f} | {e['genes']} | |"
        )
    return "\n".join(lines)


def plot_track(predictions: dict[str, np.ndarray], r: Region, path: Path, bases: int) -> Path:
    """Truth and every prediction over the first ``bases`` of ``r`` (one row each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(bases, len(r))
    rows = list(predictions)
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(rows) + 1.2))
    image = np.stack([np.asarray(predictions[k][:n], float) for k in rows])
    ax.imshow(image, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1,
              extent=(r.start, r.start + n, len(rows) - 0.5, -0.5))  # fmt: skip
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("genome position (bp); black = coding")
    ax.set_title(f"{r.name}: truth vs predictions, {n:,} bases")
    return common.save_figure(fig, path)


# ----------------------------------------------------------------------------- memory
def measure_memory(
    model: GeneModel, mode: str, length: int, batch: int, *, repeats: int = 2
) -> dict[str, Any]:
    """Compiled memory (XLA's analysis) and step time of one gradient at window ``length``."""
    params = model.init(jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (batch, length), 0, model.vocab_size)
    labels = (ids % 2).astype(jnp.int32)
    grad = jax.jit(jax.value_and_grad(lambda p, x, y: sequence_loss(p, x, y, mode=mode)))
    t0 = time.perf_counter()
    compiled = grad.lower(params, ids, labels).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, ids, labels))
        times.append(time.perf_counter() - t0)
    return {
        "model": model.name,
        "mode": mode,
        "length": length,
        "batch": batch,
        "temp_mib": mem.temp_size_in_bytes / 2**20,
        "total_mib": (
            mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
        )
        / 2**20,
        "compile_s": compile_s,
        "step_s": min(times),
        "device": jax.devices()[0].platform,
    }


def format_memory(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | backward | window | batch | XLA temp MiB | total MiB | step s | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['length']:,} | {r['batch']} | "
            f"{r['temp_mib']:.1f} | {r['total_mib']:.1f} | {r['step_s']:.3f} | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- commands
PIECES = common.Pieces.of_models(
    EXPERIMENT_NAME,
    GenesConfig,
    load_data,
    lambda config, name, data, workdir: ModelRun(config, name, workdir),
    lambda *args: evaluate_all(*args),  # late-bound: tests replace it
    format_results,
    vocab_files=(),
    writes_results=False,
)
#: ``train``: trains every model of ``config.models`` (each resumes), then evaluates.
train_command = PIECES.train_command


def eval_genbank(config: GenesConfig, workdir: Path, paths: list[str]) -> list[dict[str, Any]]:
    """A model (``report.eval_model``, default the best by validation F1) and the ORF finder
    on the whole first record of each GenBank file (threshold from the validation region)."""
    name = config.report.eval_model or common.best_trained(
        workdir, config.models, "f1", experiment=EXPERIMENT_NAME
    )
    if name not in config.models:
        raise ValueError(f"`eval_model` must be one of the trained {config.models}, got {name!r}")
    run = ModelRun(config, name, workdir)
    params = common.trained_params(run)
    data = load_data(config)
    threshold, _ = tune_threshold(
        run.probability(params, data.val.ids, data.orf["val"]), data.val.labels
    )
    out = []
    for path in paths:
        genome = load_genbank(path)
        r = region(genome, 0, len(genome))
        orf = orf_coding(r.ids, config.report.orf_min_codons)
        pred = (run.probability(params, r.ids, orf) > threshold).astype(np.int32)
        out.append(
            {
                "file": str(path),
                "record": genome.name,
                "bases": len(genome),
                "model": name,
                "threshold": threshold,
                "model_scores": scores(pred, r),
                "orf_scores": scores(orf, r),
            }
        )
    return out


def eval_command(run: Invocation) -> int:
    """Evaluates the trained models of ``workdir`` on the test region, or with ``--genbank FILE
    ...`` (``report.genbank_files``) the best one and the ORF finder on those files."""
    config = PIECES.stored_config(run)
    if not config.report.genbank_files:
        return PIECES.eval_command(run)
    for row in eval_genbank(config, run.workdir, list(config.report.genbank_files)):
        m, o = row["model_scores"], row["orf_scores"]
        print(
            f"{row['file']} ({row['record']}, {row['bases']:,} bp): per-base F1 "
            f"{row['model']} {m['f1']:.3f}, ORF finder {o['f1']:.3f}; gene recall "
            f"{m['gene_recall']:.3f} vs {o['gene_recall']:.3f} ({m['genes']} CDS)"
        )
    return 0


def memory_command(run: Invocation) -> int:
    """Memory and step time of one gradient per model, backward mode and window length."""
    config, workdir = run.config, Path(run.workdir)
    rows = []
    for name in config.models:
        model = make_model(name, config.model.hidden_size)
        for length in config.report.bench_lengths:
            for mode in ("bptt", "remat"):
                row = measure_memory(model, mode, length, config.report.bench_batch)
                print(format_memory([row]).splitlines()[-1], file=sys.stderr, flush=True)
                rows.append(row)
    markdown = format_memory(rows)
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write(workdir / "memory.json", json.dumps(rows, indent=2) + "\n")
    atomic_write(workdir / "memory.md", markdown + "\n")
    print(markdown)
    return 0


# ----------------------------------------------------------------------------- summary
def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd over runs (seeds) of every model's and baseline's test scores.

    Example:
        >>> r = lambda f: {"models": {"m": {"f1": f, "precision": f, "recall": f,
        ...     "gene_recall": f, "val": f, "train_seconds": 1.0}}, "baselines": {}}
        >>> s = summarize([r(0.7), r(0.8), r(0.9)])
        >>> [round(x, 3) for x in s["models"]["m"]["f1"]], s["models"]["m"]["runs"]
        ([0.8, 0.1], 3)
    """
    keys = ("precision", "recall", "f1", "f1_at_half", "novel_f1", "gene_recall")
    keys += ("val", "train_seconds")

    def entry(rs: list[dict[str, Any]]) -> dict[str, Any]:
        out = {key: [x[key] for x in rs if x.get(key) is not None] for key in keys}
        return {key: common.mean_sd(vals) for key, vals in out.items() if vals}

    return common.summarize_runs(runs, entry)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        "| model | runs | test precision | recall | F1 | F1 at 0.5 | F1 novel | gene recall "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(e, k, digits=3):
        return f"{e[k][0]:.{digits}f} ± {e[k][1]:.{digits}f}" if k in e else ""

    for section in ("models", "baselines"):
        for name, e in summary[section].items():
            label = name if section == "models" else f"{name} (baseline)"
            lines.append(
                f"| {label} | {e['runs']} | {cell(e, 'precision')} | {cell(e, 'recall')} | "
                f"{cell(e, 'f1')} | {cell(e, 'f1_at_half')} | {cell(e, 'novel_f1')} | "
                f"{cell(e, 'gene_recall')} | "
                f"{cell(e, 'train_seconds', 0)} |"
            )
    return "\n".join(lines)


def summary_command(run: Invocation) -> int:
    """``summary --workdir OUT RUN_DIR ...``: mean ± sd over the runs' ``results.json``."""
    return common.summary_command(run, summarize, format_summary)


EXPERIMENT = Experiment(
    EXPERIMENT_NAME,
    default_config,
    {
        "train": train_command,
        "eval": eval_command,
        "memory": memory_command,
        "summary": summary_command,
    },
    data_parallel=True,
)
