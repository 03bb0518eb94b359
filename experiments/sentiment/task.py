"""Data, training, evaluation, baselines and prediction for the sentiment experiment.

Run directory layout (``--workdir DIR``, see :mod:`experiments.common`)::

    DIR/run_config.json        the experiment configuration of the last ``train``
    DIR/vocab.json             the vocabulary (lower-cased words of the training split)
    DIR/<model>/               one run per model: config.json, checkpoints/, metrics.jsonl,
                               curves.png, train.json
    DIR/results.json, .md      test accuracy (movies), cross-domain accuracy, stars, baselines
    DIR/accuracy.png           test accuracy per model and baseline

``summary --workdir OUT RUN_DIR ...`` reads the ``results.json`` of several runs (one per
seed; ``TAG=DIR`` for runs of another configuration) and writes ``OUT/results.{json,md}``
(mean ± sd) and ``OUT/summary.png``.
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
from experiments.cli import Experiment, Invocation, UsageError, read_inputs
from experiments.sentiment.baselines import fit_baselines
from experiments.sentiment.config import (
    CV_FOLDS,
    MODEL_SPECS,
    WIDE_FIELDS,
    ModelConfig,
    SentimentConfig,
    default_config,
)
from experiments.sentiment.data import (
    FILES,
    SentimentFetchError,
    Snippets,
    cv_split,
    load_snippets,
    parse_snippets,
    split_indices,
    stars_from_score,
)
from experiments.sentiment.models import SCORE_SCALE, Classifier, make_classifier, with_idf
from experiments.sentiment.pretrain import pretrained_layers, with_layers
from rnn_jax.batching import pad_batch
from rnn_jax.losses import masked_softmax_cross_entropy
from rnn_jax.vocab import Vocabulary

EXPERIMENT_NAME = "sentiment"
BEST = common.Best("accuracy", "max")  # validation accuracy picks the checkpoint, stops early
SCORE_BEST = common.Best("loss", "min")  # _score models: the validation squared error


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class Split:
    snippets: Snippets
    ids: list[np.ndarray]

    @property
    def labels(self) -> np.ndarray:
        return self.snippets.labels


@dataclasses.dataclass
class Data(common.SplitData):
    """The vocabulary and the train, validation and test splits (:class:`Split`)."""

    cross: dict[str, Split] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        cross = ", ".join(f"{d} {len(s.ids)}" for d, s in self.cross.items())
        return (
            f"{len(self.train.ids)} train / {len(self.val.ids)} validation / "
            f"{len(self.test.ids)} test movie snippets; cross-domain: {cross or 'none'}; "
            f"vocabulary {len(self.vocab)} tokens"
        )


def load_domain(config: SentimentConfig, domain: str) -> Snippets | None:
    """A domain's snippets: the sha256-checked cache, or ``train.corpus_dir`` (tests).

    From ``corpus_dir`` a missing cross-domain file gives ``None`` (skipped).
    """
    if config.train.corpus_dir is None:
        return load_snippets(domain, config.report.data_dir)
    path = Path(config.train.corpus_dir) / FILES[domain][0]
    if not path.is_file():
        if domain == "movies":
            raise SentimentFetchError(f"{path} does not exist (--config.corpus_dir)")
        return None
    return parse_snippets(path.read_text(encoding="utf-8"), source=str(path))


def tokenize(vocab: Vocabulary, text: str) -> list[str]:
    return vocab.tokenize(text)


def encode(vocab: Vocabulary, snippets: Snippets) -> list[np.ndarray]:
    return [np.asarray(vocab.encode(vocab.tokenize(t)), np.int32) for t in snippets.texts]


def load_data(config: SentimentConfig, vocabs: tuple[Vocabulary] | None = None) -> Data:
    """The movie snippets' fixed 80/10/10 split (or cross-validation fold ``train.fold``),
    the vocabulary built on its training part, the cross domains."""
    movies = load_domain(config, "movies")
    assert movies is not None
    c = config.train
    if c.fold is None:
        indices = split_indices(len(movies), seed=c.split_seed)
    else:
        indices = cv_split(len(movies), seed=c.split_seed, fold=c.fold, k=CV_FOLDS)
    parts = [movies.subset(i) for i in indices]
    if vocabs is None:
        vocab = Vocabulary.build(
            parts[0].texts, max_size=config.train.vocab_size, lower=True, level="word"
        )
    else:
        vocab = vocabs[0]
    train, val, test = (Split(p, encode(vocab, p)) for p in parts)
    cross = {}
    for domain in config.report.cross_domains:
        snippets = load_domain(config, domain)
        if snippets is not None:
            cross[domain] = Split(snippets, encode(vocab, snippets))
    return Data(vocab, train, val, test, cross)


def eval_batches(ids: list[np.ndarray], rows: int, max_len: int):
    """Fixed-shape batches ``(ids, lengths, indices)`` in ascending length order.

    ``T`` is a power of two (>= 16, at most ``max_len``) and every batch has exactly
    ``rows`` rows (filler rows have length 0 and index -1), so evaluation compiles only a
    handful of shapes.
    """
    order = np.argsort([len(x) for x in ids], kind="stable")
    for start in range(0, len(order), rows):
        idx = order[start : start + rows]
        T = common.row_bucket(max(1, max(len(ids[i]) for i in idx)), max_len, smallest=16)
        fill = rows - len(idx)
        seqs = [ids[i][:T] for i in idx] + [np.zeros(0, np.int32)] * fill
        x, lengths = pad_batch(seqs, max_len=T)
        yield x, lengths, np.concatenate([idx, -np.ones(fill, np.int64)])


# ----------------------------------------------------------------------------- models & runs
@functools.cache
def compiled(name: str, model: ModelConfig, vocab_size: int, unk_id: int):
    """The model and its jitted outputs (:meth:`ModelRun.predict`), built once per model and size."""
    classifier = make_classifier(name, model, vocab_size, unk_id)
    if MODEL_SPECS[name].target == "score":
        out = lambda p, ids, lengths: SCORE_SCALE * classifier.apply(p, ids, lengths)[:, 0]  # noqa: E731
    else:
        out = lambda p, ids, lengths: jax.nn.softmax(classifier.apply(p, ids, lengths))[:, 1]  # noqa: E731
    return classifier, jax.jit(out)


def accuracy(proba: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``(proba > 0.5) == labels``.

    Example:
        >>> accuracy(np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0]))
        0.6666666666666666
    """
    return float(np.mean((np.asarray(proba) > 0.5) == np.asarray(labels, bool)))


