"""Gradient-flow diagnostics: ``‖∂L/∂a<t>‖`` for every step of the top layer.

:func:`state_gradient_norms` computes, in one call (one ``jax.grad``), the gradient of a
many-to-one loss with respect to every top-layer state ``a<t>``, *through the
recurrence* (the total derivative: how much the loss changes when ``a<t>`` changes and
every later step reads the changed state). The hook is a zero perturbation ``δ<t>``
added to the top layer's state right after step ``t``::

    carry = 0
    for t in range(T):
        carry, a<t> = stack_step(stack, carry, x<t>)      # every layer, one step
        a<t> = a<t> + δ<t>;  carry[top] = a<t>             # the hook (δ = 0)
    L = loss_fn(head(a<T-1>))
    ∂L/∂a<t> = ∂L/∂δ<t> at δ = 0

It vanishes exponentially in ``T - t`` for the classic cell when ``‖W_aa‖`` and the
activation's slope keep the Jacobians ``∂a<t+1>/∂a<t>`` below one, and far less for the
gated cells (the GRU's ``z ⊙ h`` and the LSTM's ``f ⊙ c`` paths).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import init_rnn
    >>> params = init_rnn(jax.random.key(0), 2, 8, 1, cell="gru")
    >>> xs = jax.random.normal(jax.random.key(1), (4, 30, 2))
    >>> loss = lambda y: jnp.mean(y ** 2)              # y: the head's output (B, C)
    >>> state_gradient_norms(params, xs, loss_fn=loss).shape   # (T,), over the batch
    (30,)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from rnn_jax.network import check_params
from rnn_jax.params import RNNParams
from rnn_jax.stack import check_batch, head_apply, stack_step

__all__ = ["plot_gradient_norms", "state_gradient_norms"]


def state_gradient_norms(
    params: RNNParams,
    xs: Float[Array, "B T D"] | Int[Array, "B T"],
    lengths: Int[Array, " B"] | None = None,
    *,
    loss_fn: Callable[[Array], Array],
    per_example: bool = False,
) -> Float[Array, " T"] | Float[Array, "B T"]:
    """``‖∂L/∂a<t>‖`` for every step ``t`` of the top layer, through the recurrence.

    ``L = loss_fn(ŷ)`` with ``ŷ = g_y(W_y a_last + b_y)`` (logits, ``(B, C)``), the
    many-to-one head of :func:`rnn_jax.rnn_classify` with ``pool="last"`` on each
    example's top-layer state after its last valid step. See the module docstring for
    the hook. The stack runs step by step (:func:`rnn_jax.stack.stack_step`, ``vmap``
    over the batch), for every cell (``"rnn"``, ``"gru"``, ``"lstm"``); for the LSTM
    ``a<t>`` is the hidden state ``h<t>``.

    Args:
        params: a unidirectional :class:`~rnn_jax.RNNParams` of any cell and depth.
        xs: ``(B, T, D)`` floats or ``(B, T)`` token ids.
        lengths: ``(B,)`` valid lengths or ``None`` (all ``T`` valid). A padded step
            keeps the state, and its gradient is zero.
        loss_fn: ``(B, C) -> scalar``, e.g. ``lambda y: jnp.mean((y[:, 0] - target)**2)``.
        per_example: return ``(B, T)`` (each example's ``‖∂L/∂a_b<t>‖``) instead of the
            norm over the batch ``(T,)`` (the Frobenius norm of the ``(B, H)`` gradient).

    Returns:
        ``(T,)`` or ``(B, T)`` non-negative norms.

    Raises:
        ValueError: a bidirectional network (the backward direction's states depend on
            later inputs; there is no single ``a<t>`` to perturb), or invalid inputs.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rnn_jax import init_rnn
        >>> p = init_rnn(jax.random.key(0), 2, 8, 1)
        >>> xs = jax.random.normal(jax.random.key(1), (3, 20, 2))
        >>> n = state_gradient_norms(p, xs, loss_fn=lambda y: jnp.sum(y ** 2))
        >>> n.shape, bool(n[0] < n[-1])            # the classic cell: the signal decays
        ((20,), True)
    """
    check_params(params)
    if params.bidirectional:
        raise ValueError(
            "`params` must be unidirectional for state_gradient_norms, got a bidirectional network."
        )
    stack = params.stack
    xs, m, _, _ = check_batch(stack, xs, lengths)
    B, T = xs.shape[:2]
    m = jnp.ones((B, T), bool) if m is None else m
    L, H = stack.num_layers, stack.hidden_size
    dtype = params.head.W_y.dtype
    h0 = jnp.zeros((L, B, H), dtype)
    carry0 = (h0, h0) if stack.cell == "lstm" else h0
    step = jax.vmap(functools.partial(stack_step, stack), in_axes=(1, 0), out_axes=(1, 0))

    def loss_of(delta: Array) -> Array:  # delta: (T, B, H)
        def body(carry, inputs):
            x_t, d_t, m_t = inputs
            new, y = step(carry, x_t)
            y = y + d_t
            if stack.cell == "lstm":
                new = (new[0].at[-1].set(y), new[1])
            else:
                new = new.at[-1].set(y)
            keep = m_t[None, :, None]
            new = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, carry)
            return new, None

        last, _ = jax.lax.scan(body, carry0, (jnp.swapaxes(xs, 0, 1), delta, m.T))
        top = last[0][-1] if stack.cell == "lstm" else last[-1]
        return loss_fn(head_apply(params.head, top))

    g = jax.grad(loss_of)(jnp.zeros((T, B, H), dtype)).astype(jnp.float32)
    if per_example:
        return jnp.sqrt(jnp.sum(g**2, axis=-1)).T
    return jnp.sqrt(jnp.sum(g**2, axis=(1, 2)))


def plot_gradient_norms(
    norms_by_name: Mapping[str, Any], path: str, *, title: str = "‖∂L/∂a<t>‖"
) -> None:
    """Plot gradient norms against ``t`` on a log scale, one line per name, to ``path``.

    Args:
        norms_by_name: ``{"rnn": norms (T,), "gru": ..., ...}``.
        path: the image file (``.png``, ``.pdf``, ...).
        title: the plot title.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, norms in norms_by_name.items():
        ax.semilogy(jnp.asarray(norms), label=name)
    ax.set_xlabel("t")
    ax.set_ylabel("gradient norm")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
