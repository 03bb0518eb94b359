"""The loopback launcher: environment, prefixed output, failures end everything, no hangs.

The processes here are plain Python one-liners (no JAX), so each test takes about a second;
multi-process JAX training under the launcher is tested in test_distributed.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from experiments.launch import free_port, launch, reserve_port

REPO = Path(__file__).resolve().parents[1]


def _launcher(*args: str, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "experiments.launch", *args, "--", sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pids(stderr: str) -> list[int]:
    return [
        int(line.split(" pid ")[1].split()[0])
        for line in stderr.splitlines()
        if line.startswith("launch: process") and " pid " in line
    ]


def test_environment_and_prefixed_output():
    code = textwrap.dedent(
        """
        import os, socket, sys
        e = os.environ
        print("id", e["JAX_PROCESS_ID"], "of", e["JAX_NUM_PROCESSES"], e["JAX_COORDINATOR_ADDRESS"],
              e["JAX_NUM_CPU_DEVICES"], e["RNN_JAX_HEARTBEAT_TIMEOUT"])
        print("to stderr", file=sys.stderr)
        # the launcher holds the coordinator's port: nothing else can take it meanwhile
        port = int(e["JAX_COORDINATOR_ADDRESS"].rsplit(":", 1)[1])
        try:
            socket.create_server(("127.0.0.1", port)).close()
            print("port taken by another program")
        except OSError:
            pass
        """
    )
    proc = _launcher(
        "--processes", "3", "--devices-per-process", "2", "--heartbeat-timeout", "7", code=code
    )
    assert proc.returncode == 0, proc.stderr
    assert "port taken" not in proc.stdout
    lines = sorted(x for x in proc.stdout.splitlines() if x.startswith("[p"))
    assert [x.split()[:5] for x in lines] == [
        [f"[p{p}]", "id", str(p), "of", "3"] for p in range(3)
    ]
    addresses = {x.split()[5] for x in lines}
    assert len(addresses) == 1 and next(iter(addresses)).startswith("127.0.0.1:")
    assert all(x.split()[6:8] == ["2", "7"] for x in lines)
    assert sorted(x for x in proc.stderr.splitlines() if "to stderr" in x) == [
        f"[p{p}] to stderr" for p in range(3)
    ]
    assert "launch: process 2 ended with status 0" in proc.stderr


def test_one_failure_stops_the_others_within_seconds():
    """Process 1 fails at once; process 0 would sleep a minute and ignores SIGTERM: the
    launcher exits with process 1's status after the grace period plus the SIGKILL delay."""
    code = textwrap.dedent(
        """
        import os, signal, sys, time
        if os.environ["JAX_PROCESS_ID"] == "1":
            time.sleep(0.5)
            sys.exit(3)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
        """
    )
    start = time.monotonic()
    proc = _launcher("--processes", "2", "--grace", "0.5", code=code)
    elapsed = time.monotonic() - start
    assert proc.returncode == 3, proc.stderr
    assert elapsed < 15
    assert "launch: process 1 failed (status 3)" in proc.stderr
    assert "launch: process 0 ended with signal SIGKILL" in proc.stderr
    assert not any(_alive(pid) for pid in _pids(proc.stderr))


def test_a_killed_process_gives_128_plus_the_signal():
    code = "import os, signal, time; time.sleep(0.3); os.kill(os.getpid(), signal.SIGKILL)"
    proc = _launcher("--processes", "1", code=code)
    assert proc.returncode == 128 + signal.SIGKILL
    assert "process 0 failed (signal SIGKILL)" in proc.stderr


def test_sigterm_to_the_launcher_stops_everything():
    code = "import time; print('up', flush=True); time.sleep(60)"
    cmd = [sys.executable, "-m", "experiments.launch", "--processes", "2", "--",
           sys.executable, "-c", code]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        seen = 0
        while seen < 2 and time.monotonic() < deadline:
            seen += "up" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "launch: SIGTERM; stopping all" in err
    assert not any(_alive(pid) for pid in _pids(err))


def test_bad_command_lines():
    proc = _launcher("--processes", "0", code="pass")
    assert proc.returncode == 2 and "`processes` must be a positive int, got 0" in proc.stderr
    cmd = [sys.executable, "-m", "experiments.launch", "--processes", "2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "give the command to run after `--`" in proc.stderr
    cmd = [sys.executable, "-m", "experiments.launch", "--processes", "1", "--", "/no/such/program"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 127 and "cannot start '/no/such/program'" in proc.stderr
    with pytest.raises(ValueError, match="`devices_per_process` must be a positive int"):
        launch(["true"], processes=1, devices_per_process=0)
    with pytest.raises(ValueError, match="`grace` must be >= 0"):
        launch(["true"], processes=1, grace=-1.0)
    with pytest.raises(ValueError, match="`heartbeat_timeout` must be a positive int"):
        launch(["true"], processes=1, heartbeat_timeout=0)
    assert 0 < free_port() < 65536
    with reserve_port() as held:  # held: an ordinary bind of the same port is refused
        with pytest.raises(OSError):
            socket.create_server(("127.0.0.1", held.getsockname()[1])).close()