def stars_from_proba(proba) -> np.ndarray:
    """Stars from ``P(positive)``: five equal bins of ``[0, 1]`` (the models are not trained
    on the scores, so this is a mapping of the probability, not a rating model).

    Example:
        >>> stars_from_proba([0.0, 0.19, 0.5, 0.8, 1.0]).tolist()
        [1, 1, 3, 5, 5]
    """
    edges = np.array([0.2, 0.4, 0.6, 0.8])
    return (np.searchsorted(edges, np.asarray(proba, np.float64), side="right") + 1).astype(
        np.int32
    )


def decide(outputs, target: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """``(positive, stars)`` from a model's or baseline's outputs.

    ``target="label"``: the outputs are ``P(positive)``: positive iff ``> 0.5``, stars
    :func:`stars_from_proba`; ``"score"``: the outputs are ratings in ``[-4, 4]``: positive
    iff ``> 0`` (as the labels), stars their bin (:func:`stars_from_score`, as the truth).

    Example:
        >>> [a.tolist() for a in decide([0.9, 0.3], "label")]
        [[True, False], [5, 2]]
        >>> [a.tolist() for a in decide([2.5, 0.0, -1.0], "score")]
        [[True, False, False], [5, 3, 2]]
    """
    outputs = np.asarray(outputs, np.float64)
    if target == "score":
        return outputs > 0, stars_from_score(outputs)
    return outputs > 0.5, stars_from_proba(outputs)


def split_scores(outputs, split: Split, target: str = "label") -> dict[str, float]:
    """Accuracy of the sign, star accuracy and star mean absolute error on ``split``."""
    positive, stars = decide(outputs, target)
    true = stars_from_score(split.snippets.scores)
    return {
        "accuracy": float(np.mean(positive == split.labels.astype(bool))),
        "star_accuracy": float(np.mean(stars == true)),
        "star_mae": float(np.mean(np.abs(stars - true))),
    }


class ModelRun(common.ModelRun):
    """One model's training run in ``<workdir>/<name>``."""

    experiment = EXPERIMENT_NAME

    def __init__(self, config: SentimentConfig, name: str, vocab: Vocabulary, workdir: Path):
        self.vocab = vocab
        self.spec = MODEL_SPECS[name]
        self.target = self.spec.target
        self.best = SCORE_BEST if self.target == "score" else BEST
        self.classifier: Classifier
        self.classifier, self._outputs = compiled(name, config.model, len(vocab), vocab.unk_id)
        super().__init__(config, name, workdir, self.classifier)

    def checkpoint_config(self) -> dict[str, Any]:
        """``train.fold`` is left out for the fixed split (``None``), so that the checkpoints of
        runs made before cross-validation existed still open; the same for the ``wide_`` fields of
        the model section in the other models' checkpoints."""
        config = super().checkpoint_config()
        if config["train"]["fold"] is None:
            del config["train"]["fold"]
        if not self.spec.wide:  # the wide_ fields tie only the wide_ models (WIDE_FIELDS)
            for field in WIDE_FIELDS:
                del config["model"][field]
        elif config["model"]["wide_weight"] == "count":  # runs made before it existed open
            del config["model"]["wide_weight"]
        return config

    def loss_fn(self, params, batch, *, key):
        """Softmax cross-entropy of the label, or the squared error of the scaled rating."""
        ids, lengths, targets = batch
        outputs = self.classifier.apply(params, ids, lengths, key=key, train=True)
        if self.target == "score":
            return jnp.mean((outputs[:, 0] - targets) ** 2)
        return masked_softmax_cross_entropy(outputs, targets)

    def predict(self, params, ids: list[np.ndarray]) -> np.ndarray:
        """``P(positive)`` (or, for a ``_score`` model, the rating) of each snippet, in order."""
        out = np.zeros(len(ids))
        rows = common.row_bucket(len(ids), cap=self.config.report.eval_batch_size)
        for x, lengths, indices in eval_batches(ids, rows, self.config.train.max_len):
            p = np.asarray(self._outputs(params, jnp.asarray(x), jnp.asarray(lengths)))
            keep = indices >= 0
            out[indices[keep]] = p[keep]
        return out

    def evaluate(self, params, split: Split) -> dict[str, float]:
        """Validation metrics; ``loss``: the negative log-likelihood of the label, or the
        squared error of the rating (``_score``)."""
        p = self.predict(params, split.ids)
        scores = split_scores(p, split, self.target)
        if self.target == "score":
            return {**scores, "loss": float(np.mean((p - split.snippets.scores) ** 2))}
        y = split.labels
        nll = -np.mean(np.log(np.clip(np.where(y == 1, p, 1 - p), 1e-12, 1.0)))
        return {**scores, "loss": float(nll)}

    def language_models(self, data: Data):
        """The forward and backward language models' layers (trained once per run directory)."""
        c = self.config.train
        if c.lm_file and not Path(c.lm_file).is_file():
            raise FileNotFoundError(
                f"--config.lm_file {c.lm_file} does not exist: it is the language_models.npz "
                "a training run of a *_lm model writes into its run directory."
            )
        corpus = list(data.train.ids)  # the movie training texts, without their labels
        for domain in ("amazon", "nyt", "tweets"):
            snippets = load_domain(self.config, domain)
            if snippets is not None:
                corpus += encode(data.vocab, snippets)
        return pretrained_layers(
            Path(c.lm_file) if c.lm_file else self.workdir / "language_models.npz",
            corpus,
            key=jax.random.fold_in(jax.random.key(c.seed), 0x4C4D),
            vocab_size=len(data.vocab),
            hidden_size=self.config.model.hidden_size,
            num_targets=min(c.lm_targets, len(data.vocab)),
            unk_id=data.vocab.unk_id,
            pad_id=data.vocab.pad_id,
            num_epochs=c.lm_epochs,
            batch_size=c.batch_size,
            learning_rate=c.lm_learning_rate,
            max_len=c.max_len,
        )

    def train(self, data: Data) -> dict[str, Any]:
        train = data.train
        if self.target == "score":
            targets = (train.snippets.scores / SCORE_SCALE).astype(np.float32)
        else:
            targets = train.labels
        epoch_batches = self.token_batches(
            train.ids,
            pad_values=data.vocab.pad_id,
            extras=[targets],
            convert=lambda b: tuple(map(jnp.asarray, (b.fields[0], b.lengths, b.extras[0]))),
        )
        params = self.params0
        if self.spec.pretrained:
            layers, bi = self.language_models(data), self.spec.bidirectional
            if self.spec.wide:  # {"deep": the RNN's parameters, "wide": the linear term's}
                params = {**params, "deep": with_layers(params["deep"], layers, bi)}
            else:
                params = with_layers(params, layers, bi)
        if self.spec.wide and self.config.model.wide_weight == "idf":
            params = with_idf(params, [x[: self.config.train.max_len] for x in train.ids])
        return self.fit(
            self.loss_fn,
            epoch_batches,
            num_train=len(train.ids),
            params=params,
            evaluate_fn=lambda params: self.evaluate(params, data.val),
            checkpoint_extra={"vocab": data.vocab.to_json_dict()},
        )


# ----------------------------------------------------------------------------- evaluation
def score_all(outputs_of, data: Data, target: str = "label") -> dict[str, Any]:
    """Accuracy on every split and domain, and the star scores on the movie test split.

    ``outputs_of(split)``: ``P(positive)`` of each snippet of the split, or its predicted
    rating for ``target="score"`` (see :func:`decide`).
    """
    test = split_scores(outputs_of(data.test), data.test, target)
    return {
        "target": target,
        "val": split_scores(outputs_of(data.val), data.val, target)["accuracy"],
        "test": test["accuracy"],
        "star_accuracy": test["star_accuracy"],
        "star_mae": test["star_mae"],
        "cross": {
            d: split_scores(outputs_of(s), s, target)["accuracy"] for d, s in data.cross.items()
        },  # fmt: skip
    }


def describe_data(data: Data, config: SentimentConfig) -> dict[str, Any]:
    """The sizes of the splits and domains, as the results report them."""
    return {
        "train": len(data.train.ids),
        "val": len(data.val.ids),
        "test": len(data.test.ids),
        "fold": config.train.fold,
        "test_positive_fraction": float(np.mean(data.test.labels)),
        "vocab_size": len(data.vocab),
        "test_unk_fraction": float(np.mean(np.concatenate(data.test.ids) == data.vocab.unk_id)),
        "cross": {d: len(s.ids) for d, s in data.cross.items()},
    }


def evaluate_all(config: SentimentConfig, workdir: Path, data: Data) -> dict[str, Any]:
    """Scores of every trained model and every baseline; writes ``results.{json,md}``."""
    results: dict[str, Any] = {
        "config": common.config_to_dict(config),
        "data": describe_data(data, config),
        "models": {},
        "baselines": {},
    }
    if config.report.baselines:
        t0 = time.perf_counter()
        predictors, info = fit_baselines(
            (data.train.snippets.texts, data.train.labels),
            (data.val.snippets.texts, data.val.labels),
            scores=(data.train.snippets.scores, data.val.snippets.scores),
        )
        for name in predictors:
            target = info[name].get("target", "label")
            outputs_of = lambda s, f=predictors[name]: f(s.snippets.texts)  # noqa: E731
            results["baselines"][name] = {**info[name], **score_all(outputs_of, data, target)}
        results["baselines_seconds"] = time.perf_counter() - t0
    make_run = functools.partial(ModelRun, config, vocab=data.vocab, workdir=workdir)
    for name, run, params in common.trained_runs(config.models, make_run):
        info = run.train_info()
        spec = MODEL_SPECS[name]
        results["models"][name] = {
            "cell": spec.cell,
            "layers": spec.num_layers,
            "bidirectional": spec.bidirectional,
            "pool": spec.pool,
            "pretrained": spec.pretrained,
            "params": run.num_params,
            "train_seconds": info.get("train_seconds"),
            "steps": info.get("steps"),
            "best_step": info.get("best_step"),
            **score_all(lambda s, r=run, p=params: r.predict(p, s.ids), data, spec.target),
        }
    common.write_results(
        workdir,
        results,
        format_results(results),
        [("accuracy.png", lambda path: plot_accuracy([results], path))],
    )
    return results


def format_results(results: dict[str, Any]) -> str:
    """A Markdown table: every model and baseline, movie test accuracy, stars, cross-domain."""
    d = results["data"]
    domains = list(d["cross"])
    fold = d.get("fold")
    split = "fixed split" if fold is None else f"cross-validation fold {fold}"
    lines = [
        f"Movie snippets ({split}): {d['train']} train / {d['val']} validation / {d['test']} "
        f"test ({100 * d['test_positive_fraction']:.1f}% positive); vocabulary "
        f"{d['vocab_size']} tokens ({100 * d['test_unk_fraction']:.1f}% of test tokens are "
        "<UNK>). Stars: the `_score` models and `tfidf_ridge` regress the rating (stars = its "
        "five bins of [-4, 4]); the others map P(positive) to five equal bins of [0, 1].",
        "",
        *common.table_head(
            ["model", "params", "train time", "val acc", "**test acc**", "star acc", "star MAE"]
            + [f"{x} acc" for x in domains]
        ),
    ]
    rows = [(n, r, True) for n, r in results["models"].items()]
    rows += [(n, r, False) for n, r in results["baselines"].items()]
    for name, r, is_model in rows:
        t = r.get("train_seconds")
        params = f"{r['params']:,}" if is_model else "-"
        time_ = f"{t:.0f} s" if t else "-"
        lines.append(
            f"| {name} | {params} | {time_} | {r['val']:.3f} | **{r['test']:.3f}** | "
            f"{r['star_accuracy']:.3f} | {r['star_mae']:.3f} |"
            + "".join(f" {r['cross'][x]:.3f} |" for x in domains)
        )
    return "\n".join(lines)


#: The scores :func:`summarize` gives as mean ± sd (and the cross-domain accuracies).
SUMMARY_KEYS = ("val", "test", "star_accuracy", "star_mae")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean, sd = common.mean_sd(values)
    return mean, sd


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd over runs (seeds) of every model's and baseline's scores.

    A row is summarised over the runs that have it (``runs`` says how many).

    Example:
        >>> r = lambda acc: {"models": {"m": {"val": acc, "test": acc, "star_accuracy": 0.4,
        ...     "star_mae": 0.8, "cross": {}, "train_seconds": 10}}, "baselines": {}}
        >>> s = summarize([r(0.7), r(0.8), r(0.9)])
        >>> [round(x, 3) for x in s["models"]["m"]["test"]], s["models"]["m"]["runs"]
        ([0.8, 0.1], 3)
    """

    def entry(rs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {k: _mean_sd([x[k] for x in rs]) for k in SUMMARY_KEYS}
        out["cross"] = {d: _mean_sd([x["cross"][d] for x in rs]) for d in rs[0]["cross"]}
        if rs[0].get("train_seconds") is not None:
            out["train_seconds"] = _mean_sd([x["train_seconds"] for x in rs])
        return out

    return common.summarize_runs(runs, entry)


def read_run_results(spec: str) -> dict[str, Any]:
    """``results.json`` of ``DIR``, or of ``TAG=DIR`` with every model renamed ``name (TAG)``."""
    tag, _, directory = spec.rpartition("=")
    results = common.read_results(directory)
    if tag:
        results["models"] = {f"{n} ({tag})": r for n, r in results["models"].items()}
    return results


def format_summary(summary: dict[str, Any]) -> str:
    """The mean ± sd table of :func:`summarize`."""
    any_row = next(iter({**summary["models"], **summary["baselines"]}.values()))
    domains = list(any_row["cross"])
    lines = [
        *common.table_head(
            ["model", "runs", "train time", "val acc", "**test acc**", "star acc", "star MAE"]
            + [f"{x} acc" for x in domains]
        ),
    ]

    def ms(v, digits=3):
        return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"

    for section in ("models", "baselines"):
        for name, e in summary[section].items():
            t = e.get("train_seconds")
            lines.append(
                f"| {name} | {e['runs']} | {f'{t[0]:.0f} s' if t else '-'} | {ms(e['val'])} | "
                f"**{ms(e['test'])}** | {ms(e['star_accuracy'])} | {ms(e['star_mae'])} |"
                + "".join(f" {ms(e['cross'][d])} |" for d in domains)
            )
    return "\n".join(lines)


def plot_accuracy(runs: list[dict[str, Any]], out_path: Path) -> Path:
    """Movie test accuracy per model (mean ± sd over ``runs``), baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(runs)
    names = list(summary["models"])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(names) + 2.5), 4.2))
    means = [summary["models"][n]["test"][0] for n in names]
    sds = [summary["models"][n]["test"][1] for n in names]
    ax.bar(range(len(names)), means, yerr=sds, capsize=4, color="tab:blue", alpha=0.8)
    styles = {"majority": ":", "vader": "-.", "bow_lr": "--", "tfidf_lr": "-"}
    for name, e in summary["baselines"].items():
        if name == "majority":
            continue
        ax.axhline(e["test"][0], color="grey", ls=styles.get(name, "--"), label=name)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    lows = means + [e["test"][0] for e in summary["baselines"].values()]
    ax.set(
        ylabel="test accuracy (movie snippets)",
        ylim=(max(0.0, min(lows) - 0.05), min(1.0, max(lows) + 0.04)),
        title="MR fixed split: test accuracy, mean ± sd over seeds",
    )
    ax.grid(axis="y", alpha=0.3)
    if summary["baselines"]:
        ax.legend(fontsize=8, loc="lower right")
    return common.save_figure(fig, out_path)


