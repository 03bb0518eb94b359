"""The dates task: data, model, training, evaluation and prediction.

Run directory layout::

    DIR/run_config.json        the configuration of the run
    DIR/config.json            the part of it that checkpoints are tied to
    DIR/src_vocab.json         source characters (built on the training inputs)
    DIR/tgt_vocab.json         target characters (digits and "-")
    DIR/checkpoints/           Orbax checkpoints (the best by validation exact match is kept)
    DIR/metrics.jsonl          training and validation metrics; DIR/curves.png their plot
    DIR/results.json, .md      held-out exact match (greedy, beam) and failure cases
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

from experiments.cli import config_to_dict, fit_logged, load_run_vocab, read_inputs, read_run_config
from experiments.data import make_dates
from experiments.dates.config import DatesConfig
from rnn_jax.batching import iterate_batches, num_batches, pad_batch
from rnn_jax.checkpoint import Checkpointer
from rnn_jax.generate import beam_search, greedy_decode
from rnn_jax.params import count_params
from rnn_jax.seq2seq import (
    Seq2SeqParams,
    decoder_initial_state,
    decoder_step,
    encode,
    init_seq2seq,
    seq2seq_loss,
)
from rnn_jax.train import (
    EarlyStopping,
    default_optimizer,
    init_train_state,
    make_train_step,
)
from rnn_jax.vocab import Vocabulary

__all__ = [
    "Data",
    "eval_command",
    "load_data",
    "predict_command",
    "train_command",
    "translate",
]

# Hand-written inputs, some outside the training distribution (marked *): no separator,
# capitals, a year outside 1900-2099, an ISO input, a missing year.
PROBES: tuple[tuple[str, str], ...] = (
    ("3rd of May 1979", "1979-05-03"),
    ("Tuesday, 9 July 2024", "2024-07-09"),
    ("29 February 2024", "2024-02-29"),
    ("martes, 1 de enero de 2030", "2030-01-01"),
    ("July 4th, 1976", "1976-07-04"),
    ("May 3 1979 *", "1979-05-03"),
    ("MONDAY, 5 MAY 2025 *", "2025-05-05"),
    ("le 14 juillet 1789 *", "1789-07-14"),
    ("2024-07-09 *", "2024-07-09"),
    ("9 July *", "?"),
)

# Fields that change only how results are shown or computed, not the trained model.
_PRESENTATION = (
    "progress",
    "pad_to_multiple",
    "eval_batch_size",
    "num_failures",
    "beam_width",
    "alpha",
    "log_every",
)


@dataclasses.dataclass
class Data:
    """Date pairs per split and the two character vocabularies."""

    src_vocab: Vocabulary
    tgt_vocab: Vocabulary
    splits: dict[str, list[tuple[str, str]]]
    dropped_overlap: dict[str, int]


def load_data(config: DatesConfig, vocabs: tuple[Vocabulary, Vocabulary] | None = None) -> Data:
    """Generates the splits; held-out inputs that also occur in training are dropped."""
    locales = tuple(config.locales)
    train = make_dates(config.num_train, seed=config.data_seed, locales=locales)
    seen = {s for s, _ in train}
    splits, dropped = {"train": train}, {}
    for offset, name, n in ((1, "val", config.num_val), (2, "test", config.num_test)):
        pairs = make_dates(n, seed=config.data_seed + offset, locales=locales)
        kept = [(s, t) for s, t in pairs if s not in seen]
        splits[name], dropped[name] = kept, len(pairs) - len(kept)
    if vocabs is None:
        src_vocab = Vocabulary.build([s for s, _ in train], level="char", max_size=None)
        tgt_vocab = Vocabulary.build([t for _, t in train], level="char", max_size=None)
    else:
        src_vocab, tgt_vocab = vocabs
    return Data(src_vocab, tgt_vocab, splits, dropped)


def encode_sources(vocab: Vocabulary, texts: list[str], reverse: bool) -> list[np.ndarray]:
    ids = [vocab.encode(t.strip()) for t in texts]
    return [x[::-1].copy() for x in ids] if reverse else ids


def encode_targets(vocab: Vocabulary, isos: list[str]) -> list[np.ndarray]:
    return [vocab.encode(t, add_eos=True) for t in isos]


def init_params(config: DatesConfig, data: Data, key: jax.Array) -> Seq2SeqParams:
    return init_seq2seq(
        key,
        len(data.src_vocab),
        len(data.tgt_vocab),
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        bidirectional=config.bidirectional,
        bridge=config.bridge,
        feed_context=config.feed_context,
    )


def _keys(config: DatesConfig):
    k_init, k_data, k_steps = jax.random.split(jax.random.key(config.seed), 3)
    return k_init, k_data, k_steps


def _optimizer(config: DatesConfig, total_steps: int):
    return default_optimizer(
        config.learning_rate,
        clip_norm=config.clip_norm,
        warmup_steps=config.warmup_steps,
        total_steps=max(total_steps, config.warmup_steps + 1),
    )


# --------------------------------------------------------------------------- decoding


@functools.partial(jax.jit, static_argnames=("max_len", "bos_id", "eos_id"))
def _greedy(params, src, src_lengths, *, max_len, bos_id, eos_id):
    state = decoder_initial_state(params, encode(params, src, src_lengths))
    start = jnp.full((src.shape[0],), bos_id, jnp.int32)
    return greedy_decode(decoder_step, params, state, start, max_len=max_len, eos_id=eos_id)


@functools.partial(jax.jit, static_argnames=("max_len", "bos_id", "eos_id", "beam_width"))
def _beam(params, src, src_lengths, alpha, *, max_len, bos_id, eos_id, beam_width):
    state = decoder_initial_state(params, encode(params, src, src_lengths))
    start = jnp.full((src.shape[0],), bos_id, jnp.int32)
    r = beam_search(decoder_step, params, state, start, beam_width=beam_width, max_len=max_len,
                    eos_id=eos_id, alpha=alpha)  # fmt: skip
    return r.tokens[:, 0], r.lengths[:, 0]


def translate(
    params: Seq2SeqParams,
    config: DatesConfig,
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    texts: list[str],
    *,
    method: str = "greedy",
) -> list[str]:
    """ISO strings for ``texts`` by ``"greedy"`` or ``"beam"`` decoding (fixed batch shapes)."""
    if not texts:
        return []
    ids = encode_sources(src_vocab, texts, config.reverse_source)
    B = min(config.eval_batch_size, len(ids))
    out: list[str] = []
    for i in range(0, len(ids), B):
        chunk = ids[i : i + B]
        chunk = chunk + [np.zeros(0, np.int32)] * (B - len(chunk))  # pad the batch
        src, lengths = pad_batch(
            chunk, pad_value=src_vocab.pad_id, pad_to_multiple=config.pad_to_multiple
        )
        kw = dict(max_len=config.max_len, bos_id=tgt_vocab.bos_id, eos_id=tgt_vocab.eos_id)
        if method == "greedy":
            tokens, n = _greedy(params, jnp.asarray(src), jnp.asarray(lengths), **kw)
        elif method == "beam":
            tokens, n = _beam(params, jnp.asarray(src), jnp.asarray(lengths),
                              jnp.float32(config.alpha), beam_width=config.beam_width, **kw)  # fmt: skip
        else:
            raise ValueError(f"`method` must be 'greedy' or 'beam', got {method!r}")
        tokens, n = np.asarray(tokens), np.asarray(n)
        for row in range(min(B, len(ids) - i)):
            out.append("".join(tgt_vocab.decode(tokens[row, : n[row]])))
    return out


# --------------------------------------------------------------------------- run directory


def _checkpoint_config(config: DatesConfig) -> dict[str, Any]:
    d = config_to_dict(config)
    return {k: v for k, v in d.items() if k not in _PRESENTATION}


def _checkpointer(config: DatesConfig, workdir: Path) -> Checkpointer:
    return Checkpointer(
        workdir,
        config=_checkpoint_config(config),
        max_to_keep=2,
        best_metric="exact",
        best_mode="max",
    )


def _template(config: DatesConfig, data: Data):
    k_init, _, k_steps = _keys(config)
    params0 = init_params(config, data, k_init)
    return init_train_state(params0, _optimizer(config, 1), key=k_steps)


def read_config(workdir: Path) -> DatesConfig:
    return read_run_config(workdir, DatesConfig, "dates", "run_config.json")


def load_vocabs(workdir: Path) -> tuple[Vocabulary, Vocabulary]:
    return (
        load_run_vocab(workdir, "dates", "src_vocab.json"),
        load_run_vocab(workdir, "dates", "tgt_vocab.json"),
    )


def best_params(config: DatesConfig, data: Data, workdir: Path) -> Seq2SeqParams:
    ckpt = _checkpointer(config, workdir)
    try:
        step = ckpt.best_step() or ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"no checkpoint in {workdir}: train first with "
                f"`python -m experiments.dates train --workdir {workdir}`."
            )
        state, _ = ckpt.restore(_template(config, data), step=step)
        return state.params
    finally:
        ckpt.close()


# --------------------------------------------------------------------------- training


def train(config: DatesConfig, data: Data, workdir: Path) -> dict[str, Any]:
    k_init, k_data, k_steps = _keys(config)
    train_pairs = data.splits["train"]
    src_ids = encode_sources(data.src_vocab, [s for s, _ in train_pairs], config.reverse_source)
    tgt_ids = encode_targets(data.tgt_vocab, [t for _, t in train_pairs])
    steps_per_epoch = num_batches(len(src_ids), config.batch_size, drop_last=True)
    optimizer = _optimizer(config, steps_per_epoch * config.num_epochs)
    params0 = init_params(config, data, k_init)
    state = init_train_state(params0, optimizer, key=k_steps)
    bos = data.tgt_vocab.bos_id

    def loss_fn(params, batch, *, key):
        src, src_lengths, tgt, tgt_lengths = batch
        return seq2seq_loss(params, src, src_lengths, tgt, tgt_lengths, bos_id=bos)

    train_step = make_train_step(loss_fn, optimizer)

    def epoch_batches(epoch: int, start: int):
        for b in iterate_batches(
            src_ids,
            batch_size=config.batch_size,
            key=jax.random.fold_in(k_data, epoch),
            pad_values=data.src_vocab.pad_id,
            drop_last=True,
            start=start,
            pad_to_multiple=config.pad_to_multiple,
        ):
            tgt, tgt_lengths = pad_batch([tgt_ids[i] for i in b.indices], pad_value=0)
            yield (jnp.asarray(b.fields[0]), jnp.asarray(b.lengths), jnp.asarray(tgt),
                   jnp.asarray(tgt_lengths))  # fmt: skip

    val_src = [s for s, _ in data.splits["val"]]
    val_tgt = [t for _, t in data.splits["val"]]

    def evaluate_fn(params):
        pred = translate(params, config, data.src_vocab, data.tgt_vocab, val_src)
        return {"exact": float(np.mean([p == t for p, t in zip(pred, val_tgt, strict=True)]))}

    ckpt = _checkpointer(config, workdir)
    summary = fit_logged(
        state,
        train_step,
        epoch_batches,
        workdir=workdir,
        checkpointer=ckpt,
        name="dates",
        num_epochs=config.num_epochs,
        steps_per_epoch=steps_per_epoch,
        evaluate_fn=evaluate_fn,
        eval_every=config.eval_every,
        early_stopping=EarlyStopping("exact", mode="max", patience=config.patience),
        progress=config.progress,
        log_every=config.log_every,
    )
    return {**summary, "num_params": count_params(params0)}


# --------------------------------------------------------------------------- evaluation


def evaluate(config: DatesConfig, data: Data, workdir: Path) -> dict[str, Any]:
    params = best_params(config, data, workdir)
    test = data.splits["test"]
    sources, targets = [s for s, _ in test], [t for _, t in test]
    results: dict[str, Any] = {
        "num_train": len(data.splits["train"]),
        "num_val": len(data.splits["val"]),
        "num_test": len(test),
        "dropped_overlap": data.dropped_overlap,
        "source_vocab": len(data.src_vocab),
        "num_params": count_params(params),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }
    preds = {}
    for method in ("greedy", "beam"):
        t0 = time.perf_counter()
        preds[method] = translate(params, config, data.src_vocab, data.tgt_vocab, sources,
                                  method=method)  # fmt: skip
        seconds = time.perf_counter() - t0
        correct = [p == t for p, t in zip(preds[method], targets, strict=True)]
        results[method] = {
            "exact_match": float(np.mean(correct)),
            "errors": int(len(correct) - sum(correct)),
            "seconds": seconds,
        }
    results["beam_width"], results["alpha"] = config.beam_width, config.alpha
    failures = [
        {"input": s, "expected": t, "greedy": g, "beam": b}
        for s, t, g, b in zip(sources, targets, preds["greedy"], preds["beam"], strict=True)
        if g != t or b != t
    ]
    probe_inputs = [s.rstrip(" *") for s, _ in PROBES]
    probe_preds = {
        m: translate(params, config, data.src_vocab, data.tgt_vocab, probe_inputs, method=m)
        for m in ("greedy", "beam")
    }
    results["probes"] = [
        {"input": s, "expected": t, "greedy": g, "beam": b}
        for (s, t), g, b in zip(PROBES, probe_preds["greedy"], probe_preds["beam"], strict=True)
    ]
    results["num_failures"] = len(failures)
    results["failures"] = failures[: config.num_failures]
    return results


def format_results(results: dict[str, Any]) -> str:
    lines = [
        f"held-out dates: {results['num_test']} (train {results['num_train']}, "
        f"val {results['num_val']}; held-out inputs also in train dropped: "
        f"{results['dropped_overlap']})",
        "",
        "| decoding | exact match | errors |",
        "|---|---|---|",
        f"| greedy | {100 * results['greedy']['exact_match']:.2f}% | {results['greedy']['errors']} |",
        f"| beam (k={results['beam_width']}, alpha={results['alpha']}) | "
        f"{100 * results['beam']['exact_match']:.2f}% | {results['beam']['errors']} |",
        "",
        f"failure cases ({results['num_failures']} inputs wrong by greedy or beam; "
        f"first {len(results['failures'])}):",
        "",
        "| input | expected | greedy | beam |",
        "|---|---|---|---|",
    ]
    for f in results["failures"]:
        lines.append(f"| {f['input']} | {f['expected']} | {f['greedy']} | {f['beam']} |")
    lines += [
        "",
        "hand-written probes (* = outside the training distribution):",
        "",
        "| input | expected | greedy | beam |",
        "|---|---|---|---|",
    ]
    for f in results.get("probes", []):
        lines.append(f"| {f['input']} | {f['expected']} | {f['greedy']} | {f['beam']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def train_command(config: DatesConfig, workdir: Path, inputs: list[str]) -> int:
    """Trains (resuming if ``workdir`` holds checkpoints), then evaluates on held-out dates."""
    if inputs:
        raise ValueError(f"`train` takes no inputs, got {inputs!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    have_vocabs = (workdir / "src_vocab.json").exists()
    data = load_data(config, load_vocabs(workdir) if have_vocabs else None)
    if not have_vocabs:
        data.src_vocab.save(workdir / "src_vocab.json")
        data.tgt_vocab.save(workdir / "tgt_vocab.json")
    (workdir / "run_config.json").write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    print(
        f"data: {len(data.splits['train'])} train / {len(data.splits['val'])} val / "
        f"{len(data.splits['test'])} test pairs; {len(data.src_vocab)} source characters",
        file=sys.stderr,
    )
    summary = train(config, data, workdir)
    results = evaluate(config, data, workdir)
    results["train"] = summary
    _write_results(workdir, results)
    print(format_results(results))
    return 0


def _write_results(workdir: Path, results: dict[str, Any]) -> None:
    (workdir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (workdir / "results.md").write_text(format_results(results) + "\n")


def eval_command(config: DatesConfig, workdir: Path, inputs: list[str]) -> int:
    """Evaluates the best checkpoint of ``workdir`` with its stored configuration."""
    stored = read_config(workdir)
    config = dataclasses.replace(
        stored, **{k: getattr(config, k) for k in _PRESENTATION if k != "log_every"}
    )
    data = load_data(config, load_vocabs(workdir))
    results = evaluate(config, data, workdir)
    _write_results(workdir, results)
    print(format_results(results))
    return 0


def predict_command(config: DatesConfig, workdir: Path, inputs: list[str]) -> int:
    """Translates each input text (arguments, or lines of stdin) to ISO by greedy and beam."""
    texts = read_inputs(inputs)
    stored = read_config(workdir)
    config = dataclasses.replace(stored, beam_width=config.beam_width, alpha=config.alpha)
    src_vocab, tgt_vocab = load_vocabs(workdir)
    data = Data(src_vocab, tgt_vocab, {}, {})
    params = best_params(config, data, workdir)
    greedy = translate(params, config, src_vocab, tgt_vocab, texts, method="greedy")
    beam = translate(params, config, src_vocab, tgt_vocab, texts, method="beam")
    for text, g, b in zip(texts, greedy, beam, strict=True):
        unknown = sorted({c for c in text.strip() if c not in src_vocab})
        note = f"   (characters never seen in training: {''.join(unknown)!r})" if unknown else ""
        print(f"{text}\t{g}\t(beam: {b}){note}")
    return 0
