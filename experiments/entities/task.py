"""Data, training, evaluation, baselines and prediction for the entity-tagging experiment.

Run directory layout (``--workdir DIR``, see :mod:`experiments.common`)::

    DIR/run_config.json        the experiment configuration of the last ``train``
    DIR/vocab.json             the word vocabulary (case kept, with unknown-word shapes)
    DIR/chars.json             the character vocabulary of the training words
    DIR/<model>/               one run per tagger: config.json, checkpoints/, metrics.jsonl,
                               curves.png, train.json
    DIR/results.json, .md      entity P/R/F1 (overall, per type, right-context subsets) of
                               every tagger and baseline; the example sentences' tags
    DIR/f1.png                 test entity F1 per tagger, the baselines as lines

``summary --workdir OUT RUN_DIR ...`` reads the ``results.json`` of several runs (one per
seed) and writes ``OUT/results.{json,md}`` (mean ± sd) and ``OUT/summary.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.cli import Experiment, Invocation, read_inputs
from experiments.data import split_by_sentence
from experiments.entities.baselines import (
    BASELINES,
    fit_crf,
    fit_most_frequent,
    token_features,
)
from experiments.entities.config import MODEL_SPECS, EntitiesConfig, ModelConfig, default_config
from experiments.entities.data import ENTITY_TYPES, Tweet, load_tweets, parse_conll
from experiments.entities.metrics import (
    allowed_transitions,
    entity_scores,
    extract_entities,
    viterbi_bio,
)
from experiments.entities.models import Tagger, make_tagger
from rnn_jax.batching import iterate_batches
from rnn_jax.crf import crf_decode, crf_log_likelihood
from rnn_jax.losses import masked_softmax_cross_entropy
from rnn_jax.vocab import DEFAULT_SPECIALS, Vocabulary, tokenize

EXPERIMENT_NAME = "entities"
VOCAB_FILES = ("vocab.json", "chars.json")
BEST = common.Best("f1", "max")  # validation entity F1 picks the checkpoint, stops early

#: The formulation's two sentences: "Apple" is an organisation only because of the word after it.
EXAMPLES = (
    "Yesterday, Tom met Eliza in Paris.",
    "He met with Apple representatives today.",
)

#: ``O``, then ``B-`` and ``I-`` of every type: the ``C = 21`` classes of the softmax.
TAGS: tuple[str, ...] = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))
TAG_IDS = {tag: i for i, tag in enumerate(TAGS)}

UNK_SHAPES = ("<UNK-Cap>", "<UNK-num>")

#: The right-context subsets of the gold test entities (see :func:`context_subsets`).
SUBSETS = ("unseen first word", "ambiguous first word")


# ----------------------------------------------------------------------------- data
def unknown_id(vocab: Vocabulary, word: str) -> int:
    """The id of ``word`` read as unknown: its shape class if the vocabulary has them.

    An unknown word starting with a capital is ``<UNK-Cap>``, one holding a digit
    ``<UNK-num>``, anything else ``<UNK>``.
    """
    if UNK_SHAPES[0] in vocab.specials:  # specials come first: their index is their id
        if word[:1].isupper():
            return vocab.specials.index(UNK_SHAPES[0])
        if any(ch.isdigit() for ch in word):
            return vocab.specials.index(UNK_SHAPES[1])
    return vocab.unk_id


def encode_words(vocab: Vocabulary, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, unk_ids)``: each word's id (unknown words: their shape class) and the id it
    would have as an unknown word (what word dropout reads)."""
    unk = np.array([unknown_id(vocab, w) for w in words], np.int32)
    ids = np.asarray(vocab.encode(list(words)), np.int32)
    return np.where(ids == vocab.unk_id, unk, ids).astype(np.int32), unk


def encode_chars(chars: Vocabulary, words: Sequence[str], max_word_len: int) -> np.ndarray:
    """``(T, max_word_len)`` character ids of each word's first characters (0-padded)."""
    out = np.zeros((len(words), max_word_len), np.int32)
    for t, w in enumerate(words):
        ids = chars.encode(list(w[:max_word_len]))
        out[t, : len(ids)] = ids
    return out


