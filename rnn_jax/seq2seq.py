"""Encoder–decoder (sequence-to-sequence) RNNs: ``T_y`` need not equal ``T_x``.

An encoder RNN (any depth, uni- or bidirectional) reads the source ``x<1..T_x>``; its
final states initialise a decoder RNN that reads the previous target token and predicts
the next one:

.. math::

    c_l = [\\overrightarrow{a}_l^{<T_x>}; \\overleftarrow{a}_l^{<1>}]
    \\qquad \\text{(encoder layer } l \\text{, final states of both directions)}

    a_l^{<0>} = c_l \\;\\; (\\text{bridge} = \\text{"concat"}) \\quad\\text{or}\\quad
    a_l^{<0>} = \\tanh(W_b c_l + b_b) \\;\\; (\\text{bridge} = \\text{"project"})

    a_1^{<t>} = g(W_{aa} a_1^{<t-1>} + W_{ax} [y^{<t-1>}; c] + b_a), \\qquad
    \\hat y^{<t>} = \\mathrm{softmax}(W_y a_L^{<t>} + b_y)

with ``y<0> = <BOS>``; generation stops at ``<EOS>``. With ``bridge="concat"`` the
decoder's hidden size is ``directions * H_enc`` (a bidirectional encoder's two final
states are concatenated, no parameters); ``"project"`` learns a ``tanh`` bridge per decoder
layer and allows any decoder size. With ``feed_context=True`` the top encoder layer's
``c`` is also part of the decoder's input at every step (Cho et al., 2014); otherwise the
decoder's input is the previous token alone (Sutskever et al., 2014).

Attention (``init_seq2seq(..., attention="additive")``; the default ``"none"`` is the
form above, unchanged): at every step the decoder attends over the top encoder layer's
outputs ``h<1..T_x>`` (:mod:`rnn_jax.attention`, Bahdanau et al., 2015), with the top
decoder layer's previous state as the query, padded source positions excluded exactly:

.. math::

    c^{<t>} = \\mathrm{attend}(a_L^{<t-1>}, h^{<1..T_x>}), \\qquad
    a_1^{<t>} = g(W_{aa} a_1^{<t-1>} + W_{ax} [y^{<t-1>}; c^{<t>}] + b_a), \\qquad
    \\hat y^{<t>} = \\mathrm{softmax}(W_y [a_L^{<t>}; c^{<t>}] + b_y)

so the context enters the decoder cell (every gate's input term for GRU/LSTM) and the
output layer. The bridge still starts the decoder from the encoder's final states.
:func:`seq2seq_apply` can return the weights ``α<t, i>`` (``return_attention=True``);
:func:`start_decoding` builds the decoding state (memory included) for every form.

Decoder layer ``l`` starts from encoder layer ``l`` when both have the same depth,
otherwise every decoder layer starts from the top encoder layer.

Any cell of :func:`~rnn_jax.init_rnn` works (``init_seq2seq(..., cell="gru"|"lstm")``):
encoder and decoder are stacks of that cell, run by the same layer loop and step, and the
equations above hold with the cell's update in place of ``g(...)`` (the context enters
every gate's input term). An LSTM also hands over its cell states: with
``bridge="concat"`` decoder layer ``l`` starts from the encoder's final ``(h, c)`` (both
concatenated over directions), with ``"project"`` its ``h`` is the bridge's output and its
cell state starts at zero. :func:`encode` then returns the cell states too when asked
(``return_cell_state=True``), and :class:`DecoderState` carries them (``c``).

Token ids index columns of ``W_ax`` directly (the one-hot × ``W_ax`` of the formulation):
there is no separate embedding. Training uses teacher forcing: the decoder reads
``[<BOS>, y<1>, ..., y<T_y - 1>]`` and is scored on ``[y<1>, ..., y<T_y - 1>, <EOS>]``
with a loss masked to each target's length.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.seq2seq import init_seq2seq, seq2seq_apply, seq2seq_loss
    >>> params = init_seq2seq(jax.random.key(0), 30, 20, hidden_size=16, bidirectional=True)
    >>> params.decoder[0].W_a.shape            # (H_dec, H_dec + V_tgt), H_dec = 2 * 16
    (32, 52)
    >>> src = jnp.array([[5, 6, 7, 8], [9, 10, 0, 0]])      # (B, T_x), padded
    >>> tgt = jnp.array([[4, 5, 3], [6, 3, 0]])              # (B, T_y), ends in <EOS> = 3
    >>> logits = seq2seq_apply(params, src, jnp.array([4, 2]),
    ...                        jnp.array([[2, 4, 5], [2, 6, 0]]), jnp.array([3, 2]))
    >>> logits.shape                           # (B, T_y, V_tgt)
    (2, 3, 20)
    >>> loss = seq2seq_loss(params, src, jnp.array([4, 2]), tgt, jnp.array([3, 2]), bos_id=2)
    >>> bool(jnp.isfinite(loss))
    True
"""

