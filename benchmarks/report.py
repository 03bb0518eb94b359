"""RESULTS.md and results.png from results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGETS_TRAIN = {"torch": 2.0, "flax": 1.5}
TARGETS_FWD = {"torch": {w: 2.0 for w in ("W1", "W2", "W3", "W4", "W5")},
               "flax": {"W1": 1.5, "W4": 1.5, "W5": 1.5, "W2": 1.0, "W3": 1.0}}  # fmt: skip


def _ms(s):
    return f"{s * 1e3:.1f}"


def _mib(b):
    return "" if b is None else f"{b / 2**20:.0f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    L = ["# rnn_jax benchmarks", ""]
    L += [
        f"Command: `{m['command']}` ({results['reps']} timed runs per cell, medians).  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}.  ",
        f"Versions: jax {m['jax']} ({m['jax_backend']}), flax {m['flax']}, dm-haiku {m['haiku']}, "
        f"optax {m['optax']}, torch {m['torch']} ({m['torch_threads']} threads), Python {m['python']}.  ",
        f"Date: {m['date']}.",
        "",
        "Times in ms per call (forward = loss without gradient; train = forward + backward + "
        "Adam update). Tokens/s count `B*T` (padding included).",
        "",
    ]
    main = [r for r in results["workloads"] if r["workload"]["group"] == "main"]
    if main:
        impls = [
            i for i in ("rnn_jax", "flax", "haiku", "torch") if any(i in r["impls"] for r in main)
        ]
        L += ["## Training step", ""]
        L += [
            "| workload | "
            + " | ".join(impls)
            + " | vs torch (target 2.0×) | vs flax (target 1.5×) | floor fraction | compile rnn_jax / flax (s) |"
        ]
        L += ["|" + "---|" * (len(impls) + 5)]
        for r in main:
            I = r["impls"]
            row = [f"{r['workload']['name']} ({r['describe']})"]
            row += [_ms(I[i]["train_s"]) if i in I else "—" for i in impls]
            for peer, tgt in TARGETS_TRAIN.items():
                if peer in I and "rnn_jax" in I:
                    ratio = I[peer]["train_s"] / I["rnn_jax"]["train_s"]
                    row.append(f"{ratio:.2f}× {'✓' if ratio >= tgt else '✗'}")
                else:
                    row.append("—")
            row.append(f"{r.get('floor_fraction', {}).get('train', float('nan')):.2f}")
            comp = [f"{I[i]['compile_s']:.2f}" if i in I else "—" for i in ("rnn_jax", "flax")]
            row.append(" / ".join(comp))
            L.append("| " + " | ".join(row) + " |")
        L += ["", "## Forward", ""]
        L += ["| workload | " + " | ".join(impls) + " | vs torch | vs flax | floor fraction |"]
        L += ["|" + "---|" * (len(impls) + 4)]
        for r in main:
            I = r["impls"]
            name = r["workload"]["name"]
            row = [name] + [_ms(I[i]["forward_s"]) if i in I else "—" for i in impls]
            for peer in ("torch", "flax"):
                if peer in I and "rnn_jax" in I:
                    ratio = I[peer]["forward_s"] / I["rnn_jax"]["forward_s"]
                    tgt = TARGETS_FWD[peer][name]
                    row.append(f"{ratio:.2f}× (target {tgt}) {'✓' if ratio >= tgt else '✗'}")
                else:
                    row.append("—")
            row.append(f"{r.get('floor_fraction', {}).get('forward', float('nan')):.2f}")
            L.append("| " + " | ".join(row) + " |")
        L += [
            "",
            "Floor (see `benchmarks/floor.py`): dependent `B×H @ H×H` chains at the measured",
            "rate for that shape plus the other FLOPs at the measured large-matmul peak:",
            "",
        ]
        for r in main:
            f = r["floor"]
            L.append(
                f"- {r['workload']['name']}: chain step {f['chain_step_us']:.1f} µs, peak "
                f"{f['peak_gflops']:.0f} GFLOP/s → floor {_ms(f['forward'])} ms forward, "
                f"{_ms(f['train'])} ms train."
            )
        below = []
        for r in main:
            I, f = r["impls"], r["floor"]
            for peer in ("torch", "flax"):
                if peer not in I:
                    continue
                for kind, key in (("train", "train_s"), ("forward", "forward_s")):
                    tgt = (
                        TARGETS_TRAIN[peer]
                        if kind == "train"
                        else TARGETS_FWD[peer][r["workload"]["name"]]
                    )
                    need = I[peer][key] / tgt
                    if need < f[kind]:
                        below.append(
                            f"- {r['workload']['name']} {kind}, {tgt}× {peer}: needs "
                            f"{_ms(need)} ms, the floor is {_ms(f[kind])} ms."
                        )
        if below:
            L += [
                "",
                "Targets that lie below the floor on this machine (faster than the dependent "
                "matmul chains and the FLOPs allow, so no implementation can meet them here):",
                "",
                *below,
            ]
        if "W1" in {r["workload"]["name"] for r in main} and "W4" in {
            r["workload"]["name"] for r in main
        }:
            w1 = next(r for r in main if r["workload"]["name"] == "W1")["impls"].get("rnn_jax")
            w4 = next(r for r in main if r["workload"]["name"] == "W4")["impls"].get("rnn_jax")
            if w1 and w4:
                L += [
                    "",
                    f"Masking cost (rnn_jax W4 / W1, same shapes): train "
                    f"{w4['train_s'] / w1['train_s']:.3f}×, forward {w4['forward_s'] / w1['forward_s']:.3f}× (target ≤ 1.05).",
                ]
    dp = [r for r in main if "rnn_jax_dp" in r["impls"] and "rnn_jax" in r["impls"]]
    if dp:
        n_dev = len(results["machine"].get("jax_devices", [])) or "several"
        L += [
            "",
            f"## Data parallel: rnn_jax_dp, the batch split over {n_dev} CPU devices",
            "",
            "The same runs, one more implementation: `rnn_jax.parallel.make_parallel_train_step` "
            "(forward: `parallel_sums`) with one JAX CPU device per core, each running the "
            "single-device code on its share of the batch, then summing the gradients "
            "(the loss and gradient of the whole batch, exactly). The tables above are "
            "single-device rnn_jax; this is the same library using both cores the way "
            "JAX uses several devices. Ratios are speed-ups of rnn_jax_dp (> 1: faster).",
            "",
            "| workload | train ms | vs rnn_jax | vs torch | vs flax | forward ms | vs rnn_jax | vs torch | vs flax |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in dp:
            I = r["impls"]
            row = [r["workload"]["name"]]
            for kind in ("train_s", "forward_s"):
                row.append(_ms(I["rnn_jax_dp"][kind]))
                for peer in ("rnn_jax", "torch", "flax"):
                    if peer in I:
                        row.append(f"{I[peer][kind] / I['rnn_jax_dp'][kind]:.2f}×")
                    else:
                        row.append("—")
            L.append("| " + " | ".join(row) + " |")
    sweeps = [r for r in results["workloads"] if r["workload"]["group"] != "main"]
    if sweeps:
        impls = [
            i for i in ("rnn_jax", "flax", "haiku", "torch") if any(i in r["impls"] for r in sweeps)
        ]
        L += [
            "",
            "## Sweeps (base B=16, T=100, H=128, dense D=32): training step, µs per token",
            "",
            "T=100 and B=16 are both the base configuration, measured twice: their difference "
            "shows the noise of calls that take about 1 ms.",
            "",
        ]
        L += ["| point | " + " | ".join(impls) + " | forward µs/token rnn_jax / flax / torch |"]
        L += ["|" + "---|" * (len(impls) + 2)]
        for r in sweeps:
            I, n = r["impls"], r["workload"]["B"] * r["workload"]["T"]
            row = [r["workload"]["name"]] + [
                f"{I[i]['train_s'] / n * 1e6:.2f}" if i in I else "—" for i in impls
            ]
            row.append(
                " / ".join(
                    f"{I[i]['forward_s'] / n * 1e6:.2f}" if i in I else "—"
                    for i in ("rnn_jax", "flax", "torch")
                )
            )
            L.append("| " + " | ".join(row) + " |")
    if results.get("ablations"):
        L += ["", "## Ablations (rnn_jax training step, ms, alternated in one run)", ""]
        for a in results["ablations"]:
            parts = ", ".join(f"{k} {_ms(v['train_s'])}" for k, v in a["results"].items())
            L.append(f"- {a['ablation']} on {a['workload']}: {parts}")
    if results.get("memory"):
        L += [
            "",
            "## Peak memory of one training step (MiB)",
            "",
            "Rise of the process's peak resident memory over one training step, fresh process per cell "
            "(after compilation; memory the allocator kept from compilation can hide part of it). "
            "In brackets: XLA's own count of the step's arguments, outputs and temporaries.",
            "",
        ]
        impls = sorted({i for v in results["memory"].values() for i in v})
        L += ["| workload | " + " | ".join(impls) + " |", "|" + "---|" * (len(impls) + 1)]
        for wname, v in results["memory"].items():
            cells = []
            for i in impls:
                c = v.get(i, {})
                if "error" in c or not c:
                    cells.append("error")
                else:
                    x = f" [{_mib(c['xla_bytes'])}]" if c.get("xla_bytes") else ""
                    cells.append(f"{c['peak_rss_rise_mib']:.0f}{x}")
            L.append(f"| {wname} | " + " | ".join(cells) + " |")
    lm = results.get("long_memory")
    if lm:
        L += [
            "",
            f"## Long sequences: T = {lm['T']}, B = {lm['B']}, H = {lm['H']}, D = {lm['D']}",
            "",
            f"XLA's temporaries + outputs of one gradient (MiB); the hidden states alone are {_mib(lm['states_bytes'])} MiB:",
            "",
        ]
        for k in ("bptt", "autodiff", "remat"):
            v = lm.get(k)
            L.append(f"- {k}: {_mib(v) if isinstance(v, int) else v}")
    L.append("")
    return "\n".join(L)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    main = [r for r in results["workloads"] if r["workload"]["group"] == "main"]
    sweeps = {}
    for r in results["workloads"]:
        if r["workload"]["group"] != "main":
            sweeps.setdefault(r["workload"]["group"], []).append(r)
    impls = ["rnn_jax", "flax", "haiku", "torch"]
    bar_impls = impls + (["rnn_jax_dp"] if any("rnn_jax_dp" in r["impls"] for r in main) else [])
    width = 0.8 / len(bar_impls)
    ncols = 2 + len(sweeps)
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4))
    axes = np.atleast_1d(axes)
    for ax, kind in zip(axes[:2], ("train", "forward"), strict=True):
        x = np.arange(len(main))
        for k, i in enumerate(bar_impls):
            vals = [r["impls"][i][f"{kind}_tokens_per_s"] if i in r["impls"] else 0 for r in main]
            ax.bar(x + (k - (len(bar_impls) - 1) / 2) * width, vals, width, label=i)
        ax.set_xticks(x, [r["workload"]["name"] for r in main])
        ax.set_ylabel("tokens / s")
        ax.set_title(f"{kind} (higher is better)")
        ax.legend(fontsize=8)
    for ax, (var, rs) in zip(axes[2:], sorted(sweeps.items()), strict=True):
        xs = [r["workload"][var] for r in rs]
        for i in impls:
            ys = [r["impls"][i]["train_s"] / (r["workload"]["B"] * r["workload"]["T"]) * 1e6
                  if i in r["impls"] else np.nan for r in rs]  # fmt: skip
            ax.plot(xs, ys, "o-", label=i)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(var)
        ax.set_ylabel("train µs / token")
        ax.set_title(f"sweep over {var} (lower is better)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(results: dict, out: Path) -> None:
    (out / "RESULTS.md").write_text(markdown(results))
    plot(results, out / "results.png")


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    write_report(json.loads((out / "results.json").read_text()), out)
