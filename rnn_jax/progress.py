"""Feedback during training: a progress bar, metrics as JSON lines, curves as PNG, TensorBoard.

- :class:`ProgressBar`: a ``tqdm`` bar over steps showing the loss, the step rate and the
  ETA (and the latest validation metrics).
- :class:`MetricsLogger`: one JSON object per line in ``<run>/metrics.jsonl``:
  ``{"step": 120, "split": "val", "epoch": 2, "f1": 0.91, ...}``; when a run resumes from a
  checkpoint the records after that step are dropped (they will be written again), so the
  file of a resumed run equals that of an uninterrupted one (wall times aside). With
  ``tensorboard=True`` the same scalars also go to TensorBoard event files if a writer
  (``tensorboardX`` or ``torch.utils.tensorboard``) is installed.
- :func:`plot_metrics`: loss and metric curves from a ``metrics.jsonl`` as a PNG
  (matplotlib, Agg backend: no display needed).

Example:
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     logger = MetricsLogger(d)
    ...     logger.log(10, "train", {"loss": 0.5})
    ...     logger.log(10, "val", {"f1": 0.8})
    ...     logger.close()
    ...     records = read_metrics(os.path.join(d, "metrics.jsonl"))
    ...     _ = plot_metrics(os.path.join(d, "metrics.jsonl"), os.path.join(d, "curves.png"))
    ...     [r["split"] for r in records], os.path.exists(os.path.join(d, "curves.png"))
    (['train', 'val'], True)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from rnn_jax._io import atomic_write

__all__ = [
    "MetricsLogger",
    "ProgressBar",
    "make_tensorboard_writer",
    "plot_metrics",
    "read_metrics",
]


class ProgressBar:
    """A step progress bar (tqdm) with the loss, the step rate and the ETA.

    Args:
        total: total number of steps.
        initial: steps already done (a resumed run).
        enabled: ``False`` makes every method a no-op.
        description: a label.
    """

    def __init__(
        self, total: int, *, initial: int = 0, enabled: bool = True, description: str = ""
    ):
        self._bar = None
        self._postfix: dict[str, str] = {}
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=description,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=0.5,
            )

    def update(self, n: int = 1, *, loss: float | None = None) -> None:
        if self._bar is None:
            return
        if loss is not None:
            self._postfix["loss"] = f"{loss:.4f}"
        self._bar.set_postfix(self._postfix, refresh=False)
        self._bar.update(n)

    def set_postfix_metrics(self, metrics: dict[str, float], keys: tuple[str, ...] = ()) -> None:
        """Shows validation metrics (prefixed ``val_``; only ``keys`` if given) next to the loss."""
        for k, v in metrics.items():
            if not keys or k in keys:
                self._postfix[f"val_{k}"] = f"{v:.4f}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def make_tensorboard_writer(logdir: str | os.PathLike[str]) -> Any | None:
    """A TensorBoard ``SummaryWriter`` if ``tensorboardX`` or ``torch.utils.tensorboard`` works.

    Returns ``None`` when neither is installed (TensorBoard output is optional).
    """
    try:
        from tensorboardX import SummaryWriter  # type: ignore[import-not-found]
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter  # type: ignore[import-not-found]
        except ImportError:
            return None
    return SummaryWriter(str(logdir))


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash
    return records


class MetricsLogger:
    """Writes metrics as JSON lines to ``<directory>/metrics.jsonl`` (and optionally TensorBoard).

    Args:
        directory: the run directory.
        filename: the file name.
        tensorboard: also write TensorBoard events to ``<directory>/tensorboard`` if a writer
            is installed (silently skipped otherwise; see :attr:`tensorboard_enabled`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        filename: str = "metrics.jsonl",
        tensorboard: bool = False,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / filename
        self._file = open(self.path, "a")  # noqa: SIM115
        self._tb = make_tensorboard_writer(self.directory / "tensorboard") if tensorboard else None

    @property
    def tensorboard_enabled(self) -> bool:
        return self._tb is not None

    def log(self, step: int, split: str, metrics: dict[str, float], **fields: Any) -> None:
        """Appends one record ``{"step", "split", "time", **fields, **metrics}``."""
        record = {"step": int(step), "split": split, "time": time.time(), **fields}
        for k, v in metrics.items():
            v = float(v)
            record[k] = v if math.isfinite(v) else str(v)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

    def truncate_after(self, step: int) -> None:
        """Drops the records with ``step`` greater than ``step`` (on resume)."""
        self._file.close()
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        # atomic: a crash leaves the old file or the new one
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")  # noqa: SIM115

    def flush(self) -> None:
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def plot_metrics(
    metrics_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Plots every numeric metric of a ``metrics.jsonl`` against the step, one panel each.

    The training loss and the validation loss share a panel; every other metric gets its
    own. Saved as PNG with matplotlib's Agg backend.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    skip = {"step", "split", "time", "epoch"}
    for r in records:
        for k, v in r.items():
            if k in skip or not isinstance(v, int | float):
                continue
            panel = "loss" if k == "loss" else k
            xs, ys = series.setdefault(panel, {}).setdefault(r["split"], ([], []))
            xs.append(r["step"])
            ys.append(v)
    panels = sorted(series, key=lambda p: (p != "loss", p))
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for split, (xs, ys) in sorted(series[panel].items()):
            ax.plot(xs, ys, label=split, marker="." if len(xs) < 40 else None)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
