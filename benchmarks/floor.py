"""A lower bound ("floor") on the time of a workload on this machine.

floor = (dependent chains of the ``B x H @ H x H`` step, one per layer and direction in
the forward pass and again in the backward pass, at the rate this machine achieves for
that shape when the steps depend on each other) + (every other FLOP at the measured
large-matmul peak). Elementwise work, the gather and the optimiser are not counted, so
the floor is optimistic and a fraction ``floor / measured`` of 1 is not reachable.
"""

from __future__ import annotations

import time
from functools import cache

import numpy as np

from benchmarks.workloads import Workload


def _median_time(f, *args, reps: int = 7) -> float:
    import jax

    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


@cache
def chain_step_seconds(B: int, H: int, steps: int = 200) -> float:
    """Seconds per step of ``a = a @ W`` repeated ``steps`` times (each step needs the last)."""
    import jax
    import jax.numpy as jnp

    W = jnp.eye(H, dtype=jnp.float32) * 0.999
    a = jnp.ones((B, H), jnp.float32)
    f = jax.jit(lambda a, W: jax.lax.fori_loop(0, steps, lambda _, a: a @ W, a))
    return _median_time(f, a, W) / steps


@cache
def peak_flops(n: int = 2048) -> float:
    """FLOP/s of one large ``n x n @ n x n`` float32 matmul."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    return 2 * n**3 / _median_time(f, x)


def other_flops(w: Workload) -> tuple[float, float]:
    """FLOPs outside the dependent chains: (forward, training step)."""
    B, T, H, C = w.B, w.T, w.H, w.C
    dirs = 2 if w.bidirectional else 1
    fwd = train = 0.0
    for layer in range(w.layers):
        D = (w.D or 0) if layer == 0 else dirs * H  # token ids: a gather, no FLOPs
        proj = 2.0 * T * B * D * H * dirs
        fwd += proj
        # backward: dW_ax (+ dX for layers above the first) and dW_aa as one matmul each
        train += proj * (2 if layer == 0 else 3) + 2.0 * T * B * H * H * dirs
    head = 2.0 * T * B * dirs * H * C
    return fwd + head, train + 3 * head


def floor_seconds(w: Workload) -> dict[str, float]:
    chains = w.layers * (2 if w.bidirectional else 1)
    step = chain_step_seconds(w.B, w.H)
    peak = peak_flops()
    f_fwd, f_train = other_flops(w)
    return {
        "chain_step_us": step * 1e6,
        "peak_gflops": peak / 1e9,
        "forward": chains * w.T * step + f_fwd / peak,
        "train": 2 * chains * w.T * step + f_train / peak,
    }