def encode_tags(tags: Sequence[str], where: str = "tags") -> np.ndarray:
    """Class ids of BIO tags (:data:`TAGS`).

    Raises:
        ValueError: a tag outside :data:`TAGS` (another entity type).
    """
    try:
        return np.array([TAG_IDS[t] for t in tags], np.int32)
    except KeyError as err:
        raise ValueError(
            f"{where}: the tag {err.args[0]!r} is not one of the WNUT-16 tags {TAGS}"
        ) from None


@dataclasses.dataclass
class Split:
    words: list[list[str]]
    tags: list[list[str]]
    ids: list[np.ndarray]
    unk_ids: list[np.ndarray]
    chars: list[np.ndarray]
    feats: list[np.ndarray]
    tag_ids: list[np.ndarray]


@dataclasses.dataclass
class Data:
    vocab: Vocabulary
    chars: Vocabulary
    train: Split
    val: Split
    test: Split

    @property
    def vocabs(self) -> tuple[Vocabulary, Vocabulary]:
        return (self.vocab, self.chars)

    @property
    def num_train(self) -> int:
        return len(self.train.ids)

    def describe(self) -> str:
        return (
            f"{len(self.train.ids)} train / {len(self.val.ids)} validation / "
            f"{len(self.test.ids)} test tweets; vocabulary {len(self.vocab)} words, "
            f"{len(self.chars)} characters"
        )


def load_corpus(config: EntitiesConfig) -> list[Tweet]:
    """The WNUT-16 tweets (sha256-checked cache), or ``train.corpus_file`` (tests)."""
    if config.train.corpus_file is not None:
        path = Path(config.train.corpus_file)
        return parse_conll(path.read_text(encoding="utf-8"), source=str(path))
    return load_tweets(config.report.data_dir)


def make_split(tweets: Sequence[Tweet], vocab: Vocabulary, chars: Vocabulary, max_word_len: int):
    words = [list(w) for w, _ in tweets]
    tags = [list(t) for _, t in tweets]
    encoded = [encode_words(vocab, w) for w in words]
    return Split(
        words=words,
        tags=tags,
        ids=[e[0] for e in encoded],
        unk_ids=[e[1] for e in encoded],
        chars=[encode_chars(chars, w, max_word_len) for w in words],
        feats=[token_features(w) for w in words],
        tag_ids=[encode_tags(t, f"tweet {i}") for i, t in enumerate(tags)],
    )


def load_data(config: EntitiesConfig, vocabs: tuple[Vocabulary, ...] | None = None) -> Data:
    """The fixed 80/10/10 split by tweet, the vocabularies and the encodings.

    ``vocabs``: the stored ``(words, chars)`` vocabularies; ``None``: build them on the
    training tweets.
    """
    tweets = load_corpus(config)
    c = config.train
    parts = split_by_sentence(len(tweets), seed_or_key=c.split_seed, fractions=(0.8, 0.1, 0.1))
    train, val, test = ([tweets[i] for i in idx] for idx in parts)
    if vocabs is None:
        train_words = [w for w, _ in train]
        specials = DEFAULT_SPECIALS + (UNK_SHAPES if c.unk_shapes else ())
        vocab = Vocabulary.build(train_words, max_size=c.vocab_size, min_count=c.min_count,
                                 lower=c.lower_words, specials=specials)  # fmt: skip
        chars = Vocabulary.build([list("".join(w)) for w in train_words], max_size=None,
                                 lower=False, level="char")  # fmt: skip
    else:
        vocab, chars = vocabs
    return Data(
        vocab,
        chars,
        *(make_split(part, vocab, chars, c.max_word_len) for part in (train, val, test)),
    )


# ----------------------------------------------------------------------------- models & runs
def bio_constrained(crf_params):
    """The CRF's scores with BIO's forbidden moves (``I-X`` after anything but ``B-X``/``I-X``,
    or first) set to ``-inf``: its Viterbi path is then the best well-formed sequence."""
    start_ok, allowed = allowed_transitions(TAGS)
    transitions, start, end = crf_params
    minus_inf = jnp.asarray(-jnp.inf, transitions.dtype)
    return (
        jnp.where(jnp.asarray(allowed), transitions, minus_inf),
        jnp.where(jnp.asarray(start_ok), start, minus_inf),
        end,
    )