# ----------------------------------------------------------------------------- commands
PIECES = common.Pieces.of_models(
    EXPERIMENT_NAME,
    SentimentConfig,
    load_data,
    lambda config, name, data, workdir: ModelRun(config, name, data.vocab, workdir),
    lambda *args: evaluate_all(*args),  # late-bound: tests replace it
    format_results,
)
#: ``train``: trains every model of ``config.models`` (each resumes), then evaluates;
#: ``eval``: evaluates the trained models of ``workdir`` (with its stored config).
train_command, eval_command = PIECES.train_command, PIECES.eval_command


def best_model(config: SentimentConfig, workdir: Path, target: str = "label") -> str | None:
    """The trained model of ``target`` with the best validation score (its ``train.json``):
    accuracy for the classifiers, squared error for the ``_score`` models; ``None`` if none."""
    names = [name for name in config.models if MODEL_SPECS[name].target == target]
    if target == "label":
        return common.best_trained(workdir, names, "accuracy", mode="max")
    return common.best_trained(workdir, names, "loss", mode="min")


def _trained(config: SentimentConfig, vocab: Vocabulary, workdir: Path, name: str):
    run = ModelRun(config, name, vocab, workdir)
    return run, common.trained_params(run)


def predict_texts(workdir: Path, texts: list[str], model: str | None = None) -> list[str]:
    """``positive|negative <probability> <stars> <text>`` for each text.

    The label and probability come from ``model`` (default: the classifier with the best
    validation accuracy); the stars from the best ``_score`` model where one was trained,
    else from the probability (:func:`stars_from_proba`).
    """
    config = PIECES.read_config(workdir)
    vocab = common.load_vocab(workdir, EXPERIMENT_NAME)
    name = model or best_model(config, workdir)
    if name is None:
        raise FileNotFoundError(
            f"no trained classifier in {workdir}: train first with "
            f"`python -m experiments.sentiment train --workdir {workdir}`."
        )
    ids = [np.asarray(vocab.encode(vocab.tokenize(t)), np.int32) for t in texts]
    run, params = _trained(config, vocab, workdir, name)
    proba = run.predict(params, ids)
    stars = stars_from_proba(proba)
    rater = best_model(config, workdir, "score")
    if rater is not None:
        run, params = _trained(config, vocab, workdir, rater)
        stars = stars_from_score(run.predict(params, ids))
    lines = []
    for text, p, s in zip(texts, proba, stars, strict=True):
        label = "positive" if p > 0.5 else "negative"
        lines.append(f"{label} {p:.3f} {'★' * s}{'☆' * (5 - s)} {text}")
    return lines


