"""Shared command-line machinery for ``python -m experiments.<name> COMMAND ...``.

Every experiment is run the same way::

    python -m experiments.<name> {train,eval,predict,...} --workdir DIR [--seed N] [--quick]
                                 [--config.key=value ...] [inputs ...]

- ``--quick`` starts from the experiment's quick configuration (a few minutes on 2 cores);
- ``--config.key=value`` (or ``--config.key value``) overrides one field of the config
  dataclass, parsed by the field's type (``int``, ``float``, ``bool`` as
  ``true/false/1/0``, ``str``, ``None`` as ``none``, tuples as comma-separated values);
  nested dataclasses are reached with dots (``--config.model.hidden_size=64``);
- ``--seed N`` is ``--config.seed=N``;
- the remaining positional arguments are the command's inputs (e.g. texts for ``predict``;
  ``predict`` reads standard input when none are given).

An experiment supplies a ``default_config(quick: bool)`` returning a dataclass and a dict of
commands ``name -> fn(config, workdir, inputs) -> int | None`` and calls :func:`main`.

Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Config:
    ...     seed: int = 0
    ...     hidden_size: int = 8
    ...     models: tuple[str, ...] = ("rnn",)
    >>> apply_overrides(Config(), {"hidden_size": "16", "models": "rnn,birnn"})
    Config(seed=0, hidden_size=16, models=('rnn', 'birnn'))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "main",
    "parse_args",
    "read_inputs",
]

Command = Callable[[Any, Path, list[str]], "int | None"]


def _parse_value(text: str, annotation: Any, field_name: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(text, arg, field_name)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin is tuple or annotation is tuple:
        item = args[0] if args else str
        if not text:
            return ()
        return tuple(_parse_value(t.strip(), item, field_name) for t in text.split(","))
    if annotation is bool:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"`--config.{field_name}` must be true or false, got {text!r}")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"`--config.{field_name}` must be an int, got {text!r}") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"`--config.{field_name}` must be a float, got {text!r}") from None
    if annotation is str:
        return text
    raise ValueError(f"`--config.{field_name}` has unsupported type {annotation!r}")


def apply_overrides(config: Any, overrides: dict[str, str]) -> Any:
    """Returns ``config`` with the dotted ``overrides`` (strings) parsed and applied.

    Raises:
        ValueError: an unknown key (the message lists the valid ones) or a bad value.
    """
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, str]] = {}
    for key, text in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ValueError(f"unknown config key `{key}`; valid keys: {', '.join(sorted(names))}")
        if rest:
            nested.setdefault(head, {})[rest] = text
        else:
            direct[head] = _parse_value(text, hints[head], key)
    for head, sub in nested.items():
        direct[head] = apply_overrides(getattr(config, head), sub)
    return dataclasses.replace(config, **direct)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuilds a config dataclass from :func:`config_to_dict` output (lists become tuples)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def read_inputs(inputs: Sequence[str]) -> list[str]:
    """The command's inputs, or the non-empty lines of standard input when there are none."""
    if inputs:
        return list(inputs)
    return [line.strip() for line in sys.stdin if line.strip()]