@functools.cache
def compiled(name: str, model: ModelConfig, vocab_size: int, num_chars: int, decode: str):
    """The tagger and its jitted prediction, built once per model, size and decoding.

    ``predict(params, ids, chars, feats, lengths)``: the tags' log-probabilities ``(B, T, C)``
    of a softmax tagger; the Viterbi tag ids ``(B, T)`` of a CRF tagger (BIO-constrained with
    ``decode="viterbi"``, the CRF's own best path with ``"argmax"``).
    """
    tagger = make_tagger(name, model, vocab_size, num_chars, len(TAGS))

    def predict(params, ids, chars, feats, lengths):
        logits = tagger.apply(params, ids, chars, lengths, feats=feats)
        if not tagger.crf:
            return jax.nn.log_softmax(logits, axis=-1)
        scores = bio_constrained(params.crf) if decode == "viterbi" else params.crf
        return crf_decode(logits, lengths, *scores)[0]

    return tagger, jax.jit(predict)


class ModelRun(common.ModelRun):
    """One tagger's training run in ``<workdir>/<name>``: keys, checkpoints (the best by
    validation entity F1) and their restore as :class:`experiments.common.ModelRun`."""

    experiment = EXPERIMENT_NAME
    best = BEST

    def __init__(self, config: EntitiesConfig, name: str, data_vocabs, workdir: Path):
        self.vocab, self.chars = data_vocabs
        self.tagger: Tagger
        self.tagger, self._predict = compiled(
            name, config.model, len(self.vocab), len(self.chars), config.report.decode
        )
        super().__init__(config, name, workdir, self.tagger)

    def loss_fn(self, params, batch, *, key):
        ids, tag_ids, unk_ids, chars, feats, lengths = batch
        key_words, key_model = jax.random.split(key)
        rate = self.config.train.word_dropout
        if rate > 0:  # read a random fraction of the words as unknown (their shape class)
            ids = jnp.where(jax.random.bernoulli(key_words, rate, ids.shape), unk_ids, ids)
        logits = self.tagger.apply(
            params, ids, chars, lengths, feats=feats, key=key_model, train=True
        )
        if not self.tagger.crf:
            return masked_softmax_cross_entropy(logits, tag_ids, lengths)
        # the CRF's negative log-likelihood of the tweets' tag sequences, per valid token (the
        # scale of the softmax taggers' loss, so the same learning rate and clipping apply)
        log_likelihood = crf_log_likelihood(logits, tag_ids, lengths, *params.crf)
        tokens = jnp.maximum(jnp.sum(lengths), 1).astype(logits.dtype)
        return -jnp.sum(log_likelihood) / tokens

    def predict(
        self, params, ids: list[np.ndarray], chars: list[np.ndarray], feats: list[np.ndarray]
    ) -> list[list[str]]:
        """The BIO tags of each tweet, in the order given: the best well-formed sequence
        (:func:`~experiments.entities.metrics.viterbi_bio` of a softmax tagger's
        log-probabilities; a CRF tagger's Viterbi path under BIO's constraints), or with
        ``decode="argmax"`` each token's most probable tag (a CRF tagger: its unconstrained
        Viterbi path)."""
        out: list[list[str]] = [[] for _ in ids]
        rows = common.row_bucket(len(ids), cap=self.config.report.eval_batch_size)
        pad = self.config.train.pad_to_multiple
        for b in iterate_batches(ids, chars, feats, batch_size=rows, key=None, shuffle=False,
                                 pad_to_multiple=pad):  # fmt: skip
            fill = rows - len(b.indices)  # fixed row count: few shapes reach jit
            x, c, f = (
                np.concatenate([a, np.zeros((fill,) + a.shape[1:], a.dtype)]) for a in b.fields
            )
            lengths = np.concatenate([b.lengths, np.zeros(fill, b.lengths.dtype)])
            y = np.asarray(self._predict(params, *(jnp.asarray(a) for a in (x, c, f, lengths))))
            for row, i in enumerate(b.indices):
                if self.tagger.crf:
                    out[i] = [TAGS[k] for k in y[row, : b.lengths[row]]]
                    continue
                log_probs = y[row, : b.lengths[row]]
                if self.config.report.decode == "viterbi":
                    out[i] = viterbi_bio(log_probs, TAGS)
                else:
                    out[i] = [TAGS[k] for k in np.argmax(log_probs, axis=-1)]
        return out

    def evaluate(self, params, split: Split) -> dict[str, float]:
        s = entity_scores(split.tags, self.predict(params, split.ids, split.chars, split.feats))
        return {k: float(s[k]) for k in ("precision", "recall", "f1")}

    def train(self, data: Data) -> dict[str, Any]:
        train = data.train

        epoch_batches = self.token_batches(
            train.ids,
            train.tag_ids,
            train.unk_ids,
            train.chars,
            train.feats,
            pad_values=(data.vocab.pad_id, 0, data.vocab.pad_id, data.chars.pad_id, 0.0),
            convert=lambda b: tuple(jnp.asarray(a) for a in (*b.fields, b.lengths)),
        )
        return self.fit(
            self.loss_fn,
            epoch_batches,
            num_train=len(train.ids),
            evaluate_fn=lambda params: self.evaluate(params, data.val),
            checkpoint_extra={"vocab": data.vocab.to_json_dict()},
            weight_fn=lambda batch: jnp.sum(batch[5]),  # the loss is a mean over valid tokens
        )


