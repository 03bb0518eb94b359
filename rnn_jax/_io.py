"""Atomic file writes, the one implementation used by checkpoints, vocabularies and metrics.

A leaf module (it imports nothing from rnn_jax). A write goes to a temporary file in the
target's directory, is flushed to disk (``fsync``) and renamed over the target
(``os.replace``), so a crash at any moment leaves the old file or the new one, never a torn
one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json_atomic"]


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, mode: int = 0o644) -> None:
    """Writes ``data`` (text as UTF-8, or bytes) to ``path`` atomically, with permissions ``mode``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> atomic_write(p, "hello"); p.read_text()
        'hello'
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0o600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], obj: Any, **json_options: Any) -> None:
    """Writes ``obj`` as JSON (default ``indent=2, sort_keys=True``) to ``path`` atomically."""
    options = {"indent": 2, "sort_keys": True, **json_options}
    atomic_write(path, json.dumps(obj, **options))
