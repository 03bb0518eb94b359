"""Musical statistics of melodies, MIDI files and piano-roll pictures.

A melody here is a list of ``(midi or -1, duration)`` events. The statistics of the sanity
table, computed alike for generated samples and real tunes:

- ``minor``: whether music21's key analysis (Krumhansl–Schmuckler, ``analyze("key")``, the
  analysis that labels the corpus) finds a minor key;
- ``in_key``: the fraction of notes whose pitch class lies in that key's scale (major: the
  seven diatonic degrees; minor: the natural minor plus the raised 6th and 7th of the
  melodic and harmonic minor);
- ``range``: highest minus lowest MIDI pitch; ``interval``: mean absolute interval between
  consecutive notes (semitones, rests skipped); ``events``: number of events;
  ``pc``: the pitch-class histogram (fractions of notes).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from experiments.melody.data import REST

__all__ = ["melody_stats", "piano_roll", "summarize_stats", "write_midi"]

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 9, 10, 11)  # natural + raised 6th and 7th


def _stream(events):
    from music21 import note, stream

    part = stream.Part()
    for midi, duration in events:
        element = note.Rest() if midi == REST else note.Note(midi)
        element.duration.quarterLength = Fraction(duration)
        part.append(element)
    return part


def melody_stats(events: list[tuple[int, Any]]) -> dict[str, Any] | None:
    """The statistics of one melody (``None`` if it has fewer than 2 notes)."""
    notes = [m for m, _ in events if m != REST]
    if len(notes) < 2:
        return None
    key = _stream(events).analyze("key")
    minor = key.mode == "minor"
    scale = {(key.tonic.pitchClass + d) % 12 for d in (MINOR if minor else MAJOR)}
    pcs = np.bincount(np.asarray(notes) % 12, minlength=12)
    return {
        "minor": bool(minor),
        "in_key": float(np.mean([m % 12 in scale for m in notes])),
        "range": int(max(notes) - min(notes)),
        "interval": float(np.mean(np.abs(np.diff(notes)))),
        "events": len(events),
        "pc": (pcs / pcs.sum()).tolist(),
    }


def summarize_stats(stats: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Means over melodies (those with fewer than 2 notes are counted in ``skipped``)."""
    kept = [s for s in stats if s is not None]
    if not kept:
        return {"n": 0, "skipped": len(stats)}
    out = {"n": len(kept), "skipped": len(stats) - len(kept)}
    for name in ("minor", "in_key", "range", "interval", "events"):
        out[name] = float(np.mean([s[name] for s in kept]))
    out["pc"] = np.mean([s["pc"] for s in kept], axis=0).tolist()
    return out


def write_midi(events, path: Path, *, tempo: int = 100) -> Path:
    """Writes a melody as a one-track MIDI file."""
    from music21 import stream
    from music21 import tempo as m21tempo

    score = stream.Score()
    part = _stream(events)
    part.insert(0, m21tempo.MetronomeMark(number=tempo))
    score.insert(0, part)
    score.write("midi", fp=str(path))
    return Path(path)


def _draw(ax, events, color="C0") -> None:
    t = 0.0
    for midi, duration in events:
        length = float(Fraction(duration))
        if midi != REST:
            ax.broken_barh([(t, length * 0.95)], (midi - 0.4, 0.8), color=color)
        t += length


def piano_roll(melodies, path: Path, *, titles=None, title: str | None = None) -> Path:
    """A PNG with one piano roll per melody, stacked (x: quarter notes, y: MIDI pitch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(melodies)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.8 * n + 0.6), squeeze=False)
    for i, (ax, events) in enumerate(zip(axes[:, 0], melodies, strict=True)):
        _draw(ax, events, color=f"C{i % 10}")
        ax.set_ylabel("MIDI pitch")
        if titles:
            ax.set_title(titles[i], fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("quarter notes")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
