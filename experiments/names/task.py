"""Data, training, evaluation, probes and prediction for the name-tagging experiment.

Run directory layout (``--workdir DIR``, see :mod:`experiments.common`)::

    DIR/run_config.json        the experiment configuration of the last ``train``
    DIR/vocab.json             the vocabulary (also stored in every checkpoint)
    DIR/<model>/               one run per model: config.json, checkpoints/, metrics.jsonl,
                               curves.png, train.json
    DIR/results.json           every number of the comparison and the probes
    DIR/results.md             the same as Markdown tables; DIR/comparison.png the curves
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
from experiments.cli import Experiment, Invocation, read_inputs
from experiments.data import (
    load_tagged_sentences,
    name_labels,
    parse_tagged_text,
    split_by_sentence,
)
from experiments.names.config import MODEL_SPECS, ModelConfig, NamesConfig, default_config
from experiments.names.models import Tagger, make_tagger
from rnn_jax.batching import pad_batch
from rnn_jax.losses import masked_sigmoid_binary_cross_entropy
from rnn_jax.metrics import ConfusionCounts, binary_confusion_counts
from rnn_jax.train import evaluate
from rnn_jax.vocab import DEFAULT_SPECIALS, Vocabulary

EXAMPLES = (
    "Sherlock Holmes and John Watson lived at 221B Baker Street in London.",
    "He met with Apple representatives today.",
)


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class Split:
    words: list[list[str]]
    ids: list[np.ndarray]
    labels: list[np.ndarray]
    unk_ids: list[np.ndarray] | None = None  # the id each word would get if it were unknown


@dataclasses.dataclass
class Data(common.SplitData):
    """The vocabulary and the train, validation and test splits (:class:`Split`)."""

    def describe(self) -> str:
        return (
            f"{len(self.train.ids)} train / {len(self.val.ids)} validation / "
            f"{len(self.test.ids)} test sentences; vocabulary {len(self.vocab)} tokens"
        )


BEST = common.Best("f1", "max")  # validation F1 of the name class


def load_sentences(config: NamesConfig) -> list[list[tuple[str, str]]]:
    """The tagged corpus (fetched and cached on first use), or ``config.corpus_file``."""
    if config.train.corpus_file is not None:
        return parse_tagged_text(Path(config.train.corpus_file).read_text(encoding="utf-8"))
    return load_tagged_sentences(config.report.data_dir)


UNK_SHAPES = ("<UNK-Cap>", "<UNK-num>")


def unknown_id(vocab: Vocabulary, word: str) -> int:
    """The id of ``word`` read as unknown: ``<UNK>``, or its shape class if the vocabulary has them.

    With shape classes, an unknown word starting with a capital letter is ``<UNK-Cap>``, one
    containing a digit ``<UNK-num>``, anything else ``<UNK>``.
    """
    if UNK_SHAPES[0] in vocab.specials:
        if word[:1].isupper():
            return vocab.token_to_id(UNK_SHAPES[0])
        if any(ch.isdigit() for ch in word):
            return vocab.token_to_id(UNK_SHAPES[1])
    return vocab.unk_id


def encode_words(vocab: Vocabulary, words: list[str]) -> np.ndarray:
    """Token ids of ``words``; out-of-vocabulary words get :func:`unknown_id`."""
    ids = vocab.encode(words)
    for t, w in enumerate(words):
        if ids[t] == vocab.unk_id:
            ids[t] = unknown_id(vocab, w)
    return ids


def load_data(config: NamesConfig, vocabs: tuple[Vocabulary] | None = None) -> Data:
    """The fixed 80/10/10 split by sentence, the vocabulary and the encodings.

    ``vocabs``: the stored vocabulary (a 1-tuple); ``None``: build it on the training split.
    """
    vocab = None if vocabs is None else vocabs[0]
    sentences = load_sentences(config)
    c = config.train
    train_idx, val_idx, test_idx = split_by_sentence(
        len(sentences), seed_or_key=c.split_seed, fractions=(0.8, 0.1, 0.1)
    )
    if c.max_train_sentences is not None:
        train_idx = train_idx[: c.max_train_sentences]
    words = [[w for w, _ in s] for s in sentences]
    if vocab is None:
        specials = DEFAULT_SPECIALS + (UNK_SHAPES if c.unk_shapes else ())
        vocab = Vocabulary.build(
            [words[i] for i in train_idx],
            max_size=c.vocab_size,
            lower=False,
            specials=specials,
        )

    def make(indices) -> Split:
        ws = [words[i] for i in indices]
        return Split(
            words=ws,
            ids=[encode_words(vocab, w) for w in ws],
            labels=[name_labels([t for _, t in sentences[i]]) for i in indices],
            unk_ids=[np.array([unknown_id(vocab, x) for x in w], np.int32) for w in ws],
        )

    return Data(vocab, make(train_idx), make(val_idx), make(test_idx))


def eval_batches(
    ids: list[np.ndarray],
    labels: list[np.ndarray],
    scored: list[np.ndarray] | None,
    batch_size: int,
) -> list[tuple[np.ndarray, ...]]:
    """Fixed-shape evaluation batches ``(ids, labels, lengths, score_mask, indices)``.

    Sentences are sorted by length; ``T`` is a power of two (>= 16) and every batch has
    exactly ``batch_size`` rows (filler rows have length 0 and index -1), so evaluation
    compiles at most a handful of shapes. ``scored[i]`` marks which tokens of sentence ``i``
    count (default: all).
    """
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        T = common.row_bucket(max(len(ids[i]) for i in idx), smallest=16)
        fill = batch_size - len(idx)
        seqs = [ids[i] for i in idx] + [np.zeros(0, np.int32)] * fill
        labs = [labels[i] for i in idx] + [np.zeros(0, np.int32)] * fill
        marks = [(np.ones(len(ids[i]), bool) if scored is None else scored[i]) for i in idx] + [
            np.zeros(0, bool)
        ] * fill
        x, lengths = pad_batch(seqs, max_len=T)
        y, _ = pad_batch(labs, max_len=T)
        m, _ = pad_batch(marks, max_len=T, dtype=bool)
        indices = np.concatenate([idx, -np.ones(fill, np.int64)])
        out.append((x, y, lengths, m, indices))
    return out


# ----------------------------------------------------------------------------- models & runs
@functools.cache
def compiled(name: str, model: ModelConfig, vocab_size: int):
    """The tagger and its jitted evaluation and prediction, built once per model and size."""
    tagger = make_tagger(name, model, vocab_size)

    def eval_stats(params, batch):
        ids, labels, lengths, mask = batch
        logits = tagger.apply(params, ids, lengths)
        return {
            "loss_sum": masked_sigmoid_binary_cross_entropy(
                logits, labels, mask=mask, reduction="sum"
            ),
            "count": jnp.sum(mask),
            "counts": binary_confusion_counts(logits, labels, mask=mask, from_logits=True),
        }

    predict = jax.jit(lambda params, ids, lengths: tagger.apply(params, ids, lengths) > 0)
    return tagger, jax.jit(eval_stats), predict


class ModelRun(common.ModelRun):
    """One model's training run in ``<workdir>/<name>``."""

    experiment = "names"
    best = BEST

    def __init__(self, config: NamesConfig, name: str, vocab: Vocabulary, workdir: Path):
        self.vocab = vocab
        self.tagger: Tagger
        self.tagger, eval_step, self._predict = compiled(name, config.model, len(vocab))
        self._eval_step = common.parallel_eval_step(eval_step)  # split over the devices, if any
        super().__init__(config, name, workdir, self.tagger)

    # -------------------------------------------------------------- pieces
    def loss_fn(self, params, batch, *, key):
        ids, labels, lengths, unk_ids = batch
        key_words, key_model = jax.random.split(key)
        rate = self.config.train.word_dropout
        if rate > 0:  # read a random fraction of the words as unknown
            drop = jax.random.bernoulli(key_words, rate, ids.shape)
            ids = jnp.where(drop, unk_ids, ids)
        logits = self.tagger.apply(params, ids, lengths, key=key_model, train=True)
        if self.tagger.window is not None:  # the FC net predicts nothing beyond its window
            lengths = jnp.minimum(lengths, self.tagger.window)
        return masked_sigmoid_binary_cross_entropy(logits, labels, lengths=lengths)

    def loss_weight(self, batch):
        """What :meth:`loss_fn` is a mean over: the batch's scored tokens (data parallelism
        weighs each device's mean by it, so the combined loss is the whole batch's)."""
        lengths = batch[2]
        if self.tagger.window is not None:
            lengths = jnp.minimum(lengths, self.tagger.window)
        return jnp.sum(lengths)

    def evaluate(self, params, split: Split, scored=None) -> dict[str, float]:
        batch_size = self.config.report.eval_batch_size
        batches = (
            tuple(jnp.asarray(a) for a in b[:4])
            for b in eval_batches(split.ids, split.labels, scored, batch_size)
        )
        return evaluate(self._eval_step, params, batches, finalize=finalize_counts)

    def predict(self, params, ids: list[np.ndarray]) -> list[np.ndarray]:
        """Predicted 0/1 labels for each sentence (batches padded to a few bucket shapes)."""
        labels = [np.zeros(len(x), np.int32) for x in ids]
        out: list[np.ndarray] = [np.zeros(0, np.int32)] * len(ids)
        rows = common.row_bucket(len(ids), cap=self.config.report.eval_batch_size)
        for x, _, lengths, _, indices in eval_batches(ids, labels, None, rows):
            y = np.asarray(self._predict(params, jnp.asarray(x), jnp.asarray(lengths)))
            for row, i in enumerate(indices):
                if i >= 0:
                    out[i] = y[row, : lengths[row]].astype(np.int32)
        return out

    # -------------------------------------------------------------- training
    def train(self, data: Data) -> dict[str, Any]:
        c = self.config.train
        train = data.train

        def convert(b):
            ids, labels, unk_ids = (jnp.asarray(f) for f in b.fields)
            return ids, labels, jnp.asarray(b.lengths), unk_ids

        pad = data.vocab.pad_id
        epoch_batches = self.token_batches(
            train.ids, train.labels, train.unk_ids, pad_values=(pad, 0, pad), convert=convert
        )
        return self.fit(
            self.loss_fn,
            epoch_batches,
            num_train=len(train.ids),
            weight_fn=self.loss_weight,
            evaluate_fn=lambda params: self.evaluate(params, data.val),
            checkpoint_every=c.checkpoint_every,
            checkpoint_extra={"vocab": data.vocab.to_json_dict()},
        )


