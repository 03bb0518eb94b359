"""Padding, masks and length-bucketed mini-batches of variable-length sequences (host side).

A batch of ``B`` sequences of lengths ``T_x^(i)`` is stored as one ``(B, T[, ...])`` array padded
to a common ``T`` plus the ``(B,)`` lengths; the network ignores (and emits zero at) the steps
``t >= lengths[i]``. Everything here is NumPy on the host and deterministic given the explicit
JAX ``key``.

Recompilation: ``jit`` compiles once per distinct input shape. :func:`iterate_batches` therefore
rounds ``T`` up to a multiple of ``pad_to_multiple`` (8 by default), so an epoch produces at most
``ceil(max_len / 8)`` distinct time lengths; with ``drop_last=True`` every batch also has the same
``B``.

Example:
  >>> import jax
  >>> ids = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
  >>> tags = [[1, 2, 1], [3], [1, 1], [2, 2, 2, 2]]
  >>> batches = list(iterate_batches(ids, tags, batch_size=2, key=jax.random.key(0),
  ...                                pad_values=(0, -1), pad_to_multiple=4))
  >>> len(batches)
  2
  >>> xs, ys = batches[0].fields
  >>> xs.shape, ys.shape, batches[0].lengths.shape
  ((2, 4), (2, 4), (2,))
  >>> sorted(int(i) for b in batches for i in b.indices)
  [0, 1, 2, 3]
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Bool, Int

from rnn_jax._checks import lengths_to_mask

#: One variable-length sequence as the batching functions take it: an array or a plain
#: Python list/tuple of token ids (or of feature vectors).
SequenceLike = ArrayLike | Sequence[Any]
#: Integer lengths: an array or a Python list/tuple of ints.
LengthsLike = Int[ArrayLike, " N"] | Sequence[int]

__all__ = [
    "Batch",
    "bucket_batches",
    "iterate_batches",
    "lengths_to_mask",
    "mask_to_lengths",
    "num_batches",
    "pad_batch",
    "padding_fraction",
]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return int(value)


def _round_up(n: int, multiple: int | None) -> int:
    return n if multiple is None else -(-n // multiple) * multiple


def _lengths_array(lengths: LengthsLike, name: str = "lengths") -> np.ndarray:
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (N,), got shape {arr.shape}.")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`{name}` must have an integer dtype, got {arr.dtype}.")
    if arr.min() < 0:
        raise ValueError(f"`{name}` must be >= 0, got minimum {int(arr.min())}.")
    return arr.astype(np.int64)


def _numpy_rng(key: Any) -> np.random.Generator:
    """A NumPy generator seeded from the bits of a JAX PRNG key (typed or legacy uint32[2])."""
    if not isinstance(key, jax.Array):
        raise ValueError(f"`key` must be a JAX PRNG key, got {type(key).__name__}.")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"`key` must be a single key of shape (), got shape {key.shape}.")
        data = jax.random.key_data(key)
    elif key.dtype == jnp.uint32 and key.shape == (2,):
        data = key
    else:
        raise ValueError(
            f"`key` must be a JAX PRNG key (jax.random.key), got dtype {key.dtype}, shape {key.shape}."
        )
    return np.random.default_rng(np.asarray(data, dtype=np.uint32).ravel().tolist())


# --------------------------------------------------------------------------- padding
def _sequence_array(seq: Any, i: int) -> np.ndarray:
    """``sequences[i]`` as a numeric NumPy array, or a ``ValueError`` naming it."""
    try:
        a = np.asarray(seq)
    except ValueError as e:  # NumPy: "inhomogeneous shape after 1 dimensions"
        raise ValueError(
            f"`sequences[{i}]` must be a rectangular array (T_i, *F): its steps have different "
            f"shapes (ragged nesting), e.g. {_preview(seq)}."
        ) from e
    if a.dtype == object:
        raise ValueError(
            f"`sequences[{i}]` must be a rectangular array (T_i, *F) of numbers, got ragged or "
            f"mixed contents, e.g. {_preview(seq)}."
        )
    if a.size and not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.number)):
        raise ValueError(
            f"`sequences[{i}]` must hold numbers (ids or features), got dtype {a.dtype} "
            f"(encode tokens to ids first, e.g. with Vocabulary.encode)."
        )
    return a


def _preview(seq: Any, limit: int = 60) -> str:
    text = repr(seq)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_fits(values: np.ndarray, dtype: np.dtype, name: str) -> None:
    """``ValueError`` when casting ``values`` to ``dtype`` would change one (no silent casts).

    Into an integer dtype: every value must be a finite integer in the dtype's range (so
    ``2**40`` does not wrap into ``int32`` and a pad value of ``0.5`` or NaN is not truncated;
    an integral float such as ``-1.0`` is fine). Into a float dtype: finite values must not
    overflow to ``inf``.
    """
    numeric = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    if not values.size or not numeric or np.can_cast(values.dtype, dtype, "safe"):
        return
    flat = values.reshape(-1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        ok = (flat >= info.min) & (flat <= info.max)
        if np.issubdtype(flat.dtype, np.floating):
            ok &= np.isfinite(flat) & (flat == np.round(flat))
        expected = f"integers in [{info.min}, {info.max}]"
        fix = "an integer value in range, or a wider or float `dtype=` (int64 needs jax x64)"
    elif np.issubdtype(dtype, np.floating):
        ok = ~np.isfinite(flat) | (np.abs(flat) <= np.finfo(dtype).max)
        expected = f"finite values up to {np.finfo(dtype).max:g} in magnitude"
        fix = "dtype=np.float64, or rescale the data"
    else:
        return
    if ok.all():
        return
    k = int(np.argmin(ok))
    value = flat[k].item()
    if values.ndim:
        index = "".join(f"[{int(j)}]" for j in np.unravel_index(k, values.shape))
        what = f"{name[:-1]}{index}` = {value!r}"
    else:
        what = f"{name} = {value!r}"
    raise ValueError(f"{what} does not fit the {dtype} padded array ({expected}); pass {fix}.")


def pad_batch(
    sequences: Sequence[SequenceLike],
    *,
    pad_value: float | int = 0,
    max_len: int | None = None,
    pad_to_multiple: int | None = None,
    dtype: Any = None,
) -> tuple[np.ndarray, Int[np.ndarray, " B"]]:
    """Stacks variable-length sequences into one padded array.

    Sequence ``i`` (shape ``(T_i, *F)``, the same trailing feature dims ``F`` for all) fills
    ``padded[i, :T_i]``; the rest is ``pad_value``. ``T`` is the longest ``T_i``, rounded up to
    a multiple of ``pad_to_multiple`` when given. With ``max_len``, ``T = max_len`` exactly and
    longer sequences are truncated to their first ``max_len`` steps (their reported length is
    then ``max_len``).

    Args:
      sequences: ``B >= 1`` sequences: lists of ids, arrays ``(T_i,)`` or ``(T_i, *F)``.
        An empty sequence (length 0) is allowed.
      pad_value: the fill value.
      max_len: fixed output length (truncating); excludes ``pad_to_multiple``.
      pad_to_multiple: round ``T`` up to a multiple of this, to limit ``jit`` recompiles.
      dtype: output dtype; by default ``int32`` for integer (or bool) inputs, ``float32``
        for floating inputs, otherwise the inputs' common dtype.

    Returns:
      ``(padded (B, T, *F), lengths (B,) int32)``.

    Raises:
      ValueError: a value or ``pad_value`` that the output dtype cannot hold exactly (an id
        beyond ``int32`` such as ``2**40``, a pad value ``0.5`` or NaN into integer sequences,
        a float beyond ``float32``): nothing is wrapped or truncated silently, and the message
        names the value and ``sequences[i]``; ragged nesting (``sequences[i]`` whose steps
        differ in shape), non-numeric contents, or sequences whose feature shapes differ.

    Example:
      >>> padded, lengths = pad_batch([[1, 2, 3], [4]], pad_value=0)
      >>> padded
      array([[1, 2, 3],
             [4, 0, 0]], dtype=int32)
      >>> lengths
      array([3, 1], dtype=int32)
      >>> pad_batch([[1, 2, 3], [4]], max_len=2)[0]
      array([[1, 2],
             [4, 0]], dtype=int32)
    """
    if isinstance(sequences, np.ndarray | jax.Array) and sequences.ndim < 1:
        raise ValueError(
            f"`sequences` must be a sequence of sequences, got shape {sequences.shape}."
        )
    arrays = [_sequence_array(s, i) for i, s in enumerate(sequences)]
    if not arrays:
        raise ValueError("`sequences` must hold at least one sequence, got 0.")
    if max_len is not None:
        if isinstance(max_len, bool) or not isinstance(max_len, int | np.integer) or max_len < 0:
            raise ValueError(f"`max_len` must be a non-negative int, got {max_len!r}.")
        if pad_to_multiple is not None:
            raise ValueError("`max_len` and `pad_to_multiple` are exclusive, got both.")
    if pad_to_multiple is not None:
        pad_to_multiple = _positive_int(pad_to_multiple, "pad_to_multiple")
    for i, a in enumerate(arrays):
        if a.ndim == 0:
            raise ValueError(f"`sequences[{i}]` must have a time axis, got a scalar.")
    nonempty = [a for a in arrays if a.size or a.ndim > 1]
    feature_shape = nonempty[0].shape[1:] if nonempty else ()
    for i, a in enumerate(arrays):
        if a.shape[0] == 0 and a.size == 0:
            arrays[i] = a = a.reshape((0, *feature_shape))
        if a.shape[1:] != feature_shape:
            raise ValueError(
                f"`sequences[{i}]` must have trailing feature shape {feature_shape} "
                f"(like the first non-empty sequence), got {a.shape[1:]}."
            )
    if dtype is None:
        common = np.result_type(*nonempty) if nonempty else np.dtype(np.int32)
        if np.issubdtype(common, np.integer) or common == np.bool_:
            dtype = np.int32
        elif np.issubdtype(common, np.floating):
            dtype = np.float32
        else:
            dtype = common
    dtype = np.dtype(dtype)
    for i, a in enumerate(arrays):
        _check_fits(a, dtype, f"`sequences[{i}]`")
    _check_fits(np.asarray(pad_value), dtype, "`pad_value`")
    lengths = np.asarray([a.shape[0] for a in arrays], dtype=np.int32)
    if max_len is not None:
        lengths = np.minimum(lengths, max_len).astype(np.int32)
        T = int(max_len)
    else:
        T = _round_up(int(lengths.max()), pad_to_multiple)
    padded = np.full((len(arrays), T, *feature_shape), pad_value, dtype=dtype)
    for i, (a, n) in enumerate(zip(arrays, lengths, strict=True)):
        padded[i, :n] = a[:n]
    return padded, lengths


def mask_to_lengths(
    mask: Bool[ArrayLike, "B T"] | Sequence[Sequence[bool]],
) -> Int[np.ndarray, " B"]:
    """Inverse of :func:`lengths_to_mask`: the ``(B,)`` int32 lengths of a prefix mask.

    Raises:
      ValueError: ``mask`` is not 2-D boolean, or a row is not a prefix mask (``True`` then
        ``False``); the message names the first offending row.

    Example:
      >>> mask_to_lengths([[True, True, False], [False, False, False]])
      array([2, 0], dtype=int32)
    """
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.dtype != np.bool_:
        raise ValueError(f"`mask` must be a 2-D bool array (B, T), got {arr.dtype}{arr.shape}.")
    lengths = arr.sum(axis=1).astype(np.int32)
    bad = np.nonzero((lengths_to_mask(lengths, arr.shape[1]) != arr).any(axis=1))[0]
    if bad.size:
        raise ValueError(
            f"`mask` must be a prefix mask (True then False in each row), "
            f"row {int(bad[0])} is {arr[bad[0]].astype(int).tolist()}."
        )
    return lengths


def padding_fraction(lengths_batch: LengthsLike, *, T: int | None = None) -> float:
    """The fraction of the ``(B, T)`` cells of a padded batch that are padding.

    ``1 - sum(lengths) / (B * T)``, with ``T = max(lengths)`` by default; 0 for an all-empty batch.

    Example:
      >>> padding_fraction([4, 2, 2])
      0.3333333333333333
    """
    lengths = _lengths_array(lengths_batch, "lengths_batch")
    if lengths.size == 0:
        raise ValueError("`lengths_batch` must hold at least one length, got 0.")
    T = int(lengths.max()) if T is None else T
    if T < int(lengths.max()):
        raise ValueError(f"`T` must be >= max(lengths_batch) = {int(lengths.max())}, got {T}.")
    if T == 0:
        return 0.0
    cells = lengths.size * T
    return float(cells - lengths.sum()) / cells


# --------------------------------------------------------------------------- batching


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches an epoch of ``n`` examples gives (``start`` must be at most this)."""
    batch_size = _positive_int(batch_size, "batch_size")
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def bucket_batches(
    lengths: LengthsLike,
    batch_size: int,
    *,
    key: Any,
    bucket_width: int | None = None,
    num_buckets: int | None = None,
    drop_last: bool = False,
) -> list[Int[np.ndarray, " b"]]:
    """Groups examples of similar length into batches, in a random order derived from ``key``.

    Each example falls into a length bucket: ``ceil(length / bucket_width)`` (so a bucket spans
    ``bucket_width`` lengths), or, with ``num_buckets``, one of that many equal-count quantile
    buckets; with neither, every distinct length is its own bucket (``bucket_width=1``). The
    examples are shuffled, stably sorted by bucket (shortest first, random within a bucket),
    cut into consecutive batches of ``batch_size``, and the batches are shuffled. Only one batch
    can be short; it is cut where it minimises the padding. With ``bucket_width=1`` the total
    padding is the minimum over all batchings into batches of ``batch_size``.

    With ``drop_last``, ``N mod batch_size`` uniformly chosen examples are left out of the epoch
    (not systematically the longest ones), so every batch is full.

    Args:
      lengths: ``(N,)`` non-negative example lengths.
      batch_size: examples per batch.
      key: JAX PRNG key; the same key gives the same batches.
      bucket_width: lengths per bucket; excludes ``num_buckets``.
      num_buckets: number of quantile buckets; excludes ``bucket_width``.
      drop_last: drop examples so that every batch has exactly ``batch_size``.

    Returns:
      A list of ``int64`` index arrays; without ``drop_last`` every index in ``[0, N)``
      appears in exactly one batch.

    Example:
      >>> import jax
      >>> batches = bucket_batches([5, 1, 5, 1], 2, key=jax.random.key(0))
      >>> sorted(sorted(b.tolist()) for b in batches)
      [[0, 2], [1, 3]]
    """
    lens = _lengths_array(lengths)
    batch_size = _positive_int(batch_size, "batch_size")
    if bucket_width is not None and num_buckets is not None:
        raise ValueError("`bucket_width` and `num_buckets` are exclusive, got both.")
    rng = _numpy_rng(key)
    n = lens.size
    if num_buckets is not None:
        num_buckets = _positive_int(num_buckets, "num_buckets")
        edges = np.quantile(lens, np.linspace(0.0, 1.0, num_buckets + 1)[1:-1]) if n else []
        bucket = np.searchsorted(np.asarray(edges), lens, side="left")
    else:
        width = 1 if bucket_width is None else _positive_int(bucket_width, "bucket_width")
        bucket = -(-lens // width)
    keep = np.arange(n)
    if drop_last and n % batch_size:
        keep = np.sort(rng.permutation(n)[: n - n % batch_size])
    perm = keep[rng.permutation(keep.size)]
    order = perm[np.argsort(bucket[perm], kind="stable")]
    batches = _cut_sorted(order, lens, batch_size)
    return [batches[j] for j in rng.permutation(len(batches))]


def _cut_sorted(order: np.ndarray, lens: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Cuts a (roughly) length-sorted ``order`` into consecutive batches of ``batch_size``.

    The one short batch (``r = n mod batch_size`` examples, if any) is placed at the position
    along ``order`` that minimises the total padded cells ``sum_b |b| * max(lens[b])``. For an
    exactly sorted order this is the minimum over *all* batchings: swapping a shorter example
    of a batch with a larger maximum for a longer one of a batch with a smaller maximum never
    adds padding, so some optimal batching is contiguous in sorted order, and contiguous
    batchings differ only in where the short batch sits.
    """
    n = order.size
    q, r = divmod(n, batch_size)
    if r == 0 or q == 0:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    L = lens[order]
    starts = np.arange(0, q * batch_size, batch_size)
    head = np.maximum.reduceat(L[: q * batch_size], starts)  # full batches before the short one
    tail = np.maximum.reduceat(L[r:], starts)  # full batches after it (shifted by r)
    short = np.array([L[j * batch_size : j * batch_size + r].max() for j in range(q + 1)])
    before = np.concatenate([[0], np.cumsum(head)])  # before[j] = sum(head[:j])
    after = np.concatenate([np.cumsum(tail[::-1])[::-1], [0]])  # after[j] = sum(tail[j:])
    j = int(np.argmin(batch_size * (before + after) + r * short))
    cuts = [
        *range(0, j * batch_size + 1, batch_size),
        *range(j * batch_size + r, n + 1, batch_size),
    ]
    return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


class Batch(NamedTuple):
    """One padded mini-batch.

    Attributes:
      fields: one ``(B, T, ...)`` padded array per sequence field, in the order given.
      lengths: ``(B,)`` int32 true lengths.
      extras: one ``(B, ...)`` array per per-example (non-sequence) field, e.g. class labels.
      indices: ``(B,)`` dataset indices of the examples.
    """

    fields: tuple[np.ndarray, ...]
    lengths: Int[np.ndarray, " B"]
    extras: tuple[np.ndarray, ...]
    indices: Int[np.ndarray, " B"]


def iterate_batches(
    *fields: Sequence[SequenceLike],
    batch_size: int,
    key: Any,
    pad_values: float | int | Sequence[float | int] = 0,
    extras: Sequence[SequenceLike] = (),
    shuffle: bool = True,
    bucket: bool = True,
    drop_last: bool = False,
    start: int = 0,
    pad_to_multiple: int | None = 8,
    max_len: int | None = None,
    bucket_width: int | None = None,
    num_buckets: int | None = None,
) -> Iterator[Batch]:
    """Yields the padded mini-batches of one epoch, deterministically given ``key``.

    The ``fields`` are per-example sequences padded together, e.g. input ids and, for tagging,
    labels (padded with a pad label via ``pad_values=(vocab.pad_id, -1)``); example ``i`` must
    have the same length in every field. ``extras`` are per-example values gathered as they
    are (e.g. ``(N,)`` class labels).

    Order: with ``shuffle`` and ``bucket``, :func:`bucket_batches`; with ``shuffle`` only, a
    random permutation cut into batches; without ``shuffle`` (``key`` may then be ``None``),
    dataset order, or with ``bucket`` ascending length order (a cheap evaluation pass).

    Shapes: ``T`` is the batch's longest length rounded up to ``pad_to_multiple`` (at most
    ``max_len``; longer sequences are truncated to ``max_len``), so few distinct shapes reach
    ``jit``.

    Resuming: the epoch's batch plan depends only on ``key`` and the lengths, so a run that
    stopped after batch ``k`` (checkpointing the epoch key and ``k + 1``) resumes with the same
    key and ``start=k + 1`` and gets exactly the remaining batches.

    Args:
      *fields: one or more sequence fields, each ``N`` sequences ``(T_i, ...)``.
      batch_size: examples per batch.
      key: JAX PRNG key for this epoch (split it per epoch); required when ``shuffle``.
      pad_values: one pad value for all fields or one per field.
      extras: per-example fields of length ``N``, gathered without padding.
      shuffle: randomise the batches.
      bucket: group examples of similar length.
      drop_last: only full batches.
      start: index of the first batch to yield (resume mid-epoch); in
        ``[0, num_batches(N, batch_size, drop_last=drop_last)]``.
      pad_to_multiple: round ``T`` up to a multiple of this (``None``: exact batch maximum).
      max_len: truncate sequences to this many steps.
      bucket_width, num_buckets: see :func:`bucket_batches`.

    Returns:
      An iterator of :class:`Batch` ``(fields, lengths, extras, indices)``. The arguments are
      validated when this is called, not at the first ``next``; the *values* of the sequences
      (and whether ``pad_values`` fit their dtype, see :func:`pad_batch`) are checked as each
      batch is padded, with messages naming the example as ``fields[k][i]`` (``i`` its index
      in the data set).
    """
    if not fields:
        raise ValueError("`fields` must hold at least one sequence field, got none.")
    n = len(fields[0])
    lengths = np.asarray([len(s) for s in fields[0]], dtype=np.int64)
    for k, f in enumerate(fields[1:], start=1):
        if len(f) != n:
            raise ValueError(
                f"`fields[{k}]` must have N = {n} examples like `fields[0]`, got {len(f)}."
            )
        lens_k = np.asarray([len(s) for s in f], dtype=np.int64)
        if (bad := np.nonzero(lens_k != lengths)[0]).size:
            i = int(bad[0])
            raise ValueError(
                f"`fields[{k}][{i}]` must have the length of `fields[0][{i}]` = {lengths[i]}, "
                f"got {lens_k[i]}."
            )
    extras = [np.asarray(e) for e in extras]
    for k, e in enumerate(extras):
        if e.ndim == 0 or e.shape[0] != n:
            raise ValueError(
                f"`extras[{k}]` must have leading dimension N = {n}, got shape {e.shape}."
            )
    if isinstance(pad_values, int | float | np.number):
        pads = [pad_values] * len(fields)
    else:
        pads = list(pad_values)
        if len(pads) != len(fields):
            raise ValueError(
                f"`pad_values` must be a scalar or one value per field ({len(fields)}), got {len(pads)}."
            )
    batch_size = _positive_int(batch_size, "batch_size")
    if pad_to_multiple is not None:
        pad_to_multiple = _positive_int(pad_to_multiple, "pad_to_multiple")
    if max_len is not None:
        max_len = _positive_int(max_len, "max_len")
    total = num_batches(n, batch_size, drop_last=drop_last)
    if (
        isinstance(start, bool)
        or not isinstance(start, int | np.integer)
        or not 0 <= start <= total
    ):
        raise ValueError(
            f"`start` must be an int in [0, {total}] (batches this epoch), got {start!r}."
        )

    if shuffle and bucket:
        plan = bucket_batches(
            lengths,
            batch_size,
            key=key,
            bucket_width=bucket_width,
            num_buckets=num_buckets,
            drop_last=drop_last,
        )
    else:
        if bucket:  # not shuffled: ascending length
            plan = _cut_sorted(np.argsort(lengths, kind="stable"), lengths, batch_size)
        else:
            order = _numpy_rng(key).permutation(n) if shuffle else np.arange(n)
            plan = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        if drop_last:
            plan = [b for b in plan if len(b) == batch_size]

    return _generate(fields, pads, extras, lengths, plan[start:], pad_to_multiple, max_len)


def _generate(fields, pads, extras, lengths, plan, pad_to_multiple, max_len) -> Iterator[Batch]:
    for idx in plan:
        longest = int(lengths[idx].max())
        if max_len is not None:
            longest = min(longest, max_len)
        T = _round_up(longest, pad_to_multiple)
        if max_len is not None:
            T = min(T, max_len)
        padded = []
        for k, (f, pad) in enumerate(zip(fields, pads, strict=True)):
            try:
                arr, lens = pad_batch([f[int(i)] for i in idx], pad_value=pad, max_len=T)
            except ValueError as e:  # name the example by its dataset index, not batch position
                raise ValueError(_in_dataset_terms(str(e), k, idx, len(fields))) from e
            padded.append(arr)
        yield Batch(
            fields=tuple(padded),
            lengths=lens,
            extras=tuple(e[idx] for e in extras),
            indices=idx,
        )


def _in_dataset_terms(message: str, k: int, idx: np.ndarray, num_fields: int) -> str:
    """A :func:`pad_batch` message with ``sequences[j]`` as ``fields[k][idx[j]]``."""
    message = re.sub(
        r"`sequences\[(\d+)\]", lambda m: f"`fields[{k}][{int(idx[int(m[1])])}]", message
    )
    return message.replace(
        "`pad_value`", f"`pad_values[{k}]`" if num_fields > 1 else "`pad_values`"
    )