from __future__ import annotations

import dataclasses
import typing
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from rnn_jax._checks import check_inputs, check_lengths, lengths_to_mask, positive_int
from rnn_jax.attention import ATTENTIONS, AttentionParams, attend, init_attention, project_keys
from rnn_jax.losses import masked_softmax_cross_entropy
from rnn_jax.params import (
    ACTIVATIONS,
    CELLS,
    GATE_INITS,
    HeadParams,
    StackParams,
    init_head,
    init_layer,
)
from rnn_jax.stack import check_step_state, head_apply, stack_step, stack_unroll

__all__ = [
    "BRIDGES",
    "DecoderState",
    "Seq2SeqParams",
    "decoder_initial_state",
    "decoder_step",
    "encode",
    "init_seq2seq",
    "seq2seq_apply",
    "seq2seq_loss",
    "shift_right",
    "start_decoding",
]

BRIDGES = ("concat", "project")


# Not run-time type-checked in the tests: JAX and Orbax rebuild a pytree node with any leaves
# (Orbax's ``SaveArgs`` stand in for the empty ``bridge``, ``ShapeDtypeStruct``s for arrays).
@typing.no_type_check
@dataclasses.dataclass(frozen=True)
class Seq2SeqParams:
    """Parameters of an encoder–decoder RNN (a pytree; configuration is static).

    Attributes:
        encoder: ``encoder[l][d]``, the :class:`~rnn_jax.LayerParams` of encoder layer ``l``,
            direction ``d`` (0 forward, 1 backward); layer 0 reads source token ids
            (``W_a`` of shape ``(H_enc, H_enc + V_src)``; ``(G·H_enc, H_enc + V_src)`` and
            the gated cell's parameter type for ``cell="gru"``/``"lstm"``).
        decoder: ``decoder[l]``, uni-directional decoder layers. Layer 0 reads the previous
            target token id (and the context ``c`` if ``feed_context``):
            ``W_a`` of shape ``(H_dec, H_dec + V_tgt [+ C])``.
        head: ``W_y (V_tgt, H_dec)``, ``b_y (V_tgt,)``.
        bridge: for ``bridge_type="project"``, one :class:`~rnn_jax.HeadParams` per decoder
            layer mapping ``c_l`` (width ``C = directions * H_enc``) to ``a_l<0>``; else ``()``.
        activation: ``g``, ``"tanh"`` or ``"relu"`` (encoder and decoder).
        bridge_type: ``"concat"`` or ``"project"``.
        feed_context: whether the decoder reads ``c`` at every step.
        cell: ``"rnn"`` (the classic cell, default), ``"gru"`` or ``"lstm"``, for encoder
            and decoder alike.
        attention: additive attention's :class:`~rnn_jax.attention.AttentionParams`
            (``W_q (A, H_dec)``, ``W_k (A, C)``, ``v (A,)``), or ``None`` (no attention).
            With attention, decoder layer 0's ``W_a`` has the context columns
            (``(H_dec, H_dec + V_tgt + C)``) and the head reads ``[a_L; c]``
            (``W_y (V_tgt, H_dec + C)``).
    """

    # LayerParams for the classic cell, the gated cells' layer types (rnn_jax.cells) else.
    encoder: tuple[tuple[Any, ...], ...]
    decoder: tuple[Any, ...]
    head: HeadParams
    bridge: tuple[HeadParams, ...] = ()
    activation: str = "tanh"
    bridge_type: str = "concat"
    feed_context: bool = False
    cell: str = "rnn"
    attention: AttentionParams | None = None

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"`cell` must be one of {CELLS}, got {self.cell!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {self.activation!r}.")
        if self.bridge_type not in BRIDGES:
            raise ValueError(f"`bridge_type` must be one of {BRIDGES}, got {self.bridge_type!r}.")

    def __contains__(self, name: object) -> bool:
        """``name in params``: whether ``name`` is an array field (as for a dict of params;
        Flax's ``TrainState.create`` asks this of its params)."""
        return name in ("encoder", "decoder", "head", "bridge", "attention")

    @property
    def attention_type(self) -> str:
        """``"additive"`` or ``"none"``."""
        return "none" if self.attention is None else "additive"

    @property
    def num_directions(self) -> int:
        return len(self.encoder[0])

    @property
    def encoder_hidden_size(self) -> int:
        return self.encoder[0][0].hidden_size

    @property
    def decoder_hidden_size(self) -> int:
        return self.decoder[0].hidden_size

    @property
    def context_size(self) -> int:
        """``C = directions * H_enc``, the width of ``c_l``."""
        return self.num_directions * self.encoder_hidden_size

    @property
    def source_vocab_size(self) -> int:
        return self.encoder[0][0].input_size

    @property
    def target_vocab_size(self) -> int:
        return self.head.b_y.shape[-1]

    def config(self) -> dict[str, Any]:
        """The static configuration, JSON-serialisable (for checkpoints).

        ``cell`` is included only for a gated cell (classic-cell configurations unchanged).
        """
        out = dict(
            source_vocab_size=self.source_vocab_size,
            target_vocab_size=self.target_vocab_size,
            hidden_size=self.encoder_hidden_size,
            decoder_hidden_size=self.decoder_hidden_size,
            num_layers=len(self.encoder),
            decoder_layers=len(self.decoder),
            bidirectional=self.num_directions == 2,
            bridge=self.bridge_type,
            feed_context=self.feed_context,
            activation=self.activation,
        )
        if self.cell != "rnn":
            out["cell"] = self.cell
        if self.attention is not None:  # attention-free configurations unchanged
            out["attention"] = self.attention_type
            out["attention_size"] = self.attention.attention_size
        return out


