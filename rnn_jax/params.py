"""Parameters of the recurrent network, in the stacked form that Optax updates.

The formulation writes one layer of the network as

.. math::

    a^{<t>} = g(W_{aa} a^{<t-1>} + W_{ax} x^{<t>} + b_a), \\qquad
    \\hat y^{<t>} = g_y(W_{ya} a^{<t>} + b_y)

and stacks the two recurrent matrices side by side, ``W_a = [W_aa | W_ax]`` of shape
``(H, H + D)``, so that ``a<t> = g(W_a [a<t-1>; x<t>] + b_a)``. The stacked form is what
this library stores and what the optimiser updates; :func:`split_layer` and
:func:`stack_layer` convert to and from the split form exactly (they only slice and
concatenate, so a round trip is bit-identical).

Example:
    >>> import jax
    >>> from rnn_jax import init_rnn
    >>> params = init_rnn(jax.random.key(0), 8, 16, 3)
    >>> params.layers[0][0].W_a.shape   # (H, H + D)
    (16, 24)
    >>> params.head.W_y.shape           # (C, H)
    (3, 16)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from rnn_jax._activations import ACTIVATIONS as _ACTIVATION_TABLE
from rnn_jax._checks import is_concrete, positive_int

__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "GATE_INITS",
    "MERGES",
    "HeadParams",
    "LayerParams",
    "RNNParams",
    "SplitLayerParams",
    "StackParams",
    "init_head",
    "init_layer",
    "count_params",
    "init_rnn",
    "split_layer",
    "stack_layer",
]

ACTIVATIONS = tuple(_ACTIVATION_TABLE)
MERGES = ("concat", "sum", "mean", "product")
CELLS = ("rnn", "gru", "lstm")
GATE_INITS = ("torch", "keras")
"""Cell names: ``"rnn"`` is the classic cell of this module; the gated cells are
implemented by :mod:`rnn_jax.cells` (see :func:`rnn_jax.stack.stack_unroll`)."""

Initializer = Callable[..., Array]

_INITIALIZERS: dict[str, Initializer] = {
    "orthogonal": jax.nn.initializers.orthogonal(),
    "glorot_uniform": jax.nn.initializers.glorot_uniform(),
    "glorot_normal": jax.nn.initializers.glorot_normal(),
    "lecun_uniform": jax.nn.initializers.lecun_uniform(),
    "lecun_normal": jax.nn.initializers.lecun_normal(),
    "he_normal": jax.nn.initializers.he_normal(),
    "zeros": jax.nn.initializers.zeros,
}


class LayerParams(NamedTuple):
    """One recurrent layer (one direction) in stacked form.

    Attributes:
        W_a: ``(H, H + D)``, the stacked ``[W_aa | W_ax]``.
        b_a: ``(H,)``.
    """

    W_a: Float[Array, "H HD"]
    b_a: Float[Array, " H"]

    @property
    def hidden_size(self) -> int:
        return self.b_a.shape[-1]

    @property
    def input_size(self) -> int:
        return self.W_a.shape[-1] - self.b_a.shape[-1]

    @property
    def W_aa(self) -> Float[Array, "H H"]:
        """The recurrent matrix, the first ``H`` columns of ``W_a``."""
        return self.W_a[..., : self.hidden_size]

    @property
    def W_ax(self) -> Float[Array, "H D"]:
        """The input matrix, the last ``D`` columns of ``W_a``."""
        return self.W_a[..., self.hidden_size :]


class SplitLayerParams(NamedTuple):
    """One recurrent layer in the split form of the formulation.

    Attributes:
        W_aa: ``(H, H)``.
        W_ax: ``(H, D)``.
        b_a: ``(H,)``.
    """

    W_aa: Float[Array, "H H"]
    W_ax: Float[Array, "H D"]
    b_a: Float[Array, " H"]


class HeadParams(NamedTuple):
    """The output layer ``ŷ<t> = g_y(W_y a<t> + b_y)``.

    Attributes:
        W_y: ``(C, H_out)`` where ``H_out`` is ``H`` (or ``2H`` for a bidirectional
            network merged by concatenation). ``W_y`` is the formulation's ``W_ya``.
        b_y: ``(C,)``.
    """

    W_y: Float[Array, "C H"]
    b_y: Float[Array, " C"]

    @property
    def W_ya(self) -> Float[Array, "C H"]:
        return self.W_y


def stack_layer(split: SplitLayerParams) -> LayerParams:
    """``(W_aa, W_ax, b_a) -> (W_a = [W_aa | W_ax], b_a)``, exactly.

    Example:
        >>> import jax.numpy as jnp
        >>> s = SplitLayerParams(jnp.ones((2, 2)), jnp.zeros((2, 3)), jnp.zeros(2))
        >>> stack_layer(s).W_a.shape
        (2, 5)
    """
    W_aa, W_ax, b_a = split
    _check_shape("W_aa", W_aa, (b_a.shape[-1], b_a.shape[-1]))
    if W_ax.ndim != 2 or W_ax.shape[0] != b_a.shape[-1]:
        raise ValueError(
            f"`W_ax` must have shape (H, D) with H = {b_a.shape[-1]}, got {tuple(W_ax.shape)}."
        )
    return LayerParams(W_a=jnp.concatenate([W_aa, W_ax], axis=-1), b_a=b_a)


def split_layer(layer: LayerParams) -> SplitLayerParams:
    """``(W_a, b_a) -> (W_aa, W_ax, b_a)``, exactly (two slices)."""
    return SplitLayerParams(W_aa=layer.W_aa, W_ax=layer.W_ax, b_a=layer.b_a)


def _check_config(activation: Any, merge: Any, cell: Any) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {activation!r}.")
    if merge not in MERGES and not callable(merge):
        raise ValueError(
            f"`merge` must be one of {MERGES} or a callable (a_fwd, a_bwd) -> a, got {merge!r}."
        )
    if cell not in CELLS:
        raise ValueError(f"`cell` must be one of {CELLS}, got {cell!r}.")


@dataclasses.dataclass(frozen=True)
class StackParams:
    """The recurrent layers of a network without a head: what runs over time.

    A pytree (arrays are leaves; the configuration is static metadata). The one layer
    loop :func:`rnn_jax.stack.stack_unroll` and the one step
    :func:`rnn_jax.stack.stack_step` take it; :class:`RNNParams` adds a head, and the
    seq2seq encoder and decoder are stacks.

    Attributes:
        layers: ``layers[l][d]``, the parameters of layer ``l`` and direction ``d``
            (0 forward, 1 backward); :class:`LayerParams` for the classic cell.
        activation: hidden activation ``g`` of the classic cell: ``"tanh"`` or ``"relu"``.
        merge: how the two directions are merged (see :class:`RNNParams`).
        token_inputs: whether layer 0 reads a vocabulary (integer ids may be given).
        cell: ``"rnn"`` (the classic cell), or a gated cell of :mod:`rnn_jax.cells`.
    """

    layers: tuple[tuple[Any, ...], ...]
    activation: str = "tanh"
    merge: str | Callable[[Array, Array], Array] = "concat"
    token_inputs: bool = False
    cell: str = "rnn"

    def __post_init__(self):
        _check_config(self.activation, self.merge, self.cell)

    def __contains__(self, name: object) -> bool:
        """``name in stack``: whether ``name`` is an array field (as for a dict of params;
        Flax's ``TrainState.create`` asks this of its params)."""
        return name == "layers"

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_directions(self) -> int:
        return len(self.layers[0])

    @property
    def bidirectional(self) -> bool:
        return self.num_directions == 2

    @property
    def hidden_size(self) -> int:
        return self.layers[0][0].hidden_size

    @property
    def input_size(self) -> int:
        return self.layers[0][0].input_size

    @property
    def merged_size(self) -> int:
        """Width of a layer's output after merging directions (``H`` or ``2H``)."""
        if self.bidirectional and self.merge == "concat":
            return 2 * self.hidden_size
        return self.hidden_size


jax.tree_util.register_dataclass(
    StackParams,
    data_fields=["layers"],
    meta_fields=["activation", "merge", "token_inputs", "cell"],
)


@dataclasses.dataclass(frozen=True)
class RNNParams:
    """All parameters of a (deep, possibly bidirectional) RNN with an output head.

    A pytree: the arrays are leaves (what Optax updates), the configuration is static
    metadata (part of the tree structure, so ``jit`` specialises on it). It is a
    :class:`StackParams` (``params.stack``) plus a :class:`HeadParams` (``params.head``).

    Attributes:
        layers: ``layers[l][d]`` is the :class:`LayerParams` of layer ``l`` and direction
            ``d`` (0 forward, 1 backward) (for ``cell="gru"``/``"lstm"`` the gated
            cell's layer type of :mod:`rnn_jax.cells`). Layer ``l > 0`` reads the merged outputs of
            layer ``l - 1``.
        head: the output layer :class:`HeadParams`.
        activation: hidden activation ``g``: ``"tanh"`` or ``"relu"``.
        merge: how the two directions are merged: ``"concat"`` (default), ``"sum"``,
            ``"mean"``, ``"product"``, or any callable ``(a_fwd, a_bwd) -> a`` that keeps
            the width ``H`` (a callable is not JSON-serialisable: checkpoints store names only).
        token_inputs: whether the first layer's input is a vocabulary (then integer token
            ids may be given and ``W_ax x`` is the column lookup ``W_ax[:, id]``).
        cell: ``"rnn"`` (default, the classic cell) or a gated cell name (see
            :data:`CELLS`).
    """

    # LayerParams for the classic cell; the gated cells' own NamedTuples (rnn_jax.cells,
    # which imports this module) otherwise, so the element type cannot be named here.
    layers: tuple[tuple[Any, ...], ...]
    head: HeadParams
    activation: str = "tanh"
    merge: str | Callable[[Array, Array], Array] = "concat"
    token_inputs: bool = False
    cell: str = "rnn"

    def __post_init__(self):
        _check_config(self.activation, self.merge, self.cell)

    def __contains__(self, name: object) -> bool:
        """``name in params``: whether ``name`` is an array field, ``"layers"`` or ``"head"``
        (as for a dict of params; Flax's ``TrainState.create`` asks this of its params)."""
        return name in ("layers", "head")

    @property
    def stack(self) -> StackParams:
        """The layers as a :class:`StackParams` (same arrays, no copy)."""
        return StackParams(
            layers=self.layers,
            activation=self.activation,
            merge=self.merge,
            token_inputs=self.token_inputs,
            cell=self.cell,
        )

    num_layers = StackParams.num_layers
    num_directions = StackParams.num_directions
    bidirectional = StackParams.bidirectional
    hidden_size = StackParams.hidden_size
    input_size = StackParams.input_size
    merged_size = StackParams.merged_size

    @property
    def output_size(self) -> int:
        return self.head.b_y.shape[-1]

    def config(self) -> dict[str, Any]:
        """The static configuration, JSON-serialisable (for checkpoints).

        ``cell`` is included only for a gated cell, so classic-cell checkpoints keep
        their configuration unchanged.
        """
        out = dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            output_size=self.output_size,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            activation=self.activation,
            merge=self.merge
            if isinstance(self.merge, str)
            else getattr(self.merge, "__name__", "callable"),
            token_inputs=self.token_inputs,
        )
        if self.cell != "rnn":
            out["cell"] = self.cell
        return out


