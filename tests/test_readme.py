"""Every ```python block of README.md runs and prints exactly what its comments claim.

A block pins its output with ``print(...)  # expected`` lines; each pin must appear in what
the block printed, in order, and every block must pin at least one line (a block that pins
nothing could silently stop doing what the README says).
"""

import contextlib
import io
import re
from pathlib import Path

import jax
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
PIN = re.compile(r"^\s*print\(.*\)\s*#\s*(.+)$", flags=re.M)

# The seed's task families, each with a runnable example in the README.
FAMILIES = (
    "Many-to-many (tagging",
    "Many-to-one (classification)",
    "Many-to-one, the way a new user builds a sentiment classifier",
    "Sequence to sequence",
    "Generation (one-to-many)",
    "Forecasting",
)


@pytest.mark.parametrize("family", FAMILIES)
def test_readme_has_an_example_per_task_family(family):
    heading = TEXT.index(f"**{family}")
    following = TEXT.index("```python", heading)
    assert TEXT.count("\n\n", heading, following) <= 2, f"no code block right after {family!r}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_and_prints_its_pins(index):
    code = BLOCKS[index]
    pins = [p.strip() for p in PIN.findall(code)]
    assert pins, f"README block {index} pins no output (add `print(...)  # expected`)"
    out = io.StringIO()
    # README code is written for users, who do not enable strict rank or dtype promotion.
    with (
        jax.numpy_rank_promotion("allow"),
        jax.numpy_dtype_promotion("standard"),
        contextlib.redirect_stdout(out),
    ):
        exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "__readme__"})
    printed = out.getvalue()
    position = 0
    for expected in pins:
        found = printed.find(expected, position)
        assert found >= 0, (expected, printed)
        position = found + len(expected)