jax.tree_util.register_dataclass(
    Seq2SeqParams,
    data_fields=["encoder", "decoder", "head", "bridge", "attention"],
    meta_fields=["activation", "bridge_type", "feed_context", "cell"],
)


class DecoderState(NamedTuple):
    """The decoder's recurrent state.

    Attributes:
        a: ``(L_dec, B, H_dec)``, the state ``a_l<t>`` of every decoder layer, in the
            library's one stacked-state layout ``(L * dirs, B, H)``.
        context: ``(B, C)``, the top encoder layer's ``c`` (read at every step when
            ``feed_context``; carried but unused otherwise).
        c: ``(L_dec, B, H_dec)``, an LSTM decoder's cell states (``cell="lstm"``, as
            :class:`~rnn_jax.generate.LMState`'s ``c``); ``None`` otherwise.
        memory: ``(B, T_x, C)``, the top encoder layer's outputs attended over (attention
            only; ``None`` otherwise).
        keys: ``(B, T_x, A)``, their projections ``W_k h<i>`` (attention only).
        memory_mask: ``(B, T_x)``, the valid source positions (attention only).

    ``batch_axes`` tells :mod:`rnn_jax.generate` where each leaf's batch axis is.
    """

    a: Float[Array, "L B H"]
    context: Float[Array, "B C"]
    c: Float[Array, "L B H"] | None = None
    memory: Float[Array, "B T C"] | None = None
    keys: Float[Array, "B T A"] | None = None
    memory_mask: Bool[Array, "B T"] | None = None

    @property
    def batch_axes(self) -> DecoderState:
        attn = None if self.memory is None else 0
        return DecoderState(
            a=1,
            context=0,
            c=None if self.c is None else 1,
            memory=attn,
            keys=attn,
            memory_mask=attn,
        )


