"""Unrolling one recurrent layer over time with ``jax.lax.scan``, with masking.

:func:`rnn_unroll` replaces this Python loop (one direction, one layer, batch ``B``)::

    a = a0                                           # (B, H)
    for t in range(T):                               # reversed(range(T)) if reverse
        a_new = g(a @ W_aa.T + x[:, t] @ W_ax.T + b_a)
        a = where(t < lengths, a_new, a)             # a padded step keeps the state
        a_seq[:, t] = where(t < lengths, a_new, 0)   # ... and emits exactly zero
    return a_seq, a                                  # a: state after the last valid step

What does not depend on the recurrence is hoisted out of the loop: the input term
``W_ax x<t> + b_a`` for all steps is one matmul before the scan (one gather of columns of
``W_ax`` for token ids), so the loop body is only ``g(z<t> + a<t-1> @ W_aa.T)`` and a
select.

Masking has one meaning everywhere: a masked step keeps the previous state and emits
exactly zero. With ``reverse=True`` the scan runs from ``T - 1`` down to ``0``; since the
padded steps at the end keep the initial state, the backward pass effectively starts at
each example's last valid token, never at padding.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from rnn_jax._checks import check_inputs, lengths_to_mask, resolve_mask
from rnn_jax._projection import check_options, input_projection, input_term
from rnn_jax._sharding import batch_sharded
from rnn_jax.bptt import carried_states, scan_reference
from rnn_jax.params import LayerParams

__all__ = [
    "cast_state",
    "input_projection",
    "input_term",
    "lengths_to_mask",
    "recurrence",
    "rnn_unroll",
]


def cast_state(name: str, a: ArrayLike, dtype: object, shape: tuple[int, ...]) -> Array:
    """An initial state checked for shape and cast to the parameters' float ``dtype``.

    A float state of another precision is cast (``lax.scan`` needs one carry dtype); an
    integer or boolean one is a ``ValueError`` naming ``name``.
    """
    a = jnp.asarray(a)
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {tuple(a.shape)}.")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be a float array, got dtype {a.dtype}.")
    return a.astype(dtype)


def recurrence(
    W_aa: Float[Array, "H H"],
    z: Float[Array, "T B H"],
    a0: Float[Array, "B H"],
    mask: Bool[Array, "T B"] | None,
    *,
    bias: Float[Array, " H"] | None = None,
    activation: str | Callable[[Array], Array] = "tanh",
    reverse: bool = False,
    unroll: int | bool = 1,
    backward: str = "bptt",
    state_mask: Float[Array, "B H"] | None = None,
) -> tuple[Float[Array, "T B H"], Float[Array, "B H"]]:
    """The loop itself, time-major: ``a<t> = g(z<t> + b + a<t-1> W_aa^T)`` with masking.

    ``bias`` (``b``, default zero) is added inside the loop; pass ``z`` without it
    (:func:`input_term`) to save a pass over the ``(T, B, H)`` input term.

    Returns ``(a_seq, a_last)`` where ``a_seq`` is zero at masked steps and ``a_last`` the
    state after each example's last valid step (``a0`` if it has none).

    ``backward="bptt"`` (default) differentiates with the hand-written backward pass of
    :mod:`rnn_jax.bptt` (saves only the states; weight gradient as one matmul after the
    loop); ``backward="autodiff"`` lets ``jax.grad`` differentiate the ``lax.scan``.
    Both compute the same function and the same gradients up to float rounding.
    ``state_mask`` (recurrent dropout, see :func:`rnn_jax.bptt.scan_reference`) takes the
    autodiff path.
    """
    if state_mask is not None and backward in ("bptt", "autodiff"):
        h = scan_reference(
            W_aa,
            z,
            a0,
            mask,
            bias=bias,
            activation=activation,
            reverse=reverse,
            unroll=unroll,
            state_mask=state_mask,
        )
    elif backward == "bptt":
        h = carried_states(
            W_aa, z, a0, mask, bias=bias, activation=activation, reverse=reverse, unroll=unroll
        )
    elif backward == "autodiff":
        h = scan_reference(
            W_aa, z, a0, mask, bias=bias, activation=activation, reverse=reverse, unroll=unroll
        )
    else:
        raise ValueError(f"`backward` must be 'bptt' or 'autodiff', got {backward!r}.")
    if z.shape[0] == 0:
        return h, a0
    # The state after the last step of the scan is the state after the last valid step.
    a_last = h[0] if reverse else h[-1]
    if mask is None:
        return h, a_last
    # A masked step carries the state but emits exactly zero.
    a_seq = jnp.where(mask[:, :, None], h, jnp.zeros_like(h))
    return a_seq, a_last


def rnn_unroll(
    layer: LayerParams,
    xs: Float[ArrayLike, "B T D"] | Int[ArrayLike, "B T"],
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    a0: Float[ArrayLike, "B H"] | None = None,
    mask: Bool[ArrayLike, "B T"] | Int[ArrayLike, "B T"] | None = None,
    reverse: bool = False,
    activation: str | Callable[[Array], Array] = "tanh",
    unroll: int | bool = 1,
    backward: str = "bptt",
    lookup: str = "sorted",
) -> tuple[Float[Array, "B T H"], Float[Array, "B H"]]:
    """Run one recurrent layer in one direction over a batch of sequences.

    Args:
        layer: :class:`~rnn_jax.LayerParams` (``W_a`` of shape ``(H, H + D)``).
        xs: dense inputs ``(B, T, D)`` or integer token ids ``(B, T)`` with ``D = |V|``.
        lengths: ``(B,)`` integers in ``[0, T]``: example ``b`` is valid at
            ``t < lengths[b]``. ``None``: every step is valid.
        a0: initial state ``(B, H)``; zeros if ``None`` (a float state of another dtype
            is cast to the parameters' dtype).
        mask: a boolean (or 0/1 integer) ``(B, T)`` mask instead of ``lengths``.
        reverse: run from the last step to the first (over the valid part of each
            sequence: padded steps at the end keep the initial state).
        activation: ``g``.
        unroll: passed to ``lax.scan``.
        backward: ``"bptt"`` (hand-written backward pass, default) or ``"autodiff"``
            (``jax.grad`` of the plain scan; also supports ``jax.jvp``).
        lookup: ``"sorted"`` (default) or ``"take"``: how token ids gather columns.

    Returns:
        ``(a_seq, a_last)``: states ``(B, T, H)``, exactly zero at masked steps, and the
        state after each example's last valid step ``(B, H)`` (``a0`` for a length-0
        example).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rnn_jax import init_layer, rnn_unroll
        >>> layer = init_layer(4, 8, key=jax.random.key(0))
        >>> xs = jnp.ones((2, 5, 4))
        >>> a_seq, a_last = rnn_unroll(layer, xs, lengths=jnp.array([5, 2]))
        >>> a_seq.shape, a_last.shape
        ((2, 5, 8), (2, 8))
        >>> bool(jnp.all(a_seq[1, 2:] == 0)), bool(jnp.all(a_last[1] == a_seq[1, 1]))
        (True, True)
    """
    if not isinstance(layer, LayerParams):
        raise ValueError(
            "`layer` must be one LayerParams (one layer, one direction), e.g. "
            f"`params.layers[0][0]`, got {type(layer).__name__}"
            + (
                " (a layer's tuple of directions: pass one direction, with reverse=True "
                "for the backward one)."
                if isinstance(layer, tuple)
                else "."
            )
        )
    check_options(backward, lookup)
    W_a = jnp.asarray(layer.W_a)
    H = layer.hidden_size
    if W_a.ndim != 2 or W_a.shape[0] != H or W_a.shape[1] <= H:
        raise ValueError(
            f"`layer.W_a` must have shape (H, H + D) with H = {H} (from b_a) and D >= 1, "
            f"got {tuple(W_a.shape)}."
        )
    xs = check_inputs(xs, layer.input_size)
    B, T = xs.shape[:2]
    m = resolve_mask(lengths, mask, (B, T))
    if a0 is None:
        a0 = jnp.zeros((B, H), W_a.dtype)
    elif tuple(jnp.shape(a0)) != (B, H):
        raise ValueError(f"`a0` must have shape (B, H) = ({B}, {H}), got {tuple(jnp.shape(a0))}.")
    else:
        a0 = cast_state("a0", a0, W_a.dtype, (B, H))
    a_seq, a_last = _unroll_layer(
        layer,
        xs,
        a0,
        m,
        activation=activation,
        reverse=reverse,
        unroll=unroll,
        backward=backward,
        lookup=lookup,
    )
    return jnp.swapaxes(a_seq, 0, 1), a_last


@batch_sharded(in_axes=(None, 0, 0, 0), out_axes=(1, 0), lead=1)
def _unroll_layer(layer, xs, a0, m, *, activation, reverse, unroll, backward, lookup):
    H = layer.hidden_size
    return recurrence(
        layer.W_a[:, :H],
        input_term(layer, xs, mask=m, lookup=lookup, backward=backward),
        a0,
        None if m is None else m.T,
        bias=layer.b_a,
        activation=activation,
        reverse=reverse,
        unroll=unroll,
        backward=backward,
    )
