"""The melodies: music21's bundled corpus turned into (pitch or rest, duration) events.

Sources (all in the ``music21==10.5.1`` wheel, nothing is downloaded):

- ``chorale``: the soprano line of each Bach chorale of ``corpus.chorales.Iterator()`` (371
  numbers, 350 distinct files);
- ``folk``: the German tunes of the Essen folk-song collection in the files of
  :data:`ESSEN_FILES` (1,506 tunes; the whole collection has ~8,700, mostly Chinese and German,
  and parsing takes ~0.03 s a tune, so ``fetch`` takes this documented subset to stay at a
  couple of minutes).

Each tune becomes a list of events ``(midi, duration)``: ``midi`` is the MIDI pitch (``-1``
for a rest), ``duration`` the length in quarter notes as an exact fraction (``"3/2"``). Tied
notes become one event, consecutive rests one rest, grace notes are dropped, a chord keeps its
top note, and leading and trailing rests are cut. Every tune is labelled with:

- ``style``: ``chorale`` or ``folk``;
- ``mode`` and ``tonic``: the key music21's Krumhansl–Schmuckler analysis
  (``stream.analyze("key")``) finds in the melody itself — the same analysis that labels
  the generated samples, so data and samples are measured alike;
- ``metre``: the first time signature as ``duple`` (numerator 2 or 4), ``triple`` (3),
  ``compound`` (6, 9, 12) or ``other`` (none, free, 5, 7, ...);
- ``shift``: the transposition in semitones (``-5..6``) that moves the tonic to C (major) or
  A (minor).

Identical soprano lines (chorale melodies Bach harmonised more than once) are kept once, so
no held-out chorale is a verbatim copy of a training one (near-copies may remain).

The extracted tunes are cached as JSON at ``<root>/melody/tunes-<hash>.json`` (root:
``data_dir``, ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``) with a ``.sha256`` beside it. The
hash is a sha256 over the extraction version, the music21 version and the sha256 of every
source file, so another music21 or another extraction builds a new cache; loading checks the
JSON's own sha256.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from experiments.data import default_data_dir
from experiments.data import sha256_file as _sha256
from rnn_jax._io import atomic_write

__all__ = [
    "ESSEN_FILES",
    "REST",
    "cache_path",
    "extract_events",
    "fetch",
    "load_tunes",
    "metre_class",
    "source_files",
    "tune_record",
]

#: The Essen files of the ``folk`` style (German tunes: Altdeutsche Lieder, Kinderlieder,
#: Balladen), 1,506 tunes.
ESSEN_FILES = (
    "altdeu10",
    "altdeu20",
    "kinder0",
    "ballad10",
    "ballad20",
    "ballad30",
    "ballad40",
)
REST = -1
#: Bumped whenever the extraction changes (it is part of the cache's hash).
EXTRACT_VERSION = 1
MUSIC21_VERSION = "10.5.1"
INSTALL = f"pip install 'music21=={MUSIC21_VERSION}' (the experiments extra)"


def _music21():
    try:
        import music21
    except ImportError:
        raise RuntimeError(f"the melody data need music21: {INSTALL}") from None
    if music21.__version__ != MUSIC21_VERSION:
        raise RuntimeError(
            f"the melody data are pinned to music21=={MUSIC21_VERSION}, found "
            f"{music21.__version__}: {INSTALL}"
        )
    return music21


def cache_root(data_dir: str | None = None) -> Path:
    """``data_dir``, else ``$RNN_JAX_DATA``, else ``~/.cache/rnn_jax``; plus ``/melody``."""
    return default_data_dir(data_dir) / "melody"


def source_files() -> list[tuple[str, Path]]:
    """``(style, path)`` of every source file, chorales first (distinct files, corpus order)."""
    music21 = _music21()
    corpus = music21.corpus
    names = list(dict.fromkeys(corpus.chorales.Iterator(returnType="filename")))
    out = [("chorale", _chorale_file(name, corpus.getWork(name))) for name in names]
    for name in ESSEN_FILES:
        out.append(("folk", Path(corpus.getWork(f"essenFolksong/{name}.abc"))))
    return out


def _chorale_file(name: str, found) -> Path:
    """The file of chorale ``name`` (``getWork`` lists every file whose name starts alike)."""
    paths = [Path(p) for p in (found if isinstance(found, list) else [found])]
    stem = name.split("/")[-1]
    for suffix in (".mxl", ".xml", ".musicxml"):
        for path in paths:
            if path.name == stem + suffix:
                return path
    for path in paths:  # a name music21 resolves by prefix (bwv18.5-l: bwv18.5-lz.mxl)
        if path.suffix in (".mxl", ".xml", ".musicxml"):
            return path
    raise RuntimeError(f"chorale {name!r} has no MusicXML file in the music21 corpus: {INSTALL}")


def sources_hash(sources: list[tuple[str, Path]]) -> str:
    """The cache's name: a sha256 of the extraction version, music21's and the sources'."""
    digest = hashlib.sha256(f"melody-v{EXTRACT_VERSION} music21 {MUSIC21_VERSION}\n".encode())
    for style, path in sources:
        digest.update(f"{style} {path.parent.name}/{path.name} {_sha256(path)}\n".encode())
    return digest.hexdigest()