def init_seq2seq(
    key: jax.Array,
    source_vocab_size: int,
    target_vocab_size: int,
    *,
    hidden_size: int = 128,
    num_layers: int = 1,
    bidirectional: bool = False,
    decoder_layers: int | None = None,
    bridge: str = "concat",
    decoder_hidden_size: int | None = None,
    feed_context: bool = False,
    activation: str = "tanh",
    cell: str = "rnn",
    gate_init: str = "torch",
    attention: str = "none",
    attention_size: int | None = None,
) -> Seq2SeqParams:
    """Initialise an encoder–decoder RNN.

    Args:
        key: PRNG key (required; first positional, or ``key=`` keyword, as in
            :func:`~rnn_jax.init_rnn`), split into named sub-keys for encoder, decoder,
            bridge and head.
        source_vocab_size: ``V_src`` (source token ids lie in ``[0, V_src)``).
        target_vocab_size: ``V_tgt``.
        hidden_size: encoder ``H_enc``.
        num_layers: encoder depth.
        bidirectional: a forward and a backward encoder layer at every depth.
        decoder_layers: decoder depth (default: ``num_layers``).
        bridge: ``"concat"`` (``H_dec = directions * H_enc``, the decoder starts from the
            concatenated final encoder states) or ``"project"`` (learned ``tanh`` bridge).
        decoder_hidden_size: ``H_dec`` for ``bridge="project"`` (default
            ``directions * H_enc``); must be left ``None`` or equal that for ``"concat"``.
        feed_context: feed ``c`` to the decoder at every step.
        activation: ``g`` (of the classic cell; the gated cells have their own).
        cell: ``"rnn"`` (default), ``"gru"`` or ``"lstm"`` for encoder and decoder; the
            gated layers come from :func:`rnn_jax.cells.init_gated_layer`.
        gate_init: the gated layers' scheme, ``"torch"`` (default) or ``"keras"`` (LSTM
            forget-gate bias one), as in :func:`~rnn_jax.init_rnn`.
        attention: ``"none"`` (default, the attention-free encoder–decoder; the same
            parameters as before for a given key) or ``"additive"`` (Bahdanau attention
            over the top encoder layer's outputs; not with ``feed_context``).
        attention_size: ``A``, the width of the attention's hidden layer (default
            ``H_dec``); only with ``attention="additive"``.

    Returns:
        :class:`Seq2SeqParams`.
    """
    if not isinstance(key, jax.Array):
        raise ValueError(f"`key` must be a jax.random key array, got {type(key).__name__}.")
    V_src = positive_int("source_vocab_size", source_vocab_size)
    V_tgt = positive_int("target_vocab_size", target_vocab_size)
    H_enc = positive_int("hidden_size", hidden_size)
    L_enc = positive_int("num_layers", num_layers)
    L_dec = positive_int("decoder_layers", L_enc if decoder_layers is None else decoder_layers)
    if bridge not in BRIDGES:
        raise ValueError(f"`bridge` must be one of {BRIDGES}, got {bridge!r}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {activation!r}.")
    if cell not in CELLS:
        raise ValueError(f"`cell` must be one of {CELLS}, got {cell!r}.")
    if gate_init not in GATE_INITS or (cell == "rnn" and gate_init != "torch"):
        raise ValueError(
            f"`gate_init` must be one of {GATE_INITS} with cell='gru'/'lstm' ('torch' with "
            f"the classic cell), got {gate_init!r} with cell={cell!r}."
        )
    if attention not in ATTENTIONS:
        raise ValueError(f"`attention` must be one of {ATTENTIONS}, got {attention!r}.")
    attn = attention == "additive"
    if attn and feed_context:
        raise ValueError(
            "`feed_context` must be False with attention='additive' (the attention context "
            "is the decoder's context input), got feed_context=True."
        )
    if attention_size is not None and not attn:
        raise ValueError(
            f"`attention_size` is only for attention='additive', got {attention_size!r} with "
            f"attention={attention!r}."
        )
    init_one = init_layer if cell == "rnn" else partial(_init_gated, cell, gate_init)
    dirs = 2 if bidirectional else 1
    C = dirs * H_enc
    if decoder_hidden_size is None:
        H_dec = C
    else:
        H_dec = positive_int("decoder_hidden_size", decoder_hidden_size)
        if bridge == "concat" and H_dec != C:
            raise ValueError(
                f"`decoder_hidden_size` must equal directions * hidden_size = {C} with "
                f'bridge="concat", got {H_dec}; use bridge="project" for another size.'
            )
    k_enc, k_dec, k_bridge, k_head = jax.random.split(key, 4)
    enc_keys = jax.random.split(k_enc, L_enc * dirs)
    encoder = tuple(
        tuple(
            init_one(V_src if l == 0 else C, H_enc, key=enc_keys[l * dirs + d]) for d in range(dirs)
        )
        for l in range(L_enc)
    )
    dec_keys = jax.random.split(k_dec, L_dec)
    D0 = V_tgt + (C if feed_context or attn else 0)
    decoder = tuple(init_one(D0 if l == 0 else H_dec, H_dec, key=dec_keys[l]) for l in range(L_dec))
    bridges = ()
    if bridge == "project":
        bridges = tuple(init_head(C, H_dec, key=k) for k in jax.random.split(k_bridge, L_dec))
    head = init_head(H_dec + (C if attn else 0), V_tgt, key=k_head)
    attention_params = None
    if attn:
        A = H_dec if attention_size is None else positive_int("attention_size", attention_size)
        # A sub-key of its own: the other parameters are those of the attention-free model.
        attention_params = init_attention(jax.random.fold_in(key, 7), H_dec, C, A)
    return Seq2SeqParams(
        encoder=encoder,
        decoder=decoder,
        head=head,
        bridge=bridges,
        activation=activation,
        bridge_type=bridge,
        feed_context=bool(feed_context),
        cell=cell,
        attention=attention_params,
    )


