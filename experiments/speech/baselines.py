"""PocketSphinx, the baseline: CMU's recogniser with its bundled US-English model.

Two searches on the same 16 kHz test clips:

- ``unrestricted``: the bundled trigram language model (general English, a 130k-word
  dictionary): what PocketSphinx does out of the box;
- ``grammar``: a JSGF grammar allowing one or more of the ten digit words and nothing else
  (``Decoder.add_jsgf_string``), the same vocabulary as the RNNs' transcripts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

__all__ = ["DIGIT_GRAMMAR", "PocketSphinx", "available"]

INSTALL = "pip install 'pocketsphinx==5.1.1' (the experiments extra)"

DIGIT_GRAMMAR = (
    "#JSGF V1.0;\ngrammar digits;\n"
    "public <digits> = ( zero | one | two | three | four | five | six | seven | eight | nine )+ ;\n"
)


def available() -> bool:
    """Whether the ``pocketsphinx`` package can be imported."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


class PocketSphinx:
    """A decoder: ``transcribe(clips) -> list[str]`` (lower-case words) for int16 16 kHz clips.

    Args:
        search: ``"unrestricted"`` (the bundled language model) or ``"grammar"`` (digits only).
    """

    def __init__(self, search: str):
        if search not in ("unrestricted", "grammar"):
            raise ValueError(f"`search` must be 'unrestricted' or 'grammar', got {search!r}")
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise RuntimeError(f"the baseline needs pocketsphinx: {INSTALL}") from None
        self.search = search
        self.decoder = Decoder(samprate=16000, loglevel="FATAL")
        if search == "grammar":
            self.decoder.add_jsgf_string("digits", DIGIT_GRAMMAR)
            self.decoder.activate_search("digits")

    def transcribe(self, clips: Sequence[np.ndarray]) -> tuple[list[str], float]:
        """``(transcripts, seconds)`` of int16 clips at 16 kHz (``<sil>``-like fillers dropped)."""
        out = []
        t0 = time.perf_counter()
        for clip in clips:
            clip = np.asarray(clip)
            if clip.dtype != np.int16:
                raise ValueError(f"`clips` must be int16 arrays at 16 kHz, got {clip.dtype}")
            self.decoder.start_utt()
            self.decoder.process_raw(clip.astype("<i2").tobytes(), full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            words = (hyp.hypstr if hyp is not None else "").lower().split()
            out.append(" ".join(w for w in words if not w.startswith(("<", "[", "++"))))
        return out, time.perf_counter() - t0