def finalize_counts(totals: dict[str, Any]) -> dict[str, float]:
    counts = ConfusionCounts(*totals["counts"])
    loss_sum = totals["loss_sum"]
    return {  # the token count (an int) divides as the loss's float type
        "loss": float(loss_sum / jnp.maximum(totals["count"], 1).astype(loss_sum.dtype)),
        "precision": float(counts.precision()),
        "recall": float(counts.recall()),
        "f1": float(counts.f1()),
        "tokens": int(totals["count"]),
        "positives": int(counts.tp + counts.fn),
    }


def score(preds: list[np.ndarray], labels: list[np.ndarray], scored=None) -> dict[str, float]:
    """Precision, recall, F1 of the name class from per-sentence 0/1 predictions."""
    if scored is None:
        scored = [np.ones(len(y), bool) for y in labels]
    p = np.concatenate([a[m] for a, m in zip(preds, scored, strict=True)] or [np.zeros(0)])
    y = np.concatenate([a[m] for a, m in zip(labels, scored, strict=True)] or [np.zeros(0)])
    c = binary_confusion_counts(jnp.asarray(p, jnp.int32), jnp.asarray(y, jnp.int32))
    return {
        "precision": float(c.precision()),
        "recall": float(c.recall()),
        "f1": float(c.f1()),
        "tokens": int(len(y)),
        "positives": int(y.sum()),
    }