def _init_gated(
    cell: str, scheme: str, input_size: int, hidden_size: int, *, key: jax.Array
) -> Any:
    try:
        from rnn_jax import cells
    except ImportError:
        raise ValueError(
            f"`cell={cell!r}` needs the gated cells of rnn_jax.cells, which this installation "
            "does not have; use cell='rnn'."
        ) from None
    return cells.init_gated_layer(cell, input_size, hidden_size, key=key, scheme=scheme)


def _encoder_stack(params: Seq2SeqParams) -> StackParams:
    return StackParams(
        layers=params.encoder,
        activation=params.activation,
        merge="concat",
        token_inputs=True,
        cell=params.cell,
    )


def _decoder_stack(params: Seq2SeqParams) -> StackParams:
    """The decoder as a stack whose layer 0 reads the target ids: ``[W_aa | W_ax^tok]``.

    The context columns ``W_ax^ctx`` (``feed_context``) enter as the stack's
    ``extra_term``, :func:`_context_term`.
    """
    first = params.decoder[0]
    H, V = params.decoder_hidden_size, params.target_vocab_size
    # Same parameter type, the token columns only (any cell: the biases are unchanged).
    layers = ((first._replace(W_a=first.W_a[:, : H + V]),),) + tuple(
        (layer,) for layer in params.decoder[1:]
    )
    return StackParams(
        layers=layers, activation=params.activation, token_inputs=True, cell=params.cell
    )


def encode(
    params: Seq2SeqParams,
    src: Int[ArrayLike, "B T_x"],
    src_lengths: Int[ArrayLike, " B"],
    *,
    return_cell_state: bool = False,
    return_memory: bool = False,
) -> Any:
    """Run the encoder: ``c_l`` for every encoder layer, ``(L_enc, B, directions * H_enc)``.

    ``c_l`` is the forward state after each source's last valid token, concatenated with
    the backward state after its first token. A source of length 0 gives ``c_l = 0``.

    With ``return_cell_state=True`` (``cell="lstm"`` only) the result is the pair
    ``(c, cell_states)``, the LSTM's final cell states in the same layout: what
    :func:`decoder_initial_state` needs for ``bridge="concat"``.

    With ``return_memory=True`` the result is ``(result, memory)``: ``result`` as above and
    ``memory`` ``(B, T_x, C)``, the top encoder layer's outputs (both directions
    concatenated; zero at padded positions), what attention reads.
    """
    src = check_inputs(src, params.source_vocab_size, name="src")
    if not jnp.issubdtype(src.dtype, jnp.integer):
        raise ValueError(f"`src` must be integer token ids (B, T_x), got dtype {src.dtype}.")
    B, T_x = src.shape
    src_lengths = check_lengths(src_lengths, B, T_x, name="src_lengths")
    mask_tb = lengths_to_mask(src_lengths, T_x).T
    if return_cell_state and params.cell != "lstm":
        raise ValueError(
            f"`return_cell_state=True` is only for cell='lstm', got cell={params.cell!r}."
        )
    # (L * dirs, B, H), or the pair (h_n, c_n) for the LSTM
    h_tm, finals = stack_unroll(
        _encoder_stack(params), src, mask_tb, return_cell_state=params.cell == "lstm"
    )
    L, dirs, H = len(params.encoder), params.num_directions, params.encoder_hidden_size

    def per_layer(f: Array) -> Array:  # (L * dirs, B, H) -> (L, B, dirs * H)
        f = f.reshape(L, dirs, B, H)
        return jnp.concatenate([f[:, d] for d in range(dirs)], axis=-1)

    if params.cell != "lstm":
        out = per_layer(finals)
    else:
        h, c = per_layer(finals[0]), per_layer(finals[1])
        out = (h, c) if return_cell_state else h
    return (out, jnp.swapaxes(h_tm, 0, 1)) if return_memory else out


