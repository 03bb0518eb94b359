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
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from rnn_jax._checks import check_inputs, is_token_ids, lengths_to_mask, resolve_mask
from rnn_jax.bptt import carried_states, scan_reference, varying_like
from rnn_jax.lookup import column_lookup
from rnn_jax.params import LayerParams

__all__ = [
    "input_projection",
    "input_term",
    "lengths_to_mask",
    "recurrence",
    "rnn_unroll",
]

Inputs = Float[Array, "B T D"] | Int[Array, "B T"]


def explicit_batch_axes(xs: Any) -> tuple[Any, Any] | None:
    """``(mesh, axes)`` if the batch (first) axis of ``xs`` is sharded over explicit mesh axes.

    Then the layer functions run one ``shard_map`` shard per device (examples never
    interact); ``None`` otherwise (one device, auto-sharded meshes, inside ``shard_map``).
    """
    try:
        sharding = jax.typeof(xs).sharding
        spec = sharding.spec
    except AttributeError:  # not a typed JAX value
        return None
    if len(spec) == 0 or spec[0] is None:
        return None
    return sharding.mesh, spec[0]


def on_batch_shards(fn: Callable, mesh: Any, args: tuple, in_specs: tuple, out_specs: Any) -> Any:
    """``fn(*args)`` under ``shard_map`` over ``mesh``: one shard of the batch per device.

    Arguments with a non-empty spec are first resharded to it (a no-op when they already
    have it, e.g. a replicated ``a0`` becomes batch-sharded); ``P()`` ones and ``None``
    pass as they are.
    """
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    placed = tuple(
        a if a is None or spec == P() else jax.sharding.reshard(a, NamedSharding(mesh, spec))
        for a, spec in zip(args, in_specs, strict=True)
    )
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)(*placed)


def input_projection(layer: LayerParams, xs: Inputs) -> Float[Array, "T B H"]:
    """``z<t> = W_ax x<t> + b_a`` for every step at once, time-major ``(T, B, H)``.

    See :func:`input_term` (the same without ``b_a``, which :func:`recurrence` can add
    inside its loop).
    """
    return input_term(layer, xs) + layer.b_a[None, None, :]


def input_term(layer: LayerParams, xs: Inputs) -> Float[Array, "T B H"]:
    """``W_ax x<t>`` for every step at once, time-major ``(T, B, H)`` (no bias).

    Dense inputs: one matmul. Token ids: one gather of the columns ``W_ax[:, id]``
    (the product of ``W_ax`` with a one-hot vector, without building it). Ids out of
    range under ``jit`` (where they cannot be checked) give NaN, never a silently wrong
    column.
    """
    H = layer.hidden_size
    W_ax = layer.W_a[:, H:]
    if is_token_ids(xs):
        # Columns H + id of the whole W_a (slicing W_ax first would copy the (H, V) block
        # on every call), gathered and scatter-added in sorted-id order: rnn_jax.lookup.
        z = column_lookup(layer.W_a, xs.T, offset=H, num_columns=W_ax.shape[1])
    else:
        # Transpose the (narrower) inputs to time-major first, then one plain matmul whose
        # output is already (T, B, H): an einsum "btd,hd->tbh" makes XLA:CPU emit a
        # transposing dot that is 4x slower (benchmarks/RESULTS.md).
        z = _dense_term(varying_like(W_ax, xs), jnp.swapaxes(xs, 0, 1))
    return z


@jax.custom_vjp
def _dense_term(W_ax: Array, xs_tm: Array) -> Array:
    """``xs_tm @ W_ax.T`` for time-major ``(T, B, D)`` inputs.

    Its weight gradient ``sum_n dz[n]^T x[n]`` needs one operand transposed; left to
    itself XLA transposes ``dz`` (``(T*B, H)``, a state-sized copy), here the narrower
    ``x`` is (``(T*B, D)``, usually ``D <= H``).
    """
    return jax.lax.dot_general(xs_tm, W_ax, (((2,), (1,)), ((), ())))


def _dense_term_fwd(W_ax, xs_tm):
    return _dense_term(W_ax, xs_tm), (W_ax, xs_tm)


def _dense_term_bwd(residuals, dz):
    W_ax, xs_tm = residuals
    H, D = W_ax.shape
    x = xs_tm.reshape(-1, D)
    d = dz.reshape(-1, H)
    if D <= H:
        dW_ax = (x.T @ d).T
    else:
        dW_ax = d.T @ x
    dxs = jax.lax.dot_general(dz, W_ax, (((2,), (0,)), ((), ())))
    return dW_ax.astype(W_ax.dtype), dxs.astype(xs_tm.dtype)


_dense_term.defvjp(_dense_term_fwd, _dense_term_bwd)


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
    """
    if backward == "bptt":
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
    xs: Inputs,
    lengths: Int[Array, " B"] | None = None,
    *,
    a0: Float[Array, "B H"] | None = None,
    mask: Bool[Array, "B T"] | None = None,
    reverse: bool = False,
    activation: str | Callable[[Array], Array] = "tanh",
    unroll: int | bool = 1,
) -> tuple[Float[Array, "B T H"], Float[Array, "B H"]]:
    """Run one recurrent layer in one direction over a batch of sequences.

    Args:
        layer: :class:`~rnn_jax.LayerParams` (``W_a`` of shape ``(H, H + D)``).
        xs: dense inputs ``(B, T, D)`` or integer token ids ``(B, T)`` with ``D = |V|``.
        lengths: ``(B,)`` integers in ``[0, T]``: example ``b`` is valid at
            ``t < lengths[b]``. ``None``: every step is valid.
        a0: initial state ``(B, H)``; zeros if ``None``.
        mask: a boolean ``(B, T)`` mask instead of ``lengths``.
        reverse: run from the last step to the first (over the valid part of each
            sequence: padded steps at the end keep the initial state).
        activation: ``g``.
        unroll: passed to ``lax.scan``.

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
    m_tb = None if m is None else m.T

    def run(layer, xs, a0, m_tb):
        return recurrence(
            layer.W_a[:, :H],
            input_term(layer, xs),
            a0,
            m_tb,
            bias=layer.b_a,
            activation=activation,
            reverse=reverse,
            unroll=unroll,
        )

    found = explicit_batch_axes(xs)
    if found is None:
        a_seq, a_last = run(layer, xs, a0, m_tb)
    else:  # a batch sharded over explicit mesh axes: one shard per device
        from jax.sharding import PartitionSpec as P

        mesh, axes = found
        a_seq, a_last = on_batch_shards(
            run,
            mesh,
            (layer, xs, a0, m_tb),
            in_specs=(P(), P(axes), P(axes), P(None, axes)),
            out_specs=(P(None, axes), P(axes)),
        )
    return jnp.swapaxes(a_seq, 0, 1), a_last
