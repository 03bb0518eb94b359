"""Seattle temperatures (``vega_datasets==0.9.0``, bundled offline): loading, splits, windows.

Two series, both in °C after loading:

- **daily** (``seattle_weather()``, 2012-01-01 .. 2015-12-31, 1,461 days): ``temp_max``,
  ``temp_min`` (°C), ``precipitation`` (mm), ``wind`` (m/s);
- **hourly** (``seattle_temps()``, 2010, 8,759 readings in °F, converted to °C): one reading
  is missing (2010-03-14 02:00, the switch to daylight-saving time); it is filled by linear
  interpolation so the series is a regular grid of 8,760 hours.

Splits are chronological only, by the time of the *target* (a window's inputs may reach back
into the previous split, as they would in real forecasting):

- daily: train 2012-2013, validation 2014, test 2015;
- hourly: the last 20 % of the hours are the test part, the 10 % before it validation, the
  rest training.

Standardisation (mean and standard deviation per input column) uses the training rows only.

An example is the window of ``T_x`` steps before a forecast origin ``i`` (rows
``i - T_x .. i - 1``) and the ``C`` targets at rows ``i .. i + C - 1``; it belongs to a split
when all its targets do.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from experiments.data import default_data_dir
from experiments.data import sha256_file as _sha256

__all__ = [
    "SOURCES",
    "TASKS",
    "Series",
    "Task",
    "Windows",
    "cache_dir",
    "fetch",
    "load_series",
    "make_windows",
    "series_from_frame",
    "split_bounds",
]

#: name -> (vega_datasets loader, bundled file, sha256 of that file)
SOURCES: dict[str, tuple[str, str, str]] = {
    "daily": (
        "seattle_weather",
        "seattle-weather.csv",
        "62f0609f787158128aa2bd102967173a4953122dd4f872bf1d502cae1037df0b",
    ),
    "hourly": (
        "seattle_temps",
        "seattle-temps.csv",
        "c220666521ff4bec4ffb6f0d9acfdc5c1056564b1aad6f78d3b06aa0a0c8b085",
    ),
}

INSTALL = "pip install vega_datasets==0.9.0 pandas (or: pip install -e '.[experiments]')"


@dataclasses.dataclass(frozen=True)
class Task:
    """A forecasting task.

    Attributes:
        name: ``daily`` or ``hourly``.
        columns: the raw input columns (the target column first); day-of-year (and for
            hourly, hour-of-day) sine/cosine are appended as further inputs, and for hourly
            also ``temp_d24``, the change over the last 24 hours (the day-to-day signal is
            about 0.1 °C against a 5 °C spread of the temperature itself; as a column of its
            own it is standardised to unit scale). Its first 24 rows are 0.
        target: the column forecast.
        T_x: input window length.
        C: outputs (steps ahead forecast at once from the window's final state).
        period: the seasonal lag of persistence (1 day; 24 hours = same hour yesterday).
        step: ``numpy.timedelta64`` between rows.
    """

    name: str
    columns: tuple[str, ...]
    target: str
    T_x: int
    C: int
    period: int
    step: np.timedelta64

    @property
    def inputs(self) -> tuple[str, ...]:
        extra = ("doy_sin", "doy_cos")
        if self.name == "hourly":
            extra = ("temp_d24", "hod_sin", "hod_cos", *extra)
        return (*self.columns, *extra)

    @property
    def rows_needed(self) -> int:
        """Rows a forecast reads: the window, plus a day before it for ``temp_d24``."""
        return self.T_x + (24 if self.name == "hourly" else 0)


TASKS: dict[str, Task] = {
    "daily": Task(
        "daily",
        ("temp_max", "temp_min", "precipitation", "wind"),
        "temp_max",
        T_x=30,
        C=1,
        period=1,
        step=np.timedelta64(1, "D"),
    ),
    "hourly": Task(
        "hourly", ("temp",), "temp", T_x=168, C=24, period=24, step=np.timedelta64(1, "h")
    ),
}


def cache_dir(data_dir: str | None = None) -> Path:
    """``data_dir``, else ``$RNN_JAX_DATA``, else ``~/.cache/rnn_jax``; plus ``/weather``."""
    return default_data_dir(data_dir) / "weather"


def _bundled_path(name: str) -> Path:
    try:
        import vega_datasets
    except ImportError:
        raise RuntimeError(f"the weather data need vega_datasets: {INSTALL}") from None
    return Path(vega_datasets.__file__).parent / "_data" / SOURCES[name][1]


def fetch(data_dir: str | None = None) -> dict[str, Path]:
    """Checks the bundled CSVs' sha256 and caches a copy (with ``.sha256``) in :func:`cache_dir`.

    Returns ``{name: cached path}``. Raises ``RuntimeError`` (one sentence naming the fix) if
    the package is missing or a file differs from the pinned version.
    """
    out = {}
    target = cache_dir(data_dir)
    target.mkdir(parents=True, exist_ok=True)
    for name, (_, filename, sha) in SOURCES.items():
        src = _bundled_path(name)
        if not src.is_file():
            raise RuntimeError(f"{src} is missing from the vega_datasets install: {INSTALL}")
        got = _sha256(src)
        if got != sha:
            raise RuntimeError(
                f"{src} has sha256 {got}, expected {sha} (vega_datasets==0.9.0): {INSTALL}"
            )
        dst = target / filename
        if not dst.is_file() or _sha256(dst) != sha:
            shutil.copyfile(src, dst)
        (target / f"{filename}.sha256").write_text(f"{sha}  {filename}\n")
        out[name] = dst
    return out


def _read_csv(name: str, data_dir: str | None):
    """The cached copy if it is intact, else the bundled file (checked against the pin)."""
    import pandas as pd

    _, filename, sha = SOURCES[name]
    cached = cache_dir(data_dir) / filename
    path = cached if cached.is_file() and _sha256(cached) == sha else None
    if path is None:
        path = _bundled_path(name)
        if not path.is_file() or _sha256(path) != sha:
            raise RuntimeError(
                f"{path} is missing or not the pinned vega_datasets==0.9.0 file: {INSTALL}, "
                "then `python -m experiments.weather fetch`"
            )
    return pd.read_csv(path, parse_dates=["date"])


@dataclasses.dataclass(frozen=True)
class Series:
    """A regular time series: ``dates (N,)`` and the raw input matrix ``X (N, D)``.

    ``X``'s columns are :attr:`Task.inputs` (raw units: °C, mm, m/s, sine/cosine); the
    target is column 0.
    """

    task: Task
    dates: np.ndarray
    X: np.ndarray

    @property
    def y(self) -> np.ndarray:
        return self.X[:, 0]

    def __len__(self) -> int:
        return len(self.dates)


def _calendar(dates: np.ndarray, hourly: bool) -> list[np.ndarray]:
    days = (dates - dates.astype("datetime64[Y]")).astype("timedelta64[h]").astype(float) / 24.0
    doy = 2 * np.pi * days / 365.25
    cal = [np.sin(doy), np.cos(doy)]
    if hourly:
        hod = 2 * np.pi * (dates.astype("datetime64[h]").astype(np.int64) % 24) / 24.0
        cal = [np.sin(hod), np.cos(hod), *cal]
    return cal


def series_from_frame(task: Task, frame) -> Series:
    """A :class:`Series` from a data frame with a ``date`` column and the task's columns.

    Raises:
        ValueError: a column is missing, a value is not finite, or the dates are not a
            regular grid of the task's step (the message names the first gap).
    """
    import pandas as pd

    missing = [c for c in ("date", *task.columns) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the {task.name} data need the columns {['date', *task.columns]}; missing {missing}"
        )
    dates = pd.to_datetime(frame["date"]).to_numpy().astype("datetime64[s]")
    if len(dates) > 1:
        gaps = np.nonzero(np.diff(dates) != task.step)[0]
        if len(gaps):
            i = gaps[0]
            raise ValueError(
                f"dates must be consecutive steps of {task.step} in order; row {i + 1} "
                f"({dates[i + 1]}) follows {dates[i]}"
            )
    cols = [frame[c].to_numpy(dtype=float) for c in task.columns]
    if task.name == "hourly":
        cols.append(np.concatenate([np.zeros(min(24, len(cols[0]))), cols[0][24:] - cols[0][:-24]]))
    X = np.stack([*cols, *_calendar(dates, task.name == "hourly")], axis=1).astype(np.float64)
    if not np.all(np.isfinite(X)):
        r, c = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"row {r} ({dates[r]}) has a missing or non-finite {task.inputs[c]!r}")
    return Series(task, dates, X)


def load_series(name: str, data_dir: str | None = None) -> Series:
    """The daily or hourly series in °C (hourly: the one missing hour interpolated)."""
    task = TASKS[name]
    frame = _read_csv(name, data_dir)
    if name == "hourly":
        frame = frame.set_index("date").asfreq("h").interpolate("linear").reset_index()
        frame["temp"] = (frame["temp"] - 32.0) * 5.0 / 9.0
    return series_from_frame(task, frame)


def split_bounds(series: Series) -> tuple[int, int]:
    """Row indices ``(v, t)``: training rows ``[0, v)``, validation ``[v, t)``, test ``[t, N)``."""
    N = len(series)
    if series.task.name == "daily":
        years = series.dates.astype("datetime64[Y]").astype(int) + 1970
        v = int(np.searchsorted(years, 2014))
        t = int(np.searchsorted(years, 2015))
        return v, t
    return int(round(0.7 * N)), int(round(0.8 * N))


@dataclasses.dataclass(frozen=True)
class Windows:
    """Examples of one split.

    Attributes:
        origins: ``(B,)`` row of each example's first target.
        xs: ``(B, T_x, D)`` standardised inputs.
        y: ``(B, C)`` targets in °C.
        persistence: ``(B, C)`` the seasonal-naive forecast (the value ``period`` steps
            before each target, taken from the inputs' last ``period`` rows).
    """

    origins: np.ndarray
    xs: np.ndarray
    y: np.ndarray
    persistence: np.ndarray

    def __len__(self) -> int:
        return len(self.origins)


def make_windows(
    series: Series, lo: int, hi: int, mean: np.ndarray, std: np.ndarray, stride: int = 1
) -> Windows:
    """All examples whose targets lie in rows ``[lo, hi)`` (origins ``stride`` apart)."""
    task = series.task
    lo = max(lo, task.T_x)
    origins = np.arange(lo, hi - task.C + 1, stride)
    Z = ((series.X - mean) / std).astype(np.float32)
    idx = origins[:, None] + np.arange(-task.T_x, 0)[None, :]
    xs = Z[idx]
    tgt = origins[:, None] + np.arange(task.C)[None, :]
    y = series.y[tgt]
    pers_idx = origins[:, None] - task.period + (np.arange(task.C) % task.period)[None, :]
    return Windows(origins, xs, y, series.y[pers_idx])
