"""Benchmark rnn_jax against Flax, Haiku and PyTorch on the same work, in one run.

Usage::

    python -m benchmarks.run            # W1-W5, the T/H/B sweeps, ablations, memory
    python -m benchmarks.run --quick    # W1-W5 only, 5 timed runs each, no memory probes

For every workload and implementation: compile (JAX, ahead of time) or a first call
(PyTorch), then ``--reps`` rounds; each round times the forward and the training step of
every implementation in turn (the order rotates every round), each call waited for
(``block_until_ready`` / a host float). Reported: medians, tokens/s (``B*T`` per call,
padding included), compile time, peak memory (the rise of the process's peak resident
memory over one training step, measured in a fresh subprocess per implementation and
workload; for JAX also XLA's count of the step's buffers), and for rnn_jax the fraction
of the floor (:mod:`benchmarks.floor`) reached.

The process exposes one JAX CPU device per core (``--cpu-devices``). Every peer, and
``rnn_jax``, runs on the first device as a single-device user would; ``rnn_jax_dp`` (W1-W5
only) splits the batch over all of them with :mod:`rnn_jax.parallel`, which is how a JAX
program uses several cores for a recurrence whose per-step matmul XLA:CPU runs on one.

Writes ``benchmarks/results.json``, ``benchmarks/RESULTS.md`` and
``benchmarks/results.png`` (``--out`` for another folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.workloads import MAIN, SWEEPS, Workload, by_name

HERE = Path(__file__).resolve().parent
PEERS = ("rnn_jax", "flax", "haiku", "torch")


def machine_info() -> dict:
    import flax
    import jax
    import optax
    import torch

    try:
        import haiku

        haiku_version = haiku.__version__
    except ImportError:
        haiku_version = "not installed"

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "flax": flax.__version__,
        "haiku": haiku_version,
        "jax_devices": [str(d) for d in jax.devices()],
        "optax": optax.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def probe_memory(impl: str, workload: str) -> dict:
    """In this (fresh) process: build, compile, then the peak-RSS rise over one step."""
    from benchmarks.impls import ABLATIONS, BUILDERS

    w = by_name(workload)
    built = {**BUILDERS, **ABLATIONS}[impl](w)  # compiles (JAX) / runs once (torch)
    try:  # reset the high-water mark to the current resident size (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = _rss_kib("VmRSS")
    built.train()
    peak = _rss_kib("VmHWM")
    return {"peak_rss_rise_mib": (peak - before) / 1024, "xla_bytes": built.xla_bytes}


def memory_subprocess(impl: str, w: Workload) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.run", "--probe-memory", impl, w.name]
    import jax

    cmd += ["--cpu-devices", str(len(jax.devices()))]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, json.JSONDecodeError, IndexError) as e:
        return {"error": repr(e)[:300]}


def time_workload(w: Workload, impls: list[str], reps: int) -> dict:
    from benchmarks.floor import floor_seconds
    from benchmarks.impls import ABLATIONS, BUILDERS

    built = {}
    for name in impls:
        try:
            built[name] = {**BUILDERS, **ABLATIONS}[name](w)
        except Exception as e:  # a peer that cannot run this workload is reported, not fatal
            print(f"  {name}: failed to build: {e!r}"[:300], flush=True)
    times = {name: {"forward": [], "train": []} for name in built}
    names = list(built)
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            for kind in ("forward", "train"):
                f = getattr(built[name], kind)
                t0 = time.perf_counter()
                f()
                times[name][kind].append(time.perf_counter() - t0)
    result = {"workload": dataclasses.asdict(w), "describe": w.describe(), "impls": {}}
    for name, b in built.items():
        fwd, train = np.median(times[name]["forward"]), np.median(times[name]["train"])
        result["impls"][name] = {
            "forward_s": float(fwd),
            "train_s": float(train),
            "forward_tokens_per_s": w.tokens / fwd,
            "train_tokens_per_s": w.tokens / train,
            "forward_iqr_s": [float(x) for x in np.percentile(times[name]["forward"], [25, 75])],
            "train_iqr_s": [float(x) for x in np.percentile(times[name]["train"], [25, 75])],
            "compile_s": b.compile_s,
            "xla_bytes": b.xla_bytes,
            "reps": reps,
        }
    floor = floor_seconds(w)
    result["floor"] = floor
    if "rnn_jax" in result["impls"]:
        r = result["impls"]["rnn_jax"]
        result["floor_fraction"] = {
            "forward": floor["forward"] / r["forward_s"],
            "train": floor["train"] / r["train_s"],
        }
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="W1-W5 only, 5 timed runs, no memory probes"
    )
    p.add_argument(
        "--reps", type=int, default=None, help="timed runs per measurement (default 20, quick 5)"
    )
    p.add_argument("--workloads", nargs="*", default=None, help="names, e.g. W1 W3 T=1000")
    p.add_argument("--impls", nargs="*", default=list(PEERS))
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument(
        "--cpu-devices",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU devices JAX exposes (default: one per core); with several, rnn_jax_dp "
        "(the batch split over them) is timed on W1-W5 too",
    )
    p.add_argument("--probe-memory", nargs=2, metavar=("IMPL", "WORKLOAD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cpu_devices < 1:
        p.error(f"--cpu-devices must be >= 1, got {args.cpu_devices}")

    import jax

    # Before anything starts the CPU backend. Single-device code (every peer, and rnn_jax
    # itself) runs on the first device as before: measured unchanged.
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)

    if args.probe_memory:
        print(json.dumps(probe_memory(*args.probe_memory)))
        return

    from tqdm import tqdm

    reps = args.reps or (5 if args.quick else 20)
    if args.workloads:
        workloads = [by_name(n) for n in args.workloads]
    else:
        workloads = MAIN if args.quick else MAIN + SWEEPS
    do_memory = not (args.quick or args.no_memory)
    do_ablations = not (args.quick or args.no_ablations)

    info = machine_info()
    results = {"machine": info, "reps": reps, "workloads": [], "ablations": [], "memory": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "results.json"

    def save():
        json_path.write_text(json.dumps(results, indent=1))

    data_parallel = len(jax.devices()) > 1 and "rnn_jax_dp" not in args.impls
    for w in tqdm(workloads, desc="workloads"):
        impls = list(args.impls)
        if data_parallel and w.group == "main" and "rnn_jax" in impls:
            impls.append("rnn_jax_dp")
        res = time_workload(w, impls, reps)
        results["workloads"].append(res)
        line = ", ".join(
            f"{n} {r['train_s'] * 1e3:.1f}/{r['forward_s'] * 1e3:.1f} ms"
            for n, r in res["impls"].items()
        )
        tqdm.write(f"{w.name} [{w.describe()}] train/forward: {line}")
        save()

    if do_ablations:
        from benchmarks.ablations import run_ablations

        results["ablations"] = run_ablations(reps)
        save()

    if do_memory:
        mem_workloads = [w for w in workloads if w.group == "main"] + [by_name("T=10000")]
        for w in tqdm(mem_workloads, desc="memory"):
            results["memory"][w.name] = {i: memory_subprocess(i, w) for i in args.impls}
            tqdm.write(f"memory {w.name}: {results['memory'][w.name]}")
            save()
        from benchmarks.ablations import long_memory

        results["long_memory"] = long_memory()
        save()

    from benchmarks.report import write_report

    write_report(results, args.out)
    print(f"wrote {json_path}, {args.out / 'RESULTS.md'}, {args.out / 'results.png'}")


if __name__ == "__main__":
    main()