def baseline_predict(words: list[list[str]]) -> list[np.ndarray]:
    """The non-learned baseline: 1 iff the word is capitalised and not sentence-initial."""
    return [
        np.array([int(t > 0 and w[:1].isupper()) for t, w in enumerate(ws)], np.int32)
        for ws in words
    ]


# ----------------------------------------------------------------------------- probes
def shift_probe_inputs(split: Split, k: int, window: int, max_shift: int):
    """Each short test sentence preceded by the ``k`` real tokens that precede it in the test text.

    Only sentences with at most ``window - max_shift`` tokens are used, so the shifted
    sentence still fits the fully connected network's window; only the sentence's own
    tokens are scored.
    """
    stream_ids = np.concatenate(split.ids)
    stream_labels = np.concatenate(split.labels)
    offsets = np.cumsum([0] + [len(x) for x in split.ids])
    ids, labels, scored = [], [], []
    for i, x in enumerate(split.ids):
        if len(x) > window - max_shift or len(x) == 0:
            continue
        pre = np.arange(offsets[i] - k, offsets[i]) % len(stream_ids)
        ids.append(np.concatenate([stream_ids[pre], x]).astype(np.int32))
        labels.append(np.concatenate([stream_labels[pre], split.labels[i]]).astype(np.int32))
        scored.append(np.concatenate([np.zeros(k, bool), np.ones(len(x), bool)]))
    return ids, labels, scored


