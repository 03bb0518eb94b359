"""One optimiser step with Optax, the same under any dtype-promotion setting.

Optax's own ``update`` mixes Python floats with its ``int32`` step count (Adam's bias
correction ``1 - b1 ** count``), which ``jax_numpy_dtype_promotion="strict"`` rejects.
The library's training steps (:func:`rnn_jax.train.make_train_step`,
:func:`rnn_jax.long.truncated_bptt`) go through :func:`optimizer_step`, which traces
Optax under standard promotion, so that a user (or a test run) may keep strict promotion
on for everything else. The traced program is the one Optax builds by default.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

__all__ = ["optimizer_step"]


def optimizer_step(
    optimizer: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any
) -> tuple[Any, Any]:
    """``optimizer.update`` then ``optax.apply_updates``: ``(new params, new opt_state)``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> opt = optax.adam(0.1)
        >>> params = jnp.zeros(2)
        >>> params, state = optimizer_step(opt, jnp.array([1.0, -1.0]), opt.init(params), params)
        >>> params.round(3)
        Array([-0.1,  0.1], dtype=float32)
    """
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