# ----------------------------------------------------------------------------- evaluation
def context_subsets(data: Data) -> dict[str, list[set[tuple[str, int, int]]]]:
    """Gold test entities whose type a left-to-right reader cannot settle at their first word.

    - ``unseen first word``: the entity's first word never occurs in the training tweets, so
      only its characters and its context can tell its type;
    - ``ambiguous first word``: the first word occurs in training with more than one tag
      (``O`` included: ``Apple`` the fruit and ``Apple`` the company).

    A unidirectional tagger must choose the ``B-`` tag of such an entity before it reads the
    words after it; a bidirectional one has read them.
    """
    seen: dict[str, set[str]] = {}
    for ws, ts in zip(data.train.words, data.train.tags, strict=True):
        for w, t in zip(ws, ts, strict=True):
            seen.setdefault(w, set()).add(t)
    keep = {
        "unseen first word": lambda w: w not in seen,
        "ambiguous first word": lambda w: len(seen.get(w, ())) > 1,
    }
    return {
        name: [
            {s for s in extract_entities(ts) if rule(ws[s[1]])}
            for ws, ts in zip(data.test.words, data.test.tags, strict=True)
        ]
        for name, rule in keep.items()
    }


def subset_recall(subset: list[set], predicted: list[list[str]]) -> dict[str, float]:
    """The fraction of the entities of ``subset`` (one set a tweet) predicted exactly."""
    gold = sum(len(s) for s in subset)
    found = sum(len(s & set(extract_entities(p))) for s, p in zip(subset, predicted, strict=True))
    return {"recall": found / gold if gold else 0.0, "gold": gold, "found": found}


def score_predictions(data: Data, subsets, test_pred: list[list[str]], val_pred=None):
    """Test entity scores (overall and per type), right-context recalls, validation F1."""
    out: dict[str, Any] = {"test": entity_scores(data.test.tags, test_pred)}
    out["subsets"] = {name: subset_recall(s, test_pred) for name, s in subsets.items()}
    if val_pred is not None:
        out["val_f1"] = float(entity_scores(data.val.tags, val_pred)["f1"])
    return out


def tag_line(words: Sequence[str], tags: Sequence[str]) -> str:
    """``Tom/B-person met/O ...``.

    Example:
        >>> tag_line(["Tom", "met"], ["B-person", "O"])
        'Tom/B-person met/O'
    """
    return " ".join(f"{w}/{t}" for w, t in zip(words, tags, strict=True))


