"""The dates task: data, model, training, evaluation and prediction.

Run directory layout (see :mod:`experiments.common`)::

    DIR/run_config.json        the configuration of the run
    DIR/config.json            the part of it that checkpoints are tied to (model, train)
    DIR/src_vocab.json         source characters (built on the training inputs)
    DIR/tgt_vocab.json         target characters (digits and "-")
    DIR/checkpoints/           Orbax checkpoints (the best by validation exact match is kept)
    DIR/metrics.jsonl          training and validation metrics; DIR/curves.png their plot
    DIR/results.json, .md      held-out exact match (greedy, beam) and failure cases
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.cli import Experiment, Invocation
from experiments.data import make_dates
from experiments.dates.config import DatesConfig, ModelConfig, default_config
from rnn_jax.batching import pad_batch
from rnn_jax.generate import beam_search, greedy_decode
from rnn_jax.params import count_params
from rnn_jax.seq2seq import (
    Seq2SeqParams,
    decoder_initial_state,
    decoder_step,
    encode,
    init_seq2seq,
    seq2seq_apply,
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


BEST = common.Best("exact", "max")  # validation exact match (greedy)
VOCAB_FILES = ("src_vocab.json", "tgt_vocab.json")


@dataclasses.dataclass
class Data(common.PairData):
    """Date pairs per split and the two character vocabularies."""

    dropped_overlap: dict[str, int] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        n = {k: len(v) for k, v in self.splits.items()}
        return (
            f"{n['train']} train / {n['val']} val / {n['test']} test pairs; "
            f"{len(self.src_vocab)} source characters"
        )


def load_data(config: DatesConfig, vocabs: tuple[Vocabulary, Vocabulary] | None = None) -> Data:
    """Generates the splits; held-out inputs that also occur in training are dropped."""
    c = config.train
    locales = tuple(c.locales)
    train = make_dates(c.num_train, seed=c.data_seed, locales=locales)
    seen = {s for s, _ in train}
    splits, dropped = {"train": train}, {}
    for offset, name, n in ((1, "val", c.num_val), (2, "test", config.report.num_test)):
        pairs = make_dates(n, seed=c.data_seed + offset, locales=locales)
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


def make_model(config: ModelConfig, data: Data) -> common.Model:
    """The encoder–decoder; ``apply`` is teacher-forced decoding (:func:`seq2seq_apply`)."""

    def init(key: jax.Array) -> Seq2SeqParams:
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

    def apply(params, src, src_lengths, tgt_in, tgt_lengths, *, key=None, train=False):
        return seq2seq_apply(params, src, src_lengths, tgt_in, tgt_lengths)

    return common.Model(init, apply)


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
    """ISO strings for ``texts`` by ``"greedy"`` or ``"beam"`` decoding.

    Batches are padded to a few bucket shapes (rows: a power of two, see
    :func:`experiments.common.row_bucket`), so no call compiles again for another count.
    """
    if not texts:
        return []
    report = config.report
    ids = encode_sources(src_vocab, texts, config.model.reverse_source)
    B = common.row_bucket(len(ids), cap=report.eval_batch_size)
    out: list[str] = []
    for i in range(0, len(ids), B):
        chunk = ids[i : i + B]
        chunk = chunk + [np.zeros(0, np.int32)] * (B - len(chunk))  # pad the batch
        src, lengths = pad_batch(
            chunk, pad_value=src_vocab.pad_id, pad_to_multiple=report.pad_to_multiple
        )
        kw = dict(max_len=config.train.max_len, bos_id=tgt_vocab.bos_id, eos_id=tgt_vocab.eos_id)
        if method == "greedy":
            tokens, n = _greedy(params, jnp.asarray(src), jnp.asarray(lengths), **kw)
        elif method == "beam":
            tokens, n = _beam(params, jnp.asarray(src), jnp.asarray(lengths),
                              jnp.float32(report.alpha), beam_width=report.beam_width, **kw)  # fmt: skip
        else:
            raise ValueError(f"`method` must be 'greedy' or 'beam', got {method!r}")
        tokens, n = np.asarray(tokens), np.asarray(n)
        for row in range(min(B, len(ids) - i)):
            out.append("".join(tgt_vocab.decode(tokens[row, : n[row]])))
    return out


# --------------------------------------------------------------------------- run directory


def best_params(config: DatesConfig, data: Data, workdir: Path) -> Seq2SeqParams:
    init = make_model(config.model, data).init
    return common.restore_best(config, init, BEST, experiment="dates", workdir=workdir)


# --------------------------------------------------------------------------- training


def train(config: DatesConfig, data: Data, workdir: Path) -> dict[str, Any]:
    keys = common.make_keys(config.train.seed)
    train_pairs = data.splits["train"]
    reverse = config.model.reverse_source
    src_ids = encode_sources(data.src_vocab, [s for s, _ in train_pairs], reverse)
    tgt_ids = encode_targets(data.tgt_vocab, [t for _, t in train_pairs])
    val_src = [s for s, _ in data.splits["val"]]
    val_tgt = [t for _, t in data.splits["val"]]

    def evaluate_fn(params):
        pred = translate(params, config, data.src_vocab, data.tgt_vocab, val_src)
        return {"exact": float(np.mean([p == t for p, t in zip(pred, val_tgt, strict=True)]))}

    params = make_model(config.model, data).init(keys.init)
    checkpointer = common.run_checkpointer(config, workdir, BEST)
    return common.train_seq2seq(
        config, src_ids, tgt_ids, bos_id=data.tgt_vocab.bos_id, src_pad_id=data.src_vocab.pad_id,
        src_pad_to_multiple=config.report.pad_to_multiple, params=params, keys=keys,
        workdir=workdir, checkpointer=checkpointer, best=BEST, name="dates",
        evaluate_fn=evaluate_fn,
    )  # fmt: skip


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
    results["beam_width"], results["alpha"] = config.report.beam_width, config.report.alpha
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
    results["failures"] = failures[: config.report.num_failures]
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


# (`evaluate` is looked up when the command runs: tests replace it)
PIECES = common.Pieces(
    "dates", DatesConfig, load_data, train, lambda *args: evaluate(*args), format_results,
    VOCAB_FILES,
)  # fmt: skip
#: ``train``: trains (resuming from the checkpoints of ``workdir``), evaluates on held-out dates;
#: ``eval``: evaluates the best checkpoint of ``workdir`` with its stored configuration.
train_command, eval_command = PIECES.train_command, PIECES.eval_command


def predict_command(run: Invocation) -> int:
    """Translates each input text (arguments, or lines of stdin) to ISO by greedy and beam."""
    texts, _, src_vocab, greedy, beam = common.decode_inputs(
        run, PIECES, Data, best_params, translate
    )
    for text, g, b in zip(texts, greedy, beam, strict=True):
        unknown = sorted({c for c in text.strip() if c not in src_vocab})
        note = f"   (characters never seen in training: {''.join(unknown)!r})" if unknown else ""
        print(f"{text}\t{g}\t(beam: {b}){note}")
    return 0


EXPERIMENT = Experiment(
    "dates",
    default_config,
    {"train": train_command, "eval": eval_command, "predict": predict_command},
    data_parallel=True,
)
