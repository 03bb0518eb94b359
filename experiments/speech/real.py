"""Recorded (not synthetic) spoken digits: two test clips of pocketsphinx's source archive.

``pocketsphinx==5.1.1``'s sdist ships test audio; two of its clips are digit strings with a
known transcript (the TIDIGITS file-name convention, ``z`` = zero, and the ``cards`` test's
transcription file):

- ``test/data/tidigits/dhd.2934z.raw``: "two nine three four zero" (16 kHz, 16-bit raw);
- ``test/data/cards/004.wav``: "five five" (16 kHz WAV).

Two clips measure almost nothing statistically; they show whether a recogniser trained on
eSpeak NG alone transfers to a human voice at all. ``fetch`` downloads the archive with pip
(``--no-binary pocketsphinx``), checks its sha256 and the clips', and caches the clips under
``<data dir>/speech/real/``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from experiments.speech.audio import read_wav, resample

__all__ = ["REAL_CLIPS", "fetch_real", "load_real_clips"]

SDIST = "pocketsphinx-5.1.1.tar.gz"
SDIST_SHA256 = "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
#: member of the archive -> (cached name, transcript, sha256, raw sample rate or None for WAV)
REAL_CLIPS = {
    "pocketsphinx-5.1.1/test/data/tidigits/dhd.2934z.raw": (
        "dhd.2934z.raw", "two nine three four zero",
        "60c14412ad1412b83f37061e29c9e76f74cce0f90637debb8087f10cd559e552", 16_000),
    "pocketsphinx-5.1.1/test/data/cards/004.wav": (
        "cards-004.wav", "five five",
        "4c44a8177f5b128b99f078cdeb918119933155574231f1833e8840d1af09c521", None),
}  # fmt: skip


def _real_dir(data_dir=None) -> Path:
    from experiments.speech.corpus import default_data_dir

    return default_data_dir(data_dir) / "speech" / "real"


def fetch_real(data_dir=None) -> Path:
    """Caches the recorded clips (downloading pocketsphinx's sdist if needed); their folder."""
    out = _real_dir(data_dir)
    if all(_ok(out / name, sha) for name, _, sha, _ in REAL_CLIPS.values()):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                   "pocketsphinx", "pocketsphinx==5.1.1", "-d", tmp]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        archive = Path(tmp) / SDIST
        if result.returncode != 0 or not archive.is_file():
            raise RuntimeError(
                f"`{' '.join(command)}` failed: {(result.stderr or result.stdout)[-500:]}"
            )
        if hashlib.sha256(archive.read_bytes()).hexdigest() != SDIST_SHA256:
            raise RuntimeError(f"{SDIST} does not match its pinned sha256 {SDIST_SHA256[:12]}…")
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for member, (name, _, sha, _) in REAL_CLIPS.items():
                data = tar.extractfile(member).read()
                if hashlib.sha256(data).hexdigest() != sha:
                    raise RuntimeError(f"{member} does not match its pinned sha256")
                (out / name).write_bytes(data)
    return out


def _ok(path: Path, sha: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha


def load_real_clips(data_dir=None, rate: int = 16_000) -> list[dict]:
    """The cached recorded clips (``name``, ``text``, float ``wave`` at ``rate``); ``[]`` if
    they were not fetched or fail their sha256."""
    folder = _real_dir(data_dir)
    clips = []
    for name, text, sha, raw_rate in REAL_CLIPS.values():
        path = folder / name
        if not _ok(path, sha):
            continue
        if raw_rate is None:
            wave = read_wav(path, rate)
        else:
            samples = np.frombuffer(path.read_bytes(), "<i2").astype(np.float32) / 32768.0
            wave = resample(samples, raw_rate, rate)
        clips.append({"name": name, "text": text, "wave": wave})
    return clips
