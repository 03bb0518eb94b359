"""The melody language models: data, training, evaluation, the sanity table and sampling.

Every tune (see :mod:`experiments.melody.data`) becomes its prompt and its event tokens (see
:mod:`experiments.melody.tokens`). One language model per cell (``rnn``, ``gru``, ``lstm``:
``init_rnn(cell=..., token_inputs=True)``) reads ``[<BOS>, style, mode, metre, e<1..n>]`` and
predicts the next token; its softmax is restricted to the events, ``<UNK>`` and ``<EOS>``
(the targets of the n-grams too). Generation primes the state on the prompt (and an
opening) with :func:`rnn_jax.generate.lm_initial_state` and samples with
:func:`rnn_jax.generate.sample` over :func:`rnn_jax.generate.lm_step`.

NLL per event (nats; bits = nats / ln 2) counts every event and every tune's ``<EOS>`` of
the held-out tunes. The RNNs are scored twice: with each tune's true prompt, and with the
empty prompt (``*`` everywhere, seen in training through ``prompt_dropout``), which knows no
more than the n-grams do.

Run directory layout (see :mod:`experiments.common`)::

    DIR/run_config.json, DIR/vocab.json, DIR/results.{json,md}, DIR/samples.png
    DIR/<cell>/config.json, checkpoints/, metrics.jsonl, curves.png, train.json
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.cli import Experiment, Invocation
from experiments.data import split_by_sentence
from experiments.melody import music
from experiments.melody.baselines import NGramCounts, ngram_results
from experiments.melody.config import MelodyConfig, default_config
from experiments.melody.data import load_tunes
from experiments.melody.tokens import (
    PROMPT_FIELDS,
    PROMPT_LEN,
    build_vocab,
    event_ids,
    parse_prime,
    parse_prompt,
    prompt_tokens,
    token_event,
    tune_prompt,
    tune_tokens,
)
from rnn_jax.batching import iterate_batches, pad_batch
from rnn_jax.generate import lm_initial_state, lm_step, sample
from rnn_jax.losses import masked_softmax_cross_entropy
from rnn_jax.network import rnn_apply
from rnn_jax.params import count_params, init_rnn
from rnn_jax.train import evaluate
from rnn_jax.vocab import Vocabulary

__all__ = [
    "eval_command",
    "load_data",
    "sample_command",
    "train_command",
]

BEST = common.Best("nll", "min")  # validation nats per event
EXPERIMENT_NAME = "melody"
_LN2 = math.log(2.0)
_NEG = -1e9


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class Data:
    """The tunes of each split (their records) and the event vocabulary."""

    tunes: dict[str, list[dict[str, Any]]]
    vocab: Vocabulary
    transpose: str

    @property
    def vocabs(self) -> tuple[Vocabulary]:
        return (self.vocab,)

    @property
    def num_train(self) -> int:
        return len(self.tunes["train"])

    def describe(self) -> str:
        t = self.tunes
        return (
            f"{len(t['train'])} train / {len(t['val'])} val / {len(t['test'])} test tunes; "
            f"{len(self.vocab) - self.vocab.num_specials} events in the vocabulary"
        )

    def tokens(self, split: str) -> list[list[str]]:
        return [tune_tokens(t, self.transpose) for t in self.tunes[split]]


def load_data(config: MelodyConfig, vocabs: tuple[Vocabulary] | None = None) -> Data:
    """The tunes split 80/10/10 by tune, and the vocabulary (built on the training tunes)."""
    c = config.train
    tunes = load_tunes(config.report.data_dir, c.tunes_file)
    parts = split_by_sentence(len(tunes), seed_or_key=c.split_seed)
    split = {name: [tunes[i] for i in idx] for name, idx in zip(("train", "val", "test"), parts, strict=True)}  # fmt: skip
    if c.max_train_tunes is not None:
        split["train"] = split["train"][: c.max_train_tunes]
    if vocabs is None:
        vocab = build_vocab([tune_tokens(t, c.transpose) for t in split["train"]], c.min_count)
    else:
        vocab = vocabs[0]
    return Data(split, vocab, c.transpose)


def lm_pairs(vocab: Vocabulary, data: Data, split: str, max_len: int | None = None):
    """``(inputs [<BOS>, prompt, events], targets [prompt, events, <EOS>])`` per tune."""
    xs, ys = [], []
    for tune, tokens in zip(data.tunes[split], data.tokens(split), strict=True):
        ids = vocab.encode(prompt_tokens(tune_prompt(tune)) + tokens)
        x = np.concatenate([[vocab.bos_id], ids]).astype(np.int32)
        y = np.concatenate([ids, [vocab.eos_id]]).astype(np.int32)
        if max_len is not None:
            x, y = x[: max_len + PROMPT_LEN], y[: max_len + PROMPT_LEN]
        xs.append(x)
        ys.append(y)
    return xs, ys


def wildcard_ids(vocab: Vocabulary) -> np.ndarray:
    """The ids of ``style=*``, ``mode=*``, ``metre=*`` (the empty prompt)."""
    return np.array([vocab.token_to_id(f"{f}=*") for f in PROMPT_FIELDS], np.int32)


def logit_bias(vocab: Vocabulary) -> np.ndarray:
    """0 on the targets (events, ``<UNK>``, ``<EOS>``), a large negative number elsewhere."""
    bias = np.full(len(vocab), _NEG, np.float32)
    bias[event_ids(vocab)] = 0.0
    return bias


# --------------------------------------------------------------------------- model


def init_model(name: str, config: MelodyConfig, vocab_size: int, key: jax.Array):
    m = config.model
    return init_rnn(key, vocab_size, m.hidden_size, vocab_size, cell=name,
                    num_layers=m.num_layers, token_inputs=True)  # fmt: skip


def _scored(lengths: jax.Array, T: int) -> jax.Array:
    """The positions whose target is an event or ``<EOS>`` (not a prompt token)."""
    t = jnp.arange(T)[None, :]
    return (t >= PROMPT_LEN) & (t < lengths[:, None])


@functools.partial(jax.jit, static_argnames=("blank",))
def _eval_step(params, batch, bias, wild, *, blank: bool):
    x, y, lengths = batch
    if blank:
        x = x.at[:, 1 : 1 + PROMPT_LEN].set(jnp.broadcast_to(wild, (x.shape[0], PROMPT_LEN)))
    logits = rnn_apply(params, x, lengths) + bias[None, None, :]
    mask = _scored(lengths, x.shape[1])
    nll = masked_softmax_cross_entropy(logits, y, mask=mask, reduction="sum")
    return {"nll": nll, "count": jnp.sum(mask)}


def model_nll(params, vocab: Vocabulary, pairs, batch_size: int, *, blank=False) -> float:
    """Nats per event (events and ``<EOS>``) of ``pairs`` (``blank``: the empty prompt)."""
    xs, ys = pairs
    bias, wild = jnp.asarray(logit_bias(vocab)), jnp.asarray(wildcard_ids(vocab))
    batches = (
        (jnp.asarray(b.fields[0]), jnp.asarray(b.fields[1]), jnp.asarray(b.lengths))
        for b in iterate_batches(
            xs,
            ys,
            batch_size=batch_size,
            key=None,
            shuffle=False,
            pad_values=vocab.pad_id,
            pad_to_multiple=32,
        )  # fmt: skip
    )
    step = functools.partial(_eval_step, bias=bias, wild=wild, blank=blank)
    totals = evaluate(step, params, batches)
    return float(totals["nll"]) / float(totals["count"])


# --------------------------------------------------------------------------- training


def make_loss(config: MelodyConfig, vocab: Vocabulary, tokens_per_batch: float):
    """The training loss: prompt dropout, then summed event NLL over a constant."""
    rate = config.train.prompt_dropout
    bias, wild = jnp.asarray(logit_bias(vocab)), jnp.asarray(wildcard_ids(vocab))

    def loss_fn(params, batch, *, key):
        x, y, lengths = batch
        if rate > 0:
            drop = jax.random.bernoulli(key, rate, (x.shape[0], PROMPT_LEN))
            x = x.at[:, 1 : 1 + PROMPT_LEN].set(jnp.where(drop, wild, x[:, 1 : 1 + PROMPT_LEN]))
        logits = rnn_apply(params, x, lengths) + bias[None, None, :]
        mask = _scored(lengths, x.shape[1])
        # On a mesh (--devices) each device sees x.shape[0] of the batch's rows: its share of
        # the constant, so the equal-weight combination of the shards is the batch's loss.
        share = x.shape[0] / config.train.batch_size
        nll = masked_softmax_cross_entropy(logits, y, mask=mask, reduction="sum")
        return nll / (tokens_per_batch * share)

    return loss_fn


def train_model(name: str, config: MelodyConfig, data: Data, workdir: Path) -> dict[str, Any]:
    """Trains one cell's LM in ``workdir/<name>`` (resuming from its latest checkpoint)."""
    c, keys = config.train, common.make_keys(config.train.seed, name)
    vocab = data.vocab
    xs, ys = lm_pairs(vocab, data, "train", c.max_len)
    val = lm_pairs(vocab, data, "val")
    # A constant divisor (the expected number of scored events a batch) weighs every event
    # alike whatever the lengths of the tunes bucketed together.
    per_batch = c.batch_size * float(np.mean([len(y) - PROMPT_LEN for y in ys]))
    loss_fn = make_loss(config, vocab, per_batch)
    batch_eval = config.report.eval_batch_size

    def epoch_batches(epoch: int, start: int):
        for b in iterate_batches(xs, ys, batch_size=c.batch_size,
                                 key=jax.random.fold_in(keys.data, epoch),
                                 pad_values=vocab.pad_id, drop_last=True, start=start,
                                 pad_to_multiple=32):  # fmt: skip
            yield (jnp.asarray(b.fields[0]), jnp.asarray(b.fields[1]), jnp.asarray(b.lengths))

    def evaluate_fn(params):
        nats = model_nll(params, vocab, val, batch_eval)
        return {"loss": nats, "nll": nats}

    (workdir / name).mkdir(parents=True, exist_ok=True)
    params = init_model(name, config, len(vocab), keys.init)
    checkpointer = common.run_checkpointer(config, workdir, BEST, model=name, cell=name)
    return common.train_logged(
        config, loss_fn, epoch_batches, params=params, keys=keys, num_train=len(xs),
        workdir=workdir / name, checkpointer=checkpointer, best=BEST,
        name=f"melody {name}", evaluate_fn=evaluate_fn,
    )  # fmt: skip


