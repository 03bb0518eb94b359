"""Weights to and from PyTorch's ``nn.RNN`` and Flax's ``nn.RNN(nn.SimpleCell)``.

The conversions move weights only; they are exact (slices, transposes and
concatenations, plus one addition where PyTorch keeps two biases).

**PyTorch.** ``torch.nn.RNN`` computes, for layer ``k`` and each direction,

.. math::

    h_t = g(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})

so ``W_aa = weight_hh_l{k}``, ``W_ax = weight_ih_l{k}``, ``W_a = [weight_hh | weight_ih]``
and the two biases fold into one, ``b_a = bias_ih + bias_hh`` (the backward direction
reads the ``..._reverse`` tensors). On the way back ``b_a`` goes to ``bias_ih`` and
``bias_hh`` is zero, so ``from_torch(*to_torch(p))`` is ``p`` bit for bit. rnn_jax is
batch-first, ``(B, T, D)``; ``batch_first`` only changes how PyTorch lays out its inputs,
not its weights, so either kind of module converts. On packed sequences
(``pack_padded_sequence(..., enforce_sorted=False)``), :func:`rnn_jax.rnn_layers`'s
``(a_seq, a_last)`` is PyTorch's ``(output, h_n)`` (``pad_packed_sequence(...,
batch_first=True)``), padding included: both are exactly zero there.

**Flax.** ``flax.linen.SimpleCell`` computes ``h' = g(x @ i.kernel + i.bias + h @ h.kernel)``
(one bias, on the input ``Dense`` named ``i``; the recurrent ``Dense`` named ``h`` has
none), so ``W_aa = h.kernel.T``, ``W_ax = i.kernel.T``, ``b_a = i.bias``. The modules that
correspond to one layer of an :class:`~rnn_jax.RNNParams` are

- forward: ``nn.RNN(nn.SimpleCell(H))``, params ``{"cell": {"i": ..., "h": ...}}``;
- bidirectional: ``nn.Bidirectional(nn.RNN(nn.SimpleCell(H)), nn.RNN(nn.SimpleCell(H)))``,
  params ``{"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}``; Flax runs the
  backward RNN with ``reverse=True, keep_order=True`` and, given ``seq_lengths``, reverses
  only each example's valid part, as rnn_jax does;

and :func:`flax_module` builds the whole network (layers ``layers_0 .. layers_{L-1}`` and
a ``Dense`` named ``head``) whose variables are :func:`to_flax`'s. Flax does *not* mask
padded steps: the cell keeps running over the padding, so its outputs there are neither
zero nor the last valid state (only the carry returned with ``return_carry=True`` is taken
at each example's last valid step). Compare valid steps only, or use :func:`flax_module`,
which zeroes its outputs at padding like :func:`rnn_jax.rnn_apply`.

**Gated cells.** :func:`gated_layers_from_torch` converts a ``torch.nn.GRU`` or
``torch.nn.LSTM`` (and :func:`gated_layers_from_flax` Flax's ``GRUCell``, ``LSTMCell`` and
``OptimizedLSTMCell``, whose equations are PyTorch's with fewer biases) into
``(cell, layers)``: ``layers[l][d]`` of :class:`~rnn_jax.cells.GRULayerParams` /
:class:`~rnn_jax.cells.LSTMLayerParams`, run with :func:`rnn_jax.cells.layer_unroll`.
:func:`gated_layers_to_torch` and :func:`gated_layers_to_flax` are the inverses.
:func:`from_torch` and :func:`to_torch` accept and build ``nn.GRU``/``nn.LSTM`` too, as a whole
:class:`~rnn_jax.RNNParams` with ``cell="gru"``/``"lstm"`` (and a head).

Neither PyTorch nor Flax is imported when this module is: PyTorch is imported inside
:func:`from_torch` and :func:`to_torch` (``pip install torch`` or
``pip install 'rnn_jax[torch]'``), Flax inside the Flax functions.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import init_rnn, rnn_apply
    >>> from rnn_jax.interop import flax_module, from_flax, to_flax
    >>> params = init_rnn(jax.random.key(0), 3, 8, 2, bidirectional=True)
    >>> variables = to_flax(params)
    >>> sorted(variables["params"])
    ['head', 'layers_0']
    >>> xs, lengths = jnp.ones((2, 5, 3)), jnp.array([5, 3])
    >>> y_flax = flax_module(params).apply(variables, xs, seq_lengths=lengths)
    >>> bool(jnp.allclose(y_flax, rnn_apply(params, xs, lengths), atol=1e-6))
    True
    >>> back = from_flax(variables)                  # activation="tanh", merge="concat"
    >>> all(bool(jnp.array_equal(u, v)) for u, v in
    ...     zip(jax.tree.leaves(back), jax.tree.leaves(params)))
    True
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from rnn_jax.cells import GRULayerParams, LSTMLayerParams, num_gates
from rnn_jax.network import check_params, merge_directions
from rnn_jax.params import ACTIVATIONS, HeadParams, LayerParams, RNNParams, StackParams
from rnn_jax.seq2seq import Seq2SeqParams

__all__ = [
    "flax_module",
    "from_flax",
    "from_torch",
    "gated_layers_from_flax",
    "gated_layers_from_torch",
    "gated_layers_to_flax",
    "gated_layers_to_torch",
    "register_flax_serialization",
    "to_flax",
    "to_torch",
]

_TORCH_MODES = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}


# --------------------------------------------------------------------------- serialization

# The library's pytree dataclasses and their array fields (the rest is static configuration).
_SERIALIZABLE = (
    (RNNParams, ("layers", "head")),
    (StackParams, ("layers",)),
    (Seq2SeqParams, ("encoder", "decoder", "head", "bridge")),
)
# Array fields present only in some configurations (saved when not None, so the state dict of
# an attention-free encoder-decoder keeps its layout).
_OPTIONAL_FIELDS = {Seq2SeqParams: ("attention",)}


def register_flax_serialization() -> None:
    """Teach ``flax.serialization`` the library's parameter types; idempotent.

    :class:`~rnn_jax.RNNParams`, :class:`~rnn_jax.StackParams` and
    :class:`~rnn_jax.Seq2SeqParams` are JAX pytree dataclasses, which Flax's
    ``to_state_dict``/``from_state_dict`` (and so ``to_bytes``/``from_bytes``, msgpack, and
    a ``flax.training.train_state.TrainState`` holding them) do not know. This registers
    them as Flax's own ``flax.struct`` dataclasses are: the state dict holds the array fields
    (``{"layers": {"0": {"0": {"W_a": ..., "b_a": ...}}}, "head": {...}}``); the static
    configuration (``cell``, ``activation``, ``merge``, ...) comes from the template given to
    ``from_state_dict``/``from_bytes``, which must have the same architecture. The layer
    and head types are ``NamedTuple``s, which Flax handles already.

    ``import rnn_jax`` never imports Flax, so it cannot register at import time: call this
    it once before serialising (it imports ``flax.serialization``; :func:`flax_module`
    calls it too).

    Raises:
        ImportError: Flax is not installed (``pip install 'rnn_jax[interop]'``).

    Example:
        >>> import jax
        >>> from flax import serialization
        >>> from rnn_jax import init_rnn
        >>> from rnn_jax.interop import register_flax_serialization
        >>> register_flax_serialization()
        >>> params = init_rnn(jax.random.key(0), 3, 4, 2, cell="lstm")
        >>> template = init_rnn(jax.random.key(1), 3, 4, 2, cell="lstm")
        >>> back = serialization.from_bytes(template, serialization.to_bytes(params))
        >>> bool((back.layers[0][0].W_a == params.layers[0][0].W_a).all()), back.cell
        (True, 'lstm')
    """
    serialization = importlib.import_module("flax.serialization")
    for ty, fields in _SERIALIZABLE:
        if serialization.is_serializable(ty):
            continue
        serialization.register_serialization_state(
            ty,
            functools.partial(_to_state_dict, serialization, fields),
            functools.partial(_from_state_dict, serialization, fields),
        )


def _present_fields(fields: tuple[str, ...], x: Any) -> tuple[str, ...]:
    optional = _OPTIONAL_FIELDS.get(type(x), ())
    return fields + tuple(f for f in optional if getattr(x, f) is not None)


def _to_state_dict(serialization: Any, fields: tuple[str, ...], x: Any) -> dict[str, Any]:
    return {f: serialization.to_state_dict(getattr(x, f)) for f in _present_fields(fields, x)}


def _from_state_dict(
    serialization: Any, fields: tuple[str, ...], template: Any, state: dict[str, Any]
) -> Any:
    fields = _present_fields(fields, template)
    extra = sorted(set(_OPTIONAL_FIELDS.get(type(template), ())) & set(state) - set(fields))
    if extra:
        raise ValueError(
            f"the state dict holds {extra} but the {type(template).__name__} template has none "
            f"(restore into a template of the same configuration, e.g. attention='additive')."
        )
    missing = sorted(set(fields) - set(state))
    if missing:
        raise ValueError(
            f"the state dict of a {type(template).__name__} must hold the fields "
            f"{list(fields)}, got keys {sorted(state)} (missing {missing})."
        )
    restored = {
        f: serialization.from_state_dict(getattr(template, f), state[f], name=f) for f in fields
    }
    return dataclasses.replace(template, **restored)


# --------------------------------------------------------------------------- helpers


def _torch_dtype(torch: Any, np_dtype: np.dtype, what: str) -> Any:
    """The torch dtype of a float16/32/64 NumPy dtype; a ValueError naming ``what`` otherwise."""
    torch_dtypes = {
        np.dtype(np.float16): torch.float16,
        np.dtype(np.float32): torch.float32,
        np.dtype(np.float64): torch.float64,
    }
    if np_dtype not in torch_dtypes:
        raise ValueError(
            f"`{what}` must hold float16, float32 or float64 arrays to convert to PyTorch, "
            f"got {np_dtype}."
        )
    return torch_dtypes[np_dtype]


def _import_torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError as err:
        raise ImportError(
            "rnn_jax.interop.from_torch / to_torch need PyTorch, which is not installed: "
            "`pip install torch` (or `pip install 'rnn_jax[torch]'`)."
        ) from err


def _target_dtype(source: Any, dtype: Any) -> np.dtype:
    """The dtype of the converted arrays: ``dtype`` if given, else the source's."""
    dt = np.dtype(source if dtype is None else dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"`dtype` must be a floating dtype, got {dt}.")
    if dt.itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"the weights are {dt} but JAX's 64-bit mode is off, so they would be silently "
            "truncated to float32: enable it (`jax.config.update('jax_enable_x64', True)` or "
            "`with jax.enable_x64(True):`) or pass `dtype=jnp.float32`."
        )
    return dt


