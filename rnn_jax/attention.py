"""Additive (Bahdanau) attention over a masked memory of encoder states.

For a query ``s`` (the decoder's state before the step, ``(B, H_q)``) and a memory
``h<1..T_x>`` (the encoder's top-layer outputs, ``(B, T_x, C)``) with a validity mask:

.. math::

    e^{<i>} = v^\\top \\tanh(W_q s + W_k h^{<i>}), \\qquad
    \\alpha^{<i>} = \\frac{m^{<i>} \\exp e^{<i>}}{\\sum_j m^{<j>} \\exp e^{<j>}}, \\qquad
    c = \\sum_i \\alpha^{<i>} h^{<i>}

(Bahdanau, Cho & Bengio, 2015). Padded positions (``m<i> = 0``) get a weight of exactly
zero and contribute nothing to ``c`` or to any gradient, so results do not depend on
what the padding holds or how long it is. A memory with no valid position gives
``α = 0`` and ``c = 0``. ``W_k h`` does not depend on the query: :func:`project_keys`
computes it once per source and :func:`attend` reuses it at every decoder step.

Example:
    >>> import jax, jax.numpy as jnp
    >>> p = init_attention(jax.random.key(0), query_size=4, key_size=6, attention_size=5)
    >>> memory = jnp.ones((2, 3, 6))
    >>> mask = jnp.array([[True, True, False], [True, False, False]])
    >>> ctx, w = attend(p, jnp.zeros((2, 4)), memory, project_keys(p, memory), mask)
    >>> ctx.shape, w.shape
    ((2, 6), (2, 3))
    >>> w[1].tolist()
    [1.0, 0.0, 0.0]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from rnn_jax._checks import positive_int

__all__ = ["ATTENTIONS", "AttentionParams", "attend", "init_attention", "project_keys"]

#: The attention forms of :func:`rnn_jax.seq2seq.init_seq2seq` (``"none"``: the seed's
#: attention-free encoder–decoder).
ATTENTIONS = ("none", "additive")


class AttentionParams(NamedTuple):
    """Additive attention's parameters.

    Attributes:
        W_q: ``(A, H_q)``, the query projection.
        W_k: ``(A, C)``, the key (memory) projection.
        v: ``(A,)``, the scoring vector.
    """

    W_q: Float[Array, "A Hq"]
    W_k: Float[Array, "A C"]
    v: Float[Array, " A"]

    @property
    def attention_size(self) -> int:
        return self.v.shape[-1]


def init_attention(
    key: jax.Array,
    query_size: int,
    key_size: int,
    attention_size: int,
    *,
    dtype: jnp.dtype = jnp.float32,
) -> AttentionParams:
    """Uniform ``±1/sqrt(fan_in)`` initialisation of ``W_q``, ``W_k`` and ``v``."""
    if not isinstance(key, jax.Array):
        raise ValueError(f"`key` must be a jax.random key array, got {type(key).__name__}.")
    H_q = positive_int("query_size", query_size)
    C = positive_int("key_size", key_size)
    A = positive_int("attention_size", attention_size)
    kq, kk, kv = jax.random.split(key, 3)

    def u(k, shape, fan_in):
        s = 1.0 / jnp.sqrt(fan_in)
        return jax.random.uniform(k, shape, dtype, -s, s)

    return AttentionParams(u(kq, (A, H_q), H_q), u(kk, (A, C), C), u(kv, (A,), A))


def project_keys(params: AttentionParams, memory: Float[Array, "B T C"]) -> Float[Array, "B T A"]:
    """``W_k h<i>`` for every memory position (computed once per source)."""
    return memory @ params.W_k.T


def attend(
    params: AttentionParams,
    query: Float[Array, "B Hq"],
    memory: Float[Array, "B T C"],
    keys: Float[Array, "B T A"],
    mask: Bool[Array, "B T"],
) -> tuple[Float[Array, "B C"], Float[Array, "B T"]]:
    """The context ``c`` and the weights ``α`` for a batch of queries.

    Args:
        params: :class:`AttentionParams`.
        query: ``(B, H_q)``.
        memory: ``(B, T_x, C)``.
        keys: ``project_keys(params, memory)``, ``(B, T_x, A)``.
        mask: ``(B, T_x)``, ``True`` at valid memory positions.

    Returns:
        ``(context (B, C), weights (B, T_x))``; the weights of a row sum to one over its
        valid positions (zero everywhere when it has none) and are exactly zero at
        padded ones.
    """
    q = query @ params.W_q.T  # (B, A)
    e = jnp.tanh(keys + q[:, None, :]) @ params.v  # (B, T)
    # Masked softmax with no -inf arithmetic: the padded scores never enter exp or max,
    # so neither the values nor the gradients can see them.
    m = jnp.max(jnp.where(mask, e, jnp.finfo(e.dtype).min), axis=-1, keepdims=True)
    p = jnp.where(mask, jnp.exp(jnp.where(mask, e - m, 0.0)), 0.0)
    total = jnp.sum(p, axis=-1, keepdims=True)
    w = p / jnp.where(total > 0, total, 1.0)
    context = jnp.einsum("bt,btc->bc", w, jnp.where(mask[:, :, None], memory, 0.0))
    return context, w
