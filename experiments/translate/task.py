"""The translation task (English -> Spanish verses): data, model, training, evaluation, prediction.

Run directory layout (see :mod:`experiments.common`)::

    DIR/run_config.json        the configuration of the run
    DIR/config.json            the part of it that checkpoints are tied to (model, train)
    DIR/src_vocab.json         English words (the most frequent training words; <UNK> else)
    DIR/tgt_vocab.json         Spanish words
    DIR/checkpoints/           Orbax checkpoints (the best by validation loss is kept)
    DIR/metrics.jsonl          training and validation metrics; DIR/curves.png their plot
    DIR/results.json, .md      BLEU and chrF on the held-out books (greedy, beam, baselines)
    DIR/attention.png          attention heat-maps of a few held-out verses (attention models)

Text is lower-cased and split into words and punctuation marks
(:func:`experiments.translate.data.tokenize`); BLEU and chrF (``sacrebleu``) compare the
space-joined tokens of the hypothesis and the reference, so every system is scored on the
same tokenisation. Decoding never emits ``<UNK>`` unless ``report.allow_unk``.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.cli import Experiment, Invocation
from experiments.translate.baselines import IBMModel1, copy_source
from experiments.translate.config import ModelConfig, TranslateConfig, default_config
from experiments.translate.data import load_pairs, tokenize
from rnn_jax.batching import pad_batch
from rnn_jax.generate import beam_search, greedy_decode
from rnn_jax.params import count_params
from rnn_jax.seq2seq import (
    Seq2SeqParams,
    decoder_step,
    init_seq2seq,
    seq2seq_apply,
    seq2seq_loss,
    shift_right,
    start_decoding,
)
from rnn_jax.vocab import Vocabulary

__all__ = [
    "Data",
    "eval_command",
    "load_data",
    "predict_command",
    "score",
    "train_command",
    "translate",
]

BEST = common.Best("loss", "min")  # teacher-forced validation loss
VOCAB_FILES = ("src_vocab.json", "tgt_vocab.json")
Pair = tuple[list[str], list[str]]


@dataclasses.dataclass
class Data(common.PairData):
    """Tokenised (English, Spanish) pairs per split and the two word vocabularies."""

    refs: dict[str, list[tuple[str, int, int]]] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        n = {k: len(v) for k, v in self.splits.items()}
        return (
            f"{n['train']} train / {n['val']} val / {n['test']} test verse pairs; "
            f"vocabularies {len(self.src_vocab)} English, {len(self.tgt_vocab)} Spanish words"
        )


def split_pairs(records, config: TranslateConfig) -> tuple[dict[str, list[Pair]], dict]:
    """Tokenise, drop long verses, split by whole books; subsample train and val."""
    c, r = config.train, config.report
    splits: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    refs: dict[str, list] = {"train": [], "val": [], "test": []}
    for book, ch, v, en, es in records:
        src, tgt = tokenize(en), tokenize(es)
        if not src or not tgt or len(en.split()) > c.max_words or len(es.split()) > c.max_words:
            continue
        name = "test" if book in c.test_books else "val" if book in c.val_books else "train"
        if name == "train" and len(en.split()) > c.train_max_words:
            continue
        splits[name].append((src, tgt))
        refs[name].append((book, ch, v))
    rng = random.Random(c.seed)
    for name, limit in (("train", c.max_train), ("val", c.num_val), ("test", r.num_test)):
        if limit and len(splits[name]) > limit:
            keep = sorted(rng.sample(range(len(splits[name])), limit))
            splits[name] = [splits[name][i] for i in keep]
            refs[name] = [refs[name][i] for i in keep]
    return splits, refs


def load_data(
    config: TranslateConfig,
    vocabs: tuple[Vocabulary, Vocabulary] | None = None,
    *,
    records=None,
) -> Data:
    """The splits from the cached pairs (or ``records``) and the vocabularies."""
    splits, refs = split_pairs(load_pairs() if records is None else records, config)
    if vocabs is None:
        c = config.train
        train = splits["train"]
        src_vocab = Vocabulary.build([s for s, _ in train], max_size=c.src_vocab_size)
        tgt_vocab = Vocabulary.build([t for _, t in train], max_size=c.tgt_vocab_size)
    else:
        src_vocab, tgt_vocab = vocabs
    return Data(src_vocab, tgt_vocab, splits, refs)


def make_model(config: ModelConfig, data: Data) -> common.Model:
    def init(key: jax.Array) -> Seq2SeqParams:
        return init_seq2seq(
            key,
            len(data.src_vocab),
            len(data.tgt_vocab),
            hidden_size=config.hidden_size,
            bidirectional=config.bidirectional,
            cell=config.cell,
            attention=config.attention,
            # without attention the decoder reads the encoder's final states at every step
            feed_context=config.attention == "none",
        )

    def apply(params, src, src_lengths, tgt_in, tgt_lengths, *, key=None, train=False):
        return seq2seq_apply(params, src, src_lengths, tgt_in, tgt_lengths)

    return common.Model(init, apply)


# --------------------------------------------------------------------------- decoding


def _step_fn(banned_id: int | None):
    """:func:`decoder_step`, or one whose ``banned_id`` (``<UNK>``) is never chosen."""
    if banned_id is None:
        return decoder_step

    def step(params, state, y_prev):
        state, logits = decoder_step(params, state, y_prev)
        return state, logits.at[:, banned_id].set(-jnp.inf)

    return step


@functools.partial(jax.jit, static_argnames=("max_len", "bos_id", "eos_id", "banned_id"))
def _greedy(params, src, src_lengths, *, max_len, bos_id, eos_id, banned_id):
    state = start_decoding(params, src, src_lengths)
    start = jnp.full((src.shape[0],), bos_id, jnp.int32)
    return greedy_decode(_step_fn(banned_id), params, state, start, max_len=max_len,
                         eos_id=eos_id)  # fmt: skip


@functools.partial(
    jax.jit, static_argnames=("max_len", "bos_id", "eos_id", "beam_width", "banned_id")
)
def _beam(params, src, src_lengths, alpha, *, max_len, bos_id, eos_id, beam_width, banned_id):
    state = start_decoding(params, src, src_lengths)
    start = jnp.full((src.shape[0],), bos_id, jnp.int32)
    r = beam_search(_step_fn(banned_id), params, state, start, beam_width=beam_width,
                    max_len=max_len, eos_id=eos_id, alpha=alpha)  # fmt: skip
    return r.tokens[:, 0], r.lengths[:, 0]


def _source_batches(vocab: Vocabulary, sources: list[list[str]], config: TranslateConfig):
    ids = [vocab.encode(s) for s in sources]
    B = common.row_bucket(len(ids), cap=config.report.eval_batch_size)
    for i in range(0, len(ids), B):
        chunk = ids[i : i + B]
        n = len(chunk)
        chunk = chunk + [np.zeros(0, np.int32)] * (B - n)
        src, lengths = pad_batch(
            chunk, pad_value=vocab.pad_id, pad_to_multiple=config.report.pad_to_multiple
        )
        yield jnp.asarray(src), jnp.asarray(lengths), n


def translate(
    params: Seq2SeqParams,
    config: TranslateConfig,
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    sources: list[list[str]],
    *,
    method: str = "greedy",
) -> list[list[str]]:
    """Spanish words for tokenised English ``sources`` by ``"greedy"`` or ``"beam"`` decoding."""
    if method not in ("greedy", "beam"):
        raise ValueError(f"`method` must be 'greedy' or 'beam', got {method!r}")
    report = config.report
    kw = dict(max_len=config.train.max_len, bos_id=tgt_vocab.bos_id, eos_id=tgt_vocab.eos_id,
              banned_id=None if report.allow_unk else tgt_vocab.unk_id)  # fmt: skip
    out: list[list[str]] = []
    for src, lengths, n in _source_batches(src_vocab, sources, config):
        if method == "greedy":
            tokens, k = _greedy(params, src, lengths, **kw)
        else:
            tokens, k = _beam(params, src, lengths, jnp.float32(report.alpha),
                              beam_width=report.beam_width, **kw)  # fmt: skip
        tokens, k = np.asarray(tokens), np.asarray(k)
        out.extend(tgt_vocab.decode(tokens[row, : k[row]]) for row in range(n))
    return out


@functools.partial(jax.jit, static_argnames=("bos_id",))
def _weights(params, src, src_lengths, tgt, tgt_lengths, *, bos_id):
    _, w = seq2seq_apply(params, src, src_lengths, shift_right(tgt, bos_id), tgt_lengths,
                         return_attention=True)  # fmt: skip
    return w


def attention_weights(params, config, src_vocab, tgt_vocab, source, output) -> np.ndarray:
    """``α (len(output) + 1, len(source))``: teacher forcing on the model's own output
    (the same computation as its greedy decoding), the last row the step emitting <EOS>.
    Padded to fixed shapes (one compile); the padding changes nothing (exact masking)."""
    return batch_attention_weights(params, config, src_vocab, tgt_vocab, [source], [output])[0]


def batch_attention_weights(
    params, config, src_vocab, tgt_vocab, sources, outputs
) -> list[np.ndarray]:
    """:func:`attention_weights` of each ``(sources[i], outputs[i])``, in batches of
    ``report.eval_batch_size`` rows (empty rows pad the last; fixed shapes, one compile)."""
    if len(sources) != len(outputs):
        raise ValueError(
            f"`sources` and `outputs` must pair up, got {len(sources)} sources and "
            f"{len(outputs)} outputs"
        )
    m = config.report.pad_to_multiple
    src_ids = [src_vocab.encode(s) for s in sources]
    tgt_ids = [tgt_vocab.encode(o, add_eos=True) for o in outputs]
    src_width = _round_up(max(map(len, src_ids), default=1), m)
    tgt_width = _round_up(max(map(len, tgt_ids), default=1), max(m, config.train.max_len + 1))
    B = common.row_bucket(len(src_ids), cap=config.report.eval_batch_size)
    out: list[np.ndarray] = []
    for i in range(0, len(src_ids), B):
        s_chunk, t_chunk = src_ids[i : i + B], tgt_ids[i : i + B]
        empty = [np.zeros(0, np.int32)] * (B - len(s_chunk))
        src, n_src = pad_batch(s_chunk + empty, max_len=src_width)
        tgt, n_tgt = pad_batch(t_chunk + empty, max_len=tgt_width)
        w = np.asarray(_weights(params, jnp.asarray(src), jnp.asarray(n_src), jnp.asarray(tgt),
                                jnp.asarray(n_tgt), bos_id=tgt_vocab.bos_id))  # fmt: skip
        out.extend(w[r, : len(t_chunk[r]), : len(s_chunk[r])] for r in range(len(s_chunk)))
    return out


def replace_unknowns(
    outputs: list[list[str]],
    sources: list[list[str]],
    weights: list[np.ndarray],
    lexicon: dict[str, str],
    unk: str,
) -> list[list[str]]:
    """Each ``unk`` of ``outputs[i]`` (step ``j``) replaced by the translation in ``lexicon``
    of the source word it attends to most, ``sources[i][argmax α<j, :>]``, or by that word
    itself when the lexicon lacks it (names pass through): the rare-word replacement of
    Luong et al. (2015) and Jean et al. (2015). ``weights[i]`` is ``(>= len(outputs[i]),
    len(sources[i]))`` (:func:`batch_attention_weights`)."""
    if not len(outputs) == len(sources) == len(weights):
        raise ValueError(
            f"`outputs`, `sources` and `weights` must have one entry per verse, got "
            f"{len(outputs)}, {len(sources)} and {len(weights)}"
        )
    replaced = []
    for i, (output, source, w) in enumerate(zip(outputs, sources, weights, strict=True)):
        w = np.asarray(w)
        if w.ndim != 2 or w.shape[0] < len(output) or w.shape[1] != len(source):
            raise ValueError(
                f"`weights[{i}]` must have shape (>= {len(output)}, {len(source)}) "
                f"(output steps, source words), got {w.shape}"
            )
        row = []
        for j, word in enumerate(output):
            if word == unk and source:
                e = source[int(np.argmax(w[j]))]
                word = lexicon.get(e, e)
            row.append(word)
        replaced.append(row)
    return replaced


def score(hyps: list[list[str]], refs: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU and chrF (``sacrebleu``) of space-joined tokens."""
    import sacrebleu

    h = [" ".join(x) for x in hyps]
    r = [[" ".join(x) for x in refs]]
    return {
        "bleu": float(sacrebleu.corpus_bleu(h, r).score),
        "chrf": float(sacrebleu.corpus_chrf(h, r).score),
    }


