"""Deep and bidirectional RNNs, and the heads for the task families.

A network is ``num_layers`` recurrent layers, each with one (forward) or two (forward and
backward) directions. Layer ``l > 0`` reads the merged outputs of layer ``l - 1``; the
head reads the merged outputs of the top layer:

.. math::

    \\hat y^{<t>} = g_y(W_y [\\overrightarrow{a}^{<t>}; \\overleftarrow{a}^{<t>}] + b_y)

- many-to-many (tagging, ``T_y = T_x``): :func:`rnn_apply`, a prediction at every step;
- many-to-one (classification or regression): :func:`rnn_classify`, a prediction from
  each example's final state(s) (the forward state after its last valid token and, if
  bidirectional, the backward state after its first token, as PyTorch's ``h_n``), or
  from the masked mean or max of its outputs (``pool="mean"``/``"max"``).

All three validate their arguments, then run :func:`rnn_jax.stack.stack_unroll` (the one
layer loop), one ``shard_map`` shard per device when the batch is sharded over explicit
mesh axes (:mod:`rnn_jax._sharding`), then :func:`rnn_jax.stack.head_apply`.

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

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from rnn_jax._activations import Activation
from rnn_jax._projection import forward_mode_hint
from rnn_jax._sharding import KEY, batch_sharded
from rnn_jax.params import RNNParams
from rnn_jax.stack import (
    check_batch,
    check_stack,
    head_apply,
    merge_directions,
    stack_unroll,
)

__all__ = [
    "POOLS",
    "check_params",
    "merge_directions",
    "rnn_apply",
    "rnn_classify",
    "rnn_layers",
]

Inputs = Float[ArrayLike, "B T D"] | Int[ArrayLike, "B T"]

POOLS = ("last", "mean", "max")
_OUTPUT_STREAM = 3_000_000  # the output-dropout key: jax.random.fold_in(key, _OUTPUT_STREAM)


def check_params(params: RNNParams) -> None:
    """Check that every array of ``params`` has the shape its position implies."""
    if not isinstance(params, RNNParams):
        raise ValueError(
            f"`params` must be an RNNParams (see init_rnn), got {type(params).__name__}."
        )
    check_stack(params.stack)
    C = params.output_size
    if tuple(params.head.W_y.shape) != (C, params.merged_size):
        raise ValueError(
            f"`params.head.W_y` must have shape (C, H_out) = ({C}, {params.merged_size}), "
            f"got {tuple(params.head.W_y.shape)}."
        )


def _check_rate(name: str, rate: Any) -> float:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1), got {rate!r}.")
    return float(rate)


def _check_dropout(params: RNNParams, key: Any, rates: dict[str, float]) -> None:
    for name, rate in rates.items():
        _check_rate(name, rate)
    if rates.get("dropout", 0.0) > 0.0 and params.num_layers == 1:
        raise ValueError(
            "`dropout` applies between stacked layers and has no effect with num_layers=1; "
            "use input_dropout=, recurrent_dropout= or output_dropout= instead."
        )
    active = [name for name, rate in rates.items() if rate > 0.0]
    if active and key is None:
        raise ValueError(f"`key` is required when `{active[0]}` > 0 (there is no default key).")


def _check_unk_id(unk_id: Any, xs: Array, rates: dict[str, float]) -> None:
    if unk_id is None:
        return
    if not jnp.issubdtype(xs.dtype, jnp.integer) or rates.get("input_dropout", 0.0) == 0.0:
        raise ValueError(
            "`unk_id` only acts with token ids and input_dropout > 0 (a dropped word is read "
            f"as unk_id), got unk_id={unk_id!r} with input_dropout="
            f"{rates.get('input_dropout', 0.0)!r} and inputs of dtype {xs.dtype}."
        )


def _prepare(params, xs, lengths, mask, a0, positional, key, rates, c0=None, unk_id=None):
    if positional:
        raise TypeError(
            "`a0` is keyword-only (as in rnn_apply and rnn_classify): call "
            "rnn_layers(params, xs, lengths, a0=a0); no argument may follow `lengths` "
            "positionally."
        )
    check_params(params)
    xs, m, a0, c0 = check_batch(params.stack, xs, lengths, mask, a0, c0=c0)
    _check_dropout(params, key, rates)
    _check_unk_id(unk_id, xs, rates)
    return xs, m, a0, c0


@batch_sharded(in_axes=(None, 0, 1, 1, KEY, 1), out_axes=(1, 1), lead=1)
def _sharded_stack(stack, xs, mask_tb, a0, key, c0, **options):
    """:func:`~rnn_jax.stack.stack_unroll`, one batch shard per device on an explicit mesh."""
    return stack_unroll(stack, xs, mask_tb, a0, c0=c0, key=key, **options)


def _run(params, xs, m, a0, key, c0=None, **options):
    mask_tb = None if m is None else m.T
    try:
        return _sharded_stack(params.stack, xs, mask_tb, a0, key, c0, **options)
    except TypeError as e:  # jax.jvp through a custom_vjp: name the option that works
        raise forward_mode_hint(e) from e


def rnn_layers(
    params: RNNParams,
    xs: Inputs,
    lengths: Int[ArrayLike, " B"] | None = None,
    *positional: Any,
    mask: Bool[ArrayLike, "B T"] | Int[ArrayLike, "B T"] | None = None,
    a0: Float[ArrayLike, "LD B H"] | None = None,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    unk_id: int | None = None,
    key: jax.Array | None = None,
    unroll: int | bool = 1,
    backward: str = "bptt",
    lookup: str = "sorted",
    c0: Float[ArrayLike, "LD B H"] | None = None,
    return_cell_state: bool = False,
) -> tuple[Float[Array, "B T Hout"], Any]:
    """Run all recurrent layers: the top layer's states and every layer's final state.

    The same layout and meaning as PyTorch's ``nn.RNN`` ``(output, h_n)`` on packed
    sequences (``batch_first=True``).

    Args:
        params: :class:`~rnn_jax.RNNParams`.
        xs: ``(B, T, D)`` floats, or ``(B, T)`` integer token ids if
            ``params.token_inputs``.
        lengths: ``(B,)`` valid lengths in ``[0, T]``; ``None`` means all ``T`` valid.
        mask: a boolean (or 0/1 integer) ``(B, T)`` mask instead of ``lengths``.
        a0: keyword-only: initial states ``(num_layers * directions, B, H)``, index
            ``layer * directions + direction``; zeros if ``None``. (Passing it as the
            fourth positional argument raises a ``TypeError``.)
        dropout: dropout rate on the inputs of layers ``1..L-1`` (training only; the
            default 0 is evaluation). With ``num_layers=1`` it would have no effect and
            raises a ``ValueError``.
        input_dropout, recurrent_dropout, unk_id: dropout for any depth, see
            :func:`rnn_jax.stack.stack_unroll`.
        key: PRNG key, required when a dropout rate is positive.
        unroll: ``lax.scan`` unroll factor.
        backward: ``"bptt"`` (the hand-written backward pass, default) or
            ``"autodiff"`` (``jax.grad`` of the plain scan; needed for forward-mode
            autodiff: ``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``).
        lookup: ``"sorted"`` (default) or ``"take"``: how token ids gather the
            columns of ``W_ax``.
        c0: an LSTM's initial cell states, same layout as ``a0`` (``cell="lstm"`` only).
        return_cell_state: return ``(a_seq, (h_n, c_n))``, the LSTM's final cell states
            too (``cell="lstm"`` only).

    Returns:
        ``(a_seq, a_last)``: top-layer states ``(B, T, H_out)`` (``H_out = 2H`` for a
        bidirectional network merged by concatenation), exactly zero at padding; final
        states ``(num_layers * directions, B, H)``: forward states after the last valid
        step, backward states after step 0.
    """
    rates = dict(dropout=dropout, input_dropout=input_dropout, recurrent_dropout=recurrent_dropout)
    xs, m, a0, c0 = _prepare(params, xs, lengths, mask, a0, positional, key, rates, c0, unk_id)
    h, finals = _run(
        params,
        xs,
        m,
        a0,
        key,
        c0,
        unk_id=unk_id,
        unroll=unroll,
        backward=backward,
        lookup=lookup,
        return_cell_state=return_cell_state,
        **rates,
    )
    return jnp.swapaxes(h, 0, 1), finals


def _top_outputs(params, xs, lengths, mask, a0, key, output_dropout, rates, options):
    """Validate, then run the stack for a head: ``(h_tm (T, B, H_out), finals, mask)``.

    The common part of :func:`rnn_apply` and :func:`rnn_classify` (``options``: ``unk_id``,
    ``unroll``, ``backward``, ``lookup``).
    """
    all_rates = dict(rates, output_dropout=output_dropout)
    xs, m, a0, _ = _prepare(
        params, xs, lengths, mask, a0, (), key, all_rates, unk_id=options["unk_id"]
    )
    h, finals = _run(params, xs, m, a0, key, **options, **rates)
    return h, finals, m


def _output_dropout(h: Array, rate: float, key: Any) -> Array:
    if rate == 0.0:
        return h
    keep = jax.random.bernoulli(jax.random.fold_in(key, _OUTPUT_STREAM), 1.0 - rate, h.shape)
    return jnp.where(keep, h / (1.0 - rate), jnp.zeros_like(h))


def rnn_apply(
    params: RNNParams,
    xs: Inputs,
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    mask: Bool[ArrayLike, "B T"] | Int[ArrayLike, "B T"] | None = None,
    a0: Float[ArrayLike, "LD B H"] | None = None,
    output_activation: Activation | None = None,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    output_dropout: float = 0.0,
    unk_id: int | None = None,
    key: jax.Array | None = None,
    unroll: int | bool = 1,
    backward: str = "bptt",
    lookup: str = "sorted",
) -> Float[Array, "B T C"]:
    """Many-to-many: ``ŷ<t> = g_y(W_y a<t> + b_y)`` at every step (``T_y = T_x``).

    The output projection is one matmul on the stacked states after the scan. Outputs
    at padded steps are exactly zero.

    Args:
        params, xs, lengths, mask, a0, dropout, input_dropout, recurrent_dropout, unk_id,
            key, unroll, backward, lookup: as :func:`rnn_layers`.
        output_activation: ``g_y``; ``None`` returns logits (what the losses take).
        output_dropout: dropout rate on the top layer's outputs, before the head.

    Returns:
        ``(B, T, C)``.
    """
    rates = dict(dropout=dropout, input_dropout=input_dropout, recurrent_dropout=recurrent_dropout)
    options = dict(unk_id=unk_id, unroll=unroll, backward=backward, lookup=lookup)
    h, _, m = _top_outputs(params, xs, lengths, mask, a0, key, output_dropout, rates, options)
    # The head reads the time-major states (T, B, H_out) in place; only the small
    # (T, B, C) result is transposed.
    y_hat = head_apply(params.head, _output_dropout(h, output_dropout, key), output_activation)
    if m is not None:
        y_hat = jnp.where(m.T[:, :, None], y_hat, jnp.zeros_like(y_hat))
    return jnp.swapaxes(y_hat, 0, 1)


def _pool(h_tm: Array, m: Array | None, pool: str) -> Array:
    """Masked mean or max over the valid steps of time-major ``(T, B, H)`` outputs.

    An example with no valid step pools to zeros (never NaN).
    """
    T, B = h_tm.shape[:2]
    if T == 0:
        return jnp.zeros(h_tm.shape[1:], h_tm.dtype)
    valid = jnp.ones((T, B), bool) if m is None else m.T
    count = jnp.sum(valid, axis=0)[:, None]  # (B, 1)
    if pool == "mean":  # outputs are exactly zero at masked steps
        return jnp.sum(h_tm, axis=0) / jnp.maximum(count, 1).astype(h_tm.dtype)
    low = jnp.asarray(-jnp.inf, h_tm.dtype)
    top = jnp.max(jnp.where(valid[:, :, None], h_tm, low), axis=0)
    return jnp.where(count > 0, top, jnp.zeros_like(top))


def rnn_classify(
    params: RNNParams,
    xs: Inputs,
    lengths: Int[ArrayLike, " B"] | None = None,
    *,
    mask: Bool[ArrayLike, "B T"] | Int[ArrayLike, "B T"] | None = None,
    a0: Float[ArrayLike, "LD B H"] | None = None,
    pool: str = "last",
    output_activation: Activation | None = None,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    output_dropout: float = 0.0,
    unk_id: int | None = None,
    key: jax.Array | None = None,
    unroll: int | bool = 1,
    backward: str = "bptt",
    lookup: str = "sorted",
) -> Float[Array, "B C"]:
    """Many-to-one: one prediction per example, the head of classification *and* regression.

    ``ŷ = g_y(W_y a_pool + b_y)`` where ``a_pool`` summarises each example's sequence:

    - ``pool="last"`` (default): the top layer's forward state after the example's last
      valid step, merged (for a bidirectional network) with the backward state after
      step 0, i.e. after reading the whole valid sequence from the right (PyTorch's
      ``h_n``);
    - ``pool="mean"`` / ``"max"``: the mean / elementwise max of the top layer's
      (merged) outputs over the valid steps only (an example of length 0 gives zeros).

    With ``output_activation=None`` the outputs are unbounded reals: a regression head
    (pair with :func:`~rnn_jax.masked_mean_squared_error`); logits for a classifier.

    Args:
        params, xs, lengths, mask, a0, dropout, input_dropout, recurrent_dropout, unk_id,
            key, unroll, backward, lookup: as :func:`rnn_layers`.
        pool: ``"last"``, ``"mean"`` or ``"max"``.
        output_activation: ``g_y``.
        output_dropout: dropout rate on the pooled state, before the head.

    Returns:
        ``(B, C)``.

    Example (regression of the mean of each sequence, shapes only):
        >>> import jax, jax.numpy as jnp
        >>> from rnn_jax import init_rnn
        >>> params = init_rnn(jax.random.key(0), 1, 16, 1)           # one real output
        >>> xs = jax.random.normal(jax.random.key(1), (4, 10, 1))
        >>> lengths = jnp.array([10, 7, 3, 0])
        >>> y_hat = rnn_classify(params, xs, lengths, pool="mean")   # (B, 1) reals
        >>> y_hat.shape
        (4, 1)
        >>> loss = lambda p: jnp.mean((rnn_classify(p, xs, lengths, pool="mean")
        ...                            - xs.mean(axis=(1, 2))[:, None]) ** 2)
        >>> jax.grad(loss)(params).head.W_y.shape
        (1, 16)
    """
    if pool not in POOLS:
        raise ValueError(f"`pool` must be one of {POOLS}, got {pool!r}.")
    rates = dict(dropout=dropout, input_dropout=input_dropout, recurrent_dropout=recurrent_dropout)
    options = dict(unk_id=unk_id, unroll=unroll, backward=backward, lookup=lookup)
    h, finals, m = _top_outputs(params, xs, lengths, mask, a0, key, output_dropout, rates, options)
    if pool != "last":
        a_final = _pool(h, m, pool)
    elif params.bidirectional:
        a_final = merge_directions(params.merge, finals[-2], finals[-1])
    else:
        a_final = finals[-1]
    return head_apply(params.head, _output_dropout(a_final, output_dropout, key), output_activation)
