"""Unsupervised pre-training of the recurrent layer as a word-level language model (Dai & Le 2015).

A one-layer classic RNN reads unlabelled snippets and predicts the next word,
``ŷ<t> = softmax(W_y a<t> + b_y)`` over the ``K`` most frequent words (rarer targets are
``<UNK>``; the input vocabulary is the classifier's full one). The forward language model
reads each snippet left to right, the backward one right to left (the snippet reversed);
their recurrent layers (``W_a``, ``b_a``: the input columns ``W_ax[:, id]`` and ``W_aa``)
initialise the forward and backward layers of a ``*_lm`` classifier, whose head is fresh.

Unlabelled text: the texts (never the scores) of the movie training split and of the other
three ground-truth files (Amazon, NYT, tweets). The cross-domain scores of ``*_lm`` models
have therefore seen those domains' unlabelled text (transductive), which the results say.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import init_rnn, rnn_apply
from rnn_jax.batching import iterate_batches
from rnn_jax.losses import masked_softmax_cross_entropy
from rnn_jax.params import LayerParams
from rnn_jax.train import default_optimizer, init_train_state, make_train_step

__all__ = ["lm_targets", "pretrain_layer", "pretrained_layers", "with_layers"]


def lm_targets(ids: jax.Array, num_targets: int, unk_id: int) -> jax.Array:
    """Next-word targets: ids ``>= num_targets`` (rarer words) become ``unk_id``.

    Example:
        >>> lm_targets(jnp.array([[4, 1, 9, 2]]), 5, 1).tolist()
        [[4, 1, 1, 2]]
    """
    return jnp.where(ids < num_targets, ids, unk_id)


def pretrain_layer(
    ids: list[np.ndarray],
    *,
    vocab_size: int,
    hidden_size: int,
    num_targets: int,
    unk_id: int,
    pad_id: int,
    key: jax.Array,
    num_epochs: int,
    batch_size: int,
    learning_rate: float,
    max_len: int,
) -> tuple[LayerParams, dict[str, Any]]:
    """Trains a one-layer RNN language model on ``ids``; returns its layer and a summary."""
    k_init, k_data, k_steps = jax.random.split(key, 3)
    params = init_rnn(k_init, vocab_size, hidden_size, num_targets, token_inputs=True)
    ids = [x for x in ids if len(x) >= 2]
    steps_per_epoch = len(ids) // batch_size
    optimizer = default_optimizer(
        learning_rate, warmup_steps=100, total_steps=max(num_epochs * steps_per_epoch, 101)
    )

    def loss_fn(p, batch, *, key):
        x, lengths = batch
        logits = rnn_apply(p, x[:, :-1], lengths - 1)  # a<t> predicts word t + 1
        return masked_softmax_cross_entropy(
            logits, lm_targets(x[:, 1:], num_targets, unk_id), lengths - 1
        )

    state = init_train_state(params, optimizer, key=k_steps)
    train_step = make_train_step(loss_fn, optimizer)
    t0, losses = time.perf_counter(), []
    for epoch in range(num_epochs):
        epoch_losses = []
        for b in iterate_batches(
            ids,
            batch_size=batch_size,
            key=jax.random.fold_in(k_data, epoch),
            pad_values=pad_id,
            drop_last=True,
            pad_to_multiple=16,
            max_len=max_len + 1,
        ):
            state, metrics = train_step(state, (jnp.asarray(b.fields[0]), jnp.asarray(b.lengths)))
            epoch_losses.append(metrics["loss"])
        losses.append(float(jnp.mean(jnp.stack(epoch_losses))))
        print(f"  language model epoch {epoch + 1}: loss {losses[-1]:.3f}", file=sys.stderr)
    summary = {"epoch_losses": losses, "seconds": time.perf_counter() - t0, "sequences": len(ids)}
    return state.params.layers[0][0], summary


def _save(path: Path, layers: dict[str, LayerParams], summary: dict[str, Any]) -> None:
    from experiments.common import is_primary

    if not is_primary():  # several processes (--distributed) train the same LMs: one writes
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{d}_{f}": np.asarray(getattr(p, f)) for d, p in layers.items() for f in p._fields}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")


def _load(path: Path) -> dict[str, LayerParams]:
    with np.load(path) as f:
        return {
            d: LayerParams(jnp.asarray(f[f"{d}_W_a"]), jnp.asarray(f[f"{d}_b_a"]))
            for d in ("forward", "backward")
        }


def pretrained_layers(
    path: Path, corpus: list[np.ndarray], *, key: jax.Array, **kwargs: Any
) -> dict[str, LayerParams]:
    """The forward and backward language models' layers, trained once and cached at ``path``."""
    path = Path(path)
    if path.exists():
        return _load(path)
    layers, summary = {}, {}
    for i, direction in enumerate(("forward", "backward")):
        seqs = corpus if direction == "forward" else [x[::-1].copy() for x in corpus]
        print(f"pre-training the {direction} language model", file=sys.stderr)
        layers[direction], summary[direction] = pretrain_layer(
            seqs, key=jax.random.fold_in(key, i), **kwargs
        )
    _save(path, layers, summary)
    return layers


def with_layers(params: Any, layers: dict[str, LayerParams], bidirectional: bool) -> Any:
    """``params`` (a one-layer classifier) with its recurrent layer(s) replaced."""
    new = (layers["forward"], layers["backward"]) if bidirectional else (layers["forward"],)
    return dataclasses.replace(params, layers=(new,))
