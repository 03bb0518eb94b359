"""PocketSphinx, the baseline: CMU's recogniser with its bundled US-English model.

Two searches on the same 16 kHz test clips:

- ``unrestricted``: the bundled trigram language model (general English, a 130k-word
  dictionary): what PocketSphinx does out of the box;
- ``grammar``: a JSGF grammar (``Decoder.add_jsgf_string``) allowing exactly the corpus's
  language: one or more digit words, or one number from 10 to 999 spelled as
  :func:`experiments.speech.corpus.number_to_words` spells it (:data:`GRAMMAR`). This is
  more than the RNNs get (they decode characters with no language model), so it favours the
  baseline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

__all__ = ["GRAMMAR", "PocketSphinx", "available"]

INSTALL = "pip install 'pocketsphinx==5.1.1' (the experiments extra)"

#: The corpus's language (version 2): a digit string, or one number from 10 to 999.
GRAMMAR = """#JSGF V1.0;
grammar numbers;
<digit> = zero | one | two | three | four | five | six | seven | eight | nine ;
<unit> = one | two | three | four | five | six | seven | eight | nine ;
<teen> = ten | eleven | twelve | thirteen | fourteen | fifteen | sixteen | seventeen
       | eighteen | nineteen ;
<ty> = twenty | thirty | forty | fifty | sixty | seventy | eighty | ninety ;
<below100> = <unit> | <teen> | <ty> [ <unit> ] ;
<number> = <teen> | <ty> [ <unit> ] | <unit> hundred [ and <below100> ] ;
public <utterance> = <digit>+ | <number> ;
"""


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
        search: ``"unrestricted"`` (the bundled language model) or ``"grammar"``
            (:data:`GRAMMAR`: the corpus's digit strings and numbers only).
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
            self.decoder.add_jsgf_string("numbers", GRAMMAR)
            self.decoder.activate_search("numbers")

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
