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
- **Word features** (``*_feat``): the CRF baseline's cheap per-token features
  (:func:`experiments.entities.baselines.token_features`: capitalisation, digits, ``@``,
  ``#``, URL, length, a short word shape) are concatenated as well:
  ``x<t> = [E[:, id<t>]; c<t>; f<t>]`` (``c<t>`` only in ``*_char`` models).
- **CRF output layer** (``*_crf``): the tag logits are the emissions of a linear-chain CRF
  (:mod:`rnn_jax.crf`, Huang et al. 2015, Lample et al. 2016) whose transition, start and end
  scores are learned with the rest; trained with the negative log-likelihood of the whole tag
  sequence, decoded with Viterbi. Without it, a softmax per token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from experiments.entities.baselines import NUM_TOKEN_FEATURES
from experiments.entities.config import MODEL_SPECS, ModelConfig
from rnn_jax import init_rnn, rnn_apply, rnn_classify
from rnn_jax.crf import CRFParams, init_crf
from rnn_jax.lookup import column_lookup
from rnn_jax.params import RNNParams

__all__ = [
    "CRFTaggerParams",
    "CharTaggerParams",
    "FeatureTaggerParams",
    "Tagger",
    "char_features",
    "make_tagger",
]


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


class FeatureTaggerParams(NamedTuple):
    """A tagger that reads the word features (``*_feat``), without a char-RNN.

    Attributes:
        E: ``(word_dim, |V|)`` word vectors.
        tagger: the word-level RNN over ``word_dim + NUM_TOKEN_FEATURES`` inputs.
    """

    E: Float[Array, "D_w V"]
    tagger: RNNParams


class CRFTaggerParams(NamedTuple):
    """A tagger with a CRF output layer (``*_crf``).

    Attributes:
        net: the tagger's own parameters (its logits are the CRF's emissions).
        crf: the transition, start and end scores over the tags.
    """

    net: Any
    crf: CRFParams


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
    """``init(key) -> params``; ``apply(params, ids, chars, lengths, *, feats, key, train)``.

    ``apply`` gives the tag logits ``(B, T, C)``: the softmax's inputs, or with ``crf`` the
    CRF's emissions (``params.crf`` holds the CRF's own scores). ``chars`` ``(B, T, L)`` is
    ignored by models without ``_char``, ``feats`` ``(B, T, F)`` by models without ``_feat``.
    """

    name: str
    init: Callable[[jax.Array], Any]
    apply: Callable[..., Float[Array, "B T C"]]
    crf: bool = False


def _check_feats(name: str, feats, ids) -> None:
    if feats is None or feats.shape != (*ids.shape, NUM_TOKEN_FEATURES):
        raise ValueError(
            f"`feats` of the {name} tagger must be (B, T, {NUM_TOKEN_FEATURES}) with (B, T) = "
            f"{tuple(ids.shape)}, got {None if feats is None else tuple(feats.shape)}"
        )


def _dense_inputs_tagger(name: str, config: ModelConfig, vocab_size: int, num_chars: int,
                         num_tags: int, dropout_kw: Callable[..., dict[str, Any]]):  # fmt: skip
    """``(init, apply)`` of a tagger whose word-level layer reads ``[E[:, id]; c; f]``."""
    spec = MODEL_SPECS[name]
    input_size = (
        config.word_dim
        + (config.char_dim if spec.chars else 0)
        + (NUM_TOKEN_FEATURES if spec.features else 0)
    )

    def init(key):
        k_E, k_chars, k_tagger = jax.random.split(key, 3)
        E = jax.random.normal(k_E, (config.word_dim, vocab_size)) / jnp.sqrt(config.word_dim)
        tagger = init_rnn(k_tagger, input_size, config.hidden_size, num_tags, cell=spec.cell,
                          bidirectional=spec.bidirectional)  # fmt: skip
        if not spec.chars:
            return FeatureTaggerParams(E, tagger)
        chars = init_rnn(k_chars, num_chars, config.char_hidden, config.char_dim,
                         bidirectional=True, token_inputs=True)  # fmt: skip
        return CharTaggerParams(E, chars, tagger)

    def apply(params, ids, chars, lengths, *, feats=None, key=None, train=False):
        parts = [column_lookup(params.E, ids)]
        if spec.chars:
            parts.append(char_features(params.chars, chars))
        if spec.features:
            _check_feats(name, feats, ids)
            parts.append(feats.astype(parts[0].dtype))
        x = jnp.concatenate(parts, axis=-1)
        return rnn_apply(params.tagger, x, lengths, **dropout_kw(train, key))

    return init, apply


def make_tagger(name: str, config: ModelConfig, vocab_size: int, num_chars: int, num_tags: int):
    """The tagger called ``name`` (a key of :data:`MODEL_SPECS`, e.g. ``bigru_char_feat_crf``)."""
    spec = MODEL_SPECS[name]

    def dropout_kw(train: bool, key) -> dict[str, Any]:
        rates = {
            "input_dropout": config.input_dropout,
            "output_dropout": config.output_dropout,
            "recurrent_dropout": config.recurrent_dropout,
        }
        if not train or not any(rates.values()):
            return {}
        return {**rates, "key": key}

    if spec.chars or spec.features:
        init, apply = _dense_inputs_tagger(name, config, vocab_size, num_chars, num_tags,
                                           dropout_kw)  # fmt: skip
    else:

        def init(key):
            return init_rnn(key, vocab_size, config.hidden_size, num_tags, cell=spec.cell,
                            bidirectional=spec.bidirectional, token_inputs=True)  # fmt: skip

        def apply(params, ids, chars, lengths, *, feats=None, key=None, train=False):
            return rnn_apply(params, ids, lengths, **dropout_kw(train, key))

    if not spec.crf:
        return Tagger(name, init, apply)

    def init_with_crf(key):
        return CRFTaggerParams(init(key), init_crf(num_tags))

    def emissions(params, ids, chars, lengths, **kwargs):
        return apply(params.net, ids, chars, lengths, **kwargs)

    return Tagger(name, init_with_crf, emissions, crf=True)
