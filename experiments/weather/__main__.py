"""``python -m experiments.weather COMMAND --workdir DIR [--task daily|hourly] [--seed N] [--quick]
[--config.KEY=VALUE ...]``.

- ``fetch``: checks the bundled vega_datasets CSVs (sha256) and caches a copy in
  ``$RNN_JAX_DATA/weather`` (no ``--workdir`` needed);
- ``train``: fits the baselines and trains every model of ``config.models`` on the task
  (``--task``, default daily), evaluates on the test part, writes ``DIR/results.{json,md}``
  and ``DIR/forecast.png``;
- ``eval``: the same evaluation from the checkpoints in ``DIR``;
- ``predict --csv FILE``: the next forecast(s) of every model from the last ``T_x`` rows of a
  CSV with a ``date`` column and the task's input columns (with the 80 % interval of the
  Gaussian head); hourly temperatures as ``temp`` in °C, or ``temp_f`` in °F as in
  ``seattle-temps.csv``; the hourly model needs the last 192 rows (168 + 24 for the
  24-hour change);
- ``summarize DIR ...``: mean ± sd of the scores over several run directories (seeds).

Config keys are ``section.name`` or a bare ``name`` (``--config.hidden_size=64``,
``--config.train.residual=none``, ``--config.models=rnn,rnn_gauss``). Every error is one line
(:mod:`experiments.cli`).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit status (2: bad command line, 1: runtime error)."""
    from experiments.weather.task import EXPERIMENT

    return EXPERIMENT.main(argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
