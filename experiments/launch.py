"""Starts one command as several cooperating JAX processes on this machine (loopback).

Usage::

    python -m experiments.launch --processes P [--devices-per-process N] [--grace S] \\
        -- python -m experiments.names train --workdir runs/names-2x2 --quick

starts ``P`` copies of the command. Each gets the environment :func:`rnn_jax.distributed.initialize`
reads: ``JAX_COORDINATOR_ADDRESS=127.0.0.1:<a free port>``, ``JAX_NUM_PROCESSES=P``,
``JAX_PROCESS_ID=p``, and with ``--devices-per-process N`` also ``JAX_NUM_CPU_DEVICES=N``
(``N`` CPU devices per process; accelerators are what the machine has), with
``--heartbeat-timeout S`` also ``RNN_JAX_HEARTBEAT_TIMEOUT=S``. The experiment
CLIs see ``JAX_NUM_PROCESSES`` and train on all processes' devices. Output is forwarded
line by line with a ``[p0] ``, ``[p1] ``, ... prefix (standard output to standard output,
errors to standard error). The port is free and held by the launcher for the whole launch
(:func:`reserve_port`), so two launches at once, or any other program, cannot take it
between the choice and process 0's bind.

Ending: the launcher exits 0 when every process does. When one fails (a non-zero status or
a signal), the others get ``--grace`` seconds (default 5) to stop by themselves (JAX's
runtime stops them when a peer dies, see :mod:`rnn_jax.distributed`), then SIGTERM, then,
3 seconds later, SIGKILL; the launcher exits with the first failure's status (``128 + n``
for signal ``n``). SIGINT or SIGTERM to the launcher is passed on to every process, with
the same SIGKILL 3 seconds later. Nothing is left running: each process runs in its own
process group, which is what gets the signals.

Several machines: run one process per machine yourself with the same three variables
(``JAX_COORDINATOR_ADDRESS`` the address of process 0's machine), see the README.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

__all__ = ["free_port", "launch", "main", "reserve_port"]

KILL_AFTER_SECONDS = 3.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the OS picks it).

    Free only at the moment of the call: another program may take it before it is used.
    :func:`launch` holds its port with :func:`reserve_port` instead.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def reserve_port(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a free port of ``host`` with ``SO_REUSEPORT``, not listening.

    While it is open, no other program can bind the port or get it as the local port of an
    outgoing connection, and no other launcher is given it; JAX's coordinator (a gRPC server,
    which binds with ``SO_REUSEPORT`` too) can still listen on it. Close it when the processes
    have ended. (A port only looked up and released, as :func:`free_port` does, can be taken
    by anything in the seconds before process 0 binds it.)
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, 0))
    except BaseException:
        s.close()
        raise
    return s


def _forward(stream: IO[bytes], out: IO[str], prefix: str, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", errors="replace").rstrip("\n")
        for part in text.split("\r"):  # progress bars redraw with \r: one line per redraw
            if part.strip():
                with lock:
                    out.write(f"{prefix}{part}\n")
                    out.flush()
    stream.close()


def _status(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def _exit_status(code: int) -> int:
    return 128 - code if code < 0 else code


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
    """Waits ``grace`` seconds for the live processes, then SIGTERM, then SIGKILL."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    for signum, wait in ((signal.SIGTERM, KILL_AFTER_SECONDS), (signal.SIGKILL, 10.0)):
        live = [p for p in procs if p.poll() is None]
        if not live:
            return
        for p in live:
            _signal_group(p, signum)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(p.poll() is None for p in live):
            time.sleep(0.05)


def _check(processes: int, devices_per_process: int | None, command, grace: float) -> None:
    def positive(x):
        return not isinstance(x, bool) and isinstance(x, int) and x >= 1

    if not positive(processes):
        raise ValueError(f"`processes` must be a positive int, got {processes!r}.")
    if devices_per_process is not None and not positive(devices_per_process):
        raise ValueError(
            f"`devices_per_process` must be a positive int or None, got {devices_per_process!r}."
        )
    if not command:
        raise ValueError("`command` must name a program to run (after `--`), got nothing.")
    if not grace >= 0:
        raise ValueError(f"`grace` must be >= 0 seconds, got {grace!r}.")


