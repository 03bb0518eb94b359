"""The recurrent cell: one example, one time step, the formulation's equations verbatim.

.. math::

    a^{<t>} = g(W_a [a^{<t-1>}; x^{<t>}] + b_a) = g(W_{aa} a^{<t-1>} + W_{ax} x^{<t>} + b_a)

    \\hat y^{<t>} = g_y(W_y a^{<t>} + b_y)

:func:`rnn_cell` has the signature ``lax.scan`` wants once its parameters are bound,
``(carry, x) -> (carry, y)``, so ``lax.scan(partial(rnn_cell, params), a0, xs)`` runs a
whole sequence with no adapter (the fused unroll in :mod:`rnn_jax.recurrence` computes
the same thing faster, hoisting the input and output projections out of the loop).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from functools import partial
    >>> from rnn_jax import init_layer, init_head, CellParams, rnn_cell
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> layer = init_layer(5, 8, key=k1)              # W_a: (8, 8 + 5)
    >>> head = init_head(8, 3, key=k2)                # W_y: (3, 8)
    >>> params = CellParams(*layer, *head)
    >>> a, y_hat = rnn_cell(params, jnp.zeros(8), jnp.ones(5), output_activation="softmax")
    >>> a.shape, y_hat.shape
    ((8,), (3,))
    >>> a_T, y_hats = jax.lax.scan(partial(rnn_cell, params), jnp.zeros(8), jnp.ones((7, 5)))
    >>> y_hats.shape                                  # (T_x, C)
    (7, 3)
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from rnn_jax._activations import Activation, hidden_activation, output_activation_fn
from rnn_jax.params import HeadParams, LayerParams

__all__ = [
    "Activation",
    "CellParams",
    "hidden_activation",
    "output_activation_fn",
    "rnn_cell",
]


class CellParams(NamedTuple):
    """A one-layer cell with its output head, in stacked form.

    Attributes:
        W_a: ``(H, H + D)`` = ``[W_aa | W_ax]``.
        b_a: ``(H,)``.
        W_y: ``(C, H)``.
        b_y: ``(C,)``.
    """

    W_a: Float[Array, "H HD"]
    b_a: Float[Array, " H"]
    W_y: Float[Array, "C H"]
    b_y: Float[Array, " C"]

    @property
    def layer(self) -> LayerParams:
        return LayerParams(self.W_a, self.b_a)

    @property
    def head(self) -> HeadParams:
        return HeadParams(self.W_y, self.b_y)


def rnn_cell(
    params: CellParams | LayerParams,
    a_prev: Float[Array, " H"],
    x_t: Float[Array, " D"] | Int[Array, ""],
    *,
    activation: Activation = "tanh",
    output_activation: Activation | None = None,
) -> tuple[Float[Array, " H"], Float[Array, " C"] | Float[Array, " H"]]:
    """One step of the RNN for one example: ``(a<t-1>, x<t>) -> (a<t>, ŷ<t>)``.

    Args:
        params: :class:`CellParams` (layer and head), or :class:`LayerParams` alone, in
            which case ``ŷ<t> = a<t>`` (the output of an inner layer of a deep RNN).
        a_prev: ``a<t-1>``, shape ``(H,)``.
        x_t: ``x<t>``: a dense vector ``(D,)``, or an integer scalar token id meaning the
            one-hot vector of length ``D = |V|``; then ``W_ax x<t>`` is the column
            ``W_ax[:, id]`` and no one-hot vector is ever built (an id outside
            ``[0, |V|)`` gives NaN).
        activation: ``g``: ``"tanh"`` (default), ``"relu"`` or a callable.
        output_activation: ``g_y``: ``None`` (identity, logits), ``"sigmoid"``,
            ``"softmax"`` or a callable.

    Returns:
        ``(a, y_hat)``: ``a<t>`` of shape ``(H,)`` and ``ŷ<t>`` of shape ``(C,)``.
    """
    if not isinstance(params, CellParams | LayerParams):
        raise ValueError(
            "`params` must be a CellParams (a layer with its head) or a LayerParams (one "
            f"layer, e.g. `params.layers[0][0]` of an RNNParams), got {type(params).__name__}."
        )
    W_a, b_a = params[0], params[1]
    H = b_a.shape[-1]
    if a_prev.shape != (H,):
        raise ValueError(f"`a_prev` must have shape (H,) = ({H},), got {tuple(a_prev.shape)}.")
    W_aa, W_ax = W_a[:, :H], W_a[:, H:]
    x_t = jnp.asarray(x_t)
    if x_t.ndim == 0:
        if not jnp.issubdtype(x_t.dtype, jnp.integer):
            raise ValueError(
                f"`x_t` as a scalar must be an integer token id, got dtype {x_t.dtype}."
            )
        # W_ax @ one_hot(x_t, |V|), as a column lookup; an id out of [0, |V|) reads the
        # fill value NaN (never a clamped or wrapped-around column), also under jit.
        V = W_ax.shape[1]
        col = jnp.where((x_t >= 0) & (x_t < V), x_t + H, W_a.shape[1])
        input_term = jnp.take(W_a, col, axis=1, mode="fill", fill_value=jnp.nan)
    elif x_t.shape == (W_ax.shape[1],):
        input_term = W_ax @ x_t
    else:
        raise ValueError(
            f"`x_t` must be a vector of shape (D,) = ({W_ax.shape[1]},) or an integer token id, "
            f"got shape {tuple(x_t.shape)}."
        )
    a = hidden_activation(activation)(W_aa @ a_prev + input_term + b_a)
    if isinstance(params, CellParams):
        y_hat = output_activation_fn(output_activation)(params.W_y @ a + params.b_y)
    else:
        y_hat = a
    return a, y_hat