def _layer(W_aa: np.ndarray, W_ax: np.ndarray, b_a: np.ndarray, dt: np.dtype) -> LayerParams:
    W_a = np.concatenate([np.asarray(W_aa, dt), np.asarray(W_ax, dt)], axis=1)
    return LayerParams(W_a=jnp.asarray(W_a), b_a=jnp.asarray(np.asarray(b_a, dt)))


def _identity_head(H_out: int, dt: np.dtype) -> HeadParams:
    return HeadParams(W_y=jnp.asarray(np.eye(H_out, dtype=dt)), b_y=jnp.zeros((H_out,), dt))


def _fold_embedding(W_ax: np.ndarray, E: np.ndarray) -> np.ndarray:
    """``W_ax E^T``: the input matrix over the vocabulary, ``W_ax x`` for ``x = E[id]``.

    Computed in float64 (the product of the two matrices is the only non-exact step of
    the conversion).
    """
    return np.asarray(W_ax, np.float64) @ np.asarray(E, np.float64).T


def _resolve_token_inputs(token_inputs: bool | None, embedding: Any) -> bool:
    if embedding is not None and token_inputs is False:
        raise ValueError(
            "`token_inputs=False` contradicts `embedding`: an embedding is folded into W_ax, "
            "so the converted network reads token ids (leave `token_inputs` as None)."
        )
    return embedding is not None or bool(token_inputs)


def _np(x: Any) -> np.ndarray:
    """A NumPy copy of a JAX array (transposes and slices of it are then exact)."""
    return np.array(x)


# --------------------------------------------------------------------------- PyTorch


def _torch_np(torch: Any, t: Any) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()  # exact: bfloat16 is a truncated float32
    return np.array(t.numpy())


def _torch_embedding(torch: Any, embedding: Any, input_size: int, module: str) -> Any:
    """The checked ``(V, D)`` weight of a ``torch.nn.Embedding`` feeding ``module``, or None."""
    if embedding is None:
        return None
    if not isinstance(embedding, torch.nn.Embedding):
        raise ValueError(
            f"`embedding` must be a torch.nn.Embedding, got {type(embedding).__name__}."
        )
    if embedding.max_norm is not None:
        raise ValueError(
            f"`embedding.max_norm` must be None (renormalising rows at lookup is not a "
            f"linear map), got {embedding.max_norm}."
        )
    if embedding.embedding_dim != input_size:
        raise ValueError(
            f"`embedding` must have embedding_dim = {module}.input_size = {input_size}, "
            f"got {embedding.embedding_dim}."
        )
    return _torch_np(torch, embedding.weight)


def from_torch(
    rnn: Any,
    linear: Any = None,
    *,
    embedding: Any = None,
    token_inputs: bool | None = None,
    dtype: Any = None,
) -> RNNParams:
    """Convert a ``torch.nn.RNN``/``GRU``/``LSTM`` (and its output ``torch.nn.Linear``) to :class:`~rnn_jax.RNNParams`.

    Any ``num_layers``, ``bidirectional``, ``nonlinearity`` (``"tanh"``/``"relu"``),
    ``bias`` and ``batch_first``. Per layer ``k`` and direction (``_reverse`` for the
    backward one): ``W_a = [weight_hh_l{k} | weight_ih_l{k}]`` and
    ``b_a = bias_ih_l{k} + bias_hh_l{k}`` (zero without bias). The result has
    ``merge="concat"``, PyTorch's only merge.

    The module's ``dropout`` (between layers, in training) is not a weight and is not
    carried: pass ``dropout=`` to :func:`rnn_jax.rnn_layers` when training.

    Args:
        rnn: a ``torch.nn.RNN``, ``torch.nn.GRU`` or ``torch.nn.LSTM`` (the result then
            has ``cell="gru"``/``"lstm"``, its layers converted by
            :func:`gated_layers_from_torch`). ``proj_size`` is rejected with a
            ``ValueError``.
        linear: the output layer ``torch.nn.Linear(H_out, C)`` applied to ``output``
            (``H_out = 2H`` if bidirectional). ``None``: the head is the identity
            (``W_y = I``, ``b_y = 0``, ``C = H_out``), so :func:`rnn_jax.rnn_apply`
            returns exactly the RNN's ``output``; replace it with
            ``dataclasses.replace(params, head=init_head(...))`` to train a new head.
        embedding: a ``torch.nn.Embedding(V, D)`` feeding the RNN. It is folded into the
            first layer, ``W_ax = weight_ih_l0 @ embedding.weight.T`` of shape ``(H, V)``,
            and the result reads token ids (``token_inputs=True``). Embeddings with
            ``max_norm`` (rows renormalised at lookup) are rejected.
        token_inputs: mark the result as reading token ids (the RNN's ``input_size`` is
            then the vocabulary size and PyTorch's inputs are one-hot vectors). ``None``:
            true exactly when ``embedding`` is given.
        dtype: dtype of the result; ``None`` keeps the module's (float32 by default;
            float64 needs JAX's 64-bit mode).

    Returns:
        :class:`~rnn_jax.RNNParams` with the module's activation.

    Raises:
        ImportError: PyTorch is not installed.
        ValueError: an unsupported module, or sizes that do not fit together.

    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> import jax.numpy as jnp
        >>> from rnn_jax import rnn_layers
        >>> from rnn_jax.interop import from_torch
        >>> rnn = torch.nn.RNN(3, 5, num_layers=2, bidirectional=True, batch_first=True)
        >>> params = from_torch(rnn)
        >>> x = torch.randn(2, 4, 3)
        >>> output, h_n = rnn(x)
        >>> a_seq, a_last = rnn_layers(params, jnp.asarray(x.numpy()))
        >>> bool(jnp.allclose(a_seq, output.detach().numpy(), atol=1e-5))
        True
        >>> bool(jnp.allclose(a_last, h_n.detach().numpy(), atol=1e-5))
        True
    """
    torch = _import_torch()
    nn = torch.nn
    if not isinstance(rnn, nn.RNNBase):
        raise ValueError(
            f"`rnn` must be a torch.nn.RNN, torch.nn.GRU or torch.nn.LSTM, got "
            f"{type(rnn).__name__}."
        )
    if rnn.mode not in _TORCH_MODES and rnn.mode not in _TORCH_GATED:
        raise ValueError(
            f"`rnn` must be a torch.nn.RNN, torch.nn.GRU or torch.nn.LSTM, got "
            f"{type(rnn).__name__} (mode {rnn.mode!r})."
        )
    if getattr(rnn, "proj_size", 0):
        raise ValueError(f"`rnn.proj_size` must be 0 (no projection), got {rnn.proj_size}.")
    token_inputs = _resolve_token_inputs(token_inputs, embedding)
    dirs = 2 if rnn.bidirectional else 1
    H_out = dirs * rnn.hidden_size
    dt = _target_dtype(_torch_np(torch, rnn.weight_hh_l0).dtype, dtype)

    if rnn.mode in _TORCH_GATED:
        cell, layers = gated_layers_from_torch(rnn, embedding=embedding, dtype=dt)
        activation = "tanh"
    else:
        cell, layers = "rnn", _simple_layers_from_torch(torch, rnn, embedding, dt)
        activation = _TORCH_MODES[rnn.mode]
    head = _torch_head(torch, linear, H_out, dirs, dt)
    params = RNNParams(
        layers=tuple(layers),
        head=head,
        activation=activation,
        merge="concat",
        token_inputs=token_inputs,
        cell=cell,
    )
    check_params(params)
    return params


