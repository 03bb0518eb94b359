"""Shared command-line machinery for ``python -m experiments.<name> COMMAND ...``.

Every experiment is run the same way::

    python -m experiments.<name> {train,eval,predict,...} --workdir DIR [--seed N] [--quick]
                                 [--config.key=value ...] [--debug] [inputs ...]

- ``--quick`` starts from the experiment's quick configuration (a few minutes on 2 cores);
- ``--config.key=value`` (or ``--config.key value``) overrides one field of the nested config
  ``Config(model, train, report)`` (see :mod:`experiments.common`), parsed by the field's
  type (``int``, ``float``, ``bool`` as ``true/false/1/0``, ``str``, ``None`` as ``none``,
  tuples as comma-separated values). A field is named by its section and name
  (``--config.model.hidden_size=64``) or by its name alone (``--config.hidden_size=64``),
  since no name occurs in two sections;
- ``--seed N`` is ``--config.seed=N``;
- ``--devices N`` trains data-parallel on ``N`` devices (``N`` CPU devices of this
  process, or its first ``N`` accelerators), ``--distributed`` on the devices of several
  processes (:mod:`rnn_jax.distributed`, from ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``; implied when ``JAX_NUM_PROCESSES`` is set, as
  ``python -m experiments.launch`` does). Neither changes the configuration: a run resumes
  on any number of devices. Experiments without data-parallel training refuse them;
- the remaining positional arguments are the command's inputs (e.g. texts for ``predict``;
  ``predict`` reads standard input when none are given); ``train`` and ``eval`` take none.

The whole configuration is checked before anything touches the disk. Every error is one line
on standard error: exit status 2 for a command line that cannot run (unknown key, bad value,
inputs where none are taken), 1 for an error while running (a run directory of another
configuration, a corrupted checkpoint, a NaN loss, a missing data set, a read-only disk), the
``exit_code`` an exception carries where it has one (a signal: 128 + its number); ``--debug``
shows the traceback instead.

Example:
    >>> from experiments.names.config import NamesConfig
    >>> overrides = {"hidden_size": "16", "train.seed": "3", "models": "rnn,birnn"}
    >>> config = apply_overrides(NamesConfig(), overrides)
    >>> config.model.hidden_size, config.train.seed, config.models
    (16, 3, ('rnn', 'birnn'))
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "Experiment",
    "Invocation",
    "Option",
    "UsageError",
    "apply_overrides",
    "fetch_main",
    "main",
    "module_main",
    "parallel_flags",
    "parse_args",
    "read_inputs",
    "replace_fields",
]

#: Commands that take no positional inputs.
NO_INPUTS = frozenset({"train", "eval"})


class UsageError(ValueError):
    """A command line that cannot run (exit status 2)."""


class Invocation(NamedTuple):
    """A parsed command line: what a command function receives."""

    command: str
    config: Any
    workdir: Path | None
    inputs: list[str]
    overrides: dict[str, str]
    debug: bool = False
    options: dict[str, Any] = {}  # the experiment's own flags (:class:`Option`), by name


class Option(NamedTuple):
    """An experiment's own flag, e.g. ``--task`` (its value: ``Invocation.options[name]``).

    With ``preset``, the value also picks the default configuration:
    ``default_config(quick, **{name: value})`` (e.g. per-task defaults).
    """

    name: str
    help: str
    choices: tuple[str, ...] | None = None
    default: str | None = None
    preset: bool = False


Command = Callable[[Invocation], "int | None"]


# --------------------------------------------------------------------------- overrides


def _parse_union(text: str, args: tuple[Any, ...], key: str) -> Any:
    if text.lower() in ("none", "null") and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _parse_value(text, arg, key)
        except ValueError as err:
            errors.append(str(err))
    raise ValueError("; ".join(errors))


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _parse_scalar(text: str, annotation: Any, key: str) -> Any:
    if annotation is bool:
        if text.lower() not in _BOOLS:
            raise ValueError(f"`--config.{key}` must be true or false, got {text!r}")
        return _BOOLS[text.lower()]
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise ValueError(
                f"`--config.{key}` must be a{'n' if annotation is int else ''} "
                f"{annotation.__name__}, got {text!r}"
            ) from None
    if annotation is str:
        return text
    raise ValueError(f"`--config.{key}` has unsupported type {annotation!r}")


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _parse_union(text, args, key)
    if origin is tuple or annotation is tuple:
        item = args[0] if args else str
        return tuple(_parse_value(t.strip(), item, key) for t in text.split(",")) if text else ()
    return _parse_scalar(text, annotation, key)


def _sections(config: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, f.name))]  # fmt: skip


def _valid_keys(config: Any) -> list[str]:
    keys = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        keys += _valid_keys(value) if dataclasses.is_dataclass(value) else [f.name]
    return sorted(keys)


def _resolve(config: Any, key: str) -> str:
    """``key`` as a path from ``config``: a flat name is looked up in the sections."""
    head = key.partition(".")[0]
    if head in {f.name for f in dataclasses.fields(config)}:
        return key
    owners = [s for s in _sections(config) if head in _valid_keys(getattr(config, s))]
    if len(owners) == 1:
        return f"{owners[0]}.{key}"
    raise ValueError(f"unknown config key `{key}`; valid keys: {', '.join(_valid_keys(config))}")


def replace_fields(config: Any, values: dict[str, Any], *, parse: bool = False) -> Any:
    """Returns ``config`` with ``values`` (by flat or dotted names) replaced, section by section.

    Each section is rebuilt once with all its new values, so its checks see the final values.
    With ``parse``, the values are command-line strings parsed by the fields' types.

    Example:
        >>> from experiments.names.config import NamesConfig
        >>> replace_fields(NamesConfig(), {"hidden_size": 16, "train.seed": 3}).model.hidden_size
        16
    """
    hints = typing.get_type_hints(type(config))
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, _, rest = _resolve(config, key).partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = _parse_value(value, hints[head], key) if parse else value
    for head, sub in nested.items():
        direct[head] = replace_fields(getattr(config, head), sub, parse=parse)
    return dataclasses.replace(config, **direct)


def apply_overrides(config: Any, overrides: dict[str, str]) -> Any:
    """Returns ``config`` with the ``overrides`` (strings, flat or dotted names) applied.

    Raises:
        ValueError: an unknown key (the message lists the valid ones) or a bad value (the
            config's own checks included).
    """
    return replace_fields(config, overrides, parse=True)


def read_inputs(inputs: Sequence[str]) -> list[str]:
    """The command's inputs, or the non-empty lines of standard input when there are none."""
    if inputs:
        return list(inputs)
    return [line.strip() for line in sys.stdin if line.strip()]


# --------------------------------------------------------------------------- parsing


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``) and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _split_overrides(parser: _Parser, unknown: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--config.k=v`` / ``--config.k v`` pairs, and the positional inputs among them."""
    overrides: dict[str, str] = {}
    inputs: list[str] = []
    items = iter(unknown)
    for item in items:
        if not item.startswith("-"):  # a positional input after an override
            inputs.append(item)
        elif not item.startswith("--config."):
            parser.error(
                f"unrecognised argument {item!r} (config overrides are --config.KEY=VALUE)"
            )
        elif "=" in item:
            key, value = item[len("--config.") :].split("=", 1)
            overrides[key] = value
        else:
            value = next(items, None)
            if value is None:
                parser.error(f"{item} needs a value")
            overrides[item[len("--config.") :]] = value
    return overrides, inputs


def parse_args(
    argv: Sequence[str] | None,
    *,
    prog: str,
    commands: Sequence[str],
    default_config: Callable[[bool], Any],
    description: str = "",
    workdir_required: bool = True,
    options: Sequence[Option] = (),
    workdir_optional: Collection[str] = (),
) -> Invocation:
    """Parses ``COMMAND --workdir DIR [--seed N] [--quick] [--config.k=v ...] [inputs ...]``.

    ``options``: the experiment's own flags; ``workdir_optional``: commands that run without
    ``--workdir`` (e.g. ``fetch``).

    Raises:
        SystemExit: status 2 after one line on stderr for a command line that cannot run.
    """
    parser = _Parser(
        prog=prog,
        description=description,
        epilog="Override any config field with --config.KEY=VALUE (see config.py).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(commands))
    parser.add_argument("inputs", nargs="*", help="inputs of the command (e.g. texts for predict)")
    parser.add_argument("--workdir", help="run directory")
    for option in options:
        flag, help_ = f"--{option.name}", option.help
        parser.add_argument(flag, choices=option.choices, default=option.default, help=help_)
    parser.add_argument("--seed", type=int, default=None, help="shorthand for --config.seed")
    parser.add_argument("--quick", action="store_true", help="the quick configuration")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    _add_parallel_flags(parser)
    args, unknown = parser.parse_known_args(argv)
    if args.devices is not None and args.devices < 1:
        parser.error(f"`--devices` must be a positive int, got {args.devices}")
    if workdir_required and args.workdir is None and args.command not in workdir_optional:
        parser.error("the following arguments are required: --workdir")
    values = {o.name: getattr(args, o.name) for o in options}
    presets = {o.name: values[o.name] for o in options if o.preset}
    overrides, more_inputs = _split_overrides(parser, unknown)
    inputs = list(args.inputs) + more_inputs
    if inputs and args.command in NO_INPUTS:
        parser.error(f"`{args.command}` takes no inputs, got {inputs!r}")
    if args.seed is not None:
        overrides["seed"] = str(args.seed)
    try:
        config = apply_overrides(default_config(args.quick, **presets), overrides)
    except ValueError as err:
        parser.error(str(err))
    workdir = Path(args.workdir).expanduser() if args.workdir else None
    return Invocation(args.command, config, workdir, inputs, overrides, args.debug, values)


def _add_parallel_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", type=int, default=None, help="train data-parallel on N devices"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        default=bool(os.environ.get("JAX_NUM_PROCESSES")),
        help="train on the devices of several processes (see experiments.launch)",
    )


def parallel_flags(argv: Sequence[str]) -> tuple[int | None, bool]:
    """``(--devices, --distributed)`` of a command line :func:`parse_args` accepted."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_parallel_flags(parser)
    args, _ = parser.parse_known_args(list(argv))
    return args.devices, args.distributed


# --------------------------------------------------------------------------- running


def _exit_code(err: BaseException) -> int:
    code = getattr(err, "exit_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return code  # e.g. training interrupted by a signal: 128 + its number
    if isinstance(err, UsageError):
        return 2
    if isinstance(err, KeyboardInterrupt):
        return 130
    return 1


# Errors that are the user's to fix; anything else is reported as unexpected.
_EXPECTED = (ValueError, OSError, RuntimeError, ArithmeticError, KeyboardInterrupt)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, _EXPECTED) and getattr(err, "exit_code", None) is None:
        text = f"unexpected {type(err).__name__}: {text} (rerun with --debug for the traceback)"
    return text


def main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    commands: dict[str, Command],
    default_config: Callable[..., Any],
    description: str = "",
    data_parallel: bool = False,
    options: Sequence[Option] = (),
    workdir_optional: Collection[str] = (),
) -> int:
    """Parses the command line and runs the command; returns the exit status.

    ``data_parallel``: whether the experiment trains on a mesh when ``--devices`` or
    ``--distributed`` is given (otherwise they are refused, exit status 2).

    Every error is printed as one line on stderr, without a traceback unless ``--debug``:
    exit status 2 for a command line that cannot run, 1 for an error while running, or the
    ``exit_code`` the exception carries (training stopped by a signal).
    """
    try:
        invocation = parse_args(
            argv,
            prog=prog,
            commands=list(commands),
            default_config=default_config,
            description=description,
            options=options,
            workdir_optional=workdir_optional,
        )
    except SystemExit as exit_:  # usage errors (one line printed) and --help
        return exit_.code if isinstance(exit_.code, int) else 2
    devices, distributed = parallel_flags(sys.argv[1:] if argv is None else argv)
    parallel = devices is not None or distributed
    if parallel and not data_parallel:
        print(
            f"{prog}: error: --devices/--distributed: this experiment has no data-parallel "
            "training yet (see experiments.names); run without them",
            file=sys.stderr,
        )
        return 2
    try:
        if parallel:
            from experiments.common import use_data_parallel

            use_data_parallel(devices, distributed)
        status = commands[invocation.command](invocation)
    except (Exception, KeyboardInterrupt) as err:
        if invocation.debug:
            raise
        print(f"{prog} {invocation.command}: error: {_one_line(err)}", file=sys.stderr)
        return _exit_code(err)
    return 0 if status is None else int(status)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An experiment's command line: its name, default configuration and commands."""

    name: str
    default_config: Callable[..., Any]
    commands: dict[str, Command]
    data_parallel: bool = False  # accepts --devices / --distributed
    options: tuple[Option, ...] = ()
    workdir_optional: frozenset[str] = frozenset()

    def main(self, argv: Sequence[str] | None = None, description: str = "") -> int:
        """:func:`main` for ``python -m experiments.<name>``."""
        return main(
            sys.argv[1:] if argv is None else argv,
            prog=f"python -m experiments.{self.name}",
            commands=self.commands,
            default_config=self.default_config,
            description=description,
            data_parallel=self.data_parallel,
            options=self.options,
            workdir_optional=self.workdir_optional,
        )


