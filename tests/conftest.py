"""Test configuration: strict rank promotion (and strict dtype promotion where it applies).

jaxtyping annotations of ``rnn_jax`` are checked at run time in the tests (beartype), by
``--jaxtyping-packages`` in ``[tool.pytest.ini_options]`` of pyproject.toml.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
# The tests check the maths against references, not XLA's optimiser: compiling without most
# of its passes cut the CPU time of the heaviest test files by a third (294 -> 188 s of CPU for
# test_composability/attention/ctc/diagnostics/experiments_dates; 79 -> 63 s for test_bptt).
# Set in the environment, so the experiments' subprocesses inherit it. The tests that pin what
# the optimiser does (HLO and memory of the hand-written backward pass, O(sqrt T) remat) turn
# it back on with the `optimized` fixture; RNN_JAX_TEST_OPTIMIZED=1 runs everything as users
# compile it.
if os.environ.get("RNN_JAX_TEST_OPTIMIZED", "0") != "1":
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Strict dtype promotion is not global: optax itself (adam's bias correction) mixes a
# Python float with its int32 step count. Tests opt in with the `strict_dtypes` fixture.

settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def strict_dtypes():
    """Run a test with ``jax_numpy_dtype_promotion="strict"`` (no implicit promotion)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture
def optimized():
    """Compile with XLA's full optimisation pipeline (what users get), for tests that pin it."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    jax.clear_caches()
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
    jax.clear_caches()


@pytest.fixture
def x64():
    """Run a test with 64-bit floats enabled (for float64 reference comparisons)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def on_cpu_devices():
    """``run(code, n=2) -> dict``: run ``code`` in a fresh Python with ``n`` CPU devices.

    The device count is fixed when JAX starts, so tests of several devices need their own
    process. ``code`` runs after ``jax`` is imported with ``n`` devices and strict rank
    promotion, with ``tests/`` importable, and must print one JSON object as its last line.
    """
    import json
    import subprocess
    import sys
    import textwrap

    tests_dir = os.path.dirname(os.path.abspath(__file__))

    def run(code: str, n: int = 2) -> dict:
        prelude = textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {tests_dir!r})
            import jax
            jax.config.update("jax_num_cpu_devices", {n})
            jax.config.update("jax_numpy_rank_promotion", "raise")
            assert len(jax.devices()) == {n}, jax.devices()
            """
        )
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        env.pop("XLA_FLAGS", None)
        proc = subprocess.run(
            [sys.executable, "-c", prelude + textwrap.dedent(code)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run
