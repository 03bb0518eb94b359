"""Gated recurrent cells, GRU and LSTM, with PyTorch's equations and gate order.

A gated cell replaces the classic ``a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a)`` by

**GRU** (gates ``r, z, n``; carry ``h`` of shape ``(H,)``):

.. math::

    r &= \\sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\\\
    z &= \\sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\\\
    n &= \\tanh(W_{in} x + b_{in} + r \\odot (W_{hn} h + b_{hn})) \\\\
    h' &= (1 - z) \\odot n + z \\odot h

**LSTM** (gates ``i, f, g, o``; carry ``(h, c)``, two ``(H,)`` vectors):

.. math::

    i, f, o &= \\sigma(W_{i\\cdot} x + W_{h\\cdot} h + b_{\\cdot}), \\quad
    g = \\tanh(W_{ig} x + W_{hg} h + b_g) \\\\
    c' &= f \\odot c + i \\odot g, \\qquad h' = o \\odot \\tanh(c')

The weights are stored stacked like the classic layer's ``W_a = [W_aa | W_ax]``: the
recurrent block first, ``W_a = [W_h | W_x]`` of shape ``(G·H, H + D)`` with ``G`` gates
whose row blocks follow PyTorch's order (``r, z, n`` and ``i, f, g, o``), so
``W_a[:, :H]`` is PyTorch's ``weight_hh`` and ``W_a[:, H:]`` its ``weight_ih``. The GRU
keeps two biases (``b_hn`` sits inside ``r ⊙ (...)``, so it cannot be folded into the
input bias); the LSTM keeps one, ``b_a = b_ih + b_hh``.

:func:`layer_unroll` replaces this Python loop (one direction, one layer, batch ``B``,
time-major)::

    carry = carry0
    for t in range(T):                                  # reversed(range(T)) if reverse
        carry_new, h = cell_step(cell, layer, carry, x[t])       # per example
        carry = where(mask[t], carry_new, carry)        # a padded step keeps the carry
        h_seq[t] = where(mask[t], h, 0)                 # ... and emits exactly zero
    return h_seq, carry                                 # carry after the last valid step

with the input projection of every gate, ``W_x x<t> + b_x`` for all ``t``, hoisted out of
the loop (one matmul, or one gather of columns of ``W_x`` for token ids), so the loop body
is only the recurrent matmul and the gates.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells import carry_zeros, init_gated_layer, layer_unroll
    >>> layer = init_gated_layer("lstm", 3, 8, key=jax.random.key(0))
    >>> layer.W_a.shape                        # (4H, H + D)
    (32, 11)
    >>> xs = jnp.ones((5, 2, 3))               # (T, B, D), time-major
    >>> h_seq, (h_n, c_n) = layer_unroll("lstm", layer, xs, carry_zeros("lstm", 2, 8), None)
    >>> h_seq.shape, h_n.shape, c_n.shape
    ((5, 2, 8), (2, 8), (2, 8))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from rnn_jax._checks import positive_int
from rnn_jax.lookup import column_lookup

__all__ = [
    "GATED_CELLS",
    "GRULayerParams",
    "LSTMLayerParams",
    "carry_zeros",
    "cell_step",
    "init_gated_layer",
    "layer_unroll",
    "num_gates",
]

GATED_CELLS = ("gru", "lstm")
_NUM_GATES = {"gru": 3, "lstm": 4}
INIT_SCHEMES = ("torch", "keras")
LOOKUPS = ("sorted", "take")

GatedLayer = Any  # GRULayerParams | LSTMLayerParams
Carry = Any  # h (..., H) for the GRU, (h, c) for the LSTM


class GRULayerParams(NamedTuple):
    """One GRU layer (one direction) in stacked form.

    Attributes:
        W_a: ``(3H, H + D)``, ``[W_h | W_x]``, row blocks in PyTorch's gate order
            ``r, z, n`` (``W_a[:, :H]`` is ``weight_hh``, ``W_a[:, H:]`` ``weight_ih``).
        b_x: ``(3H,)``, the input biases ``[b_ir, b_iz, b_in]`` (``bias_ih``).
        b_h: ``(3H,)``, the recurrent biases ``[b_hr, b_hz, b_hn]`` (``bias_hh``).
    """

    W_a: Float[Array, "G3 HD"]
    b_x: Float[Array, " G3"]
    b_h: Float[Array, " G3"]

    @property
    def hidden_size(self) -> int:
        return self.b_h.shape[-1] // 3

    @property
    def input_size(self) -> int:
        return self.W_a.shape[-1] - self.hidden_size

    @property
    def W_h(self) -> Float[Array, "G3 H"]:
        """The recurrent matrix ``(3H, H)``, the first ``H`` columns of ``W_a``."""
        return self.W_a[..., : self.hidden_size]

    @property
    def W_x(self) -> Float[Array, "G3 D"]:
        """The input matrix ``(3H, D)``, the last ``D`` columns of ``W_a``."""
        return self.W_a[..., self.hidden_size :]


class LSTMLayerParams(NamedTuple):
    """One LSTM layer (one direction) in stacked form.

    Attributes:
        W_a: ``(4H, H + D)``, ``[W_h | W_x]``, row blocks in PyTorch's gate order
            ``i, f, g, o`` (``W_a[:, :H]`` is ``weight_hh``, ``W_a[:, H:]`` ``weight_ih``).
        b_a: ``(4H,)``, ``bias_ih + bias_hh`` (only their sum enters the equations).
    """

    W_a: Float[Array, "G4 HD"]
    b_a: Float[Array, " G4"]

    @property
    def hidden_size(self) -> int:
        return self.b_a.shape[-1] // 4

    @property
    def input_size(self) -> int:
        return self.W_a.shape[-1] - self.hidden_size

    @property
    def W_h(self) -> Float[Array, "G4 H"]:
        """The recurrent matrix ``(4H, H)``, the first ``H`` columns of ``W_a``."""
        return self.W_a[..., : self.hidden_size]

    @property
    def W_x(self) -> Float[Array, "G4 D"]:
        """The input matrix ``(4H, D)``, the last ``D`` columns of ``W_a``."""
        return self.W_a[..., self.hidden_size :]


_PARAM_TYPES = {"gru": GRULayerParams, "lstm": LSTMLayerParams}


# --------------------------------------------------------------------------- registry


def _check_cell(cell: Any) -> str:
    if cell not in GATED_CELLS:
        raise ValueError(f"`cell` must be one of {GATED_CELLS}, got {cell!r}.")
    return cell


def num_gates(cell: str) -> int:
    """The number of gate blocks ``G`` in ``W_a``'s ``G·H`` rows: 3 (GRU) or 4 (LSTM).

    Example:
        >>> num_gates("gru"), num_gates("lstm")
        (3, 4)
    """
    return _NUM_GATES[_check_cell(cell)]


def carry_zeros(cell: str, B: int, H: int, dtype: Any = jnp.float32) -> Carry:
    """The zero initial carry of a batch: ``h0 (B, H)`` (GRU) or ``(h0, c0)`` (LSTM).

    Example:
        >>> carry_zeros("gru", 2, 3).shape
        (2, 3)
        >>> [c.shape for c in carry_zeros("lstm", 2, 3)]
        [(2, 3), (2, 3)]
    """
    _check_cell(cell)
    h0 = jnp.zeros((B, H), dtype)
    return h0 if cell == "gru" else (h0, jnp.zeros((B, H), dtype))


# --------------------------------------------------------------------------- init


def _gate_blocks(init: Any, key: jax.Array, G: int, shape: tuple[int, int]) -> Array:
    """``G`` independent ``init(key_g, shape)`` blocks stacked along the rows."""
    return jnp.concatenate([init(k, shape, jnp.float32) for k in jax.random.split(key, G)], 0)


def init_gated_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    *,
    key: jax.Array,
    dtype: Any = jnp.float32,
    scheme: str = "torch",
) -> GRULayerParams | LSTMLayerParams:
    """Initialise one GRU or LSTM layer.

    ``scheme="torch"`` (default) is PyTorch's: every weight and both biases drawn
    ``U(-1/√H, 1/√H)``; the LSTM's ``b_a`` is the sum of two such draws, as PyTorch's
    ``bias_ih + bias_hh`` is. ``scheme="keras"``: per gate block, ``W_h`` orthogonal and
    ``W_x`` Glorot uniform, biases zero except the LSTM's forget gate bias, one (Keras'
    ``unit_forget_bias``; Jozefowicz et al., 2015).

    The draw is made in float32 and then cast to ``dtype`` (so low-precision parameters
    are the rounded float32 ones). Traceable: ``jax.vmap`` over keys works.

    Args:
        cell: ``"gru"`` or ``"lstm"``.
        input_size: ``D``.
        hidden_size: ``H``.
        key: PRNG key (required; no default).
        dtype: parameter dtype (floating).
        scheme: ``"torch"`` or ``"keras"``.

    Returns:
        :class:`GRULayerParams` or :class:`LSTMLayerParams` with ``W_a`` of shape
        ``(G·H, H + D)``.

    Example:
        >>> import jax
        >>> p = init_gated_layer("gru", 5, 4, key=jax.random.key(0))
        >>> p.W_a.shape, p.b_x.shape, p.b_h.shape, p.hidden_size, p.input_size
        ((12, 9), (12,), (12,), 4, 5)
        >>> keys = jax.random.split(jax.random.key(1), 8)
        >>> jax.vmap(lambda k: init_gated_layer("lstm", 5, 4, key=k))(keys).W_a.shape
        (8, 16, 9)
    """
    G = num_gates(cell)
    D = positive_int("input_size", input_size)
    H = positive_int("hidden_size", hidden_size)
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise ValueError(f"`dtype` must be a floating dtype, got {jnp.dtype(dtype)}.")
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"`scheme` must be one of {INIT_SCHEMES}, got {scheme!r}.")
    k_h, k_x, k_b1, k_b2 = jax.random.split(key, 4)
    if scheme == "torch":
        bound = 1.0 / H**0.5

        def uniform(k: jax.Array, shape: tuple[int, ...]) -> Array:
            return jax.random.uniform(k, shape, jnp.float32, -bound, bound)

        W_a = uniform(k_h, (G * H, H + D))
        b1, b2 = uniform(k_b1, (G * H,)), uniform(k_b2, (G * H,))
    else:
        orthogonal = jax.nn.initializers.orthogonal()
        # jax initialisers read (fan_in, fan_out) from (shape[-2], shape[-1]): draw W_x's
        # blocks as (D, H) and transpose.
        glorot = jax.nn.initializers.glorot_uniform()
        W_h = _gate_blocks(orthogonal, k_h, G, (H, H))
        W_x = jnp.concatenate(
            [glorot(k, (D, H), jnp.float32).T for k in jax.random.split(k_x, G)], 0
        )
        W_a = jnp.concatenate([W_h, W_x], axis=1)
        b1 = jnp.zeros((G * H,), jnp.float32)
        b2 = jnp.zeros((G * H,), jnp.float32)
        if cell == "lstm":
            b1 = b1.at[H : 2 * H].set(1.0)  # forget gate
    if cell == "gru":
        return GRULayerParams(W_a=W_a.astype(dtype), b_x=b1.astype(dtype), b_h=b2.astype(dtype))
    return LSTMLayerParams(W_a=W_a.astype(dtype), b_a=(b1 + b2).astype(dtype))


# --------------------------------------------------------------------------- one step


def _x_bias(cell: str, layer: GatedLayer) -> Array:
    """The bias added to the hoisted input term: ``b_x`` (GRU) or ``b_a`` (LSTM)."""
    return layer.b_x if cell == "gru" else layer.b_a


def _input_columns(W_a: Array, ids: Array, H: int) -> Array:
    """``W_x[:, ids]`` moved to the last axis, ``(..., G·H)``; NaN for ids outside ``[0, D)``.

    A gather of columns ``H + id`` of ``W_a`` (the one-hot product, without building it);
    an out-of-range id maps past the last column, so ``mode="fill"`` gives NaN (never a
    silently wrong column, never a column of ``W_h``) and no gradient. Plain
    ``jnp.take``: forward-mode autodiff and symbolic shapes work.
    """
    D = W_a.shape[-1] - H
    valid = (ids >= 0) & (ids < D)
    columns = jnp.where(valid, ids.astype(jnp.int32) + H, W_a.shape[-1])
    picked = jnp.take(W_a, columns, axis=1, mode="fill", fill_value=jnp.nan)  # (G·H, ...)
    return jnp.moveaxis(picked, 0, -1)


def _project_one(cell: str, layer: GatedLayer, x_t: Array) -> Array:
    """``W_x x<t> + b_x`` for one example: ``(G·H,)``."""
    H = layer.hidden_size
    x_t = jnp.asarray(x_t)
    if jnp.issubdtype(x_t.dtype, jnp.integer):
        if x_t.ndim != 0:
            raise ValueError(f"`x_t` token id must be a scalar, got shape {tuple(x_t.shape)}.")
        zx = _input_columns(layer.W_a, x_t, H)
    else:
        if x_t.shape != (layer.input_size,):
            raise ValueError(
                f"`x_t` must have shape (D,) = ({layer.input_size},), got {tuple(x_t.shape)}."
            )
        zx = layer.W_a[:, H:] @ x_t.astype(layer.W_a.dtype)
    return zx + _x_bias(cell, layer)


def _recurrent_term(W_h: Array, b_h: Array | None, h: Array) -> Array:
    """``W_h h`` (plus ``b_h``, the GRU's) for ``h`` of shape ``(H,)`` or ``(B, H)``.

    For a batch, one ``(B, H) x (G·H, H)^T`` matmul whose output is already ``(B, G·H)``
    (a ``vmap`` of the matrix-vector product would add a transpose to every step).
    """
    zh = jax.lax.dot_general(h, W_h, (((h.ndim - 1,), (1,)), ((), ())))
    if b_h is not None:
        zh = zh + (b_h if h.ndim == 1 else b_h[None, :])
    return zh


def _gates(cell: str, H: int, carry: Carry, zx: Array, zh: Array) -> tuple[Carry, Array]:
    """The gates, given ``zx = W_x x + b_x`` and ``zh = W_h h (+ b_h)``, elementwise.

    Written on the last axis only, so one example ``(G·H,)`` and a batch ``(B, G·H)`` run
    the same code.
    """
    if cell == "gru":
        h = carry
        r = jax.nn.sigmoid(zx[..., :H] + zh[..., :H])
        z = jax.nn.sigmoid(zx[..., H : 2 * H] + zh[..., H : 2 * H])
        n = jnp.tanh(zx[..., 2 * H :] + r * zh[..., 2 * H :])
        h_new = (1.0 - z) * n + z * h
        return h_new, h_new
    h, c = carry
    gates = zx + zh
    i = jax.nn.sigmoid(gates[..., :H])
    f = jax.nn.sigmoid(gates[..., H : 2 * H])
    g = jnp.tanh(gates[..., 2 * H : 3 * H])
    o = jax.nn.sigmoid(gates[..., 3 * H :])
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    return (h_new, c_new), h_new


def _recurrent_weights(cell: str, layer: GatedLayer) -> tuple[Array, Array | None]:
    """``(W_h, b_h)``, sliced once outside any loop (``b_h`` is ``None`` for the LSTM).

    Slicing ``W_a`` inside a ``scan`` body would make autodiff pad every step's ``dW_h``
    to the whole ``(G·H, H + D)`` shape, an ``O(D)`` cost per step for token inputs.
    """
    W_h = layer.W_a[:, : layer.hidden_size]
    return W_h, (layer.b_h if cell == "gru" else None)


def _gated_update(
    cell: str,
    W_h: Array,
    b_h: Array | None,
    carry: Carry,
    zx: Array,
    state_mask: Array | None = None,
) -> tuple[Carry, Array]:
    """The loop body: recurrent matmul and gates, given ``zx = W_x x + b_x``.

    For one example (``carry`` of ``(H,)`` vectors) or a batch (``(B, H)``).
    ``state_mask`` (variational recurrent dropout) multiplies ``h`` where it enters
    ``W_h`` only; the GRU's ``z ⊙ h`` and the LSTM's cell state are not dropped.
    """
    h = carry if cell == "gru" else carry[0]
    zh = _recurrent_term(W_h, b_h, h if state_mask is None else h * state_mask)
    return _gates(cell, W_h.shape[1], carry, zx, zh)


def cell_step(
    cell: str,
    layer: GRULayerParams | LSTMLayerParams,
    carry: Carry,
    x_t: Float[Array, " D"] | Int[Array, ""],
    *,
    extra_term: Float[Array, " GH"] | None = None,
) -> tuple[Carry, Float[Array, " H"]]:
    """One step of a gated cell for ONE example: ``(carry, x_t) -> (carry', h')``.

    The GRU and LSTM equations of this module (PyTorch's), with ``scan``'s signature:
    ``lax.scan(partial(cell_step, "gru", layer), h0, xs)`` runs a sequence.

    Args:
        cell: ``"gru"`` or ``"lstm"``.
        layer: :class:`GRULayerParams` or :class:`LSTMLayerParams`.
        carry: ``h (H,)`` for the GRU, ``(h, c)`` for the LSTM.
        x_t: a dense input ``(D,)`` or an integer token id (a scalar): then ``W_x x`` is
            the column ``W_x[:, id]`` (NaN for an id outside ``[0, D)``).
        extra_term: ``(G·H,)`` added to the input term ``W_x x<t> + b_x`` of every gate
            (the seq2seq decoder's context, ``W_x^ctx c``: a part of the input that is
            the same at every step).

    Returns:
        ``(carry', h')``: the new carry and the new hidden state ``h' (H,)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> layer = init_gated_layer("gru", 3, 4, key=jax.random.key(0))
        >>> h, y = cell_step("gru", layer, jnp.zeros(4), jnp.ones(3))
        >>> h.shape, bool(jnp.all(h == y))
        ((4,), True)
        >>> lstm = init_gated_layer("lstm", 10, 4, key=jax.random.key(0))
        >>> (h, c), y = cell_step("lstm", lstm, (jnp.zeros(4), jnp.zeros(4)), jnp.array(7))
        >>> h.shape, c.shape
        ((4,), (4,))
    """
    _check_cell(cell)
    _check_layer(cell, layer)
    zx = _project_one(cell, layer, x_t)
    if extra_term is not None:
        zx = zx + extra_term
    return _gated_update(cell, *_recurrent_weights(cell, layer), carry, zx)


# --------------------------------------------------------------------------- unroll


def _check_layer(cell: str, layer: Any) -> None:
    kind = _PARAM_TYPES[cell]
    if not isinstance(layer, kind):
        raise ValueError(
            f"`layer` must be {kind.__name__} for cell {cell!r}, got {type(layer).__name__}."
        )
    G, H = num_gates(cell), layer.hidden_size
    if layer.W_a.ndim != 2 or layer.W_a.shape[0] != G * H or layer.W_a.shape[1] <= H:
        raise ValueError(
            f"`layer.W_a` must have shape ({G}H, H + D) with H = {H} (from the biases) and "
            f"D >= 1, got {tuple(layer.W_a.shape)}."
        )


def _input_projection(
    cell: str,
    layer: GatedLayer,
    xs: Array,
    mask_tb: Array | None,
    lookup: str,
    input_scale: Array | None = None,
) -> Float[Array, "T B GH"]:
    """``W_x x<t> + b_x`` for all steps at once, ``(T, B, G·H)``; padding zeroed first.

    Masked inputs are replaced by zero (ids by ``0``) *before* any arithmetic, so padding
    contents (NaN, inf, ids out of range) reach neither the outputs nor the gradients.
    ``input_scale`` ``(T, B, 1)`` multiplies ``W_x x<t>`` before the bias is added (word
    dropout on token ids: a dropped word's column is zeroed).
    """
    H = layer.hidden_size
    if jnp.issubdtype(xs.dtype, jnp.integer):
        if mask_tb is not None:
            xs = jnp.where(mask_tb, xs, jnp.zeros_like(xs))
        if lookup == "sorted":
            # rnn_jax.lookup, the classic cell's column lookup: ids sorted so that its
            # gradient is one scatter-add straight into W_a's layout, column by column.
            # A custom_vjp: no forward-mode autodiff, no symbolic batch (use "take").
            zx = column_lookup(layer.W_a, xs, offset=H, num_columns=layer.input_size)
        else:
            zx = _input_columns(layer.W_a, xs, H)
    else:
        xs = xs.astype(layer.W_a.dtype)
        if mask_tb is not None:
            xs = jnp.where(mask_tb[:, :, None], xs, jnp.zeros_like(xs))
        zx = jax.lax.dot_general(xs, layer.W_a[:, H:], (((2,), (1,)), ((), ())))
    if input_scale is not None:
        zx = zx * input_scale.astype(zx.dtype)
    return zx + _x_bias(cell, layer)[None, None, :]


def layer_unroll(
    cell: str,
    layer: GRULayerParams | LSTMLayerParams,
    xs: Float[Array, "T B D"] | Int[Array, "T B"],
    carry0: Carry,
    mask_tb: Bool[Array, "T B"] | None,
    *,
    reverse: bool = False,
    unroll: int | bool = 1,
    lookup: str = "sorted",
    input_scale: Float[Array, "T B 1"] | None = None,
    state_mask: Float[Array, "B H"] | None = None,
    extra_term: Float[Array, "T B GH"] | Float[Array, "1 B GH"] | None = None,
) -> tuple[Float[Array, "T B H"], Carry]:
    """Run one gated layer in one direction over a time-major batch.

    The loop of the module docstring: ``W_x x<t> + b_x`` for every step is computed
    before the ``lax.scan`` (one matmul, or a gather of columns of ``W_x`` for token
    ids), and the loop body, the code of :func:`cell_step` run on the whole batch, does
    only the recurrent matmul (one ``(B, H) x (H, G·H)`` product) and the gates.

    Masking has the classic cell's meaning: a masked step keeps the carry and emits
    exactly zero. With ``reverse=True`` the scan runs ``T-1 .. 0``; the padded steps at
    the end keep the initial carry, so the backward direction effectively starts at each
    example's last valid step. Padding contents (even NaN, inf or ids out of range) affect
    neither the outputs nor the gradients. Differentiated by autodiff.

    Args:
        cell: ``"gru"`` or ``"lstm"``.
        layer: :class:`GRULayerParams` or :class:`LSTMLayerParams`.
        xs: dense inputs ``(T, B, D)`` or integer token ids ``(T, B)`` (time-major).
        carry0: initial carry, ``(B, H)`` (GRU) or ``((B, H), (B, H))`` (LSTM ``(h0, c0)``),
            e.g. :func:`carry_zeros`.
        mask_tb: boolean ``(T, B)``, ``True`` at valid steps; ``None``: all valid.
        reverse: run from the last step to the first.
        unroll: passed to ``lax.scan``.
        lookup: how token ids pick their columns of ``W_x``: ``"sorted"`` (default,
            :func:`rnn_jax.lookup.column_lookup`, the classic cell's: a cache-friendly
            gradient, but a ``custom_vjp``, so no ``jvp``/``jacfwd`` and no ``jax.export``
            with a symbolic batch) or ``"take"`` (a plain ``jnp.take`` gather: forward-mode
            autodiff and symbolic shapes work). Both give the same values and gradients.
        input_scale: ``(T, B, 1)`` factors of ``W_x x<t>`` (before the bias): word
            dropout on token ids (a dropped word's column zeroed, the kept ones scaled).
        state_mask: ``(B, H)`` variational recurrent dropout (Keras'
            ``recurrent_dropout``): one mask per sequence, multiplying ``h<t-1>`` where it
            enters ``W_h``.
        extra_term: ``(T, B, G·H)``, or ``(1, B, G·H)`` for a term constant over time,
            added to the hoisted input term of every gate (the seq2seq decoder's context
            ``W_x^ctx c``).

    Returns:
        ``(h_seq, carry_last)``: hidden states ``(T, B, H)``, exactly zero at masked steps,
        and the carry after each example's last valid step (``carry0`` where there is none).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> layer = init_gated_layer("gru", 4, 8, key=jax.random.key(0))
        >>> xs = jnp.ones((5, 2, 4))                         # (T, B, D)
        >>> mask = jnp.arange(5)[:, None] < jnp.array([5, 2])[None, :]   # (T, B)
        >>> h_seq, h_last = layer_unroll("gru", layer, xs, carry_zeros("gru", 2, 8), mask)
        >>> h_seq.shape, h_last.shape
        ((5, 2, 8), (2, 8))
        >>> bool(jnp.all(h_seq[2:, 1] == 0)), bool(jnp.allclose(h_last[1], h_seq[1, 1]))
        (True, True)

        (``allclose``, not ``==``: XLA may fuse the step's value into the output and the
        carry separately, and some compile settings round the two copies differently.)
    """
    _check_cell(cell)
    _check_layer(cell, layer)
    xs = jnp.asarray(xs)
    ids = jnp.issubdtype(xs.dtype, jnp.integer)
    if xs.ndim != (2 if ids else 3) or (not ids and xs.shape[2] != layer.input_size):
        expected = "(T, B) token ids" if ids else f"(T, B, D) with D = {layer.input_size}"
        raise ValueError(f"`xs` must have shape {expected}, got {tuple(xs.shape)}.")
    T, B = xs.shape[:2]
    H, dtype = layer.hidden_size, layer.W_a.dtype
    parts = (carry0,) if cell == "gru" else tuple(carry0)
    if len(parts) != (1 if cell == "gru" else 2) or any(
        tuple(jnp.shape(p)) != (B, H) for p in parts
    ):
        expected = "(B, H)" if cell == "gru" else "a tuple (h0, c0) of (B, H)"
        got = [tuple(jnp.shape(p)) for p in parts]
        raise ValueError(f"`carry0` must be {expected} with B = {B}, H = {H}, got {got}.")
    carry0 = jax.tree.map(lambda p: jnp.asarray(p, dtype), carry0 if cell == "gru" else parts)
    if mask_tb is not None:
        mask_tb = jnp.asarray(mask_tb)
        if mask_tb.shape != (T, B) or mask_tb.dtype != jnp.bool_:
            raise ValueError(
                f"`mask_tb` must be a boolean (T, B) = ({T}, {B}) mask, got "
                f"{mask_tb.dtype} {tuple(mask_tb.shape)}."
            )

    if lookup not in LOOKUPS:
        raise ValueError(f"`lookup` must be one of {LOOKUPS}, got {lookup!r}.")
    zx = _input_projection(cell, layer, xs, mask_tb, lookup, input_scale)
    if extra_term is not None:
        zx = zx + jnp.asarray(extra_term, zx.dtype)
    W_h, b_h = _recurrent_weights(cell, layer)
    if state_mask is not None:
        state_mask = jnp.asarray(state_mask, dtype)

    def update(carry, zx_t):
        return _gated_update(cell, W_h, b_h, carry, zx_t, state_mask)

    def body(carry, inputs):
        zx_t, m_t = inputs
        carry_new, h = update(carry, zx_t)
        if m_t is None:
            return carry_new, h
        keep = m_t[:, None]
        carry_new = jax.tree.map(lambda new, old: jnp.where(keep, new, old), carry_new, carry)
        return carry_new, jnp.where(keep, h, jnp.zeros_like(h))

    carry_last, h_seq = jax.lax.scan(body, carry0, (zx, mask_tb), reverse=reverse, unroll=unroll)
    return h_seq, carry_last