def evaluate_all(config: EntitiesConfig, workdir: Path, data: Data) -> dict[str, Any]:
    """Scores of every trained tagger and baseline; writes ``results.{json,md}`` and a PNG."""
    subsets = context_subsets(data)
    examples = [tokenize(text) for text in EXAMPLES]
    results: dict[str, Any] = {
        "config": common.config_to_dict(config),
        "data": {
            "train": len(data.train.ids),
            "val": len(data.val.ids),
            "test": len(data.test.ids),
            "test_tokens": int(sum(len(x) for x in data.test.ids)),
            "test_entities": int(sum(len(extract_entities(t)) for t in data.test.tags)),
            "vocab_size": len(data.vocab),
            "num_chars": len(data.chars),
            "test_unknown_fraction": float(
                np.mean(np.concatenate(data.test.ids) < data.vocab.num_specials)
            ),
            "subsets": {name: sum(len(s) for s in sets) for name, sets in subsets.items()},
        },
        "models": {},
        "baselines": {},
        "examples": {"tokens": examples, "tags": {}},
    }
    if config.report.baselines:
        train = (data.train.words, data.train.tags)
        for name in BASELINES:
            t0 = time.perf_counter()
            if name == "most_frequent":
                predict, info = fit_most_frequent(*train), {}
            else:
                predict, info = fit_crf(train, (data.val.words, data.val.tags))
            seconds = time.perf_counter() - t0
            results["baselines"][name] = {
                **info,
                "train_seconds": seconds,
                **score_predictions(
                    data, subsets, predict(data.test.words), predict(data.val.words)
                ),  # fmt: skip
            }
            results["examples"]["tags"][name] = predict(examples)
    make_run = functools.partial(ModelRun, config, data_vocabs=data.vocabs, workdir=workdir)
    for name, run, params in common.trained_runs(config.models, make_run):
        info = run.train_info()
        spec = MODEL_SPECS[name]
        results["models"][name] = {
            "cell": spec.cell,
            "bidirectional": spec.bidirectional,
            "char_features": spec.chars,
            "word_features": spec.features,
            "crf": spec.crf,
            "params": run.num_params,
            "train_seconds": info.get("train_seconds"),
            "steps": info.get("steps"),
            "best_step": info.get("best_step"),
            **score_predictions(
                data,
                subsets,
                run.predict(params, data.test.ids, data.test.chars, data.test.feats),
                run.predict(params, data.val.ids, data.val.chars, data.val.feats),
            ),  # fmt: skip
        }
        ids = [encode_words(data.vocab, ws)[0] for ws in examples]
        chars_ = [encode_chars(data.chars, ws, config.train.max_word_len) for ws in examples]
        feats = [token_features(ws) for ws in examples]
        results["examples"]["tags"][name] = run.predict(params, ids, chars_, feats)
    common.write_results(
        workdir,
        results,
        format_results(results),
        [("f1.png", lambda path: plot_f1([results], path))],
    )
    return results


def _rows(results: dict[str, Any]):
    yield from ((n, r, True) for n, r in results["models"].items())
    yield from ((n, r, False) for n, r in results["baselines"].items())


def format_results(results: dict[str, Any]) -> str:
    """Markdown: the comparison, F1 per type, the right-context recalls, the examples."""
    d = results["data"]
    lines = [
        f"WNUT-16 tweets: {d['train']} train / {d['val']} validation / {d['test']} test "
        f"({d['test_tokens']} tokens, {d['test_entities']} entities; "
        f"{100 * d['test_unknown_fraction']:.1f}% of test tokens are out of vocabulary). "
        "Entity level, exact span and type.",
        "",
        *common.table_head(
            ["model", "params", "train time", "val F1", "test P", "test R", "**test F1**"]
            + [f"R {s} ({d['subsets'][s]})" for s in SUBSETS]
        ),
    ]
    for name, r, is_model in _rows(results):
        t, test = r.get("train_seconds"), r["test"]
        params = f"{r['params']:,}" if is_model else "-"
        lines.append(
            f"| {name} | {params} | "
            f"{f'{t:.0f} s' if t is not None else '-'} | {r['val_f1']:.3f} | "
            f"{test['precision']:.3f} | {test['recall']:.3f} | **{test['f1']:.3f}** | "
            + " | ".join(f"{r['subsets'][s]['recall']:.3f}" for s in SUBSETS)
            + " |"
        )
    types = sorted({k for _, r, _ in _rows(results) for k in r["test"]["per_type"]})
    gold = {k: 0 for k in types}
    for _, r, _ in _rows(results):
        for k, v in r["test"]["per_type"].items():
            gold[k] = v["gold"]
    lines += [
        "",
        "Test entity F1 per type (gold entities in brackets):",
        "",
        *common.table_head(["model"] + [f"{k} ({gold[k]})" for k in types]),
    ]
    for name, r, _ in _rows(results):
        per = r["test"]["per_type"]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{per[k]['f1']:.2f}" if k in per else "-" for k in types)
            + " |"
        )
    ex = results["examples"]
    if ex["tags"]:
        lines += ["", "The formulation's sentences:", "", "```"]
        width = max(len(n) for n in ex["tags"])
        for i, tokens in enumerate(ex["tokens"]):
            for name, tags in ex["tags"].items():
                lines.append(f"{name:<{width}}  {tag_line(tokens, tags[i])}")
            lines.append("")
        lines[-1] = "```"
    return "\n".join(lines)


