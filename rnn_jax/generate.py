"""Generating sequences one token at a time: greedy, sampling (temperature, top-k), beam search.

Every function here drives a *step function*

    ``step_fn(params, state, y_prev) -> (state, logits)``

with ``y_prev`` of shape ``(B,)`` (integer ids), ``logits`` of shape ``(B, V)`` and a state
pytree whose every leaf has the batch axis first, unless the state says otherwise with a
``batch_axes`` attribute (a pytree of ints of the same structure):
:class:`LMState` and :class:`~rnn_jax.seq2seq.DecoderState` keep their stacked states in
the library's one layout ``(L, B, H)``. Two step functions ship with the
library: :func:`rnn_jax.seq2seq.decoder_step` (an encoder–decoder's decoder, conditional
generation) and :func:`lm_step` (a uni-directional :class:`~rnn_jax.RNNParams` language
model, one-to-many generation from a seed or from nothing). The loop replaced is::

    y = start_ids                                   # <BOS>, or the last seed token
    for t in range(max_len):
        state, logits = step_fn(params, state, y)
        y = choose(logits)                          # argmax, a sample, or the beams' best
        tokens[:, t] = y (or <PAD> once finished)
        if every sequence has emitted <EOS>: break

It runs under ``jit`` as one ``lax.while_loop`` with a fixed ``max_len`` and stops early
when every sequence has emitted ``eos_id``. Outputs have a fixed shape: ``tokens`` is
``(B, max_len)`` (``(B, k, max_len)`` for beams) and holds ``<EOS>`` where a sequence ended,
``pad_id`` after it; ``lengths`` counts the tokens *before* ``<EOS>`` (``max_len`` if a
sequence never ended), so ``tokens[b, :lengths[b]]`` is the generated content.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import init_rnn
    >>> from rnn_jax.generate import greedy_decode, lm_initial_state, lm_step, sample
    >>> lm = init_rnn(jax.random.key(0), 10, 16, 10, token_inputs=True)
    >>> state, start = lm_initial_state(lm, jnp.zeros((2, 0), jnp.int32),
    ...                                 jnp.array([0, 0]), bos_id=2)   # from nothing
    >>> tokens, lengths = greedy_decode(lm_step, lm, state, start, max_len=8, eos_id=3)
    >>> tokens.shape, lengths.shape
    ((2, 8), (2,))
    >>> t1, _ = sample(lm_step, lm, state, start, max_len=8, eos_id=3, key=jax.random.key(1),
    ...                temperature=0.7, top_k=5)
    >>> t2, _ = sample(lm_step, lm, state, start, max_len=8, eos_id=3, key=jax.random.key(1),
    ...                temperature=0.7, top_k=5)
    >>> bool(jnp.array_equal(t1, t2))            # the same key gives the same sample
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from rnn_jax._checks import check_lengths, is_concrete, positive_int
from rnn_jax.network import check_params, rnn_layers
from rnn_jax.params import RNNParams
from rnn_jax.stack import check_step_state, head_apply, stack_step

__all__ = [
    "BeamSearchResult",
    "LMState",
    "beam_search",
    "greedy_decode",
    "lm_initial_state",
    "lm_step",
    "sample",
]

StepFn = Callable[[Any, Any, Int[Array, " B"]], tuple[Any, Float[Array, "B V"]]]


class BeamSearchResult(NamedTuple):
    """The ``k`` best hypotheses per example, best first.

    Attributes:
        tokens: ``(B, k, max_len)`` ids; ``<EOS>`` where a hypothesis ended, ``pad_id`` after.
        lengths: ``(B, k)`` tokens before ``<EOS>``.
        log_probs: ``(B, k)`` total log-probability ``Σ_t log p(y<t> | ...)``, ``<EOS>``
            included.
        scores: ``(B, k)`` the ranking score ``log_probs / n^alpha`` with ``n`` the number
            of generated tokens (``<EOS>`` included).
    """

    tokens: Int[Array, "B k T"]
    lengths: Int[Array, "B k"]
    log_probs: Float[Array, "B k"]
    scores: Float[Array, "B k"]


class LMState(NamedTuple):
    """A language model's recurrent state for :func:`lm_step`.

    Attributes:
        a: ``(L, B, H)``, the state of every layer (the layout of
            :func:`~rnn_jax.rnn_layers`' final states); an LSTM's hidden states ``h``.
        c: ``(L, B, H)``, an LSTM's cell states (``cell="lstm"``); ``None`` otherwise.
    """

    a: Float[Array, "L B H"]
    c: Float[Array, "L B H"] | None = None

    @property
    def batch_axes(self) -> LMState:
        return LMState(a=1, c=None if self.c is None else 1)


def _batch_axes(state: Any) -> Any:
    """The batch axis of every leaf of ``state`` (0 unless the state has ``batch_axes``)."""
    axes = getattr(state, "batch_axes", None)
    if axes is None:
        return jax.tree_util.tree_map(lambda _: 0, state)
    return axes


def _vocab_size(params: Any) -> int | None:
    """The number of token ids the step function reads, where ``params`` says it."""
    if isinstance(params, RNNParams):
        return params.input_size if params.token_inputs else None
    size = getattr(params, "target_vocab_size", None)  # an encoder-decoder's decoder
    return size if isinstance(size, int) else None


def _check_start(start_ids: Any, params: Any = None) -> Array:
    start_ids = jnp.asarray(start_ids)
    if start_ids.ndim != 1 or not jnp.issubdtype(start_ids.dtype, jnp.integer):
        raise ValueError(
            f"`start_ids` must be integer ids of shape (B,), got shape {tuple(start_ids.shape)} "
            f"and dtype {start_ids.dtype}."
        )
    V = _vocab_size(params)
    if V is not None and is_concrete(start_ids) and start_ids.size:
        lo, hi = int(np.min(np.asarray(start_ids))), int(np.max(np.asarray(start_ids)))
        if lo < 0 or hi >= V:  # the first step would read a NaN column and decode garbage
            raise ValueError(
                f"`start_ids` must lie in [0, {V}) (the vocabulary size), got values in "
                f"[{lo}, {hi}]."
            )
    return start_ids


def _check_state(state: Any, B: int) -> None:
    axes = jax.tree_util.tree_leaves(_batch_axes(state))
    for leaf, axis in zip(jax.tree_util.tree_leaves(state), axes, strict=True):
        if jnp.ndim(leaf) <= axis or jnp.shape(leaf)[axis] != B:
            raise ValueError(
                f"every leaf of `state` must have its batch axis ({axis}) of size B = {B} "
                f"(from start_ids), got a leaf of shape {tuple(jnp.shape(leaf))}."
            )


def _decode_loop(step_fn, params, state, start_ids, max_len, eos_id, pad_id, choose):
    B = start_ids.shape[0]
    tokens = jnp.full((B, max_len), pad_id, jnp.int32)
    lengths = jnp.zeros((B,), jnp.int32)
    done = jnp.zeros((B,), bool)

    def cond(carry):
        t, _, _, _, _, done = carry
        return (t < max_len) & ~jnp.all(done)

    def body(carry):
        t, state, y_prev, tokens, lengths, done = carry
        state, logits = step_fn(params, state, y_prev)
        y = choose(logits, t).astype(jnp.int32)
        y = jnp.where(done, pad_id, y)
        tokens = tokens.at[:, t].set(y)
        is_eos = jnp.zeros_like(done) if eos_id is None else (y == eos_id)
        lengths = lengths + (~done & ~is_eos).astype(jnp.int32)
        return t + 1, state, y, tokens, lengths, done | is_eos

    carry = (jnp.int32(0), state, start_ids.astype(jnp.int32), tokens, lengths, done)
    _, _, _, tokens, lengths, _ = jax.lax.while_loop(cond, body, carry)
    return tokens, lengths


@functools.partial(jax.jit, static_argnames=("step_fn", "max_len", "eos_id", "pad_id"))
def _greedy(step_fn, params, state, start_ids, max_len, eos_id, pad_id):
    return _decode_loop(
        step_fn, params, state, start_ids, max_len, eos_id, pad_id,
        lambda logits, t: jnp.argmax(logits, axis=-1),
    )  # fmt: skip


def greedy_decode(
    step_fn: StepFn,
    params: Any,
    state: Any,
    start_ids: Int[ArrayLike, " B"],
    *,
    max_len: int,
    eos_id: int | None,
    pad_id: int = 0,
) -> tuple[Int[Array, "B max_len"], Int[Array, " B"]]:
    """Greedy decoding: ``y<t> = argmax_v p(v | y<<t>, ...)``, jitted, early stop at ``<EOS>``.

    Args:
        step_fn: ``(params, state, y_prev) -> (state, logits)`` (a static argument of the
            jitted loop: pass a module-level function, not a fresh lambda per call).
        params: the step function's parameters (a pytree).
        state: the initial state (every leaf batch-first).
        start_ids: ``(B,)`` the first input token, e.g. ``<BOS>``.
        max_len: the most tokens generated (``>= 1``).
        eos_id: the end token, or ``None`` to always generate ``max_len`` tokens.
        pad_id: written after ``<EOS>``.

    Returns:
        ``(tokens (B, max_len), lengths (B,))``, see the module docstring.
    """
    start_ids = _check_start(start_ids, params)
    _check_state(state, start_ids.shape[0])
    max_len = positive_int("max_len", max_len, minimum=1)
    return _greedy(step_fn, params, state, start_ids, max_len, eos_id, pad_id)


@functools.partial(jax.jit, static_argnames=("step_fn", "max_len", "eos_id", "pad_id", "top_k"))
def _sample(step_fn, params, state, start_ids, key, temperature, max_len, eos_id, pad_id, top_k):
    def choose(logits, t):
        z = logits / temperature
        if top_k is not None and top_k < z.shape[-1]:
            kth = jax.lax.top_k(z, top_k)[0][:, -1:]  # (B, 1)
            z = jnp.where(z < kth, -jnp.inf, z)
        return jax.random.categorical(jax.random.fold_in(key, t), z, axis=-1)

    return _decode_loop(step_fn, params, state, start_ids, max_len, eos_id, pad_id, choose)


def sample(
    step_fn: StepFn,
    params: Any,
    state: Any,
    start_ids: Int[ArrayLike, " B"],
    *,
    max_len: int,
    eos_id: int | None,
    key: jax.Array,
    temperature: float | Float[Array, ""] = 1.0,
    top_k: int | None = None,
    pad_id: int = 0,
) -> tuple[Int[Array, "B max_len"], Int[Array, " B"]]:
    """Ancestral sampling: ``y<t> ~ softmax(logits<t> / temperature)``, optionally top-k.

    ``temperature < 1`` sharpens the distribution (towards greedy), ``> 1`` flattens it.
    With ``top_k`` only the ``k`` most likely tokens of each step keep their probability
    (renormalised). Step ``t`` draws with ``jax.random.fold_in(key, t)``, so a fixed ``key``
    reproduces the same sequences.

    Args:
        step_fn, params, state, start_ids, max_len, eos_id, pad_id: as :func:`greedy_decode`.
        key: PRNG key (required).
        temperature: ``> 0``.
        top_k: ``None`` (full distribution) or an int ``>= 1``.

    Returns:
        ``(tokens (B, max_len), lengths (B,))``.
    """
    start_ids = _check_start(start_ids, params)
    _check_state(state, start_ids.shape[0])
    max_len = positive_int("max_len", max_len, minimum=1)
    if not isinstance(key, jax.Array):
        raise ValueError(f"`key` must be a jax.random key array, got {type(key).__name__}.")
    if not isinstance(temperature, jax.core.Tracer) and not float(temperature) > 0.0:
        raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
    if top_k is not None:
        top_k = positive_int("top_k", top_k, minimum=1)
    return _sample(
        step_fn, params, state, start_ids, key, jnp.float32(temperature), max_len, eos_id, pad_id,
        top_k,
    )  # fmt: skip


@functools.partial(
    jax.jit, static_argnames=("step_fn", "beam_width", "max_len", "eos_id", "pad_id")
)
def _beam(step_fn, params, state, start_ids, alpha, beam_width, max_len, eos_id, pad_id):
    B, k = start_ids.shape[0], beam_width
    # Every beam of example b lives at row b * k + j of the flattened state.
    axes = _batch_axes(state)
    state = jax.tree_util.tree_map(lambda x, ax: jnp.repeat(x, k, axis=ax), state, axes)
    y_prev = jnp.repeat(start_ids.astype(jnp.int32), k)
    # Only beam 0 is alive at first, so the first step expands one hypothesis, not k copies.
    log_probs = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)[None, :] + jnp.zeros((B, 1))
    n_gen = jnp.zeros((B, k), jnp.int32)  # generated tokens, <EOS> included
    done = jnp.zeros((B, k), bool)
    tokens = jnp.full((B, k, max_len), pad_id, jnp.int32)

    def cond(carry):
        t, *_, done = carry
        return (t < max_len) & ~jnp.all(done)

    def body(carry):
        t, state, y_prev, tokens, log_probs, n_gen, done = carry
        state, logits = step_fn(params, state, y_prev)
        V = logits.shape[-1]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(B, k, V)
        # A finished hypothesis has one continuation, <PAD>, that keeps its log-probability.
        keep_row = jnp.where(jnp.arange(V) == pad_id, 0.0, -jnp.inf)[None, None, :]
        cand = log_probs[:, :, None] + jnp.where(done[:, :, None], keep_row, logp)  # (B, k, V)
        cand_n = jnp.where(done, n_gen, n_gen + 1)  # (B, k)
        norm = jnp.power(jnp.maximum(cand_n, 1).astype(jnp.float32), alpha)[:, :, None]
        rank = (cand / norm).reshape(B, k * V)
        _, idx = jax.lax.top_k(rank, k)  # (B, k)
        origin, y = idx // V, (idx % V).astype(jnp.int32)
        log_probs = jnp.take_along_axis(cand.reshape(B, k * V), idx, axis=1)
        was_done = jnp.take_along_axis(done, origin, axis=1)
        n_gen = jnp.take_along_axis(cand_n, origin, axis=1)
        is_eos = jnp.zeros_like(was_done) if eos_id is None else (y == eos_id)
        done = was_done | is_eos
        tokens = jnp.take_along_axis(tokens, origin[:, :, None], axis=1)
        tokens = tokens.at[:, :, t].set(y)
        rows = (jnp.arange(B)[:, None] * k + origin).reshape(B * k)
        state = jax.tree_util.tree_map(lambda x, ax: jnp.take(x, rows, axis=ax), state, axes)
        return t + 1, state, y.reshape(B * k), tokens, log_probs, n_gen, done

    carry = (jnp.int32(0), state, y_prev, tokens, log_probs, n_gen, done)
    _, _, _, tokens, log_probs, n_gen, done = jax.lax.while_loop(cond, body, carry)
    scores = log_probs / jnp.power(jnp.maximum(n_gen, 1).astype(jnp.float32), alpha)
    order = jnp.argsort(-scores, axis=1, stable=True)
    take = functools.partial(jnp.take_along_axis, indices=order, axis=1)
    tokens = jnp.take_along_axis(tokens, order[:, :, None], axis=1)
    lengths = take(n_gen - done.astype(jnp.int32))
    return BeamSearchResult(tokens, lengths, take(log_probs), take(scores))


def beam_search(
    step_fn: StepFn,
    params: Any,
    state: Any,
    start_ids: Int[ArrayLike, " B"],
    *,
    beam_width: int,
    max_len: int,
    eos_id: int | None,
    alpha: float | Float[Array, ""] = 0.0,
    pad_id: int = 0,
) -> BeamSearchResult:
    """Beam search with length normalisation, jitted, fixed shapes ``(B, k, max_len)``.

    At every step each of the ``k`` hypotheses of an example is extended by every token;
    the ``k`` best of the ``k · V`` candidates by ``log p(y<1..n>) / n^alpha`` survive
    (``n`` = tokens generated, ``<EOS>`` included). A hypothesis that emitted ``<EOS>`` is
    finished: it stays in the beam with its score, competing with the live ones, and
    extends only by ``pad_id``. The loop stops when all hypotheses are finished or after
    ``max_len`` steps (unfinished ones are then scored as they stand).

    ``alpha = 0`` ranks by total log-probability (favours short outputs); ``alpha = 1`` by
    the per-token mean. With ``beam_width=1`` this is exactly :func:`greedy_decode`. With a
    beam as wide as the number of hypotheses (``Σ_t (V-1)^t``) nothing is ever pruned and
    the result is the exact best sequence.

    Args:
        step_fn, params, state, start_ids, max_len, eos_id, pad_id: as :func:`greedy_decode`.
        beam_width: ``k >= 1``.
        alpha: length-normalisation exponent ``>= 0``.

    Returns:
        :class:`BeamSearchResult`, hypotheses sorted best first.
    """
    start_ids = _check_start(start_ids, params)
    _check_state(state, start_ids.shape[0])
    max_len = positive_int("max_len", max_len, minimum=1)
    beam_width = positive_int("beam_width", beam_width, minimum=1)
    if not isinstance(alpha, jax.core.Tracer) and not float(alpha) >= 0.0:
        raise ValueError(f"`alpha` must be >= 0, got {alpha!r}.")
    return _beam(
        step_fn, params, state, start_ids, jnp.float32(alpha), beam_width, max_len, eos_id,
        pad_id,
    )  # fmt: skip


# --------------------------------------------------------------------------- language model


def lm_step(
    params: RNNParams, state: LMState, y_prev: Int[Array, " B"]
) -> tuple[LMState, Float[Array, "B V"]]:
    """One step of a uni-directional token-input :class:`~rnn_jax.RNNParams` language model.

    ``state.a[l]`` is ``a_l<t-1>``: :func:`rnn_jax.stack.stack_step` (each layer
    :func:`~rnn_jax.rnn_cell`, or the GRU/LSTM step, ``vmap`` over the batch), then the
    head gives the logits of the next token. An LSTM carries ``(state.a, state.c)``.
    """
    if params.bidirectional:
        raise ValueError(
            "`params` must be a uni-directional RNN to generate left to right, got a "
            "bidirectional one."
        )
    shape = (params.num_layers, jnp.shape(y_prev)[0], params.hidden_size)
    check_step_state(
        state,
        LMState,
        shape,
        params.cell,
        article="an",
        layout="(L, B, H)",
        origin="lm_initial_state",
    )
    lstm = params.cell == "lstm"
    step = jax.vmap(functools.partial(stack_step, params.stack), in_axes=(1, 0), out_axes=(1, 0))
    carry, y = step((state.a, state.c) if lstm else state.a, y_prev)
    new = LMState(*carry) if lstm else LMState(carry)
    return new, head_apply(params.head, y)


def lm_initial_state(
    params: RNNParams,
    seed: Int[ArrayLike, "B S"],
    seed_lengths: Int[ArrayLike, " B"],
    *,
    bos_id: int,
) -> tuple[LMState, Int[Array, " B"]]:
    """Prime a language model on a seed: the state and first input for generation.

    The model is assumed trained on ``[<BOS>, x<1>, ..., x<n>]`` → ``[x<1>, ..., <EOS>]``.
    The state is that after reading ``<BOS>, seed<1..n-1>`` and the first input is
    ``seed<n>``, so generation continues the seed. A seed of length 0 means "from nothing":
    zero state, first input ``<BOS>``.

    Args:
        params: a uni-directional token-input :class:`~rnn_jax.RNNParams`.
        seed: ``(B, S)`` ids, padded.
        seed_lengths: ``(B,)`` in ``[0, S]``.
        bos_id: the ``<BOS>`` id.

    Returns:
        ``(state, start_ids (B,))``: an :class:`LMState` (``a`` of shape ``(L, B, H)``) for :func:`greedy_decode`, :func:`sample`,
        :func:`beam_search` with :func:`lm_step`.
    """
    check_params(params)
    if params.bidirectional or not params.token_inputs:
        raise ValueError(
            "`params` must be a uni-directional RNN with token inputs (init_rnn(..., "
            "token_inputs=True)) to be used as a language model."
        )
    seed = jnp.asarray(seed)
    if seed.ndim != 2 or not jnp.issubdtype(seed.dtype, jnp.integer):
        raise ValueError(
            f"`seed` must be integer ids of shape (B, S), got shape {tuple(seed.shape)} "
            f"and dtype {seed.dtype}."
        )
    B, S = seed.shape
    seed_lengths = check_lengths(seed_lengths, B, S, name="seed_lengths")
    prefix = jnp.concatenate([jnp.full((B, 1), bos_id, seed.dtype), seed], axis=1)  # (B, S+1)
    lstm = params.cell == "lstm"
    # (L, B, H) after prefix[:n] (and the LSTM's cell states)
    _, finals = rnn_layers(params, prefix, seed_lengths, return_cell_state=lstm)
    start_ids = jnp.take_along_axis(prefix, seed_lengths[:, None], axis=1)[:, 0]
    state = LMState(*finals) if lstm else LMState(finals)
    return state, start_ids.astype(jnp.int32)
