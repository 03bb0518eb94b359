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
``--config.train.residual=none``, ``--config.models=rnn,rnn_gauss``). Every error is one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

COMMANDS = ("fetch", "train", "eval", "predict", "summarize")
PROG = "python -m experiments.weather"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _overrides(parser, extra: list[str]) -> tuple[dict[str, str], list[str]]:
    out, rest = {}, []
    items = iter(extra)
    for item in items:
        if not item.startswith("--config."):
            if item.startswith("-"):
                parser.error(f"unrecognised argument {item!r} (overrides are --config.KEY=VALUE)")
            rest.append(item)
            continue
        key, eq, value = item[len("--config.") :].partition("=")
        if not eq:
            value = next(items, None)
            if value is None:
                parser.error(f"{item} needs a value")
        out[key] = value
    return out, rest


def _qualify(config, overrides: dict[str, str]) -> dict[str, str]:
    """Bare names (``hidden_size``) become ``section.name``; unknown names are an error."""
    sections = {
        f.name: {g.name for g in dataclasses.fields(getattr(config, f.name))}
        for f in dataclasses.fields(config)
        if dataclasses.is_dataclass(getattr(config, f.name))
    }
    top = {f.name for f in dataclasses.fields(config)}
    out = {}
    for key, value in overrides.items():
        head = key.partition(".")[0]
        if head in top:
            out[key] = value
            continue
        owners = [s for s, names in sections.items() if key in names]
        if len(owners) != 1:
            valid = sorted(
                {n for names in sections.values() for n in names} | (top - set(sections))
            )
            raise ValueError(f"unknown config key `{key}`; valid keys: {', '.join(valid)}")
        out[f"{owners[0]}.{key}"] = value
    return out


def _parse(argv: list[str]):
    """``(args, config, inputs)``; a command line that cannot run exits with status 2."""
    from experiments.cli import apply_overrides
    from experiments.weather.config import default_config

    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--workdir")
    parser.add_argument("--task", choices=("daily", "hourly"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--csv", help="predict: a CSV with a date column and the input columns")
    parser.add_argument("--debug", action="store_true")
    args, extra = parser.parse_known_args(argv)
    overrides, inputs = _overrides(parser, extra)
    needs = [
        (inputs and args.command != "summarize", f"`{args.command}` takes no positional inputs"),
        (
            args.command not in ("fetch", "summarize") and not args.workdir,
            "--workdir DIR is needed",
        ),
        (args.command == "predict" and not args.csv, "`predict` needs --csv FILE"),
        (args.command == "summarize" and not inputs, "`summarize` needs run directories"),
    ]
    for failed, message in needs:
        if failed:
            parser.error(message)
    try:
        config = default_config(args.quick, args.task or "daily")
        if args.seed is not None:
            overrides["train.seed"] = str(args.seed)
        args.overrides = _qualify(config, overrides)
        config = apply_overrides(config, args.overrides)
    except ValueError as err:
        parser.error(str(err))
    return args, config, inputs


def _run(args, config, inputs) -> int:
    from experiments.weather import task

    workdir = Path(args.workdir).expanduser() if args.workdir else None
    if args.command == "fetch":
        from experiments.weather.data import fetch

        for name, path in fetch(config.report.data_dir).items():
            print(f"{name}: {path} (sha256 checked)")
        return 0
    if args.command == "train":
        return task.train_command(config, workdir)
    if args.command == "eval":
        return task.eval_command(workdir, args.overrides)
    print(
        task.predict_csv(workdir, args.csv) if args.command == "predict" else task.summarize(inputs)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit status (2: bad command line, 1: runtime error)."""
    try:
        args, config, inputs = _parse(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return _run(args, config, inputs)
    except (Exception, KeyboardInterrupt) as err:
        if args.debug:
            raise
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"{PROG} {args.command}: error: {text}", file=sys.stderr)
        return getattr(err, "exit_code", None) or (130 if isinstance(err, KeyboardInterrupt) else 1)


if __name__ == "__main__":
    sys.exit(main())