def decoder_initial_state(
    params: Seq2SeqParams,
    c: Float[Array, "L_enc B C"] | tuple[Float[Array, "L_enc B C"], Float[Array, "L_enc B C"]],
    *,
    memory: Float[Array, "B T_x C"] | None = None,
    src_lengths: Int[ArrayLike, " B"] | None = None,
) -> DecoderState:
    """``a_l<0>`` of every decoder layer from the encoder's ``c_l`` (the bridge).

    Args:
        params: :class:`Seq2SeqParams`.
        c: what :func:`encode` returns: ``(L_enc, B, C)``; for ``cell="lstm"`` with
            ``bridge="concat"`` the pair ``(c, cell_states)`` of
            ``encode(..., return_cell_state=True)`` (the decoder starts from the encoder's
            cell states; with ``"project"`` either form, the cell states start at zero).
        memory, src_lengths: with attention (required then, refused otherwise) the
            ``memory`` of ``encode(..., return_memory=True)`` and the source lengths.

    Returns:
        :class:`DecoderState` with ``a`` of shape ``(L_dec, B, H_dec)`` (and, for an LSTM,
        ``c`` of the same shape; with attention ``memory``, ``keys`` and ``memory_mask``).
    """
    lstm = params.cell == "lstm"
    cell_states = None
    if isinstance(c, tuple):
        if not lstm or len(c) != 2:
            raise ValueError(
                "`c` must be the (L_enc, B, C) array of encode(...), or for cell='lstm' the "
                f"pair (c, cell_states) of encode(..., return_cell_state=True); got a tuple "
                f"of {len(c)} for cell={params.cell!r}."
            )
        c, cell_states = c
    elif lstm and params.bridge_type == "concat":
        raise ValueError(
            "`c` must be the pair (c, cell_states) of encode(..., return_cell_state=True) for "
            "cell='lstm' with bridge='concat' (the decoder starts from the encoder's cell "
            "states), got one array."
        )
    L_enc, L_dec = c.shape[0], len(params.decoder)
    a0, c0 = [], []
    for l in range(L_dec):
        e = l if L_enc == L_dec else -1
        c_l = c[e]
        if params.bridge_type == "project":
            c_l = head_apply(params.bridge[l], c_l, "tanh")
            c0.append(jnp.zeros_like(c_l))
        elif lstm:
            c0.append(cell_states[e])
        a0.append(c_l)
    state = DecoderState(a=jnp.stack(a0), context=c[-1], c=jnp.stack(c0) if lstm else None)
    return _with_memory(params, state, memory, src_lengths)


def _with_memory(
    params: Seq2SeqParams, state: DecoderState, memory: Any, src_lengths: Any
) -> DecoderState:
    """``state`` with the attention memory, its keys and mask (attention models only)."""
    if params.attention is None:
        if memory is not None or src_lengths is not None:
            raise ValueError(
                "`memory` and `src_lengths` are only for attention models "
                "(init_seq2seq(..., attention='additive')); got them for attention='none'."
            )
        return state
    B, C = state.a.shape[1], params.context_size
    if memory is None or src_lengths is None or jnp.ndim(memory) != 3:
        raise ValueError(
            "`memory` (B, T_x, C) from encode(..., return_memory=True) and `src_lengths` (B,) "
            f"are required with attention, got memory of shape "
            f"{None if memory is None else tuple(jnp.shape(memory))} and src_lengths "
            f"{None if src_lengths is None else tuple(jnp.shape(src_lengths))}."
        )
    if tuple(memory.shape[::2]) != (B, C):
        raise ValueError(
            f"`memory` must have shape (B, T_x, C) with B = {B}, C = {C}, got "
            f"{tuple(memory.shape)}."
        )
    T_x = memory.shape[1]
    src_lengths = check_lengths(src_lengths, B, T_x, name="src_lengths")
    return state._replace(
        memory=memory,
        keys=project_keys(params.attention, memory),
        memory_mask=lengths_to_mask(src_lengths, T_x),
    )


def start_decoding(
    params: Seq2SeqParams, src: Int[ArrayLike, "B T_x"], src_lengths: Int[ArrayLike, " B"]
) -> DecoderState:
    """Encode ``src`` and build the decoder's initial state, for every configuration.

    ``decoder_initial_state(params, encode(params, src, src_lengths, ...), ...)`` with the
    right options: an LSTM's cell states, an attention model's memory. The state to hand to
    :func:`decoder_step` and the decoders of :mod:`rnn_jax.generate`.
    """
    lstm = params.cell == "lstm"
    attn = params.attention is not None
    out = encode(params, src, src_lengths, return_cell_state=lstm, return_memory=attn)
    if not attn:
        return decoder_initial_state(params, out)
    c, memory = out
    return decoder_initial_state(params, c, memory=memory, src_lengths=src_lengths)


def _context_term(
    params: Seq2SeqParams, context: Float[Array, "B C"]
) -> Float[Array, "B H"] | None:
    """``W_ax^ctx c`` for ``feed_context`` or attention (``None`` otherwise)."""
    if not params.feed_context and params.attention is None:
        return None
    H, V = params.decoder_hidden_size, params.target_vocab_size
    return context @ params.decoder[0].W_a[:, H + V :].T


