"""Fingerprints of the compiled programs: proof that a refactoring changed no jitted path.

Timing on a loaded machine cannot tell a 2 % slowdown from noise; the program XLA runs can
be compared exactly. This script lowers (and with ``--compiled`` also compiles) each
program below and prints a SHA-256 of its text, so that the same command run on two
checkouts shows which programs differ::

    python -m benchmarks.hlo_fingerprint              # StableHLO of every program
    python -m benchmarks.hlo_fingerprint --compiled   # also XLA's optimised HLO (slower)
    python -m benchmarks.hlo_fingerprint --only W1,gru --dump /tmp/hlo   # texts to diff

The programs: the train step (loss, gradient, Adam update; as ``benchmarks/impls.py``'s
``rnn_jax`` implementation) and the forward loss of the workloads W1-W5
(``benchmarks/workloads.py``); the same train step for a GRU and an LSTM (W2's sizes, and
W5's 2-layer bidirectional token-input layout); a seq2seq loss gradient (GRU encoder,
LSTM-free, with and without attention); an LSTM language-model step (``lm_step``) and a
greedy decoding loop; the O(sqrt(T)) remat loss gradient of :mod:`rnn_jax.long`
(unidirectional and bidirectional); the library's training step
(:func:`rnn_jax.train.make_train_step`, what ``fit`` runs, with the default optimiser),
a truncated-BPTT step, and the gradient of ``rnn_classify`` (pool ``last``, ``mean``).

Only the program text is hashed: source locations (``loc(...)`` in StableHLO,
``metadata={...}`` in HLO) name files and lines and change when code moves without
changing the program, so they are removed first.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.workloads import MAIN, Workload

_LOC = re.compile(r"\s*loc\([^()]*(\([^()]*\)[^()]*)*\)")
_LOC_DEF = re.compile(r"^#loc.*$", re.MULTILINE)
_METADATA = re.compile(r",?\s*metadata=\{[^{}]*\}")


def normalise(text: str) -> str:
    """The program text without source locations (they change when code moves)."""
    text = _LOC_DEF.sub("", _LOC.sub("", text))
    text = _METADATA.sub("", text)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def digest(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:16]


def _train_programs(name: str, w: Workload, cell: str = "rnn") -> dict[str, tuple]:
    """``{name/train: (fn, args), name/forward: (fn, args)}`` for one workload."""
    import jax
    import optax

    import rnn_jax
    from benchmarks.impls import LEARNING_RATE, _masked_ce

    params = rnn_jax.init_rnn(
        jax.random.key(0),
        w.input_size,
        w.H,
        w.C,
        cell=cell,
        num_layers=w.layers,
        bidirectional=w.bidirectional,
        token_inputs=w.D is None,
    )
    xs, labels, lengths = w.data()
    opt = optax.adam(LEARNING_RATE)
    opt_state = opt.init(params)

    def loss_fn(params, xs, labels, lengths):
        return _masked_ce(rnn_jax.rnn_apply(params, xs, lengths), labels, lengths)

    def train_step(params, opt_state, xs, labels, lengths):
        loss, grads = jax.value_and_grad(loss_fn)(params, xs, labels, lengths)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return {
        f"{name}/train": (
            jax.jit(train_step, donate_argnums=(0, 1)),
            (params, opt_state, xs, labels, lengths),
        ),
        f"{name}/forward": (jax.jit(loss_fn), (params, xs, labels, lengths)),
    }


def _seq2seq_programs() -> dict[str, tuple]:
    import jax
    import jax.numpy as jnp

    from rnn_jax.seq2seq import init_seq2seq, seq2seq_loss

    src = jax.random.randint(jax.random.key(1), (8, 12), 0, 30)
    tgt = jax.random.randint(jax.random.key(2), (8, 10), 0, 20)
    src_len, tgt_len = jnp.arange(5, 13)[:8], jnp.arange(3, 11)[:8]
    out = {}
    for attention in ("none", "additive"):
        params = init_seq2seq(
            jax.random.key(0), 30, 20, hidden_size=16, cell="gru", attention=attention
        )
        grad = jax.jit(jax.grad(lambda p, s, sl, t, tl: seq2seq_loss(p, s, sl, t, tl, bos_id=1)))
        out[f"seq2seq-gru-{attention}/grad"] = (grad, (params, src, src_len, tgt, tgt_len))
    return out


def _generate_programs() -> dict[str, tuple]:
    import jax
    import jax.numpy as jnp

    import rnn_jax
    from rnn_jax.generate import _greedy, lm_initial_state, lm_step

    params = rnn_jax.init_rnn(
        jax.random.key(0), 40, 16, 40, cell="lstm", num_layers=2, token_inputs=True
    )
    seed = jax.random.randint(jax.random.key(1), (4, 6), 0, 40)
    state, start = lm_initial_state(params, seed, jnp.array([6, 3, 0, 2]), bos_id=1)
    return {
        "lm-lstm/step": (jax.jit(lm_step), (params, state, start)),
        # greedy_decode's jitted loop (the validation in front of it is not compiled)
        "lm-lstm/greedy": (
            lambda p, s, y: _greedy.lower(lm_step, p, s, y, 20, 2, 0),
            (params, state, start),
        ),
    }


def _long_programs() -> dict[str, tuple]:
    import jax

    import rnn_jax
    from rnn_jax.long import rnn_loss_remat

    ids = jax.random.randint(jax.random.key(1), (4, 50), 0, 5)
    labels = (ids > 1).astype("int32")
    out = {}
    for name, bi in (("uni", False), ("bi", True)):
        try:
            params = rnn_jax.init_rnn(
                jax.random.key(0), 5, 8, 2, cell="gru", bidirectional=bi, token_inputs=True
            )
            grad = jax.jit(jax.grad(lambda p, x, y: rnn_loss_remat(p, x, y, chunk_size=7)))
            jax.eval_shape(grad, params, ids, labels)  # a checkout without the mode: skip it
        except ValueError:
            continue
        out[f"remat-gru-{name}/grad"] = (grad, (params, ids, labels))
    return out


def _training_programs() -> dict[str, tuple]:
    """The library's own steps: ``make_train_step`` (what ``fit`` runs) and truncated BPTT."""
    import functools

    import jax
    import jax.numpy as jnp

    import rnn_jax
    from rnn_jax.long import truncated_bptt
    from rnn_jax.losses import masked_softmax_cross_entropy
    from rnn_jax.train import default_optimizer, init_train_state, make_train_step

    params = rnn_jax.init_rnn(jax.random.key(0), 30, 16, 30, cell="gru", token_inputs=True)
    ids = jax.random.randint(jax.random.key(1), (8, 20), 0, 30)
    lengths = jnp.arange(13, 21)[:8]
    opt = default_optimizer(1e-2, clip_norm=1.0, warmup_steps=5, total_steps=50)

    def loss_fn(params, batch, *, key):
        xs, ls = batch
        logits = rnn_jax.rnn_apply(params, xs, ls, input_dropout=0.1, key=key)
        return masked_softmax_cross_entropy(logits, jnp.roll(xs, -1, axis=1), ls)

    state = init_train_state(params, opt, key=jax.random.key(2))
    step = make_train_step(loss_fn, opt)
    tbptt = jax.jit(functools.partial(truncated_bptt, optimizer=opt, chunk_size=5))
    bi = rnn_jax.init_rnn(jax.random.key(3), 30, 16, 2, bidirectional=True, token_inputs=True)

    def classify_loss(p, ids, lengths, pool):
        return jnp.sum(rnn_jax.rnn_classify(p, ids, lengths, pool=pool) ** 2)

    classify = {
        f"classify-{pool}/grad": (
            jax.jit(jax.grad(functools.partial(classify_loss, pool=pool))),
            (bi, ids, lengths),
        )
        for pool in ("last", "mean")
    }
    return {
        **classify,
        "fit-gru/step": (step, (state, (ids, lengths))),
        "tbptt-gru/step": (tbptt, (params, opt.init(params), ids, jnp.roll(ids, -1, axis=1))),
    }