def predict_command(run: Invocation) -> int:
    """Classifies each input text (arguments, or lines of stdin) with the best model."""
    texts = read_inputs(run.inputs)
    for line in predict_texts(run.workdir, texts):
        print(line)
    return 0


def summary_command(run: Invocation) -> int:
    """``summary --workdir OUT [TAG=]RUN_DIR ...``: mean ± sd over the runs' ``results.json``.

    ``TAG=DIR`` renames that run's models ``name (TAG)``, so runs of another configuration
    (e.g. ``light=runs/light_seed0``) get rows of their own.
    """
    return common.summary_command(
        run,
        summarize,
        format_summary,
        read=read_run_results,
        plots=[("summary.png", plot_accuracy)],
    )


#: The ``train`` fields that fix the data; an ensemble's members must agree on them.
DATA_FIELDS = ("corpus_dir", "split_seed", "fold", "vocab_size", "max_len")


def ensemble_members(models: tuple[str, ...], run_dirs: list[Path]):
    """``(data config, vocabulary, [(member name, ModelRun, params), ...])``: every trained
    classifier of ``models`` in every run directory (all on the same data and vocabulary)."""
    first = PIECES.read_config(run_dirs[0])
    vocab = common.load_vocab(run_dirs[0], EXPERIMENT_NAME)
    members = []
    for directory in run_dirs:
        config = PIECES.read_config(directory)
        for field in DATA_FIELDS:
            if getattr(config.train, field) != getattr(first.train, field):
                raise ValueError(
                    f"{directory} was trained on other data than {run_dirs[0]} ({field}: "
                    f"{getattr(config.train, field)!r} vs {getattr(first.train, field)!r})"
                )
        if common.load_vocab(directory, EXPERIMENT_NAME).to_json_dict() != vocab.to_json_dict():
            raise ValueError(f"{directory} has another vocabulary than {run_dirs[0]}")
        for name in models:
            if MODEL_SPECS[name].target != "label":
                raise ValueError(f"an ensemble averages P(positive): {name} is a _score model")
        make_run = functools.partial(ModelRun, config, vocab=vocab, workdir=directory)
        for name, run, params in common.trained_runs(models, make_run):
            members.append((f"{directory.name}/{name}", run, params))
    if not members:
        raise FileNotFoundError(f"none of {list(models)} is trained in {run_dirs}")
    return first, vocab, members