def parse_args(
    argv: Sequence[str] | None,
    *,
    prog: str,
    commands: Sequence[str],
    default_config: Callable[[bool], Any],
    description: str = "",
    workdir_required: bool = True,
) -> tuple[str, Any, Path, list[str]]:
    """Parses ``COMMAND --workdir DIR [--seed N] [--quick] [--config.k=v ...] [inputs ...]``.

    Returns:
        ``(command, config, workdir, inputs)``.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Override any config field with --config.KEY=VALUE (see config.py).",
    )
    parser.add_argument("command", choices=list(commands))
    parser.add_argument("inputs", nargs="*", help="inputs of the command (e.g. texts for predict)")
    parser.add_argument("--workdir", required=workdir_required, help="run directory")
    parser.add_argument("--seed", type=int, default=None, help="shorthand for --config.seed")
    parser.add_argument("--quick", action="store_true", help="the quick configuration")
    args, unknown = parser.parse_known_args(argv)
    overrides: dict[str, str] = {}
    inputs = list(args.inputs)
    i = 0
    while i < len(unknown):
        item = unknown[i]
        if not item.startswith("-"):  # a positional input after an override
            inputs.append(item)
            i += 1
            continue
        if not item.startswith("--config."):
            parser.error(
                f"unrecognised argument {item!r} (config overrides are --config.KEY=VALUE)"
            )
        key = item[len("--config.") :]
        if "=" in key:
            key, value = key.split("=", 1)
        else:
            if i + 1 >= len(unknown):
                parser.error(f"{item} needs a value")
            value = unknown[i + 1]
            i += 1
        overrides[key] = value
        i += 1
    if args.seed is not None:
        overrides["seed"] = str(args.seed)
    config = default_config(args.quick)
    try:
        config = apply_overrides(config, overrides)
    except ValueError as err:
        parser.error(str(err))
    workdir = Path(args.workdir).expanduser() if args.workdir else None
    return args.command, config, workdir, inputs


def main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    commands: dict[str, Command],
    default_config: Callable[[bool], Any],
    description: str = "",
) -> int:
    """Parses the command line and runs the command; returns the exit status.

    Errors that are the user's to fix (a config mismatch, a corrupted checkpoint, a NaN loss,
    a missing data set) are printed as one clear message with exit status 1, without a
    traceback.
    """
    from rnn_jax.checkpoint import CheckpointError
    from rnn_jax.train import NonFiniteLossError

    command, config, workdir, inputs = parse_args(
        argv,
        prog=prog,
        commands=list(commands),
        default_config=default_config,
        description=description,
    )
    try:
        status = commands[command](config, workdir, inputs)
    except (CheckpointError, NonFiniteLossError, FileNotFoundError) as err:
        print(f"{prog} {command}: error: {err}", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)


# --------------------------------------------------------------------------- run directories


def _trained_file(workdir: Path, filename: str, experiment: str) -> Path:
    path = Path(workdir) / filename
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: train first with "
            f"`python -m experiments.{experiment} train --workdir {workdir}`."
        )
    return path


def read_run_config(
    workdir: Path, cls: type, experiment: str, filename: str = "config.json"
) -> Any:
    """The configuration a training run stored in ``workdir`` (a clear error if none)."""
    path = _trained_file(workdir, filename, experiment)
    return config_from_dict(cls, json.loads(path.read_text()))


def load_run_vocab(workdir: Path, experiment: str, filename: str = "vocab.json"):
    """The vocabulary a training run stored in ``workdir`` (a clear error if none)."""
    from rnn_jax.vocab import Vocabulary

    return Vocabulary.load(_trained_file(workdir, filename, experiment))


def fit_logged(state, train_step, epoch_batches, *, workdir: Path, checkpointer, name: str,
               tensorboard: bool = False, **fit_kwargs) -> dict[str, Any]:  # fmt: skip
    """:func:`rnn_jax.train.fit` with the run directory's metrics log, curves and summary.

    Logs metrics to ``workdir/metrics.jsonl`` (and TensorBoard if asked and installed),
    closes the log and the checkpointer however training ends, plots ``curves.png`` and
    returns the summary every experiment reports.
    """
    from rnn_jax.progress import MetricsLogger, plot_metrics
    from rnn_jax.train import fit

    workdir = Path(workdir)
    logger = MetricsLogger(workdir, tensorboard=tensorboard)
    if tensorboard and not logger.tensorboard_enabled:
        print(
            "tensorboard=true but no writer is installed (pip install tensorboardX); "
            "metrics go to metrics.jsonl only",
            file=sys.stderr,
        )
    try:
        result = fit(state, train_step, epoch_batches, checkpointer=checkpointer, logger=logger,
                     description=name, **fit_kwargs)  # fmt: skip
    finally:
        logger.close()
        checkpointer.close()
    plot_metrics(workdir / "metrics.jsonl", workdir / "curves.png", title=name)
    return {
        "train_seconds": result.train_seconds,
        "best_step": result.best_step,
        "steps": int(result.state.step),
        "stopped_early": result.stopped_early,
        "val": result.best_metrics,
    }