def best_params(name: str, config: MelodyConfig, vocab: Vocabulary, workdir: Path):
    return common.restore_best(
        config,
        lambda key: init_model(name, config, len(vocab), key),
        BEST,
        experiment=EXPERIMENT_NAME,
        workdir=workdir,
        model=name,
        cell=name,
    )


# --------------------------------------------------------------------------- sampling


@functools.cache
def masked_step(bias: tuple[float, ...]):
    """:func:`lm_step` whose logits can only pick events, ``<UNK>`` or ``<EOS>``."""
    offset = np.asarray(bias, np.float32)

    def step(params, state, y_prev):
        state, logits = lm_step(params, state, y_prev)
        return state, logits + offset[None, :]

    return step


def generate(
    params,
    vocab: Vocabulary,
    prompt: dict[str, str],
    prime: list[str],
    *,
    num: int,
    max_len: int,
    temperature: float,
    top_k: int,
    key: jax.Array,
) -> list[list[tuple[int, Any]]]:
    """``num`` melodies (prime included) as ``(midi or -1, duration)`` events.

    A sampled ``<UNK>`` (an event too rare to have its own token) has no pitch or duration
    and is left out of the melody.
    """
    for token in prime:
        if token not in vocab:
            raise ValueError(
                f"`prime` event {token!r} is not in the model's vocabulary (with transpose=c the "
                "models know tunes in C major / A minor)"
            )
    seed = vocab.encode(prompt_tokens(prompt) + prime)
    seed_ids, seed_lengths = pad_batch([seed] * num, pad_value=vocab.pad_id)
    state, start = lm_initial_state(params, jnp.asarray(seed_ids), jnp.asarray(seed_lengths),
                                    bos_id=vocab.bos_id)  # fmt: skip
    tokens, lengths = sample(
        masked_step(tuple(logit_bias(vocab).tolist())), params, state, start, max_len=max_len,
        eos_id=vocab.eos_id, key=key, temperature=temperature, top_k=top_k or None,
        pad_id=vocab.pad_id,
    )  # fmt: skip
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    out = []
    for r in range(num):
        events = prime + [vocab.id_to_token(int(i)) for i in tokens[r, : lengths[r]]]
        out.append([token_event(t) for t in events if t != "<UNK>"])
    return out


