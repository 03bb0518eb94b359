"""Every ```python block of README.md runs and prints what it claims."""

import contextlib
import io
import re
from pathlib import Path

import jax
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_an_example_per_task_family():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index):
    code = BLOCKS[index]
    out = io.StringIO()
    # README code is written for users, who do not enable strict rank promotion.
    with jax.numpy_rank_promotion("allow"), contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "__readme__"})
    printed = out.getvalue()
    for expected in re.findall(r"print\(.*?\)\s*#\s*(.+)", code):
        assert expected.strip() in printed, (expected, printed)
