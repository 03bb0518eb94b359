"""The taggers: recurrent networks of :mod:`rnn_jax` with a softmax over the BIO tags.

Every model maps a batch of tweets to one row of tag logits per token, ``(B, T, C)``
(``ŷ<t> = softmax(z<t>)`` over the ``C = 21`` BIO tags), with :func:`rnn_jax.rnn_apply`
(many-to-many, ``T_y = T_x``).

- **Word-only** models (``rnn``, ``birnn``, ...) read token ids: the first layer's
  ``W_ax[:, id]`` is the word's vector (a column lookup, never a one-hot product).
- **Character-level word features** (``*_char``): a bidirectional classic character RNN (in
  every ``*_char`` model, so the word-level cell is the only difference between them; a gated
  char-RNN over every word cost ten times as much per step on CPU) reads each word's
  characters (case kept) and :func:`rnn_jax.rnn_classify` (many-to-one,
  ``pool="last"``) maps its last forward and first backward states to ``char_dim`` features,

  .. math::

      c^{<t>} = W_c [\\overrightarrow{h}_{last}; \\overleftarrow{h}_{first}] + b_c ,

  so an unknown word still shows its capitals, digits, ``@``/``#`` and suffix. The word-level
  RNN reads ``x<t> = [E[:, id<t>]; c<t>]``: the word's vector (a column of
  ``E`` of shape ``(word_dim, |V|)``, looked up by :func:`rnn_jax.lookup.column_lookup`)
  next to its character features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from experiments.entities.config import MODEL_SPECS, ModelConfig
from rnn_jax import init_rnn, rnn_apply, rnn_classify
from rnn_jax.lookup import column_lookup
from rnn_jax.params import RNNParams

__all__ = ["CharTaggerParams", "Tagger", "char_features", "make_tagger"]


class CharTaggerParams(NamedTuple):
    """A tagger with character-level word features.

    Attributes:
        E: ``(word_dim, |V|)`` word vectors, one column a word.
        chars: the bidirectional classic char-RNN; its head ``(char_dim, 2 · char_hidden)`` gives
            the features.
        tagger: the word-level RNN over ``word_dim + char_dim`` inputs; its head gives the
            tag logits.
    """

    E: Float[Array, "D_w V"]
    chars: RNNParams
    tagger: RNNParams


def char_features(
    params: RNNParams, chars: Int[Array, "B T L"], pad_id: int = 0
) -> Float[Array, "B T D_c"]:
    """The char-RNN's features of every word: ``rnn_classify`` over the ``B · T`` words.

    A word's length is its number of non-``pad_id`` characters; a padding word (length 0)
    gets the head's bias.
    """
    B, T, L = chars.shape
    flat = chars.reshape(B * T, L)
    lengths = jnp.sum(flat != pad_id, axis=1)
    feats = rnn_classify(params, flat, lengths, pool="last")
    return feats.reshape(B, T, -1)


class Tagger(NamedTuple):
    """``init(key) -> params``; ``apply(params, ids, chars, lengths, *, key, train) -> logits``.

    ``chars`` ``(B, T, L)`` is ignored by word-only models.
    """

    name: str
    init: Callable[[jax.Array], Any]
    apply: Callable[..., Float[Array, "B T C"]]


def make_tagger(name: str, config: ModelConfig, vocab_size: int, num_chars: int, num_tags: int):
    """The tagger called ``name`` (a key of :data:`MODEL_SPECS`, e.g. ``bilstm_char``)."""
    cell, bidirectional, use_chars = MODEL_SPECS[name]
    H = config.hidden_size

    def dropout_kw(train: bool, key) -> dict[str, Any]:
        rates = {
            "input_dropout": config.input_dropout,
            "output_dropout": config.output_dropout,
            "recurrent_dropout": config.recurrent_dropout,
        }
        if not train or not any(rates.values()):
            return {}
        return {**rates, "key": key}

    if not use_chars:

        def init(key):
            return init_rnn(key, vocab_size, H, num_tags, cell=cell,
                            bidirectional=bidirectional, token_inputs=True)  # fmt: skip

        def apply(params, ids, chars, lengths, *, key=None, train=False):
            return rnn_apply(params, ids, lengths, **dropout_kw(train, key))

        return Tagger(name, init, apply)

    def init(key):
        k_E, k_chars, k_tagger = jax.random.split(key, 3)
        E = jax.random.normal(k_E, (config.word_dim, vocab_size)) / jnp.sqrt(config.word_dim)
        chars = init_rnn(k_chars, num_chars, config.char_hidden, config.char_dim,
                         bidirectional=True, token_inputs=True)  # fmt: skip
        tagger = init_rnn(k_tagger, config.word_dim + config.char_dim, H, num_tags, cell=cell,
                          bidirectional=bidirectional)  # fmt: skip
        return CharTaggerParams(E, chars, tagger)

    def apply(params, ids, chars, lengths, *, key=None, train=False):
        x = jnp.concatenate([column_lookup(params.E, ids), char_features(params.chars, chars)], -1)
        return rnn_apply(params.tagger, x, lengths, **dropout_kw(train, key))

    return Tagger(name, init, apply)
