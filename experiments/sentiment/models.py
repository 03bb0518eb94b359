"""The sentiment models: recurrent networks of :mod:`rnn_jax` with a many-to-one head.

Every model maps token ids ``(B, T)`` and lengths ``(B,)`` with :func:`rnn_jax.rnn_classify`
to two logits ``(B, 2)`` (negative, positive), or, for a ``_score`` model, to one number
``(B, 1)``: the rating divided by 4 (so in about ``[-1, 1]``). The ids go through the column lookup
``W_ax[:, id]`` (never one-hot vectors), the recurrent layers run with masking, the top
layer's outputs are summarised by ``pool`` (the last state, or the mean or max over the
valid steps) and the head ``W_y a_pool + b_y`` gives the logits. During training, words are
read as ``<UNK>`` with probability ``input_dropout``, the recurrent state and the pooled
state are dropped out as configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from experiments.sentiment.config import MODEL_SPECS, ModelConfig
from rnn_jax import column_lookup, init_rnn, lengths_to_mask, rnn_classify

__all__ = [
    "SCORE_SCALE",
    "Classifier",
    "bigram_ids",
    "make_classifier",
    "ngram_idf",
    "wide_logits",
    "with_idf",
]

NUM_CLASSES = 2
SCORE_SCALE = 4.0  # a _score model's output times this is the rating in [-4, 4]


class Classifier(NamedTuple):
    """``init(key) -> params`` and ``apply(params, ids, lengths, *, key, train) -> outputs``.

    ``outputs``: ``(B, 2)`` logits, or ``(B, 1)`` scaled ratings for a ``_score`` model.
    """

    name: str
    init: Callable[[jax.Array], Any]
    apply: Callable[..., Float[Array, "B _"]]


def bigram_ids(
    ids: Int[Array, "B T"], lengths: Int[Array, " B"], vocab_size: int, buckets: int
) -> tuple[Int[Array, "B T"], jax.Array]:
    """Hashed bigram ids and their mask: position ``t`` holds the pair ``(ids[t-1], ids[t])``.

    The hash is ``(a * vocab_size + b) mod buckets`` (exact, no collision, when
    ``buckets >= vocab_size ** 2``), computed in int32 (``a * vocab_size + b`` stays below
    ``vocab_size ** 2``, checked here). A bigram counts only when both of its tokens are
    valid: ``mask[:, t] = 1 <= t < length``, so position 0, padding, and a 1-token snippet
    have none. Masked positions hold bucket 0 (to be ignored through the mask).

    Example:
        >>> ids, mask = bigram_ids(jnp.array([[3, 1, 2, 0]]), jnp.array([3]), 4, 10)
        >>> ids.tolist(), mask.tolist()   # (3, 1) -> 13 % 10, (1, 2) -> 6
        ([[0, 3, 6, 0]], [[False, True, True, False]])
    """
    if vocab_size**2 > 2**31 - 1:
        raise ValueError(
            f"`vocab_size` must be at most 46340 for the int32 bigram hash, got {vocab_size}"
        )
    ids = ids.astype(jnp.int32)
    pairs = ids[:, :-1] * vocab_size + ids[:, 1:]
    mask = jnp.asarray(lengths_to_mask(lengths, ids.shape[1])).at[:, 0].set(False)
    hashed = jnp.pad(pairs % buckets, ((0, 0), (1, 0)))
    return jnp.where(mask, hashed, 0), mask


def ngram_idf(
    ids: list[np.ndarray], vocab_size: int, buckets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse document frequencies of the unigrams ``(vocab_size,)`` and hashed bigrams
    ``(buckets,)`` over the snippets ``ids`` (one array of token ids each, unpadded).

    ``idf = log((1 + N) / (1 + df)) + 1`` (scikit-learn's smoothed idf; ``N`` snippets,
    ``df`` the number of snippets holding the n-gram, bigrams hashed as :func:`bigram_ids`),
    then divided by its mean over the n-grams' occurrences in ``ids``, so that an average
    occurrence weighs 1 (the linear term keeps the overall scale of plain counts).

    Example:
        >>> uni, bi = ngram_idf([np.array([0, 1]), np.array([0])], vocab_size=3, buckets=4)
        >>> bool(uni[1] > uni[0]), bi.shape   # word 1 is in one snippet of two, word 0 in both
        (True, (4,))
    """
    if not ids:
        raise ValueError("`ids` must hold at least one snippet, got an empty list")
    if vocab_size**2 > 2**31 - 1:
        raise ValueError(
            f"`vocab_size` must be at most 46340 for the int32 bigram hash, got {vocab_size}"
        )
    n = len(ids)
    df_uni = np.zeros(vocab_size, np.int64)
    df_bi = np.zeros(buckets, np.int64)
    tf_uni = np.zeros(vocab_size, np.int64)
    tf_bi = np.zeros(buckets, np.int64)
    for x in ids:
        x = np.asarray(x, np.int64)
        if x.size and (x.min() < 0 or x.max() >= vocab_size):
            raise ValueError(
                f"`ids` must be token ids in [0, {vocab_size}), got {x.min()}..{x.max()}"
            )
        pairs = (x[:-1] * vocab_size + x[1:]) % buckets
        np.add.at(tf_uni, x, 1)
        np.add.at(tf_bi, pairs, 1)
        df_uni[np.unique(x)] += 1
        df_bi[np.unique(pairs)] += 1
    idf = [np.log((1 + n) / (1 + df)) + 1.0 for df in (df_uni, df_bi)]
    occurrences = tf_uni.sum() + tf_bi.sum()
    mean = (idf[0] @ tf_uni + idf[1] @ tf_bi) / max(occurrences, 1)
    return (idf[0] / mean).astype(np.float32), (idf[1] / mean).astype(np.float32)


