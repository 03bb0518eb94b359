"""Tests for rnn_jax.batching: padding, masks, bucketing, epoch iteration and resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_jax.batching import (
    Batch,
    bucket_batches,
    iterate_batches,
    lengths_to_mask,
    mask_to_lengths,
    num_batches,
    pad_batch,
    padding_fraction,
)

LENGTHS = st.lists(st.integers(0, 40), min_size=1, max_size=60)
SEEDS = st.integers(0, 2**32 - 1)


def padded_cells(lengths, batches):
    """Total (B * T) cells of the batches, T = each batch's longest length."""
    lengths = np.asarray(lengths)
    return sum(len(b) * int(lengths[b].max()) for b in batches)


def random_batches(n, batch_size, seed):
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


# --------------------------------------------------------------------------- pad_batch


def test_pad_batch_ids():
    padded, lengths = pad_batch([[1, 2, 3], [4], []], pad_value=-1)
    np.testing.assert_array_equal(padded, [[1, 2, 3], [4, -1, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(lengths, [3, 1, 0])
    assert padded.dtype == np.int32 and lengths.dtype == np.int32


def test_pad_batch_float_features_matches_loop():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(T, 3)) for T in (2, 5, 0, 4)]
    padded, lengths = pad_batch(seqs, pad_value=0.5)
    assert padded.shape == (4, 5, 3) and padded.dtype == np.float32
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(padded[i, : len(s)], s, rtol=1e-6)
        assert (padded[i, len(s) :] == 0.5).all()
    np.testing.assert_array_equal(lengths, [2, 5, 0, 4])


def test_pad_batch_max_len_truncates_and_pads():
    padded, lengths = pad_batch([[1, 2, 3, 4, 5], [6]], max_len=3)
    np.testing.assert_array_equal(padded, [[1, 2, 3], [6, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 1])
    padded, lengths = pad_batch([[1], [2, 3]], max_len=4)
    assert padded.shape == (2, 4)


def test_pad_batch_pad_to_multiple_and_dtype():
    padded, _ = pad_batch([[1] * 9, [2]], pad_to_multiple=8)
    assert padded.shape == (2, 16)
    padded, _ = pad_batch([[1] * 8], pad_to_multiple=8, dtype=np.int64)
    assert padded.shape == (1, 8) and padded.dtype == np.int64
    padded, _ = pad_batch([np.ones((2, 2), np.float64)])
    assert padded.dtype == np.float32


def test_pad_batch_errors():
    with pytest.raises(ValueError, match=r"`sequences` must hold at least one sequence, got 0"):
        pad_batch([])
    with pytest.raises(
        ValueError, match=r"`sequences\[1\]` must have trailing feature shape \(3,\) .* got \(2,\)"
    ):
        pad_batch([np.ones((2, 3)), np.ones((2, 2))])
    with pytest.raises(ValueError, match=r"`max_len` and `pad_to_multiple` are exclusive"):
        pad_batch([[1]], max_len=2, pad_to_multiple=8)
    with pytest.raises(ValueError, match=r"`pad_to_multiple` must be a positive int, got 0"):
        pad_batch([[1]], pad_to_multiple=0)
    with pytest.raises(ValueError, match=r"`sequences\[0\]` must have a time axis, got a scalar"):
        pad_batch([3, [1]])


# --------------------------------------------------------------------------- masks


def test_lengths_to_mask_matches_loop():
    lengths = np.array([3, 0, 5, 1])
    mask = lengths_to_mask(lengths, 5)
    expected = np.array([[t < n for t in range(5)] for n in lengths])
    np.testing.assert_array_equal(mask, expected)
    assert isinstance(mask, np.ndarray) and mask.dtype == np.bool_


def test_lengths_to_mask_jax_and_jit():
    lengths = jnp.array([2, 0, 3])
    mask = jax.jit(lengths_to_mask, static_argnums=1)(lengths, 4)
    assert isinstance(mask, jax.Array)
    np.testing.assert_array_equal(np.asarray(mask), lengths_to_mask(np.asarray(lengths), 4))


def test_mask_errors():
    with pytest.raises(
        ValueError, match=r"`lengths` must lie in \[0, T\] = \[0, 2\], got values in \[1, 3\]"
    ):
        lengths_to_mask([1, 3], 2)
    with pytest.raises(ValueError, match=r"`lengths` must be integers, got dtype float64\."):
        lengths_to_mask([1.0], 2)
    with pytest.raises(ValueError, match=r"`lengths` must have shape \(B,\), got \(1, 1\)\."):
        lengths_to_mask([[1]], 2)
    with pytest.raises(ValueError, match=r"`T` must be an int >= 0, got -1\."):
        lengths_to_mask([0], -1)
    with pytest.raises(ValueError, match=r"`mask` must be a prefix mask .* row 1 is \[1, 0, 1\]"):
        mask_to_lengths(np.array([[True, False, False], [True, False, True]]))
    with pytest.raises(
        ValueError, match=r"`mask` must be a 2-D bool array \(B, T\), got int64\(2,\)"
    ):
        mask_to_lengths(np.array([1, 0]))


@given(
    st.integers(0, 12).flatmap(
        lambda T: st.tuples(st.just(T), st.lists(st.integers(0, T), max_size=8))
    )
)
@settings(max_examples=60, deadline=None)
def test_mask_lengths_round_trip(T_and_lengths):
    T, lengths = T_and_lengths
    lengths = np.asarray(lengths, dtype=np.int32)
    mask = lengths_to_mask(lengths, T)
    assert mask.shape == (len(lengths), T)
    np.testing.assert_array_equal(mask_to_lengths(mask), lengths)


def test_padding_fraction():
    assert padding_fraction([4, 4]) == 0.0
    assert padding_fraction([4, 2]) == 0.25
    assert padding_fraction([2, 2], T=8) == 0.75
    assert padding_fraction([0, 0]) == 0.0
    with pytest.raises(ValueError, match=r"`T` must be >= max\(lengths_batch\) = 4, got 3"):
        padding_fraction([4], T=3)


# --------------------------------------------------------------------------- bucket_batches


@given(LENGTHS, st.integers(1, 9), SEEDS, st.sampled_from([None, 1, 4]))
@settings(max_examples=60, deadline=None)
def test_bucket_batches_cover_every_index_once(lengths, batch_size, seed, width):
    batches = bucket_batches(lengths, batch_size, key=jax.random.key(seed), bucket_width=width)
    everything = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(lengths)))
    assert len(batches) == num_batches(len(lengths), batch_size)
    assert sum(len(b) < batch_size for b in batches) <= 1


