"""The layer stack: the one loop over layers and time, the one step, the one head.

Every model of the library is a :class:`~rnn_jax.params.StackParams` (recurrent layers)
plus a head. Three functions compute everything, and every other module calls them:

- :func:`stack_unroll` runs all layers over time (the network, the seq2seq encoder and
  decoder, remat and truncated BPTT). Layer ``l > 0`` reads the merged outputs of layer
  ``l - 1``::

      h = xs
      for l, layer in enumerate(stack.layers):
          outs = [unroll(layer[d], h, reverse=(d == 1)) for d in directions]
          h = merge(outs)                      # concat, sum, mean or product
      return h, final state of every layer and direction   # (L * dirs, B, H)

  with the documented optimisations in every path: the input term hoisted out of the
  loop (one matmul for dense inputs, with a weight gradient that transposes the narrower
  operand; the sorted column lookup for token ids), the bias added inside the loop, and
  the hand-written backward pass of :mod:`rnn_jax.bptt`.
- :func:`stack_step` steps the stack one example one step at a time, built on
  :func:`~rnn_jax.rnn_cell` (``vmap`` it over the batch): ``lm_step`` and
  ``decoder_step``.
- :func:`head_apply` is the output layer ``g_y(W_y a + b_y)``.

The per-layer work goes through one dispatch on ``stack.cell``: ``"rnn"`` (the classic
cell) takes the fast path above; any other name calls the gated-cell plug-in
:mod:`rnn_jax.cells`, which provides::

    layer_unroll(cell, layer, xs_tm, carry0, mask_tb, *, reverse, unroll, lookup,
                 input_scale, state_mask)
        -> (h_tm (T, B, H), carry_last)       # xs_tm: (T, B, D) floats or (T, B) ids
    cell_step(cell, layer, carry, x_t) -> (carry, h)        # one example
    init_gated_layer(cell, input_size, hidden_size, *, key, dtype) -> layer params

where a carry is ``h`` ``(B, H)`` (GRU) or ``(h, c)`` (LSTM). States exchanged with the
caller keep the layout ``(L * dirs, B, H)`` for ``h``; an LSTM's cell states travel
through ``c0=`` and ``return_cell_state=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from rnn_jax._activations import Activation, output_activation_fn
from rnn_jax._checks import check_inputs, resolve_mask
from rnn_jax._projection import check_options, input_term
from rnn_jax.cell import rnn_cell
from rnn_jax.params import HeadParams, LayerParams, StackParams
from rnn_jax.recurrence import cast_state, recurrence

__all__ = [
    "check_batch",
    "check_stack",
    "check_step_state",
    "head_apply",
    "merge_directions",
    "stack_step",
    "stack_unroll",
]

Inputs = Float[Array, "B T D"] | Int[Array, "B T"]

# Named sub-streams of the dropout key (layer l's inter-layer mask keeps fold_in(key, l)).
_INPUT_STREAM = 1_000_001
_RECURRENT_STREAM = 2_000_000


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


def head_apply(
    head: HeadParams, a: Float[Array, "... H"], output_activation: Activation | None = None
) -> Float[Array, "... C"]:
    """The output layer ``ŷ = g_y(W_y a + b_y)`` on the last axis of ``a``.

    Example:
        >>> import jax.numpy as jnp
        >>> head = HeadParams(jnp.ones((2, 3)), jnp.array([0.0, 1.0]))
        >>> head_apply(head, jnp.ones((4, 3))).shape          # (..., C)
        (4, 2)
    """
    logits = a @ head.W_y.T
    return output_activation_fn(output_activation)(
        logits + jnp.broadcast_to(head.b_y, logits.shape)
    )


def check_stack(stack: StackParams, *, name: str = "params") -> None:
    """Check that every layer of ``stack`` has the shape its position implies."""
    if not stack.layers or not stack.layers[0]:
        raise ValueError(f"`{name}.layers` must hold at least one layer with one direction.")
    dirs = stack.num_directions
    if dirs not in (1, 2):
        raise ValueError(f"`{name}.layers[0]` must hold 1 or 2 directions, got {dirs}.")
    if stack.cell != "rnn":
        return  # the gated cells check their own parameter types
    H, D = stack.hidden_size, stack.input_size
    for l, layer in enumerate(stack.layers):
        if len(layer) != dirs:
            raise ValueError(
                f"`{name}.layers[{l}]` must hold {dirs} direction(s) like layer 0, got {len(layer)}."
            )
        D_l = D if l == 0 else stack.merged_size
        for d, p in enumerate(layer):
            if tuple(p.b_a.shape) != (H,):
                raise ValueError(
                    f"`{name}.layers[{l}][{d}].b_a` must have shape ({H},), got {tuple(p.b_a.shape)}."
                )
            if tuple(p.W_a.shape) != (H, H + D_l):
                raise ValueError(
                    f"`{name}.layers[{l}][{d}].W_a` must have shape (H, H + D) = ({H}, {H + D_l}), "
                    f"got {tuple(p.W_a.shape)}."
                )


def check_step_state(
    state: Any,
    state_type: type,
    shape: tuple[int, ...],
    cell: str,
    *,
    article: str,
    layout: str,
    origin: str,
) -> None:
    """Check the state of a step function (``LMState``, ``DecoderState``).

    ``state`` must be a ``state_type`` whose ``a`` has ``shape`` (written ``layout`` in the
    message, after ``article``) and whose ``c`` holds the LSTM's cell states of the same shape exactly when
    ``cell == "lstm"`` (``None`` otherwise); ``origin`` names the function that builds it.
    """
    name = state_type.__name__
    if not isinstance(state, state_type) or tuple(jnp.shape(state.a)) != shape:
        got = tuple(jnp.shape(state.a)) if isinstance(state, state_type) else type(state).__name__
        raise ValueError(
            f"`state` must be {article} {name} whose `a` has shape {layout} = {shape} "
            f"(from {origin}), got {got}."
        )
    lstm = cell == "lstm"
    if (state.c is not None) != lstm or (lstm and tuple(jnp.shape(state.c)) != shape):
        got = None if state.c is None else tuple(jnp.shape(state.c))
        raise ValueError(
            f"`state.c` must be the {layout} = {shape} cell states for cell='lstm' and None "
            f"otherwise (from {origin}), got {got} for cell={cell!r}."
        )


def _dtype(stack: StackParams) -> Any:
    return jax.tree_util.tree_leaves(stack.layers[0][0])[0].dtype


def check_batch(
    stack: StackParams,
    xs: Any,
    lengths: Any = None,
    mask: Any = None,
    a0: Any = None,
    *,
    c0: Any = None,
) -> tuple[Array, Bool[Array, "B T"] | None, Array | None, Array | None]:
    """Validate a batch for ``stack``: ``(xs, mask (B, T) or None, a0, c0)``.

    ``a0``/``c0`` must have the one stacked-state layout ``(num_layers * directions, B,
    H)`` (a float state of another dtype is cast to the parameters' dtype).
    """
    xs = check_inputs(xs, stack.input_size)
    if jnp.issubdtype(xs.dtype, jnp.integer) and not stack.token_inputs:
        raise ValueError(
            "`xs` holds integer token ids but `params` was built for dense inputs; "
            "initialise with init_rnn(..., token_inputs=True) or pass floats (B, T, D)."
        )
    B, T = xs.shape[:2]
    m = resolve_mask(lengths, mask, (B, T))
    shape = (stack.num_layers * stack.num_directions, B, stack.hidden_size)
    dtype = _dtype(stack)
    if a0 is not None:
        a0 = _cast_stacked("a0", a0, dtype, shape)
    if c0 is not None:
        if stack.cell != "lstm":
            raise ValueError(
                f"`c0` (cell states) is only for cell='lstm', got cell={stack.cell!r}."
            )
        c0 = _cast_stacked("c0", c0, dtype, shape)
    return xs, m, a0, c0


def _cast_stacked(name: str, a: Any, dtype: Any, shape: tuple[int, ...]) -> Array:
    if tuple(jnp.shape(a)) != shape:
        raise ValueError(
            f"`{name}` must have shape (num_layers * directions, B, H) = {shape}, "
            f"got {tuple(jnp.shape(a))}."
        )
    return cast_state(name, a, dtype, shape)


def _gated_cells(cell: str) -> Any:
    try:
        from rnn_jax import cells
    except ImportError:
        raise ValueError(
            f"cell={cell!r} needs the gated cells of rnn_jax.cells, which this installation "
            "does not have; use cell='rnn'."
        ) from None
    return cells


def _dropped(x: Array, rate: float, key: jax.Array, shape: tuple[int, ...]) -> Array:
    """Inverted dropout of ``x`` with a keep-mask of ``shape`` (broadcast against ``x``)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _run_layer(
    stack: StackParams,
    layer: Any,
    x_in: Array,
    a0: Any,
    mask_tb: Bool[Array, "T B"] | None,
    *,
    first: bool,
    reverse: bool,
    extra_term: Array | None,
    input_keep: Array | None,
    state_mask: Array | None,
    unroll: int | bool,
    backward: str,
    lookup: str,
) -> tuple[Float[Array, "T B H"], Any]:
    """One layer, one direction, time-major: ``(h_tm (T, B, H), carry after the last step)``.

    ``x_in`` is the batch-major ``xs`` for layer 0 (``(B, T, D)`` floats or ``(B, T)``
    ids) and the time-major merged outputs ``(T, B, H')`` of the layer below otherwise.
    """
    if stack.cell != "rnn":
        xs_tm = jnp.swapaxes(x_in, 0, 1) if first else x_in
        return _gated_cells(stack.cell).layer_unroll(
            stack.cell,
            layer,
            xs_tm,
            a0,
            mask_tb,
            reverse=reverse,
            unroll=unroll,
            lookup=lookup,
            input_scale=input_keep,
            state_mask=state_mask,
            extra_term=extra_term,
        )
    H = layer.hidden_size
    if first:
        mask_bt = None if mask_tb is None else mask_tb.T
        z = input_term(layer, x_in, mask=mask_bt, lookup=lookup, backward=backward)
    else:
        # Deeper layers: the time-major outputs below times W_ax, one plain matmul.
        z = jax.lax.dot_general(x_in, layer.W_a[:, H:], (((2,), (1,)), ((), ())))
    if input_keep is not None:  # word dropout on token ids: whole input columns zeroed
        z = z * input_keep
    if extra_term is not None:
        z = z + extra_term
    return recurrence(
        layer.W_a[:, :H],
        z,
        a0,
        mask_tb,
        bias=layer.b_a,
        activation=stack.activation,
        reverse=reverse,
        unroll=unroll,
        backward=backward,
        state_mask=state_mask,
    )


def stack_unroll(
    stack: StackParams,
    xs: Inputs,
    mask_tb: Bool[Array, "T B"] | None = None,
    a0: Float[Array, "LD B H"] | None = None,
    *,
    c0: Float[Array, "LD B H"] | None = None,
    extra_term: Float[Array, "T B GH"] | Float[Array, "1 B GH"] | None = None,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    unk_id: int | None = None,
    key: jax.Array | None = None,
    unroll: int | bool = 1,
    backward: str = "bptt",
    lookup: str = "sorted",
    return_cell_state: bool = False,
) -> tuple[Float[Array, "T B Hout"], Any]:
    """Run every layer of ``stack`` over time: the one layer loop of the library.

    Arguments are assumed valid (see :func:`check_batch`); the public functions
    (:func:`rnn_jax.rnn_layers` and friends) validate them first.

    Args:
        stack: :class:`~rnn_jax.params.StackParams`.
        xs: ``(B, T, D)`` floats or ``(B, T)`` token ids (batch-major).
        mask_tb: time-major validity ``(T, B)``, or ``None`` (every step valid).
        a0: initial states ``(num_layers * directions, B, H)``, index
            ``layer * directions + direction``; zeros if ``None``.
        c0: an LSTM's initial cell states, same layout.
        extra_term: added to layer 0's input term of every direction,
            ``z<t> = W_ax x<t> + extra<t>`` (broadcast over time when its first axis is
            1): the decoder's context ``W_ctx c``. Its width is the number of rows of
            ``W_a``: ``H`` for the classic cell, ``G·H`` for a gated cell (one term per
            gate, added to the hoisted input term ``W_x x<t> + b_x``).
        dropout: rate of the dropout between layers (on the inputs of layers
            ``1..L-1``; mask ``jax.random.fold_in(key, l)``).
        input_dropout: rate of the dropout on layer 0's inputs: features of dense
            inputs are zeroed (inverted dropout); a dropped token id is replaced by
            ``unk_id`` when given, otherwise its looked-up column ``W_ax[:, id]`` is
            zeroed (and the kept ones scaled by ``1 / (1 - rate)``).
        recurrent_dropout: variational dropout on the recurrent state (Keras'
            ``recurrent_dropout``): one mask per sequence and layer, applied to
            ``a<t-1>`` where it enters ``W_aa``; differentiated by autodiff.
        unk_id: see ``input_dropout``.
        key: PRNG key, required when any dropout rate is positive.
        unroll: ``lax.scan`` unroll factor.
        backward: ``"bptt"`` (hand-written backward pass) or ``"autodiff"``.
        lookup: ``"sorted"`` (:func:`~rnn_jax.lookup.column_lookup`) or ``"take"``.
        return_cell_state: return ``(h_n, c_n)`` as the finals (LSTM only).

    Returns:
        ``(h_tm, finals)``: the top layer's merged outputs, time-major ``(T, B, H_out)``,
        zero at masked steps; the state of every layer and direction after its last
        valid step, ``(num_layers * directions, B, H)`` (a pair ``(h_n, c_n)`` with
        ``return_cell_state``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from rnn_jax import init_rnn
        >>> params = init_rnn(jax.random.key(0), 4, 8, 2, num_layers=2, bidirectional=True)
        >>> h_tm, finals = stack_unroll(params.stack, jnp.ones((3, 5, 4)))
        >>> h_tm.shape, finals.shape                   # (T, B, 2H), (L * dirs, B, H)
        ((5, 3, 16), (4, 3, 8))
    """
    check_options(backward, lookup)
    dirs, H = stack.num_directions, stack.hidden_size
    B = xs.shape[0]
    dtype = _dtype(stack)
    h = xs
    input_keep = None
    if input_dropout > 0.0:
        k_in = jax.random.fold_in(key, _INPUT_STREAM)
        if jnp.issubdtype(xs.dtype, jnp.integer):
            keep = jax.random.bernoulli(k_in, 1.0 - input_dropout, xs.shape)
            if unk_id is not None:
                h = jnp.where(keep, xs, jnp.asarray(unk_id, xs.dtype))
            else:
                input_keep = keep.T[:, :, None].astype(dtype) / (1.0 - input_dropout)
        else:
            h = _dropped(xs, input_dropout, k_in, xs.shape)
    finals, cell_finals = [], []
    for l, layer in enumerate(stack.layers):
        if l > 0 and dropout > 0.0:
            h = _dropped(h, dropout, jax.random.fold_in(key, l), h.shape)
        outs = []
        for d, p in enumerate(layer):
            i = l * dirs + d
            a_init = jnp.zeros((B, H), dtype) if a0 is None else a0[i]
            if stack.cell == "lstm":
                a_init = (a_init, jnp.zeros((B, H), dtype) if c0 is None else c0[i])
            state_mask = None
            if recurrent_dropout > 0.0:
                k_r = jax.random.fold_in(key, _RECURRENT_STREAM + i)
                state_mask = _dropped(jnp.ones((B, H), dtype), recurrent_dropout, k_r, (B, H))
            a_seq, last = _run_layer(
                stack,
                p,
                h,
                a_init,
                mask_tb,
                first=(l == 0),
                reverse=(d == 1),
                extra_term=extra_term if l == 0 else None,
                input_keep=input_keep if l == 0 else None,
                state_mask=state_mask,
                unroll=unroll,
                backward=backward,
                lookup=lookup,
            )
            outs.append(a_seq)
            if isinstance(last, tuple):
                finals.append(last[0])
                cell_finals.append(last[1])
            else:
                finals.append(last)
        h = outs[0] if dirs == 1 else merge_directions(stack.merge, outs[0], outs[1])
    if return_cell_state:
        if stack.cell != "lstm":
            raise ValueError(
                f"`return_cell_state=True` is only for cell='lstm', got cell={stack.cell!r}."
            )
        return h, (jnp.stack(finals), jnp.stack(cell_finals))
    return h, jnp.stack(finals)


def _step_layer(
    stack: StackParams, layer: Any, carry: Any, x_t: Array, extra_term: Array | None
) -> tuple[Any, Array]:
    """One layer, one example, one step: ``(carry, x_t) -> (carry, h)``."""
    if stack.cell != "rnn":
        return _gated_cells(stack.cell).cell_step(
            stack.cell, layer, carry, x_t, extra_term=extra_term
        )
    if extra_term is not None:
        # A term constant within the step: W_aa a + W_ax x + (b_a + extra).
        layer = LayerParams(layer.W_a, layer.b_a + extra_term)
    return rnn_cell(layer, carry, x_t, activation=stack.activation)


def stack_step(
    stack: StackParams,
    a_prev: Float[Array, "L H"] | tuple[Float[Array, "L H"], ...],
    x_t: Float[Array, " D"] | Int[Array, ""],
    *,
    extra_term: Float[Array, " GH"] | None = None,
) -> tuple[Any, Float[Array, " H"]]:
    """One step of a unidirectional stack for one example: ``(a<t-1>, x<t>) -> (a<t>, y<t>)``.

    Each layer is :func:`~rnn_jax.rnn_cell` (or the gated cell's step); layer ``l``
    reads the new state of layer ``l - 1``. ``vmap`` it over the batch axis 1 of a
    ``(L, B, H)`` state: ``jax.vmap(partial(stack_step, stack), in_axes=(1, 0),
    out_axes=(1, 0))``.

    Args:
        stack: a unidirectional :class:`~rnn_jax.params.StackParams`.
        a_prev: ``(L, H)``, the state of every layer (for an LSTM a pair ``(h, c)``).
        x_t: a dense vector ``(D,)`` or an integer token id.
        extra_term: ``(H,)`` (``(G·H,)`` for a gated cell) added to layer 0's input term
            (the decoder's context).

    Returns:
        ``(a, y)``: the new states ``(L, H)`` and the top layer's output ``(H,)``.
    """
    if stack.bidirectional:
        raise ValueError(
            "`params` must be a uni-directional RNN to step left to right, got a bidirectional one."
        )
    new = []
    for l, (layer,) in enumerate(stack.layers):
        carry = jax.tree_util.tree_map(lambda a, l=l: a[l], a_prev)
        carry, x_t = _step_layer(stack, layer, carry, x_t, extra_term if l == 0 else None)
        new.append(carry)
    return jax.tree_util.tree_map(lambda *c: jnp.stack(c), *new), x_t