def sanity_table(params, vocab: Vocabulary, data: Data, config: MelodyConfig, key) -> dict:
    """Statistics of samples under every sanity prompt and of the real test tunes."""
    r = config.report
    rows: dict[str, Any] = {}
    for i, text in enumerate(r.sanity_prompts):
        melodies = generate(params, vocab, parse_prompt(text), [], num=r.sanity_samples,
                            max_len=r.sample_len, temperature=r.temperature, top_k=r.top_k,
                            key=jax.random.fold_in(key, i))  # fmt: skip
        rows[f"sample: {text or '(empty prompt)'}"] = music.summarize_stats(
            [music.melody_stats(m) for m in melodies]
        )
    test = data.tunes["test"]
    events = [[token_event(t) for t in toks] for toks in data.tokens("test")]
    for style in PROMPT_FIELDS["style"]:
        for mode in PROMPT_FIELDS["mode"]:
            chosen = [e for e, t in zip(events, test, strict=True) if (t["style"], t["mode"]) == (style, mode)]  # fmt: skip
            rows[f"real: style={style},mode={mode}"] = music.summarize_stats(
                [music.melody_stats(m) for m in chosen]
            )
    rows["real: all test tunes"] = music.summarize_stats([music.melody_stats(m) for m in events])
    return rows


