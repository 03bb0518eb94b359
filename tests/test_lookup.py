"""column_lookup equals a one-hot product, and its hand-written gradient equals autodiff's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnn_jax.lookup import column_lookup


def _one_hot_reference(W, ids, offset, num_columns):
    """``one_hot(ids) @ W[:, offset:offset + num_columns].T``: the definition, densely."""
    block = W[:, offset : offset + num_columns]
    return jax.nn.one_hot(ids, num_columns, dtype=W.dtype) @ block.T


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    H=st.integers(1, 6),
    offset=st.integers(0, 4),
    V=st.integers(1, 9),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_values_and_gradient_equal_one_hot_product(x64, H, offset, V, shape, seed):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    W = jax.random.normal(k1, (H, offset + V), jnp.float64)
    ids = jax.random.randint(k2, tuple(shape), 0, V)  # duplicates are likely: V is small
    w = jax.random.normal(k3, (*shape, H), jnp.float64)

    @jax.jit  # one compilation per example instead of one per eager op
    def both(W, ids):
        def values_and_grad(f):
            return jax.value_and_grad(lambda W: jnp.sum(w * jnp.sin(f(W))))(W)[1], f(W)

        mine = values_and_grad(lambda W: column_lookup(W, ids, offset=offset))
        ref = values_and_grad(lambda W: _one_hot_reference(W, ids, offset, V))
        return mine, ref

    (g, out), (g_ref, out_ref) = both(W, ids)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12)


def test_out_of_range_ids_give_nan_and_no_gradient():
    W = jnp.arange(12.0).reshape(3, 4)
    ids = jnp.array([0, 3, -1, 2])  # num_columns = 3 from offset 1: 3 and -1 are invalid
    out = column_lookup(W, ids, offset=1)
    np.testing.assert_array_equal(out[0], W[:, 1])
    np.testing.assert_array_equal(out[3], W[:, 3])
    assert bool(jnp.isnan(out[1]).all()) and bool(jnp.isnan(out[2]).all())
    g = jax.grad(lambda W: jnp.nansum(column_lookup(W, ids, offset=1)))(W)
    expected = np.zeros((3, 4))
    expected[:, 1] = expected[:, 3] = 1.0
    np.testing.assert_array_equal(g, expected)


def test_the_two_key_sort_path_for_large_tables():
    # (C + 1) * N > 2**31 - 1: the packed single-key sort would overflow int32.
    C, N = 2**20, 4096
    W = jnp.arange(C, dtype=jnp.float32)[None, :] / C
    ids = jax.random.randint(jax.random.key(0), (N,), 0, C)
    out = jax.jit(lambda W, ids: column_lookup(W, ids))(W, ids)
    np.testing.assert_array_equal(out[:, 0], W[0, ids])
    g = jax.grad(lambda W: jnp.sum(column_lookup(W, ids)))(W)
    np.testing.assert_array_equal(g[0], np.bincount(np.asarray(ids), minlength=C))


def test_jit_and_vmap_agree_with_eager():
    k1, k2 = jax.random.split(jax.random.key(3))
    W = jax.random.normal(k1, (4, 11))
    ids = jax.random.randint(k2, (3, 5, 2), 0, 7)
    eager = column_lookup(W, ids, offset=4)
    jitted = jax.jit(lambda W, ids: column_lookup(W, ids, offset=4))(W, ids)
    mapped = jax.vmap(lambda i: column_lookup(W, i, offset=4))(ids)
    np.testing.assert_array_equal(jitted, eager)
    np.testing.assert_array_equal(mapped, eager)
    g = jax.grad(lambda W: jnp.sum(jax.vmap(lambda i: column_lookup(W, i, offset=4))(ids) ** 2))(W)
    g_ref = jax.grad(lambda W: jnp.sum(_one_hot_reference(W, ids, 4, 7) ** 2))(W)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5)


def test_empty_ids():
    W = jnp.ones((3, 5))
    assert column_lookup(W, jnp.zeros((0, 4), jnp.int32)).shape == (0, 4, 3)


@pytest.mark.parametrize(
    ("W", "ids", "kwargs", "match"),
    [
        (jnp.ones(3), jnp.array([0]), {}, r"`W` must be a matrix \(H, C\), got shape \(3,\)"),
        (jnp.ones((2, 3)), jnp.array([0.5]), {}, r"`ids` must be integers, got dtype float32"),
        (jnp.ones((2, 3)), jnp.array([0]), {"offset": 4}, r"got offset=4, num_columns=-1"),
        (jnp.ones((2, 3)), jnp.array([0]), {"num_columns": 5}, r"got offset=0, num_columns=5"),
    ],
)
def test_bad_arguments_raise(W, ids, kwargs, match):
    with pytest.raises(ValueError, match=match):
        column_lookup(W, ids, **kwargs)


def test_wide_ids_do_not_wrap_into_valid_columns(x64):
    W = jnp.arange(6.0).reshape(2, 3)
    ids = jnp.array([2**32 + 1, 1], dtype=jnp.int64)  # the first is 1 modulo 2**32
    out = jax.jit(column_lookup)(W, ids)
    assert bool(jnp.isnan(out[0]).all())
    np.testing.assert_array_equal(out[1], W[:, 1])