def with_idf(params: dict[str, Any], ids: list[np.ndarray]) -> dict[str, Any]:
    """``params`` of a ``wide_weight="idf"`` model with the idf weights of :func:`ngram_idf`
    over the training snippets ``ids`` (they replace the ones set by ``init``; never trained)."""
    wide = params["wide"]
    if "idf_uni" not in wide:
        raise ValueError(
            "`params` must be those of a wide_ model with wide_weight='idf' (an 'idf_uni' "
            f"entry), got wide entries {sorted(wide)}"
        )
    uni, bi = ngram_idf(ids, wide["W_uni"].shape[1], wide["W_bi"].shape[1])
    return {**params, "wide": {**wide, "idf_uni": jnp.asarray(uni), "idf_bi": jnp.asarray(bi)}}


def wide_logits(
    wide: dict[str, jax.Array],
    ids: Int[Array, "B T"],
    lengths: Int[Array, " B"],
    *,
    norm: str = "mean",
    scale: float = 1.0,
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> Float[Array, "B C"]:
    """The linear term ``scale * (sum_t W_uni[:, id_t] + sum_t W_bi[:, bigram_t]) / n + b``.

    ``wide``: ``{"W_uni": (C, V), "W_bi": (C, buckets), "b": (C,)}``; the columns come from
    :func:`rnn_jax.column_lookup` (no one-hot vectors), the bigrams from :func:`bigram_ids`;
    padding never contributes. ``n``: the number of valid tokens (``norm="mean"``, fastText's
    average) or its square root (``norm="sqrt"``). ``dropout``: during training each
    unigram and bigram term is dropped with this probability (and the kept ones scaled by
    ``1 / (1 - dropout)``), one mask per position and n-gram order (needs ``key``).
    With ``"idf_uni"`` ``(V,)`` and ``"idf_bi"`` ``(buckets,)`` in ``wide`` (:func:`with_idf`),
    each term is weighted by its n-gram's idf, held constant (no gradient flows to it).
    """
    W_uni, W_bi = wide["W_uni"], wide["W_bi"]
    uni_mask = jnp.asarray(lengths_to_mask(lengths, ids.shape[1]))
    bi, bi_mask = bigram_ids(ids, lengths, W_uni.shape[1], W_bi.shape[1])
    uni_w, bi_w = uni_mask.astype(W_uni.dtype), bi_mask.astype(W_bi.dtype)
    uni_ids = jnp.where(uni_mask, ids, 0)
    if "idf_uni" in wide:
        uni_w = uni_w * jax.lax.stop_gradient(wide["idf_uni"])[uni_ids].astype(uni_w.dtype)
        bi_w = bi_w * jax.lax.stop_gradient(wide["idf_bi"])[bi].astype(bi_w.dtype)
    if dropout > 0.0:
        if key is None:
            raise ValueError(
                "`key` must be a PRNG key when the n-gram dropout is positive, got None"
            )
        k_uni, k_bi = jax.random.split(key)
        keep = 1.0 - dropout
        uni_w = uni_w * jax.random.bernoulli(k_uni, keep, uni_w.shape).astype(uni_w.dtype) / keep
        bi_w = bi_w * jax.random.bernoulli(k_bi, keep, bi_w.shape).astype(bi_w.dtype) / keep
    total = jnp.einsum("btc,bt->bc", column_lookup(W_uni, uni_ids), uni_w)
    total = total + jnp.einsum("btc,bt->bc", column_lookup(W_bi, bi), bi_w)
    n = jnp.maximum(lengths, 1).astype(total.dtype)[:, None]
    return scale * total / (n if norm == "mean" else jnp.sqrt(n)) + wide["b"][None, :]


def make_classifier(name: str, config: ModelConfig, vocab_size: int, unk_id: int) -> Classifier:
    """The model called ``name`` (a key of :data:`MODEL_SPECS`, e.g. ``rnnbi_mean``).

    A ``wide_`` model's parameters are ``{"deep": <the RNN's>, "wide": <the linear term's>}``
    (``wide_only``: ``{"wide": ...}``), its logits the sum of both parts (:func:`wide_logits`).
    """
    spec = MODEL_SPECS[name]
    if spec.wide:
        return _wide_classifier(name, spec, config, vocab_size, unk_id)
    return _deep_classifier(name, spec, config, vocab_size, unk_id)


def _wide_classifier(name, spec, config: ModelConfig, vocab_size: int, unk_id: int) -> Classifier:
    deep = None if spec.cell == "none" else _deep_classifier(name, spec, config, vocab_size, unk_id)
    outputs = 1 if spec.target == "score" else NUM_CLASSES

    def init(key):
        k_deep, _ = jax.random.split(key)
        wide = {  # zeros: the linear term starts neutral (as fastText's output layer)
            "W_uni": jnp.zeros((outputs, vocab_size)),
            "W_bi": jnp.zeros((outputs, config.bigram_buckets)),
            "b": jnp.zeros((outputs,)),
        }
        if config.wide_weight == "idf":  # ones until with_idf sets the training split's idf
            wide |= {"idf_uni": jnp.ones(vocab_size), "idf_bi": jnp.ones(config.bigram_buckets)}
        return {"wide": wide} if deep is None else {"deep": deep.init(k_deep), "wide": wide}

    def apply(params, ids, lengths, *, key=None, train=False):
        rate = config.ngram_dropout if train else 0.0
        k_wide = k_deep = None
        if train and key is not None:
            k_wide, k_deep = jax.random.split(key)
        logits = wide_logits(
            params["wide"],
            ids,
            lengths,
            norm=config.wide_norm,
            scale=config.wide_scale,
            dropout=rate,
            key=k_wide,
        )
        if deep is None:
            return logits
        return logits + deep.apply(params["deep"], ids, lengths, key=k_deep, train=train)

    return Classifier(name, init, apply)


def _deep_classifier(name, spec, config: ModelConfig, vocab_size: int, unk_id: int) -> Classifier:
    cell, num_layers, bidirectional, pool = spec[:4]
    outputs = 1 if spec.target == "score" else NUM_CLASSES
    cell_kw = {} if cell == "rnn" else {"cell": cell}
    rates = {
        "input_dropout": config.input_dropout,
        "recurrent_dropout": config.recurrent_dropout,
        "output_dropout": config.output_dropout,
        "dropout": config.dropout if num_layers > 1 else 0.0,
    }

    def init(key):
        return init_rnn(
            key,
            vocab_size,
            config.hidden_size,
            outputs,
            num_layers=num_layers,
            bidirectional=bidirectional,
            token_inputs=True,
            **cell_kw,
        )

    def apply(params, ids, lengths, *, key=None, train=False):
        if not train or not any(rates.values()):
            return rnn_classify(params, ids, lengths, pool=pool)
        return rnn_classify(params, ids, lengths, pool=pool, unk_id=unk_id, key=key, **rates)

    return Classifier(name, init, apply)
