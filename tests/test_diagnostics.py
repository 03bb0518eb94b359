"""rnn_jax.diagnostics: ‖∂L/∂a<t>‖ against an explicit computation, for every cell."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import head_apply, init_rnn, rnn_layers
from rnn_jax.diagnostics import plot_gradient_norms, state_gradient_norms


@partial(jax.jit, static_argnums=(2, 3))
def _explicit(params, xs, t, loss_fn):
    """∂L/∂a<t> by restarting the network at step t + 1 from a0 = a<t> (and c<t>).

    Jitted: one compile per step t, where eagerly every call traced and compiled its scans
    again."""
    lstm = params.cell == "lstm"
    _, finals = rnn_layers(params, xs[:, : t + 1], return_cell_state=lstm)
    h_t, c_t = finals if lstm else (finals, None)

    def loss(top):
        a0 = h_t.at[-1].set(top)
        _, last = rnn_layers(params, xs[:, t + 1 :], a0=a0, c0=c_t)
        return loss_fn(head_apply(params.head, last[-1]))

    return jax.grad(loss)(h_t[-1])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_state_gradient_norms_equal_the_explicit_gradient(cell):
    params = init_rnn(jax.random.key(0), 3, 5, 2, cell=cell, num_layers=2)
    xs = jax.random.normal(jax.random.key(1), (2, 6, 3))
    target = jnp.array([[1.0, -1.0], [0.5, 0.0]])

    def loss_fn(y):
        return jnp.sum((y - target) ** 2)

    norms = state_gradient_norms(params, xs, loss_fn=loss_fn, per_example=True)
    assert norms.shape == (2, 6)
    total = state_gradient_norms(params, xs, loss_fn=loss_fn)
    np.testing.assert_allclose(total, jnp.sqrt(jnp.sum(norms**2, axis=0)), rtol=1e-5)
    for t in (0, 2, 4):
        g = _explicit(params, xs, t, loss_fn)
        np.testing.assert_allclose(norms[:, t], jnp.linalg.norm(g, axis=-1), rtol=1e-4)


def test_state_gradient_norms_finite_difference_and_padding():
    params = init_rnn(jax.random.key(2), 2, 3, 1, dtype=jnp.float32)
    xs = jax.random.normal(jax.random.key(3), (1, 5, 2))
    lengths = jnp.array([4])
    norms = state_gradient_norms(params, xs, lengths, loss_fn=lambda y: jnp.sum(y))
    assert float(norms[4]) == 0.0  # a padded step: no gradient
    # The last valid step: ∂L/∂a = W_y exactly.
    np.testing.assert_allclose(norms[3], jnp.linalg.norm(params.head.W_y), rtol=1e-6)


def test_state_gradient_norms_rejects_bidirectional():
    params = init_rnn(jax.random.key(0), 2, 3, 1, bidirectional=True)
    with pytest.raises(ValueError, match="must be unidirectional"):
        state_gradient_norms(params, jnp.ones((1, 3, 2)), loss_fn=jnp.sum)


def test_plot_gradient_norms_writes_a_file(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "norms.png"
    plot_gradient_norms({"rnn": jnp.logspace(-8, 0, 10), "gru": jnp.ones(10)}, str(path))
    assert path.stat().st_size > 0