# --------------------------------------------------------------------------- run directory


def best_params(config: TranslateConfig, data: Data, workdir: Path) -> Seq2SeqParams:
    init = make_model(config.model, data).init
    return common.restore_best(config, init, BEST, experiment="translate", workdir=workdir)


# --------------------------------------------------------------------------- training


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


def _encode_pairs(data: Data, pairs: list[Pair]):
    src = [data.src_vocab.encode(s) for s, _ in pairs]
    tgt = [data.tgt_vocab.encode(t, add_eos=True) for _, t in pairs]
    return src, tgt


def train(config: TranslateConfig, data: Data, workdir: Path) -> dict[str, Any]:
    c, keys = config.train, common.make_keys(config.train.seed)
    src_ids, tgt_ids = _encode_pairs(data, data.splits["train"])
    bos = data.tgt_vocab.bos_id
    val_src, val_tgt = _encode_pairs(data, data.splits["val"])
    val_loss = jax.jit(functools.partial(seq2seq_loss, bos_id=bos, reduction="sum"))

    # validation batches of full rows (empty rows pad the last), one source and target width
    width = max(map(len, val_src + val_tgt), default=1)
    val_batches = []
    for i in range(0, len(val_src), c.batch_size):
        rows = list(range(i, min(i + c.batch_size, len(val_src))))
        empty = [np.zeros(0, np.int32)] * (c.batch_size - len(rows))
        src, sl = pad_batch([val_src[j] for j in rows] + empty, max_len=width)
        tgt, tl = pad_batch([val_tgt[j] for j in rows] + empty, max_len=width)
        val_batches.append(tuple(map(jnp.asarray, (src, sl, tgt, tl))))

    def evaluate_fn(params):
        total, count = 0.0, 0
        for src, sl, tgt, tl in val_batches:
            total += float(val_loss(params, src, sl, tgt, tl))
            count += int(tl.sum())
        return {"loss": total / max(count, 1)}

    if c.bucket_multiple:  # each batch padded to its own longest verse (a few shapes)
        shapes = dict(src_pad_to_multiple=c.bucket_multiple, tgt_pad_to_multiple=c.bucket_multiple)
    else:  # one source and one target width for every batch: the train step compiles once
        shapes = dict(src_pad_to_multiple=_round_up(max(map(len, src_ids)), 8),
                      tgt_width=_round_up(max(map(len, tgt_ids)), 8))  # fmt: skip
    params = make_model(config.model, data).init(keys.init)
    checkpointer = common.run_checkpointer(config, workdir, BEST)
    return common.train_seq2seq(
        config, src_ids, tgt_ids, bos_id=bos, src_pad_id=data.src_vocab.pad_id,
        **shapes, params=params, keys=keys,
        workdir=workdir, checkpointer=checkpointer, best=BEST, name="translate",
        evaluate_fn=evaluate_fn,
    )  # fmt: skip