def cache_path(data_dir: str | None = None, sources=None) -> Path:
    """Where the tunes of ``sources`` (default :func:`source_files`) are cached."""
    sources = source_files() if sources is None else sources
    return cache_root(data_dir) / f"tunes-{sources_hash(sources)[:16]}.json"


# --------------------------------------------------------------------------- extraction


def _duration(element) -> Fraction:
    return Fraction(element.duration.quarterLength).limit_denominator(48)


def _pitch(element) -> int:
    if element.isRest:
        return REST
    if element.isChord:
        return max(p.midi for p in element.pitches)
    return int(element.pitch.midi)


def _continues(element, events: list[list[Any]], pitch: int) -> bool:
    """Whether ``element`` lengthens the last event (a tied note, or a rest after a rest)."""
    if not events or events[-1][0] != pitch:
        return False
    if pitch == REST:
        return True
    tie = getattr(element, "tie", None)
    return tie is not None and tie.type in ("stop", "continue")


def extract_events(stream) -> list[tuple[int, str]]:
    """The ``(midi or -1, "quarter-length fraction")`` events of a monophonic music21 stream."""
    events: list[list[Any]] = []
    for element in stream.flatten().notesAndRests:
        duration = _duration(element)
        if duration <= 0:  # grace notes
            continue
        pitch = _pitch(element)
        if _continues(element, events, pitch):
            events[-1][1] += duration
        else:
            events.append([pitch, duration])
    while events and events[0][0] == REST:
        events.pop(0)
    while events and events[-1][0] == REST:
        events.pop()
    return [(p, str(d)) for p, d in events]


def metre_class(ratio: str | None) -> str:
    """``duple``, ``triple``, ``compound`` or ``other`` from a time signature like ``"6/8"``.

    Example:
        >>> [metre_class(r) for r in ("4/4", "3/2", "6/8", "5/4", None)]
        ['duple', 'triple', 'compound', 'other', 'other']
    """
    try:
        numerator = int(str(ratio).split("/")[0])
    except ValueError:
        return "other"
    return {2: "duple", 4: "duple", 3: "triple", 6: "compound", 9: "compound", 12: "compound"}.get(
        numerator, "other"
    )


def shift_to_c(tonic_pc: int, mode: str) -> int:
    """Semitones in ``[-5, 6]`` moving a tonic to C (major) or A (minor).

    Example:
        >>> shift_to_c(7, "major"), shift_to_c(4, "minor"), shift_to_c(9, "minor")
        (5, 5, 0)
    """
    target = 9 if mode == "minor" else 0
    shift = (target - tonic_pc) % 12
    return shift - 12 if shift > 6 else shift