def _check_state(params: Seq2SeqParams, state: DecoderState, B: int) -> None:
    shape = (len(params.decoder), B, params.decoder_hidden_size)
    check_step_state(
        state,
        DecoderState,
        shape,
        params.cell,
        article="a",
        layout="(L_dec, B, H_dec)",
        origin="decoder_initial_state",
    )


def decoder_step(
    params: Seq2SeqParams, state: DecoderState, y_prev: Int[Array, " B"]
) -> tuple[DecoderState, Float[Array, "B V"]]:
    """One decoding step for a batch: ``(state<t-1>, y<t-1>) -> (state<t>, logits<t>)``.

    :func:`rnn_jax.stack.stack_step` (each layer :func:`~rnn_jax.rnn_cell`) per example,
    ``vmap`` over the batch; layer 0 reads the token id as a column of ``W_ax`` (and, with
    ``feed_context``, ``W_ax^ctx c`` as its extra term). This is the ``step_fn`` the
    functions of :mod:`rnn_jax.generate` take.

    With attention, the context ``c<t>`` is first computed from the top layer's state
    ``a_L<t-1>`` (the query) and the state's memory, then enters layer 0 and the head.
    """
    _check_state(params, state, jnp.shape(y_prev)[0])
    if params.attention is not None:
        state, logits, _ = _attention_step(params, state, y_prev)
        return state, logits
    ctx = _context_term(params, state.context)  # (B, G·H) or None
    step = jax.vmap(partial(_step_one, _decoder_stack(params)), in_axes=(1, 0, 0), out_axes=(1, 0))
    if params.cell == "lstm":
        (a, c), y = step((state.a, state.c), y_prev, ctx)
        return DecoderState(a=a, context=state.context, c=c), head_apply(params.head, y)
    a, y = step(state.a, y_prev, ctx)
    return DecoderState(a=a, context=state.context), head_apply(params.head, y)


def _step_one(stack, a_prev, y_t, ctx):
    return stack_step(stack, a_prev, y_t, extra_term=ctx)


def _attention_core(
    params: Seq2SeqParams, state: DecoderState, y_prev: Array
) -> tuple[DecoderState, Array, Array]:
    """One attention step without the head: ``(state<t>, [a_L<t>; c<t>], α<t>)``."""
    if state.memory is None:
        raise ValueError(
            "`state` must carry the attention memory (from start_decoding or "
            "decoder_initial_state(..., memory=, src_lengths=)), got a state without it."
        )
    ctx, w = attend(params.attention, state.a[-1], state.memory, state.keys, state.memory_mask)
    term = _context_term(params, ctx)
    step = jax.vmap(partial(_step_one, _decoder_stack(params)), in_axes=(1, 0, 0), out_axes=(1, 0))
    if params.cell == "lstm":
        (a, c), y = step((state.a, state.c), y_prev, term)
        new = state._replace(a=a, c=c)
    else:
        a, y = step(state.a, y_prev, term)
        new = state._replace(a=a)
    return new, jnp.concatenate([y, ctx.astype(y.dtype)], axis=-1), w


def _attention_step(
    params: Seq2SeqParams, state: DecoderState, y_prev: Array
) -> tuple[DecoderState, Array, Array]:
    state, out, w = _attention_core(params, state, y_prev)
    return state, head_apply(params.head, out), w


def _attention_apply(
    params: Seq2SeqParams, state: DecoderState, tgt_in: Array
) -> tuple[Array, Array]:
    """Teacher forcing with attention: one scan of :func:`_attention_core` over time.

    Returns the pre-head outputs ``(B, T_y, H_dec + C)`` and the weights ``(B, T_y, T_x)``.
    """

    def body(st, y_t):
        st, out, w = _attention_core(params, st, y_t)
        return st, (out, w)

    _, (outs, ws) = jax.lax.scan(body, state, jnp.swapaxes(tgt_in, 0, 1))
    return jnp.swapaxes(outs, 0, 1), jnp.swapaxes(ws, 0, 1)


def shift_right(tgt: Int[ArrayLike, "B T_y"], bos_id: int) -> Int[Array, "B T_y"]:
    """The teacher-forced decoder input: ``[<BOS>, y<1>, ..., y<T_y - 1>]``.

    Example:
        >>> import jax.numpy as jnp
        >>> shift_right(jnp.array([[7, 8, 3]]), bos_id=2).tolist()
        [[2, 7, 8]]
    """
    bos = jnp.full((tgt.shape[0], 1), bos_id, tgt.dtype)
    return jnp.concatenate([bos, tgt[:, :-1]], axis=1)