def plot_attention(items: list[tuple[list[str], list[str], np.ndarray]], path: Path) -> None:
    """One heat-map per verse: output words (rows, then <EOS>) against source words."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(items), figsize=(6 * len(items), 6), squeeze=False)
    for ax, (source, output, w) in zip(axes[0], items, strict=True):
        ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(source)), source, rotation=90, fontsize=7)
        ax.set_yticks(range(len(output) + 1), [*output, "<EOS>"], fontsize=7)
        ax.set_xlabel("English (source)")
        ax.set_ylabel("Spanish (greedy output)")
    common.save_figure(fig, path)


def evaluate(config: TranslateConfig, data: Data, workdir: Path) -> dict[str, Any]:
    params = best_params(config, data, workdir)
    test = data.splits["test"]
    sources, targets = [s for s, _ in test], [t for _, t in test]
    results: dict[str, Any] = {
        "num_train": len(data.splits["train"]),
        "num_val": len(data.splits["val"]),
        "num_test": len(test),
        "test_books": list(config.train.test_books),
        "source_vocab": len(data.src_vocab),
        "target_vocab": len(data.tgt_vocab),
        "model": dataclasses.asdict(config.model),
        "num_params": count_params(params),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }
    preds = {}
    for method in ("greedy", "beam"):
        t0 = time.perf_counter()
        preds[method] = translate(params, config, data.src_vocab, data.tgt_vocab, sources,
                                  method=method)  # fmt: skip
        results[method] = {**score(preds[method], targets), "seconds": time.perf_counter() - t0}
    results["beam_width"], results["alpha"] = config.report.beam_width, config.report.alpha
    results["copy"] = score(copy_source(sources), targets)
    t0 = time.perf_counter()
    ibm = IBMModel1().fit(data.splits["train"], iterations=config.report.ibm_iterations)
    results["ibm1"] = {**score(ibm.translate(sources), targets),
                       "seconds": time.perf_counter() - t0}  # fmt: skip
    if params.attention is not None and config.report.unk_replace:
        # decode with <UNK> allowed, then replace each <UNK> through the attention weights
        allow = dataclasses.replace(config, report=dataclasses.replace(config.report,
                                                                        allow_unk=True))  # fmt: skip
        unk = data.tgt_vocab.id_to_token(data.tgt_vocab.unk_id)
        for method in ("greedy", "beam"):
            t0 = time.perf_counter()
            raw = translate(params, allow, data.src_vocab, data.tgt_vocab, sources, method=method)
            w = batch_attention_weights(params, config, data.src_vocab, data.tgt_vocab, sources,
                                        raw)  # fmt: skip
            preds[f"{method}+unk"] = replace_unknowns(raw, sources, w, ibm.best, unk=unk)
            results[f"{method}+unk"] = {
                **score(preds[f"{method}+unk"], targets),
                "unk_replaced": sum(o.count(unk) for o in raw),
                "output_tokens": sum(map(len, raw)),
                "seconds": time.perf_counter() - t0,
            }
    results["examples"] = [
        {
            "source": " ".join(s),
            "reference": " ".join(t),
            "greedy": " ".join(g),
            "beam": " ".join(b),
            "ibm1": " ".join(i),
        }  # fmt: skip
        for s, t, g, b, i in list(
            zip(
                sources,
                targets,
                preds["greedy"],
                preds["beam"],
                ibm.translate(sources),
                strict=True,
            )
        )[: config.report.num_examples]
    ]
    if params.attention is not None and config.report.num_heatmaps:
        short = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        picked = short[len(short) // 4 :][: config.report.num_heatmaps]
        items = [
            (
                sources[i],
                preds["greedy"][i],
                attention_weights(
                    params, config, data.src_vocab, data.tgt_vocab, sources[i], preds["greedy"][i]
                ),
            )  # fmt: skip
            for i in picked
        ]
        plot_attention(items, Path(workdir) / "attention.png")
        results["heatmap"] = "attention.png"
    return results


def format_results(results: dict[str, Any]) -> str:
    m = results["model"]
    lines = [
        f"held-out books {', '.join(results['test_books'])}: {results['num_test']} verses "
        f"(train {results['num_train']}, val {results['num_val']}); vocabularies "
        f"{results['source_vocab']} / {results['target_vocab']} words",
        "",
        "| system | BLEU | chrF |",
        "|---|---|---|",
        f"| copy the source | {results['copy']['bleu']:.2f} | {results['copy']['chrf']:.2f} |",
        f"| IBM Model 1 word by word | {results['ibm1']['bleu']:.2f} | "
        f"{results['ibm1']['chrf']:.2f} |",
    ]
    name = f"{m['cell']}, attention={m['attention']}, H={m['hidden_size']}"
    for method in ("greedy", "beam", "greedy+unk", "beam+unk"):
        if method not in results:
            continue
        label = method.replace("beam", f"beam (k={results['beam_width']})")
        label = label.replace("+unk", ", <UNK> replaced via attention + IBM1 lexicon")
        lines.append(
            f"| seq2seq {name}, {label} | {results[method]['bleu']:.2f} | "
            f"{results[method]['chrf']:.2f} |"
        )
    lines += ["", "| source | reference | greedy | beam | IBM1 |", "|---|---|---|---|---|"]
    for e in results["examples"]:
        lines.append(
            f"| {e['source']} | {e['reference']} | {e['greedy']} | {e['beam']} | {e['ibm1']} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


# (`evaluate` is looked up when the command runs: tests replace it)
PIECES = common.Pieces(
    "translate", TranslateConfig, load_data, train, lambda *args: evaluate(*args), format_results,
    VOCAB_FILES,
)  # fmt: skip
#: ``train``: trains (resuming from the checkpoints of ``workdir``), evaluates on the held-out
#: books; ``eval``: evaluates the best checkpoint of ``workdir`` with its stored configuration.
train_command, eval_command = PIECES.train_command, PIECES.eval_command


def predict_command(run: Invocation) -> int:
    """Translates each English input (arguments, or lines of stdin) by greedy and beam."""
    texts, sources, src_vocab, greedy, beam = common.decode_inputs(
        run, PIECES, Data, best_params, translate, encode=tokenize
    )
    for text, src, g, b in zip(texts, sources, greedy, beam, strict=True):
        unknown = sorted({w for w in src if w not in src_vocab})
        note = f"   (words read as <UNK>: {' '.join(unknown)})" if unknown else ""
        print(f"{text}\t{' '.join(g)}\t(beam: {' '.join(b)}){note}")
    return 0


EXPERIMENT = Experiment(
    "translate",
    default_config,
    {"train": train_command, "eval": eval_command, "predict": predict_command},
    data_parallel=True,
)
