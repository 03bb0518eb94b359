"""Test configuration: strict rank promotion; strict dtype promotion (library and experiments).

jaxtyping annotations of the whole ``rnn_jax`` package are checked at run time in the
tests (beartype), by ``--jaxtyping-packages`` in ``[tool.pytest.ini_options]`` of
pyproject.toml.

Dtype promotion is strict (``jax_numpy_dtype_promotion="strict"``: no implicit
promotion, not even of a Python float with an integer array) in every test of the
library and its doctests (the autouse fixture ``_dtype_promotion``). Optax (0.2.8) itself
mixes a Python float with its int32 step count in Adam's bias correction; the library's
training steps therefore call Optax through :func:`rnn_jax._optim.optimizer_step`
(standard promotion inside Optax only), and a test that calls ``optimizer.update``
directly takes the ``standard_dtypes`` fixture. The experiments (``experiments/``,
``tests/test_experiments_*``), ``rnn_jax.parallel`` and ``rnn_jax.distributed`` and their
tests run strict as well; :data:`_STANDARD_PROMOTION` lists the files that may not (none
today). Tests that run code in a fresh Python: ``on_cpu_devices`` passes the calling test's
setting on; the multi-process runs of ``test_distributed.py`` and ``test_launch.py`` start
``python`` themselves and run with JAX's default (standard).

The library validates its inputs itself (a ``ValueError`` naming the argument, what was
expected and what arrived). A call that a test makes *in order to* see that error
(``with pytest.raises(ValueError)`` or ``TypeError``) would otherwise meet the runtime
type check first (a ``jaxtyping.TypeCheckError`` about the annotation) and never reach
the validation under test; inside such a block the runtime type check is off (see
``_OwnValidation``). Everywhere else every annotated function of ``rnn_jax`` is checked.
"""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
# The tests check the maths against references, not XLA's optimiser: compiling without most
# of its passes cut the CPU time of the heaviest test files by a third (294 -> 188 s of CPU for
# test_composability/attention/ctc/diagnostics/experiments_dates; 79 -> 63 s for test_bptt).
# Set in the environment, so the experiments' subprocesses inherit it. The tests that pin what
# the optimiser does (HLO and memory of the hand-written backward pass, O(sqrt T) remat) turn
# it back on with the `optimized` fixture; RNN_JAX_TEST_OPTIMIZED=1 runs everything as users
# compile it.
# For the same reason the CPU backend emits its fusions with XLA's older (LLVM IR) emitters
# rather than the MLIR fusion emitters: about two thirds of the compile time (test_long
# 73 -> 51 s, test_network 110 -> 70 s of wall, one process, both with the optimisation passes
# off as above). With both settings a value that XLA fuses into two consumers may round
# differently in each (1 ulp): a test of bitwise equality between two such copies takes the
# `optimized` fixture (test_cells' carry-vs-last-output test). XLA_FLAGS is read when XLA starts, so this flag holds for
# the whole run, `optimized` tests included (what they pin, the backward pass's HLO and XLA's
# buffer sizes, holds with either emitter: RNN_JAX_TEST_OPTIMIZED=1 runs them as users compile);
# the multi-device subprocesses inherit it (their device count is jax_num_cpu_devices, which
# overrides the host-platform flag above).
if os.environ.get("RNN_JAX_TEST_OPTIMIZED", "0") != "1":
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    if "xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]:
        os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"
# One XLA compilation cache on disk for the whole test run, shared by the pytest-xdist workers
# and every Python the tests start (experiment runs killed and resumed, multi-process and
# multi-device runs): a program compiled by one process is read back by the others instead of
# being compiled again (the names crash-resume test: 43 -> 33 s of CPU). Made by the first
# process that reads this file (the xdist controller: workers and subprocesses inherit the
# environment) and removed by it at the end. RNN_JAX_TEST_XLA_CACHE=DIR keeps a cache across
# runs instead; =0 turns it off.
_XLA_CACHE = os.environ.get("RNN_JAX_TEST_XLA_CACHE", "")
if _XLA_CACHE != "0" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    if _XLA_CACHE:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnn_jax-tests-xla-")
        os.environ["_RNN_JAX_TEST_XLA_CACHE_OWNER"] = str(os.getpid())
    # programs that compile in under 0.1 s are cheaper to compile again than to write out
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

import jax  # noqa: E402
import jaxtyping  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

#: Files whose tests (or doctests) run with standard dtype promotion, each for a reason
#: outside this project's code (named here): none.
_STANDARD_PROMOTION: frozenset[str] = frozenset()


@pytest.fixture(autouse=True)
def _dtype_promotion(request):
    standard = request.node.path.name in _STANDARD_PROMOTION
    with jax.numpy_dtype_promotion("standard" if standard else "strict"):
        yield


class _OwnValidation:
    """``pytest.raises(ValueError/TypeError)`` with the runtime type check off inside it."""

    def __init__(self, raises_context):
        self._context = raises_context
        self._was_disabled = False

    def __enter__(self):
        self._was_disabled = jaxtyping.config.jaxtyping_disable
        jaxtyping.config.update("jaxtyping_disable", True)
        return self._context.__enter__()

    def __exit__(self, *exc_info):
        jaxtyping.config.update("jaxtyping_disable", self._was_disabled)
        return self._context.__exit__(*exc_info)


_pytest_raises = pytest.raises


def _raises(expected_exception, *args, **kwargs):
    context = _pytest_raises(expected_exception, *args, **kwargs)
    expected = (
        expected_exception if isinstance(expected_exception, tuple) else (expected_exception,)
    )
    own = any(isinstance(e, type) and issubclass(e, ValueError | TypeError) for e in expected)
    return _OwnValidation(context) if own and not args else context


pytest.raises = _raises

settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def strict_dtypes():
    """Strict dtype promotion (the default of the test run; kept explicit where a test
    is about it)."""
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
def standard_dtypes():
    """Standard dtype promotion, for a test that calls Optax's ``update`` directly
    (Optax mixes a Python float with its int32 step count)."""
    with jax.numpy_dtype_promotion("standard"):
        yield


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
        promotion = str(jax.config.jax_numpy_dtype_promotion)  # the calling test's (see above)
        prelude = textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {tests_dir!r})
            import jax
            jax.config.update("jax_num_cpu_devices", {n})
            jax.config.update("jax_numpy_rank_promotion", "raise")
            jax.config.update("jax_numpy_dtype_promotion", {promotion!r})
            assert len(jax.devices()) == {n}, jax.devices()
            """
        )
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
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


def pytest_unconfigure(config):
    """The process that made this run's XLA cache removes it."""
    if os.environ.get("_RNN_JAX_TEST_XLA_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