def future_context_subsets(data: Data) -> dict[str, list[np.ndarray]]:
    """Token subsets of the test split where the label needs the words to the right.

    - ``first word``: sentence-initial tokens (capitalised anyway; a left-to-right reader
      has seen nothing else);
    - ``ambiguous word``: word forms seen in training both as a name and as not a name
      (``Apple``, ``May``, ``Bush``, ...);
    - ``unknown word``: out-of-vocabulary words (the model sees only ``<UNK>`` or its shape
      class, so the context must tell);
    - ``unknown first word``: both at once: a capitalised unknown word at ``t = 0`` looks the
      same to a left-to-right reader whether it is a name or not; only the words after it
      can tell.
    """
    seen: dict[str, set[int]] = {}
    for ws, ys in zip(data.train.words, data.train.labels, strict=True):
        for w, y in zip(ws, ys, strict=True):
            seen.setdefault(w, set()).add(int(y))
    ambiguous = {w for w, s in seen.items() if len(s) == 2}
    test = data.test
    return {
        "first word": [np.arange(len(x)) == 0 for x in test.ids],
        "ambiguous word": [np.array([w in ambiguous for w in ws], bool) for ws in test.words],
        "unknown word": [np.array([w not in data.vocab for w in ws], bool) for ws in test.words],
        "unknown first word": [
            np.array([t == 0 and w not in data.vocab for t, w in enumerate(ws)], bool)
            for ws in test.words
        ],
    }


# ----------------------------------------------------------------------------- commands
def read_config(workdir: Path) -> NamesConfig:
    """The configuration the last ``train`` stored in ``workdir``."""
    return PIECES.read_config(workdir)


def load_vocab(workdir: Path) -> Vocabulary:
    return common.load_vocab(workdir, "names")


def predict_command(run: Invocation) -> int:
    """Tags the words of each input text (arguments, or lines of stdin) with every model."""
    print(predict_texts(run.workdir, read_inputs(run.inputs)))
    return 0


def demo_command(run: Invocation) -> int:
    """``train`` (which prints the comparison) then ``predict`` on the formulation's examples."""
    train_command(run._replace(inputs=[]))
    print()
    print(predict_texts(run.workdir, list(run.inputs) or list(EXAMPLES)))
    return 0


def predict_texts(workdir: Path, texts: list[str]) -> str:
    config = read_config(workdir)
    vocab = load_vocab(workdir)
    tokens = [vocab.tokenize(t) for t in texts]
    ids = [encode_words(vocab, t) for t in tokens]
    outputs: dict[str, list[np.ndarray]] = {"baseline": baseline_predict(tokens)}
    make_run = functools.partial(ModelRun, config, vocab=vocab, workdir=workdir)
    for name, run, params in common.trained_runs(config.models, make_run):
        outputs[name] = run.predict(params, ids)
    width = max(len(n) for n in outputs)
    lines = []
    for i, text in enumerate(texts):
        lines.append(f"> {text}")
        for name, preds in outputs.items():
            tagged = " ".join(f"{w}/{int(y)}" for w, y in zip(tokens[i], preds[i], strict=True))
            lines.append(f"  {name:<{width}}  {tagged}")
            lines.append(f"  {'':<{width}}  names: {_bracket(tokens[i], preds[i])}")
    return "\n".join(lines)