def _simple_layers_from_torch(torch: Any, rnn: Any, embedding: Any, dt: Any) -> list[Any]:
    """The :class:`LayerParams` of every layer and direction of a ``torch.nn.RNN``."""
    H, L = rnn.hidden_size, rnn.num_layers
    dirs = 2 if rnn.bidirectional else 1
    E = _torch_embedding(torch, embedding, rnn.input_size, "rnn")
    layers = []
    for k in range(L):
        directions = []
        for d in range(dirs):
            sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
            W_ih = _torch_np(torch, getattr(rnn, "weight_ih" + sfx))
            W_hh = _torch_np(torch, getattr(rnn, "weight_hh" + sfx))
            if rnn.bias:
                b_a = _torch_np(torch, getattr(rnn, "bias_ih" + sfx)) + _torch_np(
                    torch, getattr(rnn, "bias_hh" + sfx)
                )
            else:
                b_a = np.zeros((H,), W_hh.dtype)
            if k == 0 and E is not None:
                W_ih = _fold_embedding(W_ih, E)
            directions.append(_layer(W_hh, W_ih, b_a, dt))
        layers.append(tuple(directions))
    return layers


def _torch_head(torch: Any, linear: Any, H_out: int, dirs: int, dt: Any) -> HeadParams:
    """The head from a ``torch.nn.Linear`` (or the identity for ``None``)."""
    nn = torch.nn
    if linear is None:
        head = _identity_head(H_out, dt)
    else:
        if not isinstance(linear, nn.Linear):
            raise ValueError(
                f"`linear` must be a torch.nn.Linear or None, got {type(linear).__name__}."
            )
        if linear.in_features != H_out:
            raise ValueError(
                f"`linear.in_features` must be the RNN's output width "
                f"{'2H' if dirs == 2 else 'H'} = {H_out}, got {linear.in_features}."
            )
        W_y = _torch_np(torch, linear.weight)
        if linear.bias is None:
            b_y = np.zeros((linear.out_features,), W_y.dtype)
        else:
            b_y = _torch_np(torch, linear.bias)
        head = HeadParams(
            W_y=jnp.asarray(np.asarray(W_y, dt)), b_y=jnp.asarray(np.asarray(b_y, dt))
        )
    return head


def to_torch(params: RNNParams, *, batch_first: bool = True) -> tuple[Any, Any]:
    """Convert :class:`~rnn_jax.RNNParams` to ``(torch.nn.RNN, torch.nn.Linear)``.

    A network with ``cell="gru"``/``"lstm"`` becomes a ``torch.nn.GRU``/``torch.nn.LSTM``
    (see :func:`gated_layers_to_torch`) and its ``Linear``.

    ``weight_hh_l{k} = W_aa``, ``weight_ih_l{k} = W_ax``, ``bias_ih_l{k} = b_a`` and
    ``bias_hh_l{k} = 0`` (``_reverse`` for the backward direction); the ``Linear`` holds
    the head, ``weight = W_y``, ``bias = b_y``. The modules are on the CPU in the
    parameters' dtype (float16/32/64); building them leaves the global torch RNG as it
    was.

    For a network with ``token_inputs`` the RNN's ``input_size`` is the vocabulary
    size and it reads one-hot vectors (``torch.nn.functional.one_hot(ids, V).float()``).

    Args:
        params: :class:`~rnn_jax.RNNParams`; a bidirectional network must have
            ``merge="concat"`` (PyTorch concatenates the directions).
        batch_first: the returned RNN's layout; ``True`` (default) matches rnn_jax's
            ``(B, T, D)``.

    Returns:
        ``(rnn, linear)``; ``linear(rnn(x)[0])`` is :func:`rnn_jax.rnn_apply`.

    Raises:
        ImportError: PyTorch is not installed.
        ValueError: a bidirectional network merged other than by concatenation.

    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> import jax
        >>> from rnn_jax import init_rnn
        >>> from rnn_jax.interop import to_torch
        >>> rnn, linear = to_torch(init_rnn(jax.random.key(0), 3, 5, 2, num_layers=2))
        >>> rnn
        RNN(3, 5, num_layers=2, batch_first=True)
        >>> linear
        Linear(in_features=5, out_features=2, bias=True)
    """
    torch = _import_torch()
    check_params(params)
    if params.bidirectional and params.merge != "concat":
        raise ValueError(
            f"`params.merge` must be 'concat' for a bidirectional network to convert to "
            f"torch.nn.RNN (which concatenates the directions), got {params.merge!r}."
        )
    if params.cell != "rnn":
        module = gated_layers_to_torch(params.cell, params.layers, batch_first=batch_first)
        W_y = _np(params.head.W_y)
        with torch.random.fork_rng(devices=[]):
            linear = torch.nn.Linear(
                params.merged_size, params.output_size, bias=True, dtype=module.weight_hh_l0.dtype
            )
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.array(W_y)))
            linear.bias.copy_(torch.from_numpy(np.array(_np(params.head.b_y), W_y.dtype)))
        return module, linear
    H, D, C = params.hidden_size, params.input_size, params.output_size
    np_dtype = _np(params.head.W_y).dtype
    tdt = _torch_dtype(torch, np_dtype, "params")
    # Build the modules without moving the caller's global torch RNG (their random
    # initialisation is overwritten below anyway).
    with torch.random.fork_rng(devices=[]):
        rnn = torch.nn.RNN(
            input_size=D,
            hidden_size=H,
            num_layers=params.num_layers,
            nonlinearity=params.activation,
            bias=True,
            batch_first=batch_first,
            bidirectional=params.bidirectional,
            dtype=tdt,
        )
        linear = torch.nn.Linear(params.merged_size, C, bias=True, dtype=tdt)

    def put(tensor: Any, value: Any) -> None:
        tensor.copy_(torch.from_numpy(np.array(value, dtype=np_dtype)))

    with torch.no_grad():
        for k, layer in enumerate(params.layers):
            for d, p in enumerate(layer):
                sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
                W_a = _np(p.W_a)
                put(getattr(rnn, "weight_hh" + sfx), W_a[:, :H])
                put(getattr(rnn, "weight_ih" + sfx), W_a[:, H:])
                put(getattr(rnn, "bias_ih" + sfx), _np(p.b_a))
                getattr(rnn, "bias_hh" + sfx).zero_()
        put(linear.weight, _np(params.head.W_y))
        put(linear.bias, _np(params.head.b_y))
    return rnn, linear