# --------------------------------------------------------------------------- evaluation


def baseline_results(data: Data, config: MelodyConfig) -> dict[str, Any]:
    vocab = data.vocab
    ids = {s: [vocab.encode(t) for t in data.tokens(s)] for s in ("train", "val", "test")}
    counts = NGramCounts(ids["train"], targets=event_ids(vocab), bos_id=vocab.bos_id,
                         eos_id=vocab.eos_id)  # fmt: skip
    r = config.report
    return ngram_results(counts, ids["val"], ids["test"], smoothing=r.bigram_smoothing,
                         interpolation=r.interpolation)  # fmt: skip


def model_results(name, config, data: Data, workdir: Path) -> dict[str, Any]:
    params = best_params(name, config, data.vocab, workdir)
    bs = config.report.eval_batch_size
    val, test = lm_pairs(data.vocab, data, "val"), lm_pairs(data.vocab, data, "test")
    train_file = workdir / name / "train.json"
    return {
        "params": params,
        "num_params": count_params(params),
        "val": model_nll(params, data.vocab, val, bs),
        "test": model_nll(params, data.vocab, test, bs),
        "test_empty_prompt": model_nll(params, data.vocab, test, bs, blank=True),
        "train": json.loads(train_file.read_text()) if train_file.is_file() else None,
    }