def _bracket(words: list[str], labels: np.ndarray) -> str:
    out, span = [], []
    for w, y in zip(words, labels, strict=True):
        if y:
            span.append(w)
            continue
        if span:
            out.append("[" + " ".join(span) + "]")
            span = []
        out.append(w)
    if span:
        out.append("[" + " ".join(span) + "]")
    return " ".join(out)


def evaluate_all(config: NamesConfig, workdir: Path, data: Data) -> dict[str, Any]:
    """Test scores, parameter counts, training times and both probes for every trained model."""
    test = data.test
    window = config.model.fc_window
    in_window = [np.full(len(x), len(x) <= window) for x in test.ids]
    results: dict[str, Any] = {
        "config": common.config_to_dict(config),
        "data": {
            "train_sentences": len(data.train.ids),
            "val_sentences": len(data.val.ids),
            "test_sentences": len(test.ids),
            "test_tokens": int(sum(len(x) for x in test.ids)),
            "test_names": int(sum(int(y.sum()) for y in test.labels)),
            "vocab_size": len(data.vocab),
            "test_unk_fraction": float(np.mean(np.concatenate(test.ids) < data.vocab.num_specials)),
            "test_sentences_within_fc_window": int(sum(len(x) <= window for x in test.ids)),
        },
        "models": {},
        "shift_probe": {},
        "future_context_probe": {},
    }
    subsets = future_context_subsets(data)
    baseline = baseline_predict(test.words)
    results["models"]["baseline"] = {
        "layers": 0,
        "params": 0,
        "train_seconds": 0.0,
        "test": score(baseline, test.labels),
        "test_within_window": score(baseline, test.labels, in_window),
    }
    results["future_context_probe"]["baseline"] = {
        s: score(baseline, test.labels, m) for s, m in subsets.items()
    }
    shifts = config.report.probe_shifts
    shifted = {k: shift_probe_inputs(test, k, window, max(shifts, default=0)) for k in shifts}
    make_run = functools.partial(ModelRun, config, vocab=data.vocab, workdir=workdir)
    for name, run, params in common.trained_runs(config.models, make_run):
        t0 = time.perf_counter()
        train_info = run.train_info()
        preds = run.predict(params, test.ids)
        _, layers, bidirectional = MODEL_SPECS[name]
        results["models"][name] = {
            "layers": layers,
            "bidirectional": bidirectional,
            "params": run.num_params,
            "train_seconds": train_info.get("train_seconds"),
            "steps": train_info.get("steps"),
            "best_step": train_info.get("best_step"),
            "val": train_info.get("val"),
            "test": score(preds, test.labels),
            "test_within_window": score(preds, test.labels, in_window),
        }
        results["future_context_probe"][name] = {
            s: score(preds, test.labels, m) for s, m in subsets.items()
        }
        results["shift_probe"][name] = {}
        for k, (ids, labels, scored) in shifted.items():
            p = run.predict(params, ids)
            results["shift_probe"][name][str(k)] = score(p, labels, scored)
        results["models"][name]["eval_seconds"] = time.perf_counter() - t0
    common.write_results(
        workdir,
        results,
        format_results(results),
        [("comparison.png", lambda path: plot_comparison(results, workdir, path))],
    )
    return results


