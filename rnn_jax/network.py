"""Deep and bidirectional RNNs, and the heads for the task families.

A network is ``num_layers`` recurrent layers, each with one (forward) or two (forward and
backward) directions. Layer ``l > 0`` reads the merged outputs of layer ``l - 1``; the
head reads the merged outputs of the top layer:

.. math::

    \\hat y^{<t>} = g_y(W_y [\\overrightarrow{a}^{<t>}; \\overleftarrow{a}^{<t>}] + b_y)

- many-to-many (tagging, ``T_y = T_x``): :func:`rnn_apply`, a prediction at every step;
- many-to-one (classification): :func:`rnn_classify`, a prediction from each example's
  final state(s): the forward state after its last valid token and, if bidirectional,
  the backward state after its first token, as PyTorch's ``h_n``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import init_rnn, rnn_apply, rnn_classify, rnn_layers
    >>> params = init_rnn(jax.random.key(0), 100, 16, 2, num_layers=2, bidirectional=True,
    ...                   token_inputs=True)
    >>> ids = jnp.array([[5, 7, 9, 0], [3, 2, 0, 0]])      # (B, T) token ids, padded
    >>> lengths = jnp.array([3, 2])
    >>> a_seq, a_last = rnn_layers(params, ids, lengths)
    >>> a_seq.shape, a_last.shape                          # (B, T, 2H), (L * 2, B, H)
    ((2, 4, 32), (4, 2, 16))
    >>> rnn_apply(params, ids, lengths).shape              # (B, T, C)
    (2, 4, 2)
    >>> rnn_classify(params, ids, lengths).shape           # (B, C)
    (2, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from rnn_jax._checks import check_inputs, resolve_mask
from rnn_jax.cell import Activation, output_activation_fn
from rnn_jax.params import HeadParams, RNNParams
from rnn_jax.recurrence import explicit_batch_axes, input_term, on_batch_shards, recurrence

__all__ = [
    "check_params",
    "merge_directions",
    "rnn_apply",
    "rnn_classify",
    "rnn_layers",
]

Inputs = Float[Array, "B T D"] | Int[Array, "B T"]


def merge_directions(
    merge: str | Callable[[Array, Array], Array], a_fwd: Array, a_bwd: Array
) -> Array:
    """Merge forward and backward states: concat (default), sum, mean, product or a callable."""
    if callable(merge):
        return merge(a_fwd, a_bwd)
    if merge == "concat":
        return jnp.concatenate([a_fwd, a_bwd], axis=-1)
    if merge == "sum":
        return a_fwd + a_bwd
    if merge == "mean":
        return 0.5 * (a_fwd + a_bwd)
    if merge == "product":
        return a_fwd * a_bwd
    raise ValueError(f"`merge` must be concat, sum, mean, product or a callable, got {merge!r}.")


def check_params(params: RNNParams) -> None:
    """Check that every array of ``params`` has the shape its position implies."""
    if not isinstance(params, RNNParams):
        raise ValueError(
            f"`params` must be an RNNParams (see init_rnn), got {type(params).__name__}."
        )
    if not params.layers or not params.layers[0]:
        raise ValueError("`params.layers` must hold at least one layer with one direction.")
    H = params.hidden_size
    dirs = params.num_directions
    if dirs not in (1, 2):
        raise ValueError(f"`params.layers[0]` must hold 1 or 2 directions, got {dirs}.")
    D = params.input_size
    for l, layer in enumerate(params.layers):
        if len(layer) != dirs:
            raise ValueError(
                f"`params.layers[{l}]` must hold {dirs} direction(s) like layer 0, got {len(layer)}."
            )
        D_l = D if l == 0 else params.merged_size
        for d, p in enumerate(layer):
            if tuple(p.b_a.shape) != (H,):
                raise ValueError(
                    f"`params.layers[{l}][{d}].b_a` must have shape ({H},), got {tuple(p.b_a.shape)}."
                )
            if tuple(p.W_a.shape) != (H, H + D_l):
                raise ValueError(
                    f"`params.layers[{l}][{d}].W_a` must have shape (H, H + D) = ({H}, {H + D_l}), "
                    f"got {tuple(p.W_a.shape)}."
                )
    C = params.output_size
    if tuple(params.head.W_y.shape) != (C, params.merged_size):
        raise ValueError(
            f"`params.head.W_y` must have shape (C, H_out) = ({C}, {params.merged_size}), "
            f"got {tuple(params.head.W_y.shape)}."
        )


def _check_a0(a0: Any, params: RNNParams, B: int) -> Array:
    shape = (params.num_layers * params.num_directions, B, params.hidden_size)
    if tuple(jnp.shape(a0)) != shape:
        raise ValueError(
            f"`a0` must have shape (num_layers * directions, B, H) = {shape}, got {tuple(jnp.shape(a0))}."
        )
    return jnp.asarray(a0)


def _layers_time_major(
    params: RNNParams,
    xs: Inputs,
    mask_tb: Bool[Array, "T B"] | None,
    a0: Float[Array, "LD B H"] | None,
    dropout: float,
    key: jax.Array | None,
    unroll: int | bool,
) -> tuple[Float[Array, "T Bo Hout"], Float[Array, "LD B H"]]:
    """All layers, time-major; over a batch sharded on explicit mesh axes, one shard per device.

    Examples never interact, so with ``xs`` sharded along its batch axis (``jax.make_mesh``
    axes are explicit by default) each device runs the single-device code on its own
    examples under ``shard_map``; the replicated parameters' gradients are summed over the
    devices by ``shard_map``'s own differentiation. (Under an auto-sharded mesh, XLA's
    partitioner handles the same code.)
    """
    found = explicit_batch_axes(xs)
    if found is None:
        return _layers_local(params, xs, mask_tb, a0, dropout, key, unroll)
    from jax.sharding import PartitionSpec as P

    mesh, axes = found

    def local(params, xs, mask_tb, a0, key):
        if key is not None:  # a different dropout mask on every shard
            key = jax.random.fold_in(key, jax.lax.axis_index(axes))
        return _layers_local(params, xs, mask_tb, a0, dropout, key, unroll)

    return on_batch_shards(
        local,
        mesh,
        (params, xs, mask_tb, a0, key),
        in_specs=(P(), P(axes), P(None, axes), P(None, axes), P()),
        out_specs=(P(None, axes), P(None, axes)),
    )


def _layers_local(
    params: RNNParams,
    xs: Inputs,
    mask_tb: Bool[Array, "T B"] | None,
    a0: Float[Array, "LD B H"] | None,
    dropout: float,
    key: jax.Array | None,
    unroll: int | bool,
) -> tuple[Float[Array, "T B Hout"], Float[Array, "LD B H"]]:
    dirs = params.num_directions
    H = params.hidden_size
    B = xs.shape[0]
    h = xs  # layer input: (B, T, D) / (B, T) ids for layer 0, time-major (T, B, H') after
    finals = []
    for l, layer in enumerate(params.layers):
        if l > 0 and dropout > 0.0:
            keep = jax.random.bernoulli(jax.random.fold_in(key, l), 1.0 - dropout, h.shape)
            h = jnp.where(keep, h / (1.0 - dropout), jnp.zeros_like(h))
        outs = []
        for d, p in enumerate(layer):
            if l == 0:
                z = input_term(p, h)
            else:
                z = jnp.einsum("tbd,hd->tbh", h, p.W_a[:, H:])
            a_init = jnp.zeros((B, H), p.W_a.dtype) if a0 is None else a0[l * dirs + d]
            a_seq, a_last = recurrence(
                p.W_a[:, :H],
                z,
                a_init,
                mask_tb,
                bias=p.b_a,
                activation=params.activation,
                reverse=(d == 1),
                unroll=unroll,
            )
            outs.append(a_seq)
            finals.append(a_last)
        h = outs[0] if dirs == 1 else merge_directions(params.merge, outs[0], outs[1])
    return h, jnp.stack(finals)


def _prepare(params, xs, lengths, mask, a0, dropout, key):
    check_params(params)
    xs = check_inputs(xs, params.input_size)
    if jnp.issubdtype(xs.dtype, jnp.integer) and not params.token_inputs:
        raise ValueError(
            "`xs` holds integer token ids but `params` was built for dense inputs; "
            "initialise with init_rnn(..., token_inputs=True) or pass floats (B, T, D)."
        )
    B, T = xs.shape[:2]
    m = resolve_mask(lengths, mask, (B, T))
    if a0 is not None:
        a0 = _check_a0(a0, params, B)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1), got {dropout!r}.")
    if dropout > 0.0 and key is None:
        raise ValueError("`key` is required when `dropout` > 0 (there is no default key).")
    return xs, m, a0


def rnn_layers(
    params: RNNParams,
    xs: Inputs,
    lengths: Int[Array, " B"] | None = None,
    a0: Float[Array, "LD B H"] | None = None,
    *,
    mask: Bool[Array, "B T"] | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    unroll: int | bool = 1,
) -> tuple[Float[Array, "B T Hout"], Float[Array, "LD B H"]]:
    """Run all recurrent layers: the top layer's states and every layer's final state.

    The same layout and meaning as PyTorch's ``nn.RNN`` ``(output, h_n)`` on packed
    sequences (``batch_first=True``).

    Args:
        params: :class:`~rnn_jax.RNNParams`.
        xs: ``(B, T, D)`` floats, or ``(B, T)`` integer token ids if
            ``params.token_inputs``.
        lengths: ``(B,)`` valid lengths in ``[0, T]``; ``None`` means all ``T`` valid.
        a0: initial states ``(num_layers * directions, B, H)``, index
            ``layer * directions + direction``; zeros if ``None``.
        mask: a boolean ``(B, T)`` mask instead of ``lengths``.
        dropout: dropout rate on the inputs of layers ``1..L-1`` (training only; the
            default 0 is evaluation).
        key: PRNG key, required when ``dropout > 0``.
        unroll: ``lax.scan`` unroll factor.

    Returns:
        ``(a_seq, a_last)``: top-layer states ``(B, T, H_out)`` (``H_out = 2H`` for a
        bidirectional network merged by concatenation), exactly zero at padding; final
        states ``(num_layers * directions, B, H)``: forward states after the last valid
        step, backward states after step 0.
    """
    xs, m, a0 = _prepare(params, xs, lengths, mask, a0, dropout, key)
    h, finals = _layers_time_major(params, xs, None if m is None else m.T, a0, dropout, key, unroll)
    return jnp.swapaxes(h, 0, 1), finals


def _head(head: HeadParams, a: Array, output_activation: Activation | None) -> Array:
    logits = a @ head.W_y.T
    return output_activation_fn(output_activation)(
        logits + jnp.broadcast_to(head.b_y, logits.shape)
    )


def rnn_apply(
    params: RNNParams,
    xs: Inputs,
    lengths: Int[Array, " B"] | None = None,
    *,
    mask: Bool[Array, "B T"] | None = None,
    a0: Float[Array, "LD B H"] | None = None,
    output_activation: Activation | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    unroll: int | bool = 1,
) -> Float[Array, "B T C"]:
    """Many-to-many: ``ŷ<t> = g_y(W_y a<t> + b_y)`` at every step (``T_y = T_x``).

    The output projection is one matmul on the stacked states after the scan. Outputs
    at padded steps are exactly zero.

    Args:
        params, xs, lengths, mask, a0, dropout, key, unroll: as :func:`rnn_layers`.
        output_activation: ``g_y``; ``None`` returns logits (what the losses take).

    Returns:
        ``(B, T, C)``.
    """
    xs, m, a0 = _prepare(params, xs, lengths, mask, a0, dropout, key)
    h, _ = _layers_time_major(params, xs, None if m is None else m.T, a0, dropout, key, unroll)
    # The head reads the time-major states (T, B, H_out) in place; only the small
    # (T, B, C) result is transposed.
    y_hat = _head(params.head, h, output_activation)
    if m is not None:
        y_hat = jnp.where(m.T[:, :, None], y_hat, jnp.zeros_like(y_hat))
    return jnp.swapaxes(y_hat, 0, 1)


def rnn_classify(
    params: RNNParams,
    xs: Inputs,
    lengths: Int[Array, " B"] | None = None,
    *,
    mask: Bool[Array, "B T"] | None = None,
    a0: Float[Array, "LD B H"] | None = None,
    output_activation: Activation | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    unroll: int | bool = 1,
) -> Float[Array, "B C"]:
    """Many-to-one: one prediction per example from its final state(s).

    ``ŷ = g_y(W_y a_final + b_y)`` where ``a_final`` is the top layer's forward state
    after the example's last valid step, merged (for a bidirectional network) with the
    backward state after step 0, i.e. after reading the whole valid sequence from the
    right.

    Returns:
        ``(B, C)``.
    """
    xs, m, a0 = _prepare(params, xs, lengths, mask, a0, dropout, key)
    _, finals = _layers_time_major(params, xs, None if m is None else m.T, a0, dropout, key, unroll)
    if params.bidirectional:
        a_final = merge_directions(params.merge, finals[-2], finals[-1])
    else:
        a_final = finals[-1]
    return _head(params.head, a_final, output_activation)