# --------------------------------------------------------------------------- Flax

_LSTM_KEYS = {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"}
_GRU_KEYS = {"ir", "iz", "in", "hr", "hz", "hn"}
_LAYER_KEY = re.compile(r"layers_(\d+)$")


def _keys(tree: Any) -> list[str]:
    return sorted(tree) if isinstance(tree, Mapping) else [type(tree).__name__]


def _cell_arrays(cell: Any, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W_aa, W_ax, b_a)`` from the params of one ``nn.SimpleCell``."""
    if not isinstance(cell, Mapping):
        raise ValueError(
            f"`{where}` must be a SimpleCell's params dict, got {type(cell).__name__}."
        )
    keys = set(cell)
    if keys & _LSTM_KEYS or keys & _GRU_KEYS:
        kind = "LSTMCell" if keys & _LSTM_KEYS else "GRUCell"
        raise ValueError(
            f"`{where}` holds {kind} params (keys {sorted(keys)}) but the first layer is an "
            "nn.SimpleCell (keys ['h', 'i']): every layer must have the same kind of cell."
        )
    if keys != {"h", "i"}:
        raise ValueError(
            f"`{where}` must be nn.SimpleCell params with keys ['h', 'i'], got {sorted(keys)}."
        )
    i, h = cell["i"], cell["h"]
    if not isinstance(i, Mapping) or set(i) != {"kernel", "bias"}:
        raise ValueError(f"`{where}['i']` must hold 'kernel' and 'bias', got {_keys(i)}.")
    if not isinstance(h, Mapping) or set(h) != {"kernel"}:
        raise ValueError(
            f"`{where}['h']` must hold only 'kernel' (SimpleCell's recurrent Dense has no "
            f"bias), got {_keys(h)}."
        )
    K_i, b_i, K_h = _np(i["kernel"]), _np(i["bias"]), _np(h["kernel"])
    H = b_i.shape[-1] if b_i.ndim == 1 else -1
    if b_i.ndim != 1 or K_h.shape != (H, H) or K_i.ndim != 2 or K_i.shape[1] != H:
        raise ValueError(
            f"`{where}` must have i.kernel (D, H), i.bias (H,), h.kernel (H, H), got "
            f"{tuple(K_i.shape)}, {tuple(b_i.shape)}, {tuple(K_h.shape)}."
        )
    return K_h.T, K_i.T, b_i


def _flax_layer(tree: Any, where: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    if isinstance(tree, Mapping) and set(tree) == {"cell"}:
        return [_cell_arrays(tree["cell"], f"{where}['cell']")]
    if isinstance(tree, Mapping) and set(tree) == {"forward_rnn", "backward_rnn"}:
        out = []
        for name in ("forward_rnn", "backward_rnn"):
            sub = tree[name]
            if not isinstance(sub, Mapping) or set(sub) != {"cell"}:
                raise ValueError(
                    f"`{where}['{name}']` must be nn.RNN params {{'cell': ...}}, got keys {_keys(sub)}."
                )
            out.append(_cell_arrays(sub["cell"], f"{where}['{name}']['cell']"))
        return out
    raise ValueError(
        f"`{where}` must be the params of nn.RNN(nn.SimpleCell(H)) (keys ['cell']) or of "
        f"nn.Bidirectional (keys ['backward_rnn', 'forward_rnn']), got keys {_keys(tree)}."
    )


def _flax_network(variables: Any) -> tuple[list[tuple[Any, str]], Any]:
    """Split Flax params into ``[(layer_tree, where), ...]`` and the head (or None)."""
    tree = variables
    if isinstance(tree, Mapping) and "params" in tree:
        tree = tree["params"]
    if isinstance(tree, Sequence) and not isinstance(tree, str):
        return [(t, f"variables[{l}]") for l, t in enumerate(tree)], None
    if not isinstance(tree, Mapping):
        raise ValueError(
            f"`variables` must be a Flax params dict or a list of them, got {type(tree).__name__}."
        )
    if "cell" in tree or "forward_rnn" in tree:
        return [(tree, "variables")], None
    numbered = {}
    for k in tree:
        m = _LAYER_KEY.match(k)
        if m:
            numbered[int(m.group(1))] = k
        elif k != "head":
            raise ValueError(
                "`variables` must be the params of nn.RNN(nn.SimpleCell(H)) (['cell']), of "
                "nn.Bidirectional (['backward_rnn', 'forward_rnn']), a list of those, or of "
                f"flax_module(...) (['head', 'layers_0', ...]); got keys {sorted(tree)}."
            )
    if sorted(numbered) != list(range(len(numbered))) or not numbered:
        raise ValueError(
            f"`variables` must hold layers_0 .. layers_{{L-1}} with no gap, got keys {sorted(tree)}."
        )
    return [(tree[numbered[l]], f"variables['{numbered[l]}']") for l in range(len(numbered))], (
        tree.get("head")
    )


def _flax_embedding(embedding: Any, D: int) -> np.ndarray:
    """The checked ``(V, D)`` table of ``nn.Embed`` params (or the array itself)."""
    E = _np(embedding["embedding"] if isinstance(embedding, Mapping) else embedding)
    if E.ndim != 2 or E.shape[1] != D:
        raise ValueError(
            f"`embedding` must have shape (V, D) with D = {D} (the first layer's input "
            f"size), got {tuple(E.shape)}."
        )
    return E


def from_flax(
    variables: Any,
    *,
    activation: str = "tanh",
    merge: str | Callable[[Any, Any], Any] = "concat",
    head: Any = None,
    embedding: Any = None,
    token_inputs: bool | None = None,
    dtype: Any = None,
) -> RNNParams:
    """Convert Flax ``nn.RNN(nn.SimpleCell | nn.GRUCell | nn.LSTMCell)`` params to :class:`~rnn_jax.RNNParams`.

    Per ``SimpleCell``: ``W_a = [h.kernel.T | i.kernel.T]``, ``b_a = i.bias``. A network of
    ``GRUCell``, ``LSTMCell`` or ``OptimizedLSTMCell`` (detected from the params' names;
    every layer the same kind) gives ``cell="gru"``/``"lstm"``, its layers converted as
    :func:`gated_layers_from_flax` does (the equations coincide with PyTorch's and this
    library's, with Flax's default gate and activation functions). Flax params carry no
    configuration, so the activation (the cells' ``activation_fn``) and the bidirectional
    merge (``nn.Bidirectional``'s ``merge_fn``; Flax's default concatenates) are given
    here. Cells with ``residual=True`` are a different recurrence and are not detected:
    do not pass them.

    Args:
        variables: the variables (``{"params": ...}``) or params of

            - ``nn.RNN(nn.SimpleCell(H))``: ``{"cell": {"i": ..., "h": ...}}``;
            - ``nn.Bidirectional(nn.RNN(nn.SimpleCell(H)), nn.RNN(nn.SimpleCell(H)))``:
              ``{"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}``;
            - a list of those, one per layer (a deep network, bottom layer first);
            - :func:`flax_module`'s network: ``{"layers_0": ..., ..., "head": ...}``.

        activation: the cells' ``activation_fn``: ``"tanh"`` (``nn.tanh``, Flax's
            default) or ``"relu"`` (``SimpleCell`` only: a gated cell must keep
            ``"tanh"``).
        merge: how the network merges directions (``"concat"`` for Flax's default).
        head: the params ``{"kernel": (H_out, C), "bias": (C,)}`` of an ``nn.Dense``
            output layer (no ``"bias"``: ``use_bias=False``), unless ``variables`` holds
            one under ``"head"``. Neither: the identity head (``W_y = I``, ``b_y = 0``),
            so :func:`rnn_jax.rnn_apply` returns the top layer's states.
        embedding: ``nn.Embed`` params ``{"embedding": (V, D)}`` (or the array) feeding
            the first layer; folded into ``W_ax = i.kernel.T @ embedding.T``, and the
            result reads token ids.
        token_inputs: as :func:`from_torch`.
        dtype: dtype of the result; ``None`` keeps the params'.

    Returns:
        :class:`~rnn_jax.RNNParams` (``cell`` from the Flax cells).

    Raises:
        ValueError: layers of different kinds of cell, an unknown layout, or sizes that
            do not fit together.

    Example:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from rnn_jax import rnn_layers
        >>> from rnn_jax.interop import from_flax
        >>> flax_rnn = nn.RNN(nn.SimpleCell(8), return_carry=True)
        >>> xs, lengths = jnp.ones((2, 5, 3)), jnp.array([5, 2])
        >>> variables = flax_rnn.init(jax.random.key(0), xs)
        >>> carry, ys = flax_rnn.apply(variables, xs, seq_lengths=lengths)
        >>> a_seq, a_last = rnn_layers(from_flax(variables), xs, lengths)
        >>> bool(jnp.allclose(a_last[0], carry, atol=1e-6))
        True
        >>> bool(jnp.allclose(a_seq[1, :2], ys[1, :2], atol=1e-6))   # valid steps only
        True
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {activation!r}.")
    token_inputs = _resolve_token_inputs(token_inputs, embedding)
    layer_trees, inner_head = _flax_network(variables)
    if inner_head is not None and head is not None:
        raise ValueError("`head` was given but `variables` already holds one under 'head'.")
    head = inner_head if head is None else head
    if not layer_trees:
        raise ValueError("`variables` must hold at least one layer, got an empty list.")

    cell = _flax_cell_kind(layer_trees[0][0])
    if cell == "rnn":
        arrays = [_flax_layer(t, where) for t, where in layer_trees]
        dt = _target_dtype(arrays[0][0][0].dtype, dtype)
        if embedding is not None:
            E = _flax_embedding(embedding, arrays[0][0][1].shape[1])
            arrays[0] = [(W_aa, _fold_embedding(W_ax, E), b_a) for W_aa, W_ax, b_a in arrays[0]]
        layers = tuple(tuple(_layer(*c, dt) for c in layer) for layer in arrays)
    else:
        if activation != "tanh":
            raise ValueError(
                f"`activation` must be 'tanh' (the default) for Flax {cell.upper()} cells, "
                f"whose gates fix their own nonlinearities; got {activation!r}."
            )
        _, layers = _gated_from_flax_trees(layer_trees, embedding, dtype)
        dt = np.dtype(layers[0][0].W_a.dtype)
    H = layers[0][0].hidden_size
    dirs = len(layers[0])
    H_out = dirs * H if (dirs == 2 and merge == "concat") else H
    params = RNNParams(
        layers=layers,
        head=_flax_head(head, H_out, dt),
        activation=activation,
        merge=merge,
        token_inputs=token_inputs,
        cell=cell,
    )
    check_params(params)
    return params


def _flax_cell_kind(tree: Any) -> str:
    """``"rnn"``, ``"gru"`` or ``"lstm"``: the kind of cell in one layer's Flax params.

    Read from the first cell (a ``SimpleCell``'s ``i``/``h``, a ``GRUCell``'s
    ``ir``..``hn``, an ``LSTMCell``'s ``ii``..``ho``); anything else is left to the
    simple-cell converter, whose errors name the layouts it accepts.
    """
    if isinstance(tree, Mapping) and set(tree) == {"forward_rnn", "backward_rnn"}:
        tree = tree["forward_rnn"]
    cell = tree.get("cell") if isinstance(tree, Mapping) else None
    keys = set(cell) if isinstance(cell, Mapping) else set()
    if keys == _GRU_KEYS:
        return "gru"
    if keys == _LSTM_KEYS:
        return "lstm"
    return "rnn"


def _flax_head(head: Any, H_out: int, dt: np.dtype) -> HeadParams:
    """The :class:`HeadParams` of ``nn.Dense`` params, or the identity head for ``None``."""
    if head is None:
        return _identity_head(H_out, dt)
    if not isinstance(head, Mapping) or "kernel" not in head or set(head) - {"kernel", "bias"}:
        raise ValueError(
            f"`head` must be nn.Dense params {{'kernel': (H_out, C), 'bias': (C,)}}, "
            f"got {_keys(head)}."
        )
    K = _np(head["kernel"])
    if K.ndim != 2:
        raise ValueError(f"`head['kernel']` must have shape (H_out, C), got {tuple(K.shape)}.")
    b = _np(head["bias"]) if "bias" in head else np.zeros((K.shape[1],), K.dtype)
    return HeadParams(W_y=jnp.asarray(np.asarray(K.T, dt)), b_y=jnp.asarray(np.asarray(b, dt)))


def _flax_cell(p: LayerParams) -> dict[str, Any]:
    H = p.hidden_size
    return {
        "cell": {
            "i": {"kernel": p.W_a[:, H:].T, "bias": p.b_a},
            "h": {"kernel": p.W_a[:, :H].T},
        }
    }


def to_flax(params: RNNParams) -> dict[str, Any]:
    """Convert :class:`~rnn_jax.RNNParams` to the variables of :func:`flax_module`.

    Returns:
        ``{"params": {"layers_0": ..., ..., "layers_{L-1}": ..., "head": {"kernel": W_y.T,
        "bias": b_y}}}`` where each layer is ``{"cell": {"i": {"kernel": W_ax.T, "bias":
        b_a}, "h": {"kernel": W_aa.T}}}`` (an ``nn.RNN(nn.SimpleCell(H))``) or, if
        bidirectional, ``{"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}``
        (an ``nn.Bidirectional``). ``to_flax(p)["params"]["layers_0"]`` alone, wrapped
        as ``{"params": ...}``, is the variables of that one Flax module. For
        ``cell="gru"``/``"lstm"`` each cell is an ``nn.GRUCell``/``nn.LSTMCell``'s params,
        as :func:`gated_layers_to_flax` writes them.

    Example:
        >>> import jax
        >>> from rnn_jax import init_rnn
        >>> from rnn_jax.interop import to_flax
        >>> v = to_flax(init_rnn(jax.random.key(0), 3, 4, 2))
        >>> jax.tree.map(lambda x: x.shape, v)["params"]["layers_0"]
        {'cell': {'h': {'kernel': (4, 4)}, 'i': {'bias': (4,), 'kernel': (3, 4)}}}
    """
    check_params(params)
    if params.cell != "rnn":
        layer_trees = gated_layers_to_flax(params.cell, params.layers)
    else:
        layer_trees = [
            _flax_cell(layer[0])
            if len(layer) == 1
            else {"forward_rnn": _flax_cell(layer[0]), "backward_rnn": _flax_cell(layer[1])}
            for layer in params.layers
        ]
    tree: dict[str, Any] = {f"layers_{l}": t for l, t in enumerate(layer_trees)}
    tree["head"] = {"kernel": params.head.W_y.T, "bias": params.head.b_y}
    return {"params": tree}


@functools.cache
def _flax_module_class() -> type:
    nn = importlib.import_module("flax.linen")

    class RNNFlax(nn.Module):
        """rnn_jax's network as Flax modules (see :func:`flax_module`)."""

        input_size: int
        hidden_size: int
        output_size: int
        num_layers: int = 1
        bidirectional: bool = False
        activation: str = "tanh"
        merge: Any = "concat"
        token_inputs: bool = False
        cell: str = "rnn"

        def setup(self):
            g = {"tanh": nn.tanh, "relu": nn.relu}[self.activation]

            def rnn():
                if self.cell == "gru":
                    return nn.RNN(nn.GRUCell(self.hidden_size))
                if self.cell == "lstm":
                    return nn.RNN(nn.LSTMCell(self.hidden_size))
                return nn.RNN(nn.SimpleCell(self.hidden_size, activation_fn=g))

            merge_fn = functools.partial(merge_directions, self.merge)
            self.layers = [
                nn.Bidirectional(rnn(), rnn(), merge_fn=merge_fn) if self.bidirectional else rnn()
                for _ in range(self.num_layers)
            ]
            self.head = nn.Dense(self.output_size)

        def __call__(self, xs, seq_lengths=None):
            if jnp.issubdtype(xs.dtype, jnp.integer):
                xs = jax.nn.one_hot(xs, self.input_size, dtype=self.head.param_dtype)
            h = xs
            for layer in self.layers:
                h = layer(h, seq_lengths=seq_lengths)
            y_hat = self.head(h)
            if seq_lengths is not None:
                valid = jnp.arange(xs.shape[1])[None, :] < seq_lengths[:, None]
                y_hat = jnp.where(valid[:, :, None], y_hat, jnp.zeros_like(y_hat))
            return y_hat

    return RNNFlax


def flax_module(params: RNNParams) -> Any:
    """The Flax linen module with the architecture of ``params``; its variables are :func:`to_flax`'s.

    It is, written out (``setup`` rather than ``@nn.compact``, so that each cell is named
    ``cell`` inside its ``nn.RNN``; cells created inside a compact method belong to the
    enclosing module instead and are named ``SimpleCell_0``, ``SimpleCell_1``, ...)::

        class RNNFlax(nn.Module):
            def setup(self):
                def rnn():      # nn.GRUCell(H) / nn.LSTMCell(H) for cell="gru"/"lstm"
                    return nn.RNN(nn.SimpleCell(H, activation_fn=nn.tanh))   # or nn.relu
                self.layers = [nn.Bidirectional(rnn(), rnn()) if bidirectional else rnn()
                               for _ in range(num_layers)]
                self.head = nn.Dense(C)

            def __call__(self, xs, seq_lengths=None):          # xs: (B, T, D)
                h = xs                                         # one-hot if token ids
                for layer in self.layers:
                    h = layer(h, seq_lengths=seq_lengths)
                return where(valid, self.head(h), 0)           # zero at padding

    ``module.apply(to_flax(params), xs, seq_lengths=lengths)`` equals
    :func:`rnn_jax.rnn_apply` ``(params, xs, lengths)`` up to float rounding (integer
    token ids are one-hot encoded). The merge of a bidirectional network is
    ``merge_fn``.

    Args:
        params: :class:`~rnn_jax.RNNParams` (only its configuration is read).

    Returns:
        an unbound ``flax.linen.Module``.
    """
    check_params(params)
    register_flax_serialization()
    # The configuration as stored in checkpoints, with the merge itself (a callable too)
    # and the cell always named.
    return _flax_module_class()(**{**params.config(), "merge": params.merge, "cell": params.cell})


# --------------------------------------------------------------------------- gated cells

_TORCH_GATED = {"GRU": "gru", "LSTM": "lstm"}
_FLAX_GATES = {"gru": ("r", "z", "n"), "lstm": ("i", "f", "g", "o")}


def _gated_layer(
    cell: str, W_hh: np.ndarray, W_ih: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray, dt: Any
) -> GRULayerParams | LSTMLayerParams:
    """``[W_hh | W_ih]`` and the biases, in PyTorch's layout, as a layer of ``rnn_jax.cells``.

    The GRU keeps both biases; the LSTM's are summed (in the target dtype, as PyTorch adds
    them in its own).
    """
    W_a = jnp.asarray(np.concatenate([np.asarray(W_hh, dt), np.asarray(W_ih, dt)], axis=1))
    b_ih, b_hh = np.asarray(b_ih, dt), np.asarray(b_hh, dt)
    if cell == "gru":
        return GRULayerParams(W_a=W_a, b_x=jnp.asarray(b_ih), b_h=jnp.asarray(b_hh))
    return LSTMLayerParams(W_a=W_a, b_a=jnp.asarray(b_ih + b_hh))


def _check_gated_stack(cell: str, layers: Sequence[Sequence[Any]], where: str) -> None:
    """Every layer has the same directions and ``H``; layer ``l > 0`` reads ``dirs * H``."""
    dirs = len(layers[0])
    H = layers[0][0].hidden_size
    G = num_gates(cell)
    for l, layer in enumerate(layers):
        if len(layer) != dirs:
            raise ValueError(
                f"`{where}` layer {l} has {len(layer)} direction(s), layer 0 has {dirs}."
            )
        D = layer[0].input_size
        for p in layer:
            if p.hidden_size != H or p.W_a.shape != (G * H, H + D) or p.input_size != D:
                raise ValueError(
                    f"`{where}` layer {l} must have W_a of shape ({G}H, H + D) = "
                    f"({G * H}, {H + D}), got {tuple(p.W_a.shape)}."
                )
        if l > 0 and D != dirs * H:
            raise ValueError(
                f"`{where}` layer {l} must read the {dirs * H} outputs of layer {l - 1} "
                f"(directions x H), got input size {D}."
            )


def gated_layers_from_torch(
    module: Any, *, embedding: Any = None, dtype: Any = None
) -> tuple[str, tuple[tuple[GRULayerParams | LSTMLayerParams, ...], ...]]:
    """Convert a ``torch.nn.GRU`` or ``torch.nn.LSTM`` to ``(cell, layers)`` of :mod:`rnn_jax.cells`.

    Any ``num_layers``, ``bidirectional``, ``batch_first`` and ``bias``. Per layer ``k``
    and direction ``d`` (``_reverse`` for the backward one), exactly (copies, no
    arithmetic except the LSTM's one bias sum):

    - GRU: ``W_a = [weight_hh_l{k} | weight_ih_l{k}]`` (rows ``r, z, n``),
      ``b_x = bias_ih_l{k}``, ``b_h = bias_hh_l{k}``;
    - LSTM: ``W_a = [weight_hh_l{k} | weight_ih_l{k}]`` (rows ``i, f, g, o``),
      ``b_a = bias_ih_l{k} + bias_hh_l{k}``;

    with zero biases for ``bias=False``. ``layers[l][d]`` runs with
    :func:`rnn_jax.cells.layer_unroll` (``reverse=(d == 1)``); layer ``l > 0`` reads the
    concatenation ``[forward | backward]`` of layer ``l - 1``'s outputs, as PyTorch's.
    PyTorch's ``h_n[l * dirs + d]`` (and ``c_n``) is the carry after the last valid step
    of ``layers[l][d]``. The module's ``dropout`` is not a weight and is not carried.

    Args:
        module: a ``torch.nn.GRU`` or ``torch.nn.LSTM`` (``proj_size=0``).
        embedding: a ``torch.nn.Embedding(V, D)`` feeding the module, folded into the
            first layer as :func:`from_torch` does: ``W_x = weight_ih_l0 @ embedding.weight.T``
            of shape ``(G·H, V)`` (computed in float64), so the first layer reads token ids.
        dtype: dtype of the result; ``None`` keeps the module's (float32 by default).

    Returns:
        ``(cell, layers)``: ``"gru"`` or ``"lstm"`` and ``layers[l][d]``, a tuple (per
        layer) of tuples (per direction) of :class:`~rnn_jax.cells.GRULayerParams` or
        :class:`~rnn_jax.cells.LSTMLayerParams`.

    Raises:
        ImportError: PyTorch is not installed.
        ValueError: another module, or an LSTM with ``proj_size > 0``.

    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> import jax.numpy as jnp
        >>> from rnn_jax.cells import carry_zeros, layer_unroll
        >>> gru = torch.nn.GRU(3, 5)                       # time-major, like layer_unroll
        >>> cell, layers = gated_layers_from_torch(gru)
        >>> cell, layers[0][0].W_a.shape                   # (3H, H + D)
        ('gru', (15, 8))
        >>> x = torch.randn(4, 2, 3)                       # (T, B, D)
        >>> output, h_n = gru(x)
        >>> h_seq, h_last = layer_unroll(cell, layers[0][0], jnp.asarray(x.numpy()),
        ...                              carry_zeros(cell, 2, 5), None)
        >>> bool(jnp.allclose(h_seq, output.detach().numpy(), atol=1e-5))
        True
    """
    torch = _import_torch()
    nn = torch.nn
    mode = getattr(module, "mode", None) if isinstance(module, nn.RNNBase) else None
    if mode not in _TORCH_GATED:
        raise ValueError(
            f"`module` must be a torch.nn.GRU or torch.nn.LSTM, got {type(module).__name__}"
            + (f" (mode {mode!r})." if mode else ".")
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(
            f"`module.proj_size` must be 0 (an LSTM without projection), got {module.proj_size}."
        )
    cell = _TORCH_GATED[mode]
    dt = _target_dtype(_torch_np(torch, module.weight_hh_l0).dtype, dtype)
    E = _torch_embedding(torch, embedding, module.input_size, "module")
    dirs = 2 if module.bidirectional else 1
    layers = []
    for k in range(module.num_layers):
        layer = []
        for d in range(dirs):
            sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
            W_hh = _torch_np(torch, getattr(module, "weight_hh" + sfx))
            W_ih = _torch_np(torch, getattr(module, "weight_ih" + sfx))
            if module.bias:
                b_ih = _torch_np(torch, getattr(module, "bias_ih" + sfx))
                b_hh = _torch_np(torch, getattr(module, "bias_hh" + sfx))
            else:
                b_ih = b_hh = np.zeros((W_hh.shape[0],), W_hh.dtype)
            if k == 0 and E is not None:
                W_ih = _fold_embedding(W_ih, E)
            layer.append(_gated_layer(cell, W_hh, W_ih, b_ih, b_hh, dt))
        layers.append(tuple(layer))
    return cell, tuple(layers)


def gated_layers_to_torch(
    cell: str,
    layers: Sequence[Sequence[GRULayerParams | LSTMLayerParams]],
    *,
    batch_first: bool = True,
) -> Any:
    """The ``torch.nn.GRU``/``torch.nn.LSTM`` computing ``layers``, the inverse of :func:`gated_layers_from_torch`.

    GRU: ``weight_hh | weight_ih = W_a``, ``bias_ih = b_x``, ``bias_hh = b_h``; LSTM: ``bias_ih
    = b_a`` and ``bias_hh = 0``. So ``gated_layers_from_torch(gated_layers_to_torch(cell,
    layers))`` is ``(cell, layers)`` bit for bit. The caller's torch RNG is not moved.

    Args:
        cell: ``"gru"`` or ``"lstm"``.
        layers: ``layers[l][d]`` as returned by :func:`gated_layers_from_torch`.
        batch_first: the module's input layout (weights do not depend on it).

    Returns:
        a ``torch.nn.GRU`` or ``torch.nn.LSTM`` (float16/32/64 like ``layers``).

    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> import jax
        >>> from rnn_jax.cells import init_gated_layer
        >>> keys = jax.random.split(jax.random.key(0), 2)
        >>> layers = ((init_gated_layer("lstm", 3, 4, key=keys[0]),
        ...            init_gated_layer("lstm", 3, 4, key=keys[1])),)
        >>> gated_layers_to_torch("lstm", layers)
        LSTM(3, 4, batch_first=True, bidirectional=True)
    """
    torch = _import_torch()
    num_gates(cell)
    if not layers or not layers[0]:
        raise ValueError("`layers` must hold at least one layer of one direction, got none.")
    _check_gated_stack(cell, layers, "layers")
    first = layers[0][0]
    H, D = first.hidden_size, first.input_size
    np_dtype = _np(first.W_a).dtype
    tdt = _torch_dtype(torch, np_dtype, "layers")
    kind = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
    with torch.random.fork_rng(devices=[]):
        module = kind(
            input_size=D,
            hidden_size=H,
            num_layers=len(layers),
            bias=True,
            batch_first=batch_first,
            bidirectional=len(layers[0]) == 2,
            dtype=tdt,
        )

    def put(tensor: Any, value: Any) -> None:
        tensor.copy_(torch.from_numpy(np.array(value, dtype=np_dtype)))

    with torch.no_grad():
        for k, layer in enumerate(layers):
            for d, p in enumerate(layer):
                sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
                W_a = _np(p.W_a)
                put(getattr(module, "weight_hh" + sfx), W_a[:, :H])
                put(getattr(module, "weight_ih" + sfx), W_a[:, H:])
                if cell == "gru":
                    put(getattr(module, "bias_ih" + sfx), _np(p.b_x))
                    put(getattr(module, "bias_hh" + sfx), _np(p.b_h))
                else:
                    put(getattr(module, "bias_ih" + sfx), _np(p.b_a))
                    getattr(module, "bias_hh" + sfx).zero_()
    return module


def _dense(tree: Any, where: str, *, bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
    keys = {"kernel", "bias"} if bias else {"kernel"}
    if not isinstance(tree, Mapping) or set(tree) != keys:
        raise ValueError(f"`{where}` must hold {sorted(keys)}, got {_keys(tree)}.")
    return _np(tree["kernel"]), (_np(tree["bias"]) if bias else None)


def _flax_gated_cell(tree: Any, where: str) -> tuple[str, tuple[np.ndarray, ...]]:
    """``(cell, (W_hh, W_ih, b_ih, b_hh))`` in PyTorch's layout from one Flax gated cell."""
    keys = set(tree) if isinstance(tree, Mapping) else set()
    if keys == _GRU_KEYS:
        cell = "gru"
        # GRUCell: input Dense ir/iz/in with bias; hidden hr/hz without, hn with.
        hidden_bias = {"r": False, "z": False, "n": True}
        input_bias = {"r": True, "z": True, "n": True}
    elif keys == _LSTM_KEYS:
        cell = "lstm"
        # LSTMCell / OptimizedLSTMCell: input Dense without bias, hidden Dense with.
        hidden_bias = dict.fromkeys("ifgo", True)
        input_bias = dict.fromkeys("ifgo", False)
    else:
        raise ValueError(
            f"`{where}` must be the params of nn.GRUCell (keys {sorted(_GRU_KEYS)}) or of "
            f"nn.LSTMCell/nn.OptimizedLSTMCell (keys {sorted(_LSTM_KEYS)}), got {_keys(tree)}."
        )
    W_hh, W_ih, b_ih, b_hh = [], [], [], []
    for gate in _FLAX_GATES[cell]:
        K_i, b_i = _dense(tree["i" + gate], f"{where}['i{gate}']", bias=input_bias[gate])
        K_h, b_h = _dense(tree["h" + gate], f"{where}['h{gate}']", bias=hidden_bias[gate])
        H = K_h.shape[-1]
        if K_h.shape != (H, H) or K_i.ndim != 2 or K_i.shape[1] != H:
            raise ValueError(
                f"`{where}` gate {gate!r} must have kernels i (D, H) and h (H, H), got "
                f"{tuple(K_i.shape)} and {tuple(K_h.shape)}."
            )
        W_hh.append(K_h.T)
        W_ih.append(K_i.T)
        b_ih.append(np.zeros((H,), K_h.dtype) if b_i is None else b_i)
        b_hh.append(np.zeros((H,), K_h.dtype) if b_h is None else b_h)
    return cell, tuple(np.concatenate(x, axis=0) for x in (W_hh, W_ih, b_ih, b_hh))


def gated_layers_from_flax(
    variables: Any, *, embedding: Any = None, dtype: Any = None
) -> tuple[str, tuple[tuple[GRULayerParams | LSTMLayerParams, ...], ...]]:
    """Convert Flax ``nn.GRUCell`` / ``nn.LSTMCell`` / ``nn.OptimizedLSTMCell`` params to ``(cell, layers)``.

    The equations coincide with PyTorch's (and :mod:`rnn_jax.cells`') exactly:

    - ``GRUCell``: ``r = σ(ir(x) + hr(h))``, ``z = σ(iz(x) + hz(h))``,
      ``n = tanh(in(x) + r ⊙ hn(h))``, ``h' = (1 - z) ⊙ n + z ⊙ h``, where the input
      ``Dense`` layers have biases and, of the hidden ones, only ``hn`` has one: so
      ``W_a = [hr; hz; hn | ir; iz; in]`` (kernels transposed), ``b_x = [ir.b, iz.b, in.b]``
      and ``b_h = [0, 0, hn.b]`` (Flax has no ``b_hr``/``b_hz``; the converse conversion
      would have to fold them into ``b_ir``/``b_iz``).
    - ``LSTMCell`` and ``OptimizedLSTMCell`` (same params): gates ``i, f, g, o`` with
      ``σ, σ, tanh, σ``, ``c' = f ⊙ c + i ⊙ g``, ``h' = o ⊙ tanh(c')``; the input
      ``Dense`` layers have no bias, the hidden ones do: ``b_a = [hi.b; hf.b; hg.b; ho.b]``.
      Flax's carry is ``(c, h)``, this library's ``(h, c)`` (PyTorch's order).

    Cells built with other ``gate_fn``/``activation_fn`` than the defaults compute other
    equations and are not detected: do not pass them.

    Args:
        variables: the variables (``{"params": ...}``) or params of ``nn.RNN(cell)``
            (``{"cell": ...}``), of ``nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))``
            (``{"forward_rnn": ..., "backward_rnn": ...}``), a list of those (one per layer,
            bottom first), or ``{"layers_0": ..., ...}``.
        embedding: ``nn.Embed`` params ``{"embedding": (V, D)}`` (or the array) feeding the
            first layer; folded into its ``W_x`` as :func:`from_flax` does, so the first
            layer reads token ids.
        dtype: dtype of the result; ``None`` keeps the params'.

    Returns:
        ``(cell, layers)`` as :func:`gated_layers_from_torch`.

    Example:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from rnn_jax.cells import layer_unroll
        >>> flax_rnn = nn.RNN(nn.GRUCell(4), return_carry=True)
        >>> xs = jnp.ones((2, 5, 3))                       # (B, T, D)
        >>> variables = flax_rnn.init(jax.random.key(0), xs)
        >>> carry, ys = flax_rnn.apply(variables, xs)
        >>> cell, layers = gated_layers_from_flax(variables)
        >>> h_seq, h_last = layer_unroll(cell, layers[0][0], xs.swapaxes(0, 1), 0 * carry, None)
        >>> bool(jnp.allclose(h_last, carry, atol=1e-6))
        True
    """
    layer_trees, head = _flax_network(variables)
    if head is not None:
        raise ValueError("`variables` must hold recurrent layers only, got a 'head' too.")
    if not layer_trees:
        raise ValueError("`variables` must hold at least one layer, got an empty list.")
    return _gated_from_flax_trees(layer_trees, embedding, dtype)


def _gated_from_flax_trees(
    layer_trees: list[tuple[Any, str]], embedding: Any, dtype: Any
) -> tuple[str, tuple[tuple[GRULayerParams | LSTMLayerParams, ...], ...]]:
    found: list[list[tuple[str, tuple[np.ndarray, ...]]]] = []
    for tree, where in layer_trees:
        if isinstance(tree, Mapping) and set(tree) == {"cell"}:
            subs = [(tree["cell"], f"{where}['cell']")]
        elif isinstance(tree, Mapping) and set(tree) == {"forward_rnn", "backward_rnn"}:
            subs = []
            for name in ("forward_rnn", "backward_rnn"):
                sub = tree[name]
                if not isinstance(sub, Mapping) or set(sub) != {"cell"}:
                    raise ValueError(
                        f"`{where}['{name}']` must be nn.RNN params {{'cell': ...}}, got keys "
                        f"{_keys(sub)}."
                    )
                subs.append((sub["cell"], f"{where}['{name}']['cell']"))
        else:
            raise ValueError(
                f"`{where}` must be the params of nn.RNN(cell) (keys ['cell']) or of "
                f"nn.Bidirectional (keys ['backward_rnn', 'forward_rnn']), got {_keys(tree)}."
            )
        found.append([_flax_gated_cell(t, w) for t, w in subs])
    cells = {c for layer in found for c, _ in layer}
    if len(cells) != 1:
        raise ValueError(f"`variables` must hold one kind of cell, got {sorted(cells)}.")
    (cell,) = cells
    dt = _target_dtype(found[0][0][1][0].dtype, dtype)
    if embedding is not None:
        E = _flax_embedding(embedding, found[0][0][1][1].shape[1])
        found[0] = [
            (c, (W_hh, _fold_embedding(W_ih, E), b_ih, b_hh))
            for c, (W_hh, W_ih, b_ih, b_hh) in found[0]
        ]
    layers = tuple(tuple(_gated_layer(cell, *arrays, dt) for _, arrays in layer) for layer in found)
    _check_gated_stack(cell, layers, "variables")
    return cell, layers


def _flax_gated_cell_params(cell: str, p: GRULayerParams | LSTMLayerParams) -> dict[str, Any]:
    H = p.hidden_size
    W_a = p.W_a

    def block(g: int) -> tuple[Array, Array]:
        """``(W_h, W_x)`` of gate ``g`` (rows ``g·H .. (g+1)·H``)."""
        rows = W_a[g * H : (g + 1) * H]
        return rows[:, :H], rows[:, H:]

    tree: dict[str, Any] = {}
    for g, gate in enumerate(_FLAX_GATES[cell]):
        W_h, W_x = block(g)
        rows = slice(g * H, (g + 1) * H)
        if cell == "gru":
            # r and z: the two biases only ever appear summed; n: b_hn stays on hn.
            b_i = p.b_x[rows] + (p.b_h[rows] if gate != "n" else 0)
            tree["i" + gate] = {"kernel": W_x.T, "bias": b_i}
            tree["h" + gate] = {"kernel": W_h.T}
            if gate == "n":
                tree["hn"]["bias"] = p.b_h[rows]
        else:
            tree["i" + gate] = {"kernel": W_x.T}
            tree["h" + gate] = {"kernel": W_h.T, "bias": p.b_a[rows]}
    return tree


def gated_layers_to_flax(
    cell: str, layers: Sequence[Sequence[GRULayerParams | LSTMLayerParams]]
) -> list[dict[str, Any]]:
    """Flax params computing ``layers``: one tree per layer, for ``nn.RNN(cell)`` or ``nn.Bidirectional``.

    The inverse of :func:`gated_layers_from_flax`. Layer ``l`` becomes ``{"cell": ...}``
    (one direction, the params of ``nn.RNN(nn.GRUCell(H))`` / ``nn.RNN(nn.LSTMCell(H))``)
    or ``{"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}`` (two); wrap one
    as ``{"params": tree}`` to ``apply`` that module. The LSTM converts exactly (``b_a``
    goes to the hidden ``Dense`` layers, as in Flax). Flax's GRU has no ``b_hr``/``b_hz``;
    they only ever appear summed with ``b_ir``/``b_iz``, so they are folded into the input
    biases: the same function (up to the rounding of that one addition), and
    ``gated_layers_from_flax`` then returns ``b_h = [0, 0, b_hn]``.

    Args:
        cell: ``"gru"`` or ``"lstm"``.
        layers: ``layers[l][d]`` as returned by :func:`gated_layers_from_torch`.

    Returns:
        a list of params trees, bottom layer first (what :func:`gated_layers_from_flax`
        reads).

    Example:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from rnn_jax.cells import carry_zeros, init_gated_layer, layer_unroll
        >>> layer = init_gated_layer("lstm", 3, 4, key=jax.random.key(0))
        >>> (tree,) = gated_layers_to_flax("lstm", ((layer,),))
        >>> xs = jnp.ones((2, 5, 3))                                    # (B, T, D)
        >>> ys = nn.RNN(nn.LSTMCell(4)).apply({"params": tree}, xs)
        >>> h_seq, _ = layer_unroll("lstm", layer, xs.swapaxes(0, 1), carry_zeros("lstm", 2, 4), None)
        >>> bool(jnp.allclose(ys, h_seq.swapaxes(0, 1), atol=1e-6))
        True
    """
    num_gates(cell)
    if not layers or not layers[0]:
        raise ValueError("`layers` must hold at least one layer of one direction, got none.")
    _check_gated_stack(cell, layers, "layers")
    out = []
    for layer in layers:
        cells = [{"cell": _flax_gated_cell_params(cell, p)} for p in layer]
        out.append(
            cells[0] if len(cells) == 1 else {"forward_rnn": cells[0], "backward_rnn": cells[1]}
        )
    return out