def tune_record(stream, style: str, tune_id: str) -> dict[str, Any] | None:
    """A tune's cached record (``None`` for a tune with fewer than 4 notes)."""
    from music21 import meter

    events = extract_events(stream)
    if sum(p != REST for p, _ in events) < 4:
        return None
    key = stream.analyze("key")
    mode = "minor" if key.mode == "minor" else "major"
    signature = stream.recurse().getElementsByClass(meter.TimeSignature).first()
    return {
        "id": tune_id,
        "style": style,
        "mode": mode,
        "tonic": key.tonic.name,
        "metre": metre_class(signature.ratioString if signature is not None else None),
        "shift": shift_to_c(key.tonic.pitchClass, mode),
        "events": [list(e) for e in events],
    }


def _soprano(score):
    for part in score.parts:
        if "soprano" in f"{part.id} {part.partName}".lower():
            return part
    return score.parts[0]


def _parse(path: Path):
    from music21 import converter

    return converter.parse(path, forceSource=True, storePickle=False)


def _tunes_of(style: str, path: Path) -> list[dict[str, Any]]:
    parsed = _parse(path)
    if style == "chorale":
        record = tune_record(_soprano(parsed), style, f"chorale/{path.stem}")
        return [] if record is None else [record]
    out = []
    for i, score in enumerate(parsed.scores):
        record = tune_record(score, style, f"folk/{path.stem}/{i}")
        if record is not None:
            out.append(record)
    return out


def _dedupe(tunes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for tune in tunes:
        key = json.dumps(tune["events"])
        if key not in seen:
            seen.add(key)
            out.append(tune)
    return out


def extract(sources: list[tuple[str, Path]], *, verbose: bool = True) -> list[dict[str, Any]]:
    """Parses every source and returns the tunes (identical event sequences kept once)."""
    _music21()
    tunes: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i, (style, path) in enumerate(sources):
        tunes += _tunes_of(style, path)
        if verbose and (i + 1) % 50 == 0:
            print(f"  parsed {i + 1}/{len(sources)} files, {len(tunes)} tunes, "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr)  # fmt: skip
    return _dedupe(tunes)


# --------------------------------------------------------------------------- cache


def write_cache(path: Path, tunes: list[dict[str, Any]]) -> None:
    """Writes the tunes' JSON and its ``.sha256`` (atomically)."""
    text = json.dumps({"version": EXTRACT_VERSION, "tunes": tunes}, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text + "\n")
    digest = hashlib.sha256((text + "\n").encode()).hexdigest()
    atomic_write(path.with_suffix(".json.sha256"), f"{digest}  {path.name}\n")


def read_cache(path: Path) -> list[dict[str, Any]]:
    """The cached tunes, after checking the file against its ``.sha256``."""
    checksum = path.with_suffix(".json.sha256")
    if not path.is_file() or not checksum.is_file():
        raise FileNotFoundError(
            f"{path} (or its .sha256) is missing: run `python -m experiments.melody fetch`"
        )
    expected = checksum.read_text().split()[0]
    if _sha256(path) != expected:
        raise RuntimeError(
            f"{path} does not match its sha256 {expected[:12]}…: delete it and run "
            "`python -m experiments.melody fetch` again"
        )
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("tunes"), list):
        raise ValueError(f"{path} is not a melody cache (no `tunes` list)")
    return doc["tunes"]


def fetch(data_dir: str | None = None, *, verbose: bool = True) -> Path:
    """Builds the cache if it is missing or damaged; returns its path."""
    sources = source_files()
    path = cache_path(data_dir, sources)
    try:
        read_cache(path)
        return path
    except (FileNotFoundError, RuntimeError, ValueError):
        pass
    if verbose:
        print(f"extracting {len(sources)} source files into {path}", file=sys.stderr)
    write_cache(path, extract(sources, verbose=verbose))
    return path


def load_tunes(data_dir: str | None = None, tunes_file: str | None = None) -> list[dict]:
    """The cached tunes (``tunes_file``: a cache written by :func:`write_cache`, e.g. tests')."""
    if tunes_file is not None:
        return read_cache(Path(tunes_file))
    return read_cache(cache_path(data_dir))