def seq2seq_apply(
    params: Seq2SeqParams,
    src: Int[ArrayLike, "B T_x"],
    src_lengths: Int[ArrayLike, " B"],
    tgt_in: Int[ArrayLike, "B T_y"],
    tgt_lengths: Int[ArrayLike, " B"],
    *,
    return_attention: bool = False,
) -> Float[Array, "B T_y V"] | tuple[Float[Array, "B T_y V"], Float[Array, "B T_y T_x"]]:
    """Teacher-forced decoding: logits of ``y<t>`` given the source and ``tgt_in<1..t>``.

    Equal (up to float rounding) to running :func:`decoder_step` in a Python loop over
    ``tgt_in``; the decoder runs through :func:`rnn_jax.stack.stack_unroll` (the same
    layer loop as the network, input projections hoisted out of the loop). Source and target lengths differ per
    example; logits at padded target steps are exactly zero.

    Args:
        params: :class:`Seq2SeqParams`.
        src: source token ids ``(B, T_x)``.
        src_lengths: ``(B,)`` in ``[0, T_x]``.
        tgt_in: decoder input ids ``(B, T_y)``, usually ``shift_right(tgt, bos_id)``.
        tgt_lengths: ``(B,)`` in ``[0, T_y]``.
        return_attention: also return the attention weights ``α`` ``(B, T_y, T_x)``
            (attention models only; zero at padded source positions and target steps).

    Returns:
        Logits ``(B, T_y, V_tgt)``; with ``return_attention`` the pair
        ``(logits, weights)``.

    With attention the decoder runs as one ``lax.scan`` of the attention step (the query
    of step ``t`` is the state of step ``t - 1``, so nothing can be hoisted).
    """
    if return_attention and params.attention is None:
        raise ValueError(
            "`return_attention=True` needs an attention model "
            "(init_seq2seq(..., attention='additive')), got attention='none'."
        )
    state = start_decoding(params, src, src_lengths)
    B = state.a.shape[1]
    tgt_in = check_inputs(tgt_in, params.target_vocab_size, name="tgt_in")
    if tgt_in.ndim != 2 or tgt_in.shape[0] != B:
        raise ValueError(
            f"`tgt_in` must be integer ids of shape (B, T_y) with B = {B}, got {tuple(tgt_in.shape)}."
        )
    T_y = tgt_in.shape[1]
    tgt_lengths = check_lengths(tgt_lengths, B, T_y, name="tgt_lengths")
    mask_tb = lengths_to_mask(tgt_lengths, T_y).T  # (T_y, B)
    if params.attention is not None:
        outs, ws = _attention_apply(params, state, tgt_in)
        valid = mask_tb.T[:, :, None]
        logits = head_apply(params.head, outs)
        logits = jnp.where(valid, logits, jnp.zeros_like(logits))
        if return_attention:
            return logits, jnp.where(valid, ws, jnp.zeros_like(ws))
        return logits
    ctx = _context_term(params, state.context)
    h, _ = stack_unroll(
        _decoder_stack(params),
        tgt_in,
        mask_tb,
        state.a,
        c0=state.c,
        extra_term=None if ctx is None else ctx[None],
    )
    logits = jnp.swapaxes(head_apply(params.head, h), 0, 1)  # (B, T_y, V)
    return jnp.where(mask_tb.T[:, :, None], logits, jnp.zeros_like(logits))


def seq2seq_loss(
    params: Seq2SeqParams,
    src: Int[ArrayLike, "B T_x"],
    src_lengths: Int[ArrayLike, " B"],
    tgt: Int[ArrayLike, "B T_y"],
    tgt_lengths: Int[ArrayLike, " B"],
    *,
    bos_id: int,
    reduction: str = "mean",
) -> Float[Array, ""]:
    """Teacher-forced cross-entropy, masked to each target's length.

    Args:
        params, src, src_lengths: as :func:`seq2seq_apply`.
        tgt: target ids ``(B, T_y)`` *ending in* ``<EOS>`` (so the model learns to stop),
            padded after it.
        tgt_lengths: ``(B,)``, counting the ``<EOS>``.
        bos_id: the ``<BOS>`` id the decoder reads first.
        reduction: ``"mean"`` over valid target tokens of the batch, ``"sum"`` or
            ``"none"`` (see :func:`rnn_jax.losses.masked_softmax_cross_entropy`).

    Returns:
        The loss.
    """
    logits = seq2seq_apply(params, src, src_lengths, shift_right(tgt, bos_id), tgt_lengths)
    return masked_softmax_cross_entropy(logits, tgt, lengths=tgt_lengths, reduction=reduction)
