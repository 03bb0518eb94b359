"""The benchmark workloads of issue 3 (float32, tanh, softmax cross-entropy per step).

Every workload is a many-to-many tagging task: a prediction of ``C`` classes at every
step, loss = softmax cross-entropy averaged over the valid steps of the batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    B: int
    T: int
    H: int
    C: int = 10
    D: int | None = None  # dense input width; None: token ids
    V: int | None = None  # vocabulary size for token ids
    var_len: bool = False  # lengths uniform in [T // 10, T], padded to T
    layers: int = 1
    bidirectional: bool = False
    group: str = "main"  # "main" or the name of the swept variable

    @property
    def tokens(self) -> int:
        return self.B * self.T

    @property
    def input_size(self) -> int:
        return self.V if self.D is None else self.D

    def describe(self) -> str:
        inp = f"ids V={self.V}" if self.D is None else f"dense D={self.D}"
        extra = " var-len" if self.var_len else ""
        if self.layers > 1 or self.bidirectional:
            extra += f" {self.layers}L{' bi' if self.bidirectional else ''}"
        return f"B={self.B} T={self.T} H={self.H} {inp}{extra}"

    def data(self, seed: int = 0):
        """``(xs, labels, lengths)`` as NumPy arrays (``lengths`` None if fixed length)."""
        rng = np.random.default_rng(seed)
        if self.D is None:
            xs = rng.integers(0, self.V, (self.B, self.T), dtype=np.int32)
        else:
            xs = rng.standard_normal((self.B, self.T, self.D), dtype=np.float32)
        labels = rng.integers(0, self.C, (self.B, self.T), dtype=np.int32)
        lengths = None
        if self.var_len:
            lengths = rng.integers(max(1, self.T // 10), self.T + 1, (self.B,), dtype=np.int32)
        return xs, labels, lengths


MAIN = [
    Workload("W1", B=64, T=100, H=256, V=10_000),
    Workload("W2", B=64, T=100, H=256, D=64),
    Workload("W3", B=16, T=1_000, H=128, D=32),
    Workload("W4", B=64, T=100, H=256, V=10_000, var_len=True),
    Workload("W5", B=64, T=100, H=256, V=10_000, var_len=True, layers=2, bidirectional=True),
]

# Sweeps vary one size of a base (B=16, T=100, H=128, dense D=32) at a time.
_BASE = dict(B=16, T=100, H=128, D=32)


def _sweep(var: str, values) -> list[Workload]:
    return [
        Workload(f"{var}={v}", **{**_BASE, var: v}, group=var)  # type: ignore[arg-type]
        for v in values
    ]


SWEEPS = (
    _sweep("T", [10, 100, 1_000, 10_000])
    + _sweep("H", [64, 256, 1_024])
    + _sweep("B", [1, 16, 64, 256])
)

QUICK = [dataclasses.replace(w) for w in MAIN]


def by_name(name: str) -> Workload:
    for w in MAIN + SWEEPS:
        if w.name == name:
            return w
    raise ValueError(f"unknown workload {name!r}")
