"""The character language model: data, baselines, training, evaluation and sampling.

Each sentence of the tagged corpus becomes its words joined by single spaces (the corpus is
tokenised, so punctuation stands apart: ``"the Net 's story ."``). The model reads
``[<BOS>, c<1>, ..., c<n>]`` and predicts ``[c<1>, ..., c<n>, <EOS>]``:

.. math::

    a^{<t>} = \\tanh(W_{aa} a^{<t-1>} + W_{ax} x^{<t>} + b_a), \\qquad
    \\hat y^{<t>} = \\mathrm{softmax}(W_y a^{<t>} + b_y)

Bits per character (BPC) = ``-Σ log2 ŷ<t>_{c<t+1>} / N`` over every predicted symbol of
the held-out sentences (each character and each sentence's ``<EOS>``).

Run directory layout (see :mod:`experiments.common`)::

    DIR/run_config.json, DIR/config.json, DIR/vocab.json, DIR/checkpoints/,
    DIR/metrics.jsonl, DIR/curves.png, DIR/results.json, DIR/results.md
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.charlm.config import CharLMConfig, ModelConfig, default_config
from experiments.cli import Experiment, Invocation
from experiments.data import load_tagged_sentences, parse_tagged_text, split_by_sentence
from rnn_jax.batching import iterate_batches, pad_batch
from rnn_jax.generate import lm_initial_state, lm_step, sample
from rnn_jax.losses import masked_softmax_cross_entropy
from rnn_jax.network import rnn_apply
from rnn_jax.params import RNNParams, count_params, init_rnn
from rnn_jax.train import evaluate
from rnn_jax.vocab import Vocabulary

__all__ = [
    "bigram_bpc",
    "eval_command",
    "load_texts",
    "sample_command",
    "train_command",
    "unigram_bpc",
]

BEST = common.Best("bpc", "min")  # validation bits per character
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- data


def load_texts(config: CharLMConfig) -> dict[str, list[str]]:
    """The sentences as texts, split 80/10/10 by sentence (the names experiment's split)."""
    c = config.train
    if c.corpus_file is not None:
        sentences = parse_tagged_text(Path(c.corpus_file).read_text(encoding="utf-8"))
    else:
        sentences = load_tagged_sentences(config.report.data_dir)
    texts = [" ".join(w for w, _ in s) for s in sentences]
    train, val, test = split_by_sentence(len(texts), seed_or_key=c.split_seed)
    if c.max_train_sentences is not None:
        train = train[: c.max_train_sentences]
    return {name: [texts[i] for i in idx] for name, idx in zip(("train", "val", "test"), (train, val, test), strict=True)}  # fmt: skip


@dataclasses.dataclass
class Data:
    """The texts of each split and the character vocabulary (built on the training texts)."""

    texts: dict[str, list[str]]
    vocab: Vocabulary

    @property
    def vocabs(self) -> tuple[Vocabulary]:
        return (self.vocab,)

    @property
    def num_train(self) -> int:
        return len(self.texts["train"])

    def describe(self) -> str:
        t = self.texts
        return (
            f"{len(t['train'])} train / {len(t['val'])} val / {len(t['test'])} test sentences; "
            f"{len(self.vocab)} characters"
        )


def load_data(config: CharLMConfig, vocabs: tuple[Vocabulary] | None = None) -> Data:
    """The texts and the vocabulary (``vocabs``: the stored one; ``None``: build it)."""
    texts = load_texts(config)
    if vocabs is None:
        return Data(texts, Vocabulary.build(texts["train"], level="char", max_size=None))
    return Data(texts, vocabs[0])


def lm_pairs(vocab: Vocabulary, texts: list[str], max_len: int | None = None):
    """``(inputs [<BOS>, c<1..n>], targets [c<1..n>, <EOS>])`` id arrays per text."""
    xs, ys = [], []
    for text in texts:
        ids = vocab.encode(text)
        x = np.concatenate([[vocab.bos_id], ids]).astype(np.int32)
        y = np.concatenate([ids, [vocab.eos_id]]).astype(np.int32)
        if max_len is not None:
            x, y = x[:max_len], y[:max_len]
        xs.append(x)
        ys.append(y)
    return xs, ys


# --------------------------------------------------------------------------- baselines


def _target_ids(vocab: Vocabulary) -> np.ndarray:
    """Ids a model can be asked to predict: every id but <PAD> and <BOS>."""
    return np.array([i for i in range(len(vocab)) if i not in (vocab.pad_id, vocab.bos_id)])


def unigram_bpc(vocab: Vocabulary, train_y: list[np.ndarray], test_y: list[np.ndarray]) -> float:
    """BPC of add-one-smoothed character frequencies of the training targets."""
    V = len(vocab)
    counts = np.bincount(np.concatenate(train_y), minlength=V).astype(np.float64)
    allowed = np.zeros(V, bool)
    allowed[_target_ids(vocab)] = True
    p = np.where(allowed, counts + 1.0, 0.0)
    p /= p.sum()
    y = np.concatenate(test_y)
    return float(-np.mean(np.log2(p[y])))


def bigram_bpc(
    vocab: Vocabulary,
    train: tuple[list[np.ndarray], list[np.ndarray]],
    test: tuple[list[np.ndarray], list[np.ndarray]],
    k: float,
) -> float:
    """BPC of add-``k`` bigram probabilities ``p(c<t+1> | c<t>)`` (``<BOS>`` starts)."""
    V = len(vocab)
    counts = np.zeros((V, V))
    np.add.at(counts, (np.concatenate(train[0]), np.concatenate(train[1])), 1.0)
    allowed = np.zeros(V, bool)
    allowed[_target_ids(vocab)] = True
    p = np.where(allowed[None, :], counts + k, 0.0)
    p /= p.sum(axis=1, keepdims=True)
    x, y = np.concatenate(test[0]), np.concatenate(test[1])
    return float(-np.mean(np.log2(p[x, y])))


# --------------------------------------------------------------------------- model


def make_model(config: ModelConfig, vocab_size: int) -> common.Model:
    """The character RNN: ``V`` token inputs, ``V`` logits per step."""

    def init(key: jax.Array) -> RNNParams:
        return init_rnn(key, vocab_size, config.hidden_size, vocab_size,
                        num_layers=config.num_layers, token_inputs=True)  # fmt: skip

    def apply(params, x, lengths, *, key=None, train=False):
        rate = config.dropout if train else 0.0
        return rnn_apply(params, x, lengths, dropout=rate, key=key if rate > 0 else None)

    return common.Model(init, apply)


@jax.jit
def _eval_step(params, batch):
    x, y, lengths = batch
    logits = rnn_apply(params, x, lengths)
    nll = masked_softmax_cross_entropy(logits, y, lengths=lengths, reduction="sum")
    return {"nll": nll, "count": jnp.sum(lengths)}


def model_bpc(params, config: CharLMConfig, pairs) -> dict[str, float]:
    xs, ys = pairs
    batches = (
        (jnp.asarray(b.fields[0]), jnp.asarray(b.fields[1]), jnp.asarray(b.lengths))
        for b in iterate_batches(
            xs,
            ys,
            batch_size=config.report.eval_batch_size,
            key=None,
            shuffle=False,
            bucket=True,
            pad_to_multiple=32,
        )  # fmt: skip
    )
    totals = evaluate(_eval_step, params, batches)
    nats = float(totals["nll"]) / float(totals["count"])
    return {"loss": nats, "bpc": nats / _LN2}


# --------------------------------------------------------------------------- run directory


def best_params(config: CharLMConfig, vocab: Vocabulary, workdir: Path) -> RNNParams:
    init = make_model(config.model, len(vocab)).init
    return common.restore_best(config, init, BEST, experiment="charlm", workdir=workdir)


# --------------------------------------------------------------------------- training


def train(config: CharLMConfig, vocab: Vocabulary, texts, workdir: Path) -> dict[str, Any]:
    c, keys = config.train, common.make_keys(config.train.seed)
    model = make_model(config.model, len(vocab))
    xs, ys = lm_pairs(vocab, texts["train"], c.max_len)
    val = lm_pairs(vocab, texts["val"])

    # Batches are bucketed by length, so a per-batch token mean would weigh a token of a
    # batch of short sentences far more than one of a batch of long ones (and the first
    # character of a one-symbol "sentence" like "." far too much). Dividing the batch's sum
    # by a constant, the expected number of symbols in a batch, weighs every symbol alike.
    symbols_per_batch = c.batch_size * float(np.mean([len(y) for y in ys]))

    def loss_fn(params, batch, *, key):
        x, y, lengths = batch
        logits = model.apply(params, x, lengths, key=key, train=True)
        nll = masked_softmax_cross_entropy(logits, y, lengths=lengths, reduction="sum")
        # On a mesh (--devices) each device sees x.shape[0] of the batch's rows: its share of
        # the constant, so the equal-weight combination of the shards is the batch's loss.
        return nll / (symbols_per_batch * (x.shape[0] / c.batch_size))

    def epoch_batches(epoch: int, start: int):
        for b in iterate_batches(
            xs,
            ys,
            batch_size=c.batch_size,
            key=jax.random.fold_in(keys.data, epoch),
            pad_values=vocab.pad_id,
            drop_last=True,
            start=start,
            pad_to_multiple=32,
        ):
            yield (jnp.asarray(b.fields[0]), jnp.asarray(b.fields[1]), jnp.asarray(b.lengths))

    checkpointer = common.run_checkpointer(config, workdir, BEST)
    return common.train_logged(
        config, loss_fn, epoch_batches, params=model.init(keys.init), keys=keys, num_train=len(xs),
        workdir=workdir, checkpointer=checkpointer, best=BEST, name="charlm",
        evaluate_fn=lambda params: model_bpc(params, config, val),
    )  # fmt: skip


# --------------------------------------------------------------------------- sampling


@functools.partial(jax.jit, static_argnames=("max_len", "eos_id", "bos_id"))
def _sample(params, seed_ids, seed_lengths, key, temperature, *, max_len, eos_id, bos_id):
    state, start = lm_initial_state(params, seed_ids, seed_lengths, bos_id=bos_id)
    return sample(lm_step, params, state, start, max_len=max_len, eos_id=eos_id, key=key,
                  temperature=temperature)  # fmt: skip


def generate_samples(
    params: RNNParams,
    vocab: Vocabulary,
    seeds: list[str],
    temperatures: tuple[float, ...],
    *,
    num_samples: int,
    max_len: int,
    key: jax.Array,
) -> list[dict[str, Any]]:
    """``num_samples`` continuations of every seed text at every temperature."""
    out = []
    for i, seed in enumerate(seeds):
        ids = vocab.encode(seed)
        seed_ids, seed_lengths = pad_batch([ids] * num_samples, pad_value=vocab.pad_id)
        if seed_ids.shape[1] == 0:
            seed_ids = np.zeros((num_samples, 1), np.int32)
        for j, temperature in enumerate(temperatures):
            tokens, lengths = _sample(
                params, jnp.asarray(seed_ids), jnp.asarray(seed_lengths),
                jax.random.fold_in(jax.random.fold_in(key, i), j), jnp.float32(temperature),
                max_len=max_len, eos_id=vocab.eos_id, bos_id=vocab.bos_id,
            )  # fmt: skip
            tokens, lengths = np.asarray(tokens), np.asarray(lengths)
            texts = [
                seed + "".join(vocab.decode(tokens[r, : lengths[r]])) for r in range(num_samples)
            ]
            out.append({"seed": seed, "temperature": temperature, "samples": texts})
    return out


# --------------------------------------------------------------------------- evaluation


def run_evaluation(config: CharLMConfig, vocab: Vocabulary, texts, workdir: Path) -> dict[str, Any]:
    params = best_params(config, vocab, workdir)
    train_pairs = lm_pairs(vocab, texts["train"])
    val_pairs, test_pairs = lm_pairs(vocab, texts["val"]), lm_pairs(vocab, texts["test"])
    report = config.report
    k_best = min(
        report.bigram_smoothing, key=lambda k: bigram_bpc(vocab, train_pairs, val_pairs, k)
    )
    test_symbols = int(sum(len(y) for y in test_pairs[1]))
    unknown = int(sum(np.sum(y == vocab.unk_id) for y in test_pairs[1]))
    results: dict[str, Any] = {
        "sentences": {k: len(v) for k, v in texts.items()},
        "test_symbols": test_symbols,
        "test_unknown_characters": unknown,
        "vocab_size": len(vocab),
        "num_params": count_params(params),
        "bpc": {
            "unigram": unigram_bpc(vocab, train_pairs[1], test_pairs[1]),
            f"bigram (add-{k_best})": bigram_bpc(vocab, train_pairs, test_pairs, k_best),
            "rnn": model_bpc(params, config, test_pairs)["bpc"],
        },
        "val_bpc_rnn": model_bpc(params, config, val_pairs)["bpc"],
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }
    results["samples"] = generate_samples(
        params, vocab, list(report.seeds), tuple(report.temperatures),
        num_samples=report.num_samples, max_len=report.sample_len,
        key=common.make_keys(config.train.seed).samples,
    )  # fmt: skip
    return results


def format_results(results: dict[str, Any]) -> str:
    s = results["sentences"]
    lines = [
        f"sentences: {s['train']} train / {s['val']} val / {s['test']} test; "
        f"{results['test_symbols']} held-out symbols (characters + one <EOS> per sentence; "
        f"{results['test_unknown_characters']} unknown characters); vocabulary "
        f"{results['vocab_size']}; RNN parameters {results['num_params']:,}",
        "",
        "| model | test bits per character |",
        "|---|---|",
    ]
    lines += [f"| {name} | {bpc:.3f} |" for name, bpc in results["bpc"].items()]
    lines += ["", "samples (seed text, then the model's continuation):", ""]
    for entry in results["samples"]:
        seed = repr(entry["seed"]) if entry["seed"] else "(from nothing)"
        lines.append(f"- seed {seed}, temperature {entry['temperature']}:")
        lines += [f"    - `{text}`" for text in entry["samples"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


PIECES = common.Pieces(
    "charlm",
    CharLMConfig,
    load_data,
    lambda config, data, workdir: train(config, data.vocab, data.texts, workdir),
    lambda config, data, workdir: run_evaluation(config, data.vocab, data.texts, workdir),
    format_results,
)
#: ``train``: trains (resuming from the checkpoints of ``workdir``), evaluates, prints samples.
train_command = PIECES.train_command
#: ``eval``: evaluates the best checkpoint of ``workdir`` with its stored configuration.
eval_command = PIECES.eval_command


def sample_command(run: Invocation) -> int:
    """Continues each seed text given (none: from nothing) at every temperature."""
    config = PIECES.stored_config(run)
    (vocab,) = PIECES.stored_vocabs(run.workdir)
    params = best_params(config, vocab, run.workdir)
    report = config.report
    key = jax.random.fold_in(common.make_keys(config.train.seed).samples, 1)
    for entry in generate_samples(params, vocab, list(run.inputs) or [""],
                                  tuple(report.temperatures), num_samples=report.num_samples,
                                  max_len=report.sample_len, key=key):  # fmt: skip
        seed = repr(entry["seed"]) if entry["seed"] else "(from nothing)"
        print(f"seed {seed}, temperature {entry['temperature']}:")
        for text in entry["samples"]:
            print(f"  {text}")
    return 0


EXPERIMENT = Experiment(
    "charlm",
    default_config,
    {
        "train": train_command,
        "eval": eval_command,
        "predict": sample_command,
        "sample": sample_command,
    },
    data_parallel=True,
)