def run_evaluation(config: MelodyConfig, data: Data, workdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    test_targets = sum(len(t) + 1 for t in data.tokens("test"))
    unknown = sum(int(np.sum(data.vocab.encode(t) == data.vocab.unk_id)) for t in data.tokens("test"))  # fmt: skip
    results: dict[str, Any] = {
        "tunes": {k: len(v) for k, v in data.tunes.items()},
        "test_targets": test_targets,
        "test_unknown_events": unknown,
        "vocab_events": len(data.vocab) - data.vocab.num_specials,
        "baselines": baseline_results(data, config),
        "models": {},
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }
    params = {}
    for name in config.models:
        entry = model_results(name, config, data, workdir)
        params[name] = entry.pop("params")
        results["models"][name] = entry
    best = min(config.models, key=lambda n: results["models"][n]["val"])
    key = common.make_keys(config.train.seed, best).samples
    results["sanity_model"] = best
    results["sanity"] = sanity_table(params[best], data.vocab, data, config, key)
    results["figure_samples"] = figure_samples(params[best], data.vocab, config, key)
    results["eval_seconds"] = time.perf_counter() - t0
    return results


def figure_samples(params, vocab, config: MelodyConfig, key) -> dict[str, list]:
    """Three samples under each of two contrasting prompts (for ``samples.png``)."""
    prompts = ("style=chorale,mode=minor", "style=folk,mode=major")
    r = config.report
    out = {}
    for i, prompt in enumerate(prompts):
        # the sanity table's batch shape (no new compilation), the first three kept
        melodies = generate(params, vocab, parse_prompt(prompt), [], num=r.sanity_samples,
                            max_len=r.sample_len, temperature=r.temperature, top_k=r.top_k,
                            key=jax.random.fold_in(key, 100 + i))  # fmt: skip
        out[prompt] = [[[m, str(d)] for m, d in melody] for melody in melodies[:3]]
    return out


def _bits(nats: float) -> str:
    return f"{nats:.3f} | {nats / _LN2:.3f}"


def format_results(results: dict[str, Any]) -> str:
    t = results["tunes"]
    lines = [
        f"tunes: {t['train']} train / {t['val']} val / {t['test']} test; "
        f"{results['test_targets']} held-out targets (events + one <EOS> a tune; "
        f"{results['test_unknown_events']} unknown events); {results['vocab_events']} events in "
        "the vocabulary",
        "",
        "| model | test NLL (nats/event) | (bits/event) | chosen on val |",
        "|---|---|---|---|",
    ]
    for name, b in results["baselines"].items():
        lines.append(f"| {name} | {_bits(b['test'])} | {b['param'] if b['param'] is not None else ''} |")  # fmt: skip
    for name, m in results["models"].items():
        lines.append(f"| {name} ({m['num_params']:,} params), true prompt | {_bits(m['test'])} | |")
        lines.append(f"| {name}, empty prompt | {_bits(m['test_empty_prompt'])} | |")
    lines += [
        "",
        f"sanity table ({results['sanity_model']}, the lowest validation NLL): means over "
        "melodies; minor = fraction analysed in a minor key",
        "",
        "| melodies | n | minor | in-key | range | mean interval | events |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in results["sanity"].items():
        if s["n"] == 0:
            lines.append(f"| {name} | 0 | | | | | |")
            continue
        lines.append(
            f"| {name} | {s['n']} | {s['minor']:.2f} | {s['in_key']:.3f} | {s['range']:.1f} | "
            f"{s['interval']:.2f} | {s['events']:.1f} |"
        )
    return "\n".join(lines)


def write_figure(results: dict[str, Any], path: Path) -> None:
    melodies, titles = [], []
    for prompt, samples in results["figure_samples"].items():
        for i, melody in enumerate(samples):
            melodies.append(melody)
            titles.append(f"{results['sanity_model']} sample {i + 1}, prompt {prompt}")
    music.piano_roll(melodies, path, titles=titles)


# --------------------------------------------------------------------------- commands


def train(config: MelodyConfig, data: Data, workdir: Path) -> None:
    """Trains every model of ``config.models`` (each resumes from its checkpoints)."""

    def train_one(name: str) -> tuple[Path, dict[str, Any]]:
        print(f"training {name}", file=sys.stderr)
        return workdir / name, train_model(name, config, data, workdir)

    common.train_each(config.models, train_one)


PIECES = common.Pieces(
    EXPERIMENT_NAME,
    MelodyConfig,
    load_data,
    train,
    lambda *args: run_evaluation(*args),  # late-bound: tests replace it
    format_results,
    figures=lambda results: [("samples.png", lambda path: write_figure(results, path))],
)
#: ``train``: trains every model of ``config.models`` (each resumes), evaluates, writes results.
train_command = PIECES.train_command
#: ``eval``: evaluates the best checkpoints of ``workdir`` with its stored configuration.
eval_command = PIECES.eval_command


def _sample_model(config: MelodyConfig, workdir: Path) -> str:
    if config.report.sample_model != "best":
        return config.report.sample_model
    return common.best_trained(
        workdir, config.models, "nll", mode="min", experiment=EXPERIMENT_NAME
    )


def sample_command(run: Invocation) -> int:
    """Writes ``--num`` samples under ``--prompt`` after ``--prime`` as ``.mid`` and ``.png``."""
    if run.inputs:
        raise ValueError(f"`sample` takes no positional inputs (use --prime), got {run.inputs!r}")
    config = PIECES.stored_config(run)
    r = config.report
    prompt, prime = parse_prompt(r.prompt), parse_prime(r.prime)
    (vocab,) = PIECES.stored_vocabs(run.workdir)
    name = _sample_model(config, run.workdir)
    params = best_params(name, config, vocab, run.workdir)
    key = jax.random.fold_in(common.make_keys(config.train.seed, name).samples, 1)
    melodies = generate(params, vocab, prompt, prime, num=r.num_samples, max_len=r.sample_len,
                        temperature=r.temperature, top_k=r.top_k, key=key)  # fmt: skip
    out = Path(r.out).expanduser() if r.out else run.workdir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    tag = ",".join(f"{k}={v}" for k, v in prompt.items())
    for i, melody in enumerate(melodies):
        stem = out / f"sample_{i + 1:02d}"
        music.write_midi(melody, stem.with_suffix(".mid"))
        music.piano_roll([melody], stem.with_suffix(".png"), title=f"{name}, prompt {tag}")
        print(f"{stem.with_suffix('.mid')}\t{stem.with_suffix('.png')}")
        print("  " + " ".join(f"{_name(m)}:{d}" for m, d in melody))
    return 0


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd over runs (seeds) of every test NLL and sanity-table row.

    Example:
        >>> r = lambda x: {"baselines": {"unigram": {"test": 4.0}}, "models": {"gru": {
        ...     "test": x, "test_empty_prompt": x + 0.1, "train": {"train_seconds": 9}}},
        ...     "sanity": {"s": {"n": 4, "minor": 0.5, "in_key": x / 3}}}
        >>> s = summarize([r(2.4), r(2.5), r(2.6)])
        >>> [round(v, 3) for v in s["models"]["gru"]["test"]], s["runs"]
        ([2.5, 0.1], 3)
    """
    out: dict[str, Any] = {"runs": len(runs), "baselines": {}, "models": {}, "sanity": {}}
    for name in runs[0]["baselines"]:
        out["baselines"][name] = {
            "test": common.mean_sd([r["baselines"][name]["test"] for r in runs])
        }
    for name in runs[0]["models"]:
        rs = [r["models"][name] for r in runs]
        out["models"][name] = {
            key: common.mean_sd([x[key] for x in rs]) for key in ("test", "test_empty_prompt")
        }
        seconds = [x["train"]["train_seconds"] for x in rs if x.get("train")]
        out["models"][name]["train_seconds"] = common.mean_sd(seconds) if seconds else None
    for row in runs[0]["sanity"]:
        rows = [r["sanity"][row] for r in runs if r["sanity"][row].get("n")]
        out["sanity"][row] = {k: common.mean_sd([x[k] for x in rows]) for k in ("minor", "in_key")}
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """The mean ± sd tables of :func:`summarize`."""
    pm = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
    lines = [
        f"mean ± sd over {summary['runs']} runs (seeds)",
        "",
        "| model | test NLL (nats/event) | (bits/event) | train seconds |",
        "|---|---|---|---|",
    ]
    for name, b in summary["baselines"].items():
        lines.append(f"| {name} | {pm(b['test'])} | {b['test'][0] / _LN2:.3f} | |")
    for name, m in summary["models"].items():
        secs = f"{m['train_seconds'][0]:.0f} ± {m['train_seconds'][1]:.0f}" if m["train_seconds"] else ""  # fmt: skip
        lines.append(f"| {name}, true prompt | {pm(m['test'])} | {m['test'][0] / _LN2:.3f} | {secs} |")  # fmt: skip
        lines.append(f"| {name}, empty prompt | {pm(m['test_empty_prompt'])} | {m['test_empty_prompt'][0] / _LN2:.3f} | |")  # fmt: skip
    lines += ["", "| melodies | minor | in-key |", "|---|---|---|"]
    for row, s in summary["sanity"].items():
        lines.append(f"| {row} | {pm(s['minor'])} | {pm(s['in_key'])} |")
    return "\n".join(lines)


def summary_command(run: Invocation) -> int:
    """``summary --workdir OUT DIR ...``: mean ± sd over the ``results.json`` of runs."""
    if len(run.inputs) < 1:
        raise ValueError("`summary` needs run directories (holding results.json) as inputs")
    runs = [json.loads((Path(d) / "results.json").read_text(encoding="utf-8")) for d in run.inputs]
    summary = summarize(runs)
    run.workdir.mkdir(parents=True, exist_ok=True)
    return common.finish(run.workdir, summary, format_summary(summary))


def _name(midi: int) -> str:
    from experiments.melody.tokens import event_token

    return event_token(midi, 1).split(":")[0]


EXPERIMENT = Experiment(
    EXPERIMENT_NAME,
    default_config,
    {
        "train": train_command,
        "eval": eval_command,
        "sample": sample_command,
        "summary": summary_command,
    },
    data_parallel=True,
)
