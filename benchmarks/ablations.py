"""What each speed measure buys: the library with one measure switched off, same run.

- ``backward``: the hand-written backward pass vs ``jax.grad`` of the ``lax.scan``;
- ``unroll``: the ``lax.scan`` unroll factor of the library's loops;
- ``one-hot``: token ids as a column lookup vs one-hot vectors times ``W_ax``;
- ``lookup``: the sorted column lookup of :mod:`rnn_jax.lookup` (custom backward) vs a
  plain ``jnp.take`` of ``W_a.T`` differentiated by ``jax.grad``;
- ``long_memory``: XLA's count of the training step's buffers at ``T = 10,000`` for the
  default mode, autodiff, and the rematerialising mode of :mod:`rnn_jax.long`.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np

from benchmarks.impls import _jax_impl, build_rnn_jax
from benchmarks.workloads import MAIN, Workload, by_name


def _median(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _alternate(builders: dict, reps: int) -> dict:
    built = {k: b() for k, b in builders.items()}
    ts = {k: [] for k in built}
    for _ in range(reps):
        for k, b in built.items():
            t0 = time.perf_counter()
            b.train()
            ts[k].append(time.perf_counter() - t0)
    return {
        k: {"train_s": float(np.median(v)), "compile_s": built[k].compile_s} for k, v in ts.items()
    }


def _unrolled(w: Workload, unroll: int):
    import jax

    import rnn_jax

    params = rnn_jax.init_rnn(
        jax.random.key(0), w.input_size, w.H, w.C, num_layers=w.layers,
        bidirectional=w.bidirectional, token_inputs=w.D is None,
    )  # fmt: skip
    return _jax_impl(
        f"unroll={unroll}", w, params, lambda p, xs, l: rnn_jax.rnn_apply(p, xs, l, unroll=unroll)
    )


def _one_hot(w: Workload):
    import jax

    import rnn_jax

    params = rnn_jax.init_rnn(jax.random.key(0), w.V, w.H, w.C, token_inputs=True)
    return _jax_impl(
        "one-hot",
        w,
        params,
        lambda p, xs, l: rnn_jax.rnn_apply(p, jax.nn.one_hot(xs, w.V, dtype=p.head.W_y.dtype), l),
    )


def _plain_take(w: Workload):
    """The library with ``jnp.take(W_a.T, H + ids)`` (and ``jax.grad``) for the lookup."""
    return build_rnn_jax(w, name="take", lookup="take")


def run_ablations(reps: int) -> list[dict]:
    out = []
    for w in MAIN:
        r = _alternate(
            {
                "bptt": partial(build_rnn_jax, w),
                "autodiff": partial(build_rnn_jax, w, name="autodiff", backward="autodiff"),
            },
            reps,
        )
        out.append({"ablation": "backward", "workload": w.name, "results": r})
        print(f"ablation backward {w.name}: {r}", flush=True)
    for w in (by_name("W1"), by_name("W3")):
        r = _alternate({f"unroll={u}": partial(_unrolled, w, u) for u in (1, 2, 4, 8)}, reps)
        out.append({"ablation": "unroll", "workload": w.name, "results": r})
        print(f"ablation unroll {w.name}: {r}", flush=True)
    w = by_name("W1")
    r = _alternate(
        {"gather": partial(build_rnn_jax, w, name="gather"), "one-hot": partial(_one_hot, w)},
        max(5, reps // 4),
    )
    out.append({"ablation": "one-hot", "workload": w.name, "results": r})
    print(f"ablation one-hot: {r}", flush=True)
    for w in (by_name("W1"), by_name("W4")):
        r = _alternate(
            {"sorted": partial(build_rnn_jax, w, name="sorted"), "take": partial(_plain_take, w)},
            reps,
        )
        out.append({"ablation": "lookup", "workload": w.name, "results": r})
        print(f"ablation lookup {w.name}: {r}", flush=True)
    return out


def long_memory(T: int = 10_000, B: int = 16, H: int = 128, D: int = 32, C: int = 10) -> dict:
    """XLA's buffer count (bytes) of one gradient of the per-step loss at length ``T``."""
    import jax
    import jax.numpy as jnp

    import rnn_jax

    params = rnn_jax.init_rnn(jax.random.key(0), D, H, C)
    xs = jnp.zeros((B, T, D), jnp.float32)
    labels = jnp.zeros((B, T), jnp.int32)

    def full_loss(p, backward="bptt"):
        import optax

        return optax.softmax_cross_entropy_with_integer_labels(
            rnn_jax.rnn_apply(p, xs, backward=backward), labels
        ).mean()

    def nbytes(loss):
        m = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis()
        return int(m.temp_size_in_bytes + m.output_size_in_bytes)

    out = {"T": T, "B": B, "H": H, "D": D, "states_bytes": T * B * H * 4}
    out["bptt"] = nbytes(full_loss)
    out["autodiff"] = nbytes(partial(full_loss, backward="autodiff"))
    try:
        from rnn_jax.long import rnn_loss_remat

        out["remat"] = nbytes(lambda p: rnn_loss_remat(p, xs, labels))
    except ImportError as e:
        out["remat"] = f"unavailable: {e}"
    print(f"long memory: {out}", flush=True)
    return out