class _Group:
    """The running processes, their output forwarders, and the launcher's own signals."""

    def __init__(self, log: IO[str]):
        self.log, self.lock = log, threading.Lock()
        self.procs: list[subprocess.Popen] = []
        self.threads: list[threading.Thread] = []
        self.stopping: list[int] = []  # signals received by the launcher
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        with self.lock:
            print(f"launch: {text}", file=self.log, flush=True)

    def start(self, command, env: dict[str, str], p: int) -> None:
        proc = subprocess.Popen(
            list(command),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: signals reach its children too
        )
        self.procs.append(proc)
        self.say(f"process {p} pid {proc.pid} ({env['JAX_COORDINATOR_ADDRESS']})")
        for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
            t = threading.Thread(
                target=_forward, args=(stream, out, f"[p{p}] ", self.lock), daemon=True
            )
            t.start()
            self.threads.append(t)

    def watch(self) -> tuple[int, int] | None:
        """Waits until all processes end, one fails or a signal comes: ``(index, status)``
        of the first failure, else ``None``."""
        while not self.stopping and any(p.poll() is None for p in self.procs):
            for i, proc in enumerate(self.procs):
                if proc.poll() not in (None, 0):
                    return i, proc.returncode
            time.sleep(0.05)
        return next(((i, p.returncode) for i, p in enumerate(self.procs) if p.returncode), None)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        for t in self.threads:
            t.join(timeout=5)


def launch(
    command: Sequence[str],
    *,
    processes: int,
    devices_per_process: int | None = None,
    grace: float = 5.0,
    heartbeat_timeout: int | None = None,
    log: IO[str] | None = None,
) -> int:
    """Runs ``command`` as ``processes`` cooperating processes; returns the exit status.

    See the module docstring for the environment, the output and how failures end.
    ``heartbeat_timeout``: seconds after which JAX's runtime declares a silent process dead
    (``RNN_JAX_HEARTBEAT_TIMEOUT`` of the processes; default
    :data:`rnn_jax.distributed.HEARTBEAT_TIMEOUT_SECONDS`).
    """
    _check(processes, devices_per_process, command, grace)
    if heartbeat_timeout is not None and (
        isinstance(heartbeat_timeout, bool)
        or not isinstance(heartbeat_timeout, int)
        or heartbeat_timeout < 1
    ):
        raise ValueError(
            f"`heartbeat_timeout` must be a positive int (seconds), got {heartbeat_timeout!r}."
        )
    group = _Group(sys.stderr if log is None else log)
    held = reserve_port()  # held until every process has ended (see reserve_port)
    address = f"127.0.0.1:{held.getsockname()[1]}"
    previous = {
        s: signal.signal(s, lambda signum, frame: group.stopping.append(signum))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    failure = None
    try:
        for p in range(processes):
            env = {**os.environ, "JAX_COORDINATOR_ADDRESS": address,
                   "JAX_NUM_PROCESSES": str(processes), "JAX_PROCESS_ID": str(p),
                   "PYTHONUNBUFFERED": "1"}  # fmt: skip
            if devices_per_process is not None:
                env["JAX_NUM_CPU_DEVICES"] = str(devices_per_process)
            if heartbeat_timeout is not None:
                env["RNN_JAX_HEARTBEAT_TIMEOUT"] = str(heartbeat_timeout)
            group.start(command, env, p)
        failure = group.watch()
        if group.stopping:
            group.say(f"{signal.Signals(group.stopping[0]).name}; stopping all")
            _stop(group.procs, 0.0)
        elif failure is not None:
            i, code = failure
            group.say(
                f"process {i} failed ({_status(code)}) after "
                f"{time.monotonic() - group.started:.1f} s; stopping the others (grace {grace:g} s)"
            )
            _stop(group.procs, grace)
    finally:  # whatever happened above, nothing outlives the launcher
        group.kill_all()
        held.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    for i, proc in enumerate(group.procs):
        group.say(f"process {i} ended with {_status(proc.returncode)}")
    group.say(f"done after {time.monotonic() - group.started:.1f} s")
    if group.stopping:
        return 128 + group.stopping[0]
    return 0 if failure is None else _exit_status(failure[1])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        own, command = argv[:split], argv[split + 1 :]
    else:
        own, command = argv, []
    parser = argparse.ArgumentParser(
        prog="python -m experiments.launch",
        description="Run a command as P cooperating JAX processes on this machine.",
        epilog="Example: python -m experiments.launch --processes 2 --devices-per-process 2 "
        "-- python -m experiments.names train --quick --workdir runs/names-2x2",
    )
    parser.add_argument("--processes", type=int, required=True, help="how many processes")
    parser.add_argument(
        "--devices-per-process", type=int, default=None, help="CPU devices of each process"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds the others get to stop by themselves after one fails (default 5)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=None,
        help="seconds without a heartbeat after which a process counts as dead and the others "
        "are stopped by JAX's runtime (default: rnn_jax.distributed.HEARTBEAT_TIMEOUT_SECONDS)",
    )
    args = parser.parse_args(own)
    if not command:
        parser.error("give the command to run after `--`")
    try:
        return launch(
            command,
            processes=args.processes,
            devices_per_process=args.devices_per_process,
            grace=args.grace,
            heartbeat_timeout=args.heartbeat_timeout,
        )
    except ValueError as err:
        parser.error(str(err))
    except FileNotFoundError as err:
        print(f"launch: error: cannot start {command[0]!r}: {err.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