def plot_comparison(results: dict[str, Any], workdir: Path, out_path: Path) -> Path:
    """Validation F1 during training (every model) and the position-shift probe, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnn_jax.progress import read_metrics

    fig, (ax_val, ax_shift) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in results["models"]:
        if name == "baseline":
            ax_val.axhline(
                results["models"][name]["test"]["f1"],
                color="grey",
                ls="--",
                label="baseline (test)",
            )
            continue
        val = [r for r in read_metrics(workdir / name / "metrics.jsonl") if r["split"] == "val"]
        ax_val.plot([r["step"] for r in val], [r["f1"] for r in val], marker=".", label=name)
    ax_val.set(title="validation F1 (name class)", xlabel="step", ylim=(0, 1))
    ax_val.grid(alpha=0.3)
    ax_val.legend(fontsize=8)
    for name, per_k in results["shift_probe"].items():
        ks = sorted(per_k, key=int)
        ax_shift.plot([int(k) for k in ks], [per_k[k]["f1"] for k in ks], marker="o", label=name)
    ax_shift.set(title="position shift: test F1 vs k", xlabel="k (tokens prepended)", ylim=(0, 1))
    ax_shift.grid(alpha=0.3)
    ax_shift.legend(fontsize=8)
    return common.save_figure(fig, out_path)


def format_results(results: dict[str, Any]) -> str:
    """Markdown tables: the comparison, the shift probe, the future-context probe."""
    d = results["data"]
    window = results["config"]["model"]["fc_window"]
    lines = [
        f"Test split: {d['test_sentences']} sentences, {d['test_tokens']} tokens, "
        f"{d['test_names']} name tokens ({100 * d['test_unk_fraction']:.1f}% of test tokens are "
        f"out of vocabulary). Name class (NNP/NNPS), token level.",
        "",
        f"| model | layers | parameters | train time | val F1 | test precision | test recall "
        f"| **test F1** | test F1, sentences ≤ {window} tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["models"].items():
        val = r.get("val") or {}
        val_f1 = f"{val['f1']:.3f}" if "f1" in val else "-"
        t = r.get("train_seconds")
        lines.append(
            f"| {name} | {r['layers']} | {r['params']:,} | "
            f"{'-' if not t else f'{t:.0f} s'} | "
            f"{val_f1} | {r['test']['precision']:.3f} | "
            f"{r['test']['recall']:.3f} | **{r['test']['f1']:.3f}** | "
            f"{r['test_within_window']['f1']:.3f} |"
        )
    shift = results["shift_probe"]
    if shift:
        ks = list(next(iter(shift.values())).keys())
        n = next(iter(next(iter(shift.values())).values()))["tokens"]
        lines += [
            "",
            f"Position-shift probe (test F1 on the same {n} tokens of the sentences with at most "
            f"{window} - {max(int(k) for k in ks)} tokens, each preceded by the k real tokens "
            "that precede it in the test text):",
            "",
            *common.table_head(["model"] + [f"k = {k}" for k in ks]),
        ]
        for name, per_k in shift.items():
            lines.append(f"| {name} | " + " | ".join(f"{per_k[k]['f1']:.3f}" for k in ks) + " |")
    fut = results["future_context_probe"]
    if fut:
        subsets = list(next(iter(fut.values())).keys())
        first = next(iter(fut.values()))
        lines += [
            "",
            "Future-context probe (test F1 of the name class on tokens whose label needs the "
            "words to their right):",
            "",
            *common.table_head(
                ["model"]
                + [
                    f"{s} ({first[s]['tokens']} tokens, {first[s]['positives']} names)"
                    for s in subsets
                ]
            ),
        ]
        for name, per in fut.items():
            lines.append(f"| {name} | " + " | ".join(f"{per[s]['f1']:.3f}" for s in subsets) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the commands
PIECES = common.Pieces.of_models(
    "names",
    NamesConfig,
    load_data,
    lambda config, name, data, workdir: ModelRun(config, name, data.vocab, workdir),
    lambda *args: evaluate_all(*args),  # late-bound: tests replace it
    format_results,
)
#: ``train``: trains every model of ``config.models`` (each resumes), then evaluates;
#: ``eval``: evaluates the trained models of ``workdir`` (with its stored config).
train_command, eval_command = PIECES.train_command, PIECES.eval_command


EXPERIMENT = Experiment(
    "names",
    default_config,
    {
        "train": train_command,
        "eval": eval_command,
        "predict": predict_command,
        "demo": demo_command,
    },
    data_parallel=True,
)