@given(LENGTHS, st.integers(1, 9), SEEDS)
@settings(max_examples=60, deadline=None)
def test_bucket_batches_drop_last(lengths, batch_size, seed):
    batches = bucket_batches(
        lengths, batch_size, key=jax.random.key(seed), num_buckets=3, drop_last=True
    )
    assert all(len(b) == batch_size for b in batches)
    everything = np.concatenate(batches) if batches else np.array([], int)
    assert (
        len(set(everything.tolist())) == len(everything) == len(lengths) // batch_size * batch_size
    )


def test_drop_last_does_not_always_drop_the_longest():
    lengths = np.arange(1, 11)  # 10 examples, batch 4 -> 2 dropped each epoch
    dropped = set()
    for seed in range(20):
        kept = np.concatenate(bucket_batches(lengths, 4, key=jax.random.key(seed), drop_last=True))
        dropped |= set(range(10)) - set(kept.tolist())
    assert len(dropped) > 4


# Skewed lengths: mostly short, a few very long.
SKEWED = st.lists(
    st.one_of(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.integers(20, 200)),
    min_size=2,
    max_size=80,
)


@given(SKEWED, st.integers(2, 8), SEEDS, SEEDS)
@settings(max_examples=80, deadline=None)
def test_exact_bucketing_wastes_no_more_padding_than_random(lengths, batch_size, seed, rseed):
    """With one bucket per length, total padding is minimal, so never above random batching."""
    bucketed = bucket_batches(lengths, batch_size, key=jax.random.key(seed))
    for s in (rseed, rseed + 1, rseed + 2):
        assert padded_cells(lengths, bucketed) <= padded_cells(
            lengths, random_batches(len(lengths), batch_size, s)
        )