def programs() -> dict[str, tuple]:
    progs: dict[str, tuple] = {}
    for w in MAIN:
        progs.update(_train_programs(w.name, w))
    w2, w5 = MAIN[1], MAIN[4]
    for cell in ("gru", "lstm"):
        progs.update(_train_programs(f"W2-{cell}", w2, cell))
        small5 = dataclasses.replace(w5, B=16, T=30, H=32, V=200)
        progs.update(_train_programs(f"W5small-{cell}", small5, cell))
    progs.update(_seq2seq_programs())
    progs.update(_generate_programs())
    progs.update(_long_programs())
    progs.update(_training_programs())
    return progs


def _lowered(fn: Callable, args: tuple):
    out = fn.lower(*args) if hasattr(fn, "lower") else fn(*args)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiled", action="store_true", help="also hash the optimised HLO")
    parser.add_argument("--only", default="", help="comma-separated name prefixes")
    parser.add_argument("--dump", default="", help="folder to write the normalised texts to")
    args = parser.parse_args(argv)
    only = [p for p in args.only.split(",") if p]
    dump = Path(args.dump) if args.dump else None
    if dump:
        dump.mkdir(parents=True, exist_ok=True)
    for name, (fn, fn_args) in programs().items():
        if only and not any(name.startswith(p) for p in only):
            continue
        lowered = _lowered(fn, fn_args)
        texts = {"stablehlo": lowered.as_text()}
        if args.compiled:
            texts["hlo"] = lowered.compile().as_text()
        row = [name] + [f"{k}={digest(t)}" for k, t in texts.items()]
        print("  ".join(row), flush=True)
        if dump:
            for k, t in texts.items():
                (dump / f"{name.replace('/', '_')}.{k}.txt").write_text(normalise(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