def ensemble_command(run: Invocation) -> int:
    """``ensemble --workdir OUT RUN_DIR ... [--config.models=a,b]``: the average ``P(positive)``
    of every trained model of ``models`` in every run directory (seeds), scored like a model."""
    if not run.inputs:
        raise UsageError("`ensemble` needs the run directories to combine, e.g. runs/s0 runs/s1")
    data_config, vocab, members = ensemble_members(run.config.models, [Path(d) for d in run.inputs])
    config = dataclasses.replace(data_config, report=run.config.report)
    data = load_data(config, (vocab,))

    def outputs_of(split: Split) -> np.ndarray:
        return np.mean([r.predict(p, split.ids) for _, r, p in members], axis=0)

    results = {
        "config": common.config_to_dict(config),
        "data": describe_data(data, config),
        "members": [m for m, _, _ in members],
        "models": {
            f"ensemble of {len(members)}": {
                "params": sum(r.num_params for _, r, _ in members),
                **score_all(outputs_of, data),
            }
        },
        "baselines": {},
    }
    out = Path(run.workdir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = format_results(results) + "\n\nMembers: " + ", ".join(results["members"])
    common.write_results(out, results, markdown)
    print(markdown)
    return 0


EXPERIMENT = Experiment(
    EXPERIMENT_NAME,
    default_config,
    {
        "train": train_command,
        "eval": eval_command,
        "predict": predict_command,
        "summary": summary_command,
        "ensemble": ensemble_command,
    },
    data_parallel=True,
)