# --------------------------------------------------------------------------- module entry points
Fetch = Callable[[str | None], str]


def fetch_main(
    experiment: str,
    argv: Sequence[str],
    fetch: Fetch,
    errors: tuple[type[BaseException], ...],
    *,
    workdir_flag: bool = False,
) -> int:
    """``python -m experiments.<experiment> fetch [--data-dir ROOT]``: caches a data set.

    Runs ``fetch(data_dir)`` (``None``: ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``) and prints
    the description it returns; an error of ``errors`` is one line on standard error and exit
    status 1. ``workdir_flag`` also accepts (and ignores) ``--workdir``.
    """
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{experiment} fetch")
    parser.add_argument("--data-dir", default=None, help="cache root (default $RNN_JAX_DATA)")
    if workdir_flag:
        parser.add_argument("--workdir", default=None, help="ignored (the cache is shared)")
    args = parser.parse_args(list(argv))
    try:
        description = fetch(args.data_dir)
    except errors as err:
        print(f"python -m experiments.{experiment} fetch: error: {err}", file=sys.stderr)
        return 1
    print(description)
    return 0


def module_main(
    experiment: str,
    description: str,
    argv: Sequence[str] | None = None,
    *,
    fetch: Fetch | None = None,
    fetch_errors: tuple[type[BaseException], ...] = (),
    workdir_flag: bool = False,
    rewrite: Callable[[list[str]], list[str]] | None = None,
) -> int:
    """What ``python -m experiments.<experiment> ...`` runs (its ``__main__``).

    ``fetch ...`` goes to :func:`fetch_main` with ``fetch``, ``fetch_errors`` and
    ``workdir_flag``, before the experiment's task module (and JAX) is imported; any other
    command line, passed through ``rewrite`` where given (the experiment's own flags), to the
    ``EXPERIMENT`` of ``experiments.<experiment>.task``.
    """
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    if fetch is not None and args[:1] == ["fetch"]:
        return fetch_main(experiment, args[1:], fetch, fetch_errors, workdir_flag=workdir_flag)
    task = importlib.import_module(f"experiments.{experiment}.task")
    return task.EXPERIMENT.main(args if rewrite is None else rewrite(args), description=description)