# ----------------------------------------------------------------------------- summaries
def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd over runs (seeds) of every tagger's and baseline's scores.

    Example:
        >>> r = lambda f1: {"models": {"m": {"val_f1": f1, "train_seconds": 10.0,
        ...     "test": {"precision": f1, "recall": f1, "f1": f1, "per_type": {}},
        ...     "subsets": {"s": {"recall": 0.5}}}}, "baselines": {}}
        >>> s = summarize([r(0.3), r(0.4), r(0.5)])
        >>> [round(x, 3) for x in s["models"]["m"]["f1"]], s["models"]["m"]["runs"]
        ([0.4, 0.1], 3)
    """

    def entry(rs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"val_f1": common.mean_sd([x["val_f1"] for x in rs])}
        for key in ("precision", "recall", "f1"):
            out[key] = common.mean_sd([x["test"][key] for x in rs])
        out["subsets"] = {
            s: common.mean_sd([x["subsets"][s]["recall"] for x in rs]) for s in rs[0]["subsets"]
        }
        types = sorted({k for x in rs for k in x["test"]["per_type"]})
        out["per_type"] = {
            k: common.mean_sd([x["test"]["per_type"].get(k, {"f1": 0.0})["f1"] for x in rs])
            for k in types
        }
        if rs[0].get("train_seconds") is not None:
            out["train_seconds"] = common.mean_sd([x["train_seconds"] for x in rs])
        return out

    return common.summarize_runs(runs, entry)


def format_summary(summary: dict[str, Any]) -> str:
    """The mean ± sd tables of :func:`summarize`."""

    def ms(v, digits=3):
        return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"

    rows = [(n, e) for section in ("models", "baselines") for n, e in summary[section].items()]
    subsets = list(rows[0][1]["subsets"])
    lines = [
        *common.table_head(
            ["model", "runs", "train time", "val F1", "test P", "test R", "**test F1**"]
            + [f"R {s}" for s in subsets]
        ),
    ]
    for name, e in rows:
        t = e.get("train_seconds")
        lines.append(
            f"| {name} | {e['runs']} | {f'{t[0]:.0f} ± {t[1]:.0f} s' if t else '-'} | "
            f"{ms(e['val_f1'])} | {ms(e['precision'])} | {ms(e['recall'])} | "
            f"**{ms(e['f1'])}** | " + " | ".join(ms(e["subsets"][s]) for s in subsets) + " |"
        )
    types = sorted({k for _, e in rows for k in e["per_type"]})
    lines += [
        "",
        *common.table_head(["model", *types]),
    ]
    for name, e in rows:
        lines.append(
            f"| {name} | "
            + " | ".join(ms(e["per_type"][k], 2) if k in e["per_type"] else "-" for k in types)
            + " |"
        )
    return "\n".join(lines)


def plot_f1(runs: list[dict[str, Any]], out_path: Path) -> Path:
    """Test entity F1 (mean ± sd over ``runs``) and the right-context recalls per tagger."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(runs)
    names = list(summary["models"])
    fig, (ax, ax_sub) = plt.subplots(
        1, 2, figsize=(max(9.0, 1.1 * len(names) + 5.0), 4.2), width_ratios=(3, 2)
    )
    x = np.arange(len(names))
    means = [summary["models"][n]["f1"][0] for n in names]
    sds = [summary["models"][n]["f1"][1] for n in names]
    colors = ["tab:orange" if MODEL_SPECS[n].bidirectional else "tab:blue" for n in names]
    ax.bar(x, means, yerr=sds, capsize=4, color=colors, alpha=0.85)
    for (name, e), ls in zip(summary["baselines"].items(), ("--", "-."), strict=False):
        ax.axhline(e["f1"][0], color="grey", ls=ls, label=f"{name} baseline")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylabel="test entity F1 (exact span and type)", ylim=(0, max(means + [0.1]) + 0.15),
           title="WNUT-16: unidirectional (blue) vs bidirectional (orange)")  # fmt: skip
    ax.grid(axis="y", alpha=0.3)
    if summary["baselines"]:
        ax.legend(fontsize=8, loc="upper left")
    rows = {**summary["models"], **summary["baselines"]}
    subsets = list(next(iter(rows.values()))["subsets"])
    width = 0.8 / max(1, len(subsets))
    all_names = list(rows)
    for k, s in enumerate(subsets):
        ax_sub.bar(np.arange(len(all_names)) + k * width, [rows[n]["subsets"][s][0] for n in all_names],
                   width, yerr=[rows[n]["subsets"][s][1] for n in all_names], capsize=2,
                   label=s)  # fmt: skip
    ax_sub.set_xticks(np.arange(len(all_names)) + width * (len(subsets) - 1) / 2, all_names,
                      rotation=30, ha="right")  # fmt: skip
    ax_sub.set(ylabel="recall", ylim=(0, 1), title="entities that need the right context")
    ax_sub.grid(axis="y", alpha=0.3)
    ax_sub.legend(fontsize=8)
    return common.save_figure(fig, out_path)