jax.tree_util.register_dataclass(
    RNNParams,
    data_fields=["layers", "head"],
    meta_fields=["activation", "merge", "token_inputs", "cell"],
)


def _check_shape(name: str, x: Array, expected: tuple[int, ...]) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"`{name}` must have shape {tuple(expected)}, got {tuple(x.shape)}.")


def _initializer(name: str | Initializer, arg: str) -> Initializer:
    if callable(name):
        return name
    if name not in _INITIALIZERS:
        raise ValueError(
            f"`{arg}` must be a callable or one of {sorted(_INITIALIZERS)}, got {name!r}."
        )
    return _INITIALIZERS[name]


def _check_finite(name: str, x: Array) -> None:
    # Only on concrete arrays: under jit/vmap (an ensemble of seeds, a Flax `self.param`)
    # the check would need a host sync of a traced value.
    if is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(
            f"`{name}` produced non-finite values (NaN or inf) at initialisation; "
            "check the initialiser and its scale."
        )


def _draw_dtype(dtype: Any) -> Any:
    """Draw in float32 at least (QR, used by the orthogonal initialiser, has no bfloat16 or
    float16 kernel), then cast to ``dtype``."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def init_layer(
    input_size: int,
    hidden_size: int,
    *,
    key: jax.Array,
    recurrent_init: str | Initializer = "orthogonal",
    input_init: str | Initializer = "glorot_uniform",
    bias_init: str | Initializer = "zeros",
    dtype: Any = jnp.float32,
) -> LayerParams:
    """Initialise one layer: ``W_aa`` orthogonal, ``W_ax`` Glorot uniform, ``b_a`` zero.

    Args:
        input_size: ``D``.
        hidden_size: ``H``.
        key: PRNG key (required).
        recurrent_init, input_init, bias_init: a name from
            ``orthogonal, glorot_uniform, glorot_normal, lecun_uniform, lecun_normal,
            he_normal, zeros`` or a ``jax.nn.initializers``-style callable
            ``init(key, shape, dtype)``.
        dtype: parameter dtype.

    Returns:
        :class:`LayerParams` with ``W_a`` of shape ``(H, H + D)``.
    """
    D = positive_int("input_size", input_size)
    H = positive_int("hidden_size", hidden_size)
    k_aa, k_ax, k_b = jax.random.split(key, 3)
    draw = _draw_dtype(dtype)
    W_aa = _initializer(recurrent_init, "recurrent_init")(k_aa, (H, H), draw)
    # jax initialisers read (fan_in, fan_out) from (shape[-2], shape[-1]); W_ax maps D -> H,
    # so draw it as (D, H) and transpose.
    W_ax = _initializer(input_init, "input_init")(k_ax, (D, H), draw).T
    b_a = _initializer(bias_init, "bias_init")(k_b, (H,), draw)
    _check_shape("recurrent_init(...)", W_aa, (H, H))
    _check_shape("input_init(...)", W_ax, (H, D))
    _check_shape("bias_init(...)", b_a, (H,))
    W_aa, W_ax, b_a = (x.astype(dtype) for x in (W_aa, W_ax, b_a))
    for name, x in (("recurrent_init", W_aa), ("input_init", W_ax), ("bias_init", b_a)):
        _check_finite(name, x)
    return stack_layer(SplitLayerParams(W_aa, W_ax, b_a))


def init_head(
    hidden_size: int,
    output_size: int,
    *,
    key: jax.Array,
    weight_init: str | Initializer = "glorot_uniform",
    bias_init: str | Initializer = "zeros",
    dtype: Any = jnp.float32,
) -> HeadParams:
    """Initialise the output layer ``W_y (C, H_out)``, ``b_y (C,)``."""
    H = positive_int("hidden_size", hidden_size)
    C = positive_int("output_size", output_size)
    k_w, k_b = jax.random.split(key)
    draw = _draw_dtype(dtype)
    W_y = _initializer(weight_init, "weight_init")(k_w, (H, C), draw).T.astype(dtype)
    b_y = _initializer(bias_init, "bias_init")(k_b, (C,), draw).astype(dtype)
    _check_finite("weight_init", W_y)
    _check_finite("bias_init", b_y)
    return HeadParams(W_y=W_y, b_y=b_y)


def init_rnn(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    cell: str = "rnn",
    num_layers: int = 1,
    bidirectional: bool = False,
    activation: str = "tanh",
    merge: str | Callable[[Array, Array], Array] = "concat",
    token_inputs: bool = False,
    recurrent_init: str | Initializer = "orthogonal",
    input_init: str | Initializer = "glorot_uniform",
    head_init: str | Initializer = "glorot_uniform",
    bias_init: str | Initializer = "zeros",
    gate_init: str = "torch",
    dtype: Any = jnp.float32,
) -> RNNParams:
    """Initialise a (deep, optionally bidirectional) RNN with an output head.

    Args:
        key: PRNG key (required; there is no default key). It is the first positional
            argument of every ``init_*`` network constructor (``init_rnn``,
            ``init_seq2seq``; the contract), keyword-only in the per-layer helpers
            (``init_layer``, ``init_head``). It is split into one key per layer and
            direction and one for the head. ``init_rnn`` is traceable: ``jax.vmap`` over
            keys gives an ensemble.
        input_size: ``D``, the input width, or ``|V|`` for token inputs.
        hidden_size: ``H``.
        output_size: ``C``, the number of outputs of the head.
        cell: ``"rnn"`` (the classic cell, default) or a gated cell of
            :mod:`rnn_jax.cells` (``"gru"``, ``"lstm"``), whose layers come from
            :func:`rnn_jax.cells.init_gated_layer` (``gate_init`` picks the scheme).
        num_layers: number of stacked recurrent layers.
        bidirectional: a forward and a backward layer at every depth.
        activation: hidden activation ``g``, ``"tanh"`` or ``"relu"``.
        merge: how directions merge: ``"concat"``, ``"sum"``, ``"mean"``, ``"product"``,
            or a callable ``(a_fwd, a_bwd) -> a`` of width ``H``.
        token_inputs: the input is a vocabulary of ``input_size`` words; integer ids
            may then be given to :func:`rnn_jax.rnn_apply` and friends.
        recurrent_init, input_init, head_init, bias_init: initialisers (names or
            callables, see :func:`init_layer`); ``recurrent_init``, ``input_init`` and
            ``bias_init`` are the classic cell's (``head_init`` and ``bias_init`` also set
            the head of every cell).
        gate_init: the gated cells' layer initialisation: ``"torch"`` (default,
            PyTorch's: every weight and bias ``U(-1/√H, 1/√H)``) or ``"keras"`` (per gate
            block ``W_h`` orthogonal, ``W_x`` Glorot uniform, biases zero except the
            LSTM's forget-gate bias, one: Keras' ``unit_forget_bias``). Only for
            ``cell="gru"``/``"lstm"``; the classic cell raises on ``"keras"``.
        dtype: parameter dtype (low-precision dtypes are drawn in float32, then cast).

    Returns:
        :class:`RNNParams`.

    Example:
        >>> import jax
        >>> p = init_rnn(jax.random.key(0), 10_000, 64, 2, bidirectional=True,
        ...              num_layers=2, token_inputs=True)
        >>> [[l.W_a.shape for l in layer] for layer in p.layers]
        [[(64, 10064), (64, 10064)], [(64, 192), (64, 192)]]
        >>> p.head.W_y.shape
        (2, 128)
    """
    if not isinstance(key, jax.Array):
        raise ValueError(f"`key` must be a jax.random key array, got {type(key).__name__}.")
    D = positive_int("input_size", input_size)
    H = positive_int("hidden_size", hidden_size)
    L = positive_int("num_layers", num_layers)
    _check_config(activation, merge, cell)
    if gate_init not in GATE_INITS:
        raise ValueError(f"`gate_init` must be one of {GATE_INITS}, got {gate_init!r}.")
    if cell == "rnn" and gate_init != "torch":
        raise ValueError(
            f"`gate_init={gate_init!r}` initialises the gates of cell='gru'/'lstm'; the "
            "classic cell (cell='rnn') takes recurrent_init=, input_init=, bias_init=."
        )
    dirs = 2 if bidirectional else 1
    merged = 2 * H if (bidirectional and merge == "concat") else H
    keys = jax.random.split(key, L * dirs + 1)
    if cell == "rnn":
        init_one = functools.partial(
            init_layer,
            recurrent_init=recurrent_init,
            input_init=input_init,
            bias_init=bias_init,
            dtype=dtype,
        )
    else:  # the gated-cell plug-in (rnn_jax.cells), imported only when asked for
        init_one = _gated_init(cell, dtype, gate_init)
    layers = tuple(
        tuple(init_one(D if l == 0 else merged, H, key=keys[l * dirs + d]) for d in range(dirs))
        for l in range(L)
    )
    head = init_head(
        merged, output_size, key=keys[-1], weight_init=head_init, bias_init=bias_init, dtype=dtype
    )
    return RNNParams(
        layers=layers,
        head=head,
        activation=activation,
        merge=merge,
        token_inputs=bool(token_inputs),
        cell=cell,
    )


def _gated_init(cell: str, dtype: Any, scheme: str) -> Callable[..., Any]:
    try:
        from rnn_jax import cells
    except ImportError as e:
        raise ValueError(
            f"`cell={cell!r}` needs the gated cells of rnn_jax.cells, which are not "
            f"available in this installation ({e}); use cell='rnn'."
        ) from None
    return functools.partial(cells.init_gated_layer, cell, dtype=dtype, scheme=scheme)


def count_params(tree: Any) -> int:
    """Number of scalar parameters in a pytree."""
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
