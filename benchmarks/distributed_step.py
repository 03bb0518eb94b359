"""Training-step time on P processes x N devices (the data-parallel step of rnn_jax.distributed).

One configuration per run, under the launcher for several processes::

    JAX_NUM_CPU_DEVICES=1 python -m benchmarks.distributed_step               # 1 x 1
    JAX_NUM_CPU_DEVICES=2 python -m benchmarks.distributed_step               # 1 x 2
    python -m experiments.launch --processes 2 --devices-per-process 1 \\
        -- python -m benchmarks.distributed_step                               # 2 x 1
    python -m experiments.launch --processes 2 --devices-per-process 2 \\
        -- python -m benchmarks.distributed_step                               # 2 x 2

The workload is ``W1`` of :mod:`benchmarks.workloads` (or ``--workload``), the same global
batch in every configuration. One device runs the plain step
(:func:`rnn_jax.make_train_step`, ``benchmarks.impls.build_rnn_jax``); several run
:func:`rnn_jax.parallel.make_parallel_train_step` (``build_rnn_jax_dp``) over the devices of
all processes. Compilation and the first step are not timed; every timed step reads its
loss (a host sync). Process 0 prints one JSON line: the median and quartiles in ms, the
configuration, the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed_step")
    parser.add_argument("--workload", default="W1", help="a name of benchmarks.workloads.MAIN")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"`--steps` must be a positive int, got {args.steps}")
    import jax

    from rnn_jax import distributed

    if os.environ.get("JAX_NUM_PROCESSES"):
        distributed.initialize()
    from benchmarks.impls import build_rnn_jax, build_rnn_jax_dp
    from benchmarks.workloads import MAIN

    by_name = {w.name: w for w in MAIN}
    if args.workload not in by_name:
        parser.error(f"`--workload` must be one of {sorted(by_name)}, got {args.workload!r}")
    w = by_name[args.workload]
    impl = build_rnn_jax(w) if jax.device_count() == 1 else build_rnn_jax_dp(w)
    impl.train()  # one more untimed step
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        impl.train()
        times.append((time.perf_counter() - t0) * 1e3)
    if distributed.is_primary():
        q = statistics.quantiles(times, n=4)
        print(
            json.dumps(
                {
                    "config": f"{jax.process_count()}x{jax.local_device_count()}",
                    "workload": f"{w.name} ({w.describe()})",
                    "impl": impl.name,
                    "median_ms": round(statistics.median(times), 1),
                    "quartiles_ms": [round(q[0], 1), round(q[2], 1)],
                    "compile_s": round(impl.compile_s, 2),
                    "steps": args.steps,
                    "load_average": [round(x, 1) for x in os.getloadavg()],
                    "jax": jax.__version__,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