def test_wide_buckets_reduce_padding_on_skewed_lengths():
    rng = np.random.default_rng(1)
    lengths = np.where(
        rng.random(2000) < 0.9, rng.integers(1, 10, 2000), rng.integers(50, 300, 2000)
    )
    real = lengths.sum()
    random_waste = 1 - real / padded_cells(lengths, random_batches(len(lengths), 32, 0))
    assert random_waste > 0.8
    # quantile buckets spend most buckets on the many short examples, so they waste more
    for kwargs, bound in (({"bucket_width": 8}, 0.25), ({"num_buckets": 10}, 0.4)):
        bucketed = bucket_batches(lengths, 32, key=jax.random.key(0), **kwargs)
        bucketed_waste = 1 - real / padded_cells(lengths, bucketed)
        assert bucketed_waste < bound, (kwargs, bucketed_waste, random_waste)


def test_bucket_batches_key_determinism():
    lengths = np.random.default_rng(0).integers(1, 30, 100)

    def order(key):
        return [b.tolist() for b in bucket_batches(lengths, 8, key=key, bucket_width=4)]

    assert order(jax.random.key(3)) == order(jax.random.key(3))
    assert order(jax.random.key(3)) != order(jax.random.key(4))
    k1, k2 = jax.random.split(jax.random.key(3))
    assert order(k1) != order(k2)
    assert order(jax.random.PRNGKey(7)) == order(jax.random.PRNGKey(7))  # legacy uint32 keys


def test_bucket_batches_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"`key` must be a JAX PRNG key, got int"):
        bucket_batches([1, 2], 1, key=0)
    with pytest.raises(
        ValueError, match=r"`key` must be a JAX PRNG key \(jax.random.key\), got dtype float32"
    ):
        bucket_batches([1, 2], 1, key=jnp.zeros(2))
    with pytest.raises(
        ValueError, match=r"`key` must be a single key of shape \(\), got shape \(2,\)"
    ):
        bucket_batches([1, 2], 1, key=jax.random.split(key))
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int, got 0"):
        bucket_batches([1, 2], 0, key=key)
    with pytest.raises(ValueError, match=r"`bucket_width` and `num_buckets` are exclusive"):
        bucket_batches([1, 2], 1, key=key, bucket_width=2, num_buckets=2)
    with pytest.raises(ValueError, match=r"`lengths` must be >= 0, got minimum -1"):
        bucket_batches([1, -1], 1, key=key)


# --------------------------------------------------------------------------- iterate_batches


def make_tagging_data(n, seed=0):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 30, n)
    ids = [rng.integers(4, 50, L).tolist() for L in lens]
    tags = [rng.integers(0, 5, L) for L in lens]
    labels = rng.integers(0, 3, n)
    return ids, tags, labels


def test_iterate_batches_pads_fields_together():
    ids, tags, labels = make_tagging_data(37)
    seen = []
    for batch in iterate_batches(
        ids, tags, batch_size=8, key=jax.random.key(0), pad_values=(0, -1), extras=(labels,)
    ):
        assert isinstance(batch, Batch)
        xs, ys = batch.fields
        B, T = xs.shape
        assert ys.shape == (B, T) and T % 8 == 0 and T >= batch.lengths.max()
        assert xs.dtype == np.int32 and batch.lengths.dtype == np.int32
        np.testing.assert_array_equal(batch.extras[0], labels[batch.indices])
        for row, i in enumerate(batch.indices):
            L = len(ids[i])
            assert batch.lengths[row] == L
            np.testing.assert_array_equal(xs[row, :L], ids[i])
            np.testing.assert_array_equal(ys[row, :L], tags[i])
            assert (xs[row, L:] == 0).all() and (ys[row, L:] == -1).all()
        seen.extend(batch.indices.tolist())
    assert sorted(seen) == list(range(37))