# ----------------------------------------------------------------------------- commands
PIECES = common.Pieces.of_models(
    EXPERIMENT_NAME,
    EntitiesConfig,
    load_data,
    lambda config, name, data, workdir: ModelRun(config, name, data.vocabs, workdir),
    lambda *args: evaluate_all(*args),  # late-bound: tests replace it
    format_results,
    VOCAB_FILES,
)
#: ``train``: trains every tagger of ``config.models`` (each resumes), then evaluates;
#: ``eval``: evaluates the trained taggers of ``workdir`` (with its stored config).
train_command, eval_command = PIECES.train_command, PIECES.eval_command


def best_model(config: EntitiesConfig, workdir: Path) -> str:
    """The trained tagger with the best validation entity F1 (from its ``train.json``)."""
    return common.best_trained(
        workdir, config.models, "f1", experiment=EXPERIMENT_NAME, what="tagger"
    )


def predict_texts(workdir: Path, texts: list[str], model: str | None = None) -> list[str]:
    """``token/TAG token/TAG ...`` for each text, from ``model`` (default: :func:`best_model`)."""
    config = PIECES.read_config(workdir)
    vocabs = common.load_vocabs(workdir, EXPERIMENT_NAME, VOCAB_FILES)
    name = model or best_model(config, workdir)
    run = ModelRun(config, name, vocabs, workdir)
    params = common.trained_params(run)
    tokens = [tokenize(t) for t in texts]  # case kept (the char-RNN reads it)
    ids = [encode_words(vocabs[0], ws)[0] for ws in tokens]
    chars = [encode_chars(vocabs[1], ws, config.train.max_word_len) for ws in tokens]
    feats = [token_features(ws) for ws in tokens]
    predicted = run.predict(params, ids, chars, feats)
    return [tag_line(ws, tags) for ws, tags in zip(tokens, predicted, strict=True)]


def predict_command(run: Invocation) -> int:
    """Tags each input text (arguments, or lines of stdin) with the best tagger."""
    texts = read_inputs(run.inputs)
    if not texts or any(not t.strip() for t in texts):
        raise ValueError(f"`predict` needs non-empty texts, got {texts!r}")
    for line in predict_texts(run.workdir, texts):
        print(line)
    return 0


def summary_command(run: Invocation) -> int:
    """``summary --workdir OUT RUN_DIR ...``: mean ± sd over the runs' ``results.json``."""
    return common.summary_command(run, summarize, format_summary, plots=[("summary.png", plot_f1)])


EXPERIMENT = Experiment(
    EXPERIMENT_NAME,
    default_config,
    {
        "train": train_command,
        "eval": eval_command,
        "predict": predict_command,
        "summary": summary_command,
    },
    data_parallel=True,
)