def test_iterate_batches_few_shapes():
    ids, _, _ = make_tagging_data(500)
    shapes = {
        b.fields[0].shape
        for b in iterate_batches(ids, batch_size=16, key=jax.random.key(1), drop_last=True)
    }
    assert all(B == 16 and T % 8 == 0 for B, T in shapes)
    assert len(shapes) <= 4  # lengths < 30 -> T in {8, 16, 24, 32}


def test_iterate_batches_orders_without_shuffle():
    ids = [[1] * L for L in (3, 1, 2, 5, 4)]
    plain = [
        b.indices.tolist()
        for b in iterate_batches(ids, batch_size=2, key=None, shuffle=False, bucket=False)
    ]
    assert plain == [[0, 1], [2, 3], [4]]
    by_len = [
        b.indices.tolist() for b in iterate_batches(ids, batch_size=2, key=None, shuffle=False)
    ]
    assert by_len == [
        [1],
        [2, 0],
        [4, 3],
    ]  # ascending length; the short batch where padding is least
    dropped = list(
        iterate_batches(ids, batch_size=2, key=None, shuffle=False, bucket=False, drop_last=True)
    )
    assert [b.indices.tolist() for b in dropped] == [[0, 1], [2, 3]]


def test_iterate_batches_random_without_bucketing():
    ids, _, _ = make_tagging_data(30)
    a = [
        b.indices.tolist()
        for b in iterate_batches(ids, batch_size=4, key=jax.random.key(0), bucket=False)
    ]
    b = [
        b.indices.tolist()
        for b in iterate_batches(ids, batch_size=4, key=jax.random.key(0), bucket=False)
    ]
    assert a == b and sorted(sum(a, [])) == list(range(30))
    assert sum(a, []) != list(range(30))


def test_iterate_batches_max_len_truncates():
    ids = [[1] * 20, [2] * 3]
    (batch,) = iterate_batches(ids, batch_size=2, key=None, shuffle=False, bucket=False, max_len=12)
    assert batch.fields[0].shape == (2, 12)
    np.testing.assert_array_equal(batch.lengths, [12, 3])


@given(st.integers(1, 60), st.integers(1, 9), SEEDS, st.booleans(), st.booleans(), st.data())
@settings(max_examples=40, deadline=None)
def test_resume_from_offset_yields_remaining_batches(n, batch_size, seed, bucket, drop_last, data):
    ids, tags, _ = make_tagging_data(n, seed=seed % 1000)
    kwargs = dict(
        batch_size=batch_size, key=jax.random.key(seed), bucket=bucket, drop_last=drop_last
    )
    full = list(iterate_batches(ids, tags, **kwargs))
    assert len(full) == num_batches(n, batch_size, drop_last=drop_last)
    start = data.draw(st.integers(0, len(full)))
    resumed = list(iterate_batches(ids, tags, start=start, **kwargs))
    assert len(resumed) == len(full) - start
    for a, b in zip(full[start:], resumed, strict=True):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.lengths, b.lengths)
        for fa, fb in zip(a.fields, b.fields, strict=True):
            np.testing.assert_array_equal(fa, fb)


def test_iterate_batches_errors_are_eager():
    ids = [[1, 2], [3]]
    key = jax.random.key(0)
    with pytest.raises(
        ValueError,
        match=r"`fields\[1\]\[1\]` must have the length of `fields\[0\]\[1\]` = 1, got 2",
    ):
        iterate_batches(ids, [[0, 0], [0, 0]], batch_size=1, key=key)
    with pytest.raises(
        ValueError, match=r"`fields\[1\]` must have N = 2 examples like `fields\[0\]`, got 1"
    ):
        iterate_batches(ids, [[0, 0]], batch_size=1, key=key)
    with pytest.raises(
        ValueError, match=r"`start` must be an int in \[0, 2\] \(batches this epoch\), got 3"
    ):
        iterate_batches(ids, batch_size=1, key=key, start=3)
    with pytest.raises(
        ValueError, match=r"`extras\[0\]` must have leading dimension N = 2, got shape \(3,\)"
    ):
        iterate_batches(ids, batch_size=1, key=key, extras=([0, 1, 2],))
    with pytest.raises(
        ValueError, match=r"`pad_values` must be a scalar or one value per field \(1\), got 2"
    ):
        iterate_batches(ids, batch_size=1, key=key, pad_values=(0, 0))
    with pytest.raises(ValueError, match=r"`key` must be a JAX PRNG key, got NoneType"):
        iterate_batches(ids, batch_size=1, key=None)
    with pytest.raises(
        ValueError, match=r"`fields` must hold at least one sequence field, got none"
    ):
        iterate_batches(batch_size=1, key=key)


def test_one_lengths_to_mask_for_the_library():
    import rnn_jax
    from rnn_jax import _checks

    assert rnn_jax.lengths_to_mask is lengths_to_mask is _checks.lengths_to_mask
    assert isinstance(lengths_to_mask(np.array([1, 2]), 2), np.ndarray)  # host in, host out
    assert isinstance(lengths_to_mask([1, 2], 2), np.ndarray)
    assert lengths_to_mask([], 3).shape == (0, 3)
    assert isinstance(lengths_to_mask(jnp.array([1, 2]), 2), jax.Array)
    for lengths in ([1, 3], np.array([1, 3]), jnp.array([1, 3])):
        with pytest.raises(ValueError, match=r"`lengths` must lie in \[0, T\] = \[0, 2\]"):
            lengths_to_mask(lengths, 2)


@pytest.mark.parametrize(
    "sequences, kwargs, message",
    [
        ([[2**40, 1], [3]], {}, r"`sequences\[0\]\[0\]` = 1099511627776 does not fit the int32"),
        ([[1], [3, -(2**31) - 1]], {}, r"`sequences\[1\]\[1\]` = -2147483649 does not fit"),
        ([[1, 2], [3]], {"pad_value": 0.5}, r"`pad_value` = 0\.5 does not fit the int32"),
        ([[1, 2], [3]], {"pad_value": float("nan")}, r"`pad_value` = nan does not fit the int32"),
        ([[1, 2], [3]], {"pad_value": 300, "dtype": np.uint8}, r"`pad_value` = 300 does not fit"),
        ([[1.5], [2.0]], {"dtype": np.int32}, r"`sequences\[0\]\[0\]` = 1\.5 does not fit"),
        ([np.array([1e39, 0.0])], {}, r"`sequences\[0\]\[0\]` = 1e\+39 does not fit the float32"),
        ([[1], [[2, 3], [4]]], {}, r"`sequences\[1\]` must be a rectangular array"),
        ([["a", "b"]], {}, r"`sequences\[0\]` must hold numbers .* got dtype <U1"),
    ],
    ids=[
        "id-beyond-int32",
        "id-below-int32",
        "float-pad-into-ints",
        "nan-pad-into-ints",
        "pad-beyond-uint8",
        "fractional-into-int-dtype",
        "float-beyond-float32",
        "ragged-nesting",
        "strings",
    ],
)
def test_pad_batch_never_casts_silently(sequences, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pad_batch(sequences, **kwargs)


def test_pad_batch_lossless_casts_still_work():
    padded, _ = pad_batch([[2**31 - 1, 1], [3]], pad_value=-1.0)  # integral float pad: exact
    assert padded.dtype == np.int32 and padded.tolist() == [[2**31 - 1, 1], [3, -1]]
    padded, _ = pad_batch([[0.5], []], pad_value=float("nan"))  # NaN pad into floats: fine
    assert np.isnan(padded[1, 0]) and padded[0, 0] == 0.5
    padded, _ = pad_batch([[True, False], [True]], pad_value=False)
    assert padded.tolist() == [[1, 0], [1, 0]]
