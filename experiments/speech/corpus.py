"""The spoken-number corpus: eSpeak NG (the ``espeakng-loader`` wheel) read through ``ctypes``.

A *voice* is a language (an English accent of eSpeak NG) with a *variant* (a voice quality:
``m1`` .. ``m8``, ``f1`` .. ``f5``, the Klatt synthesisers ``klatt`` .. ``klatt6``). The
variants are split once: the test voices are every language with a test variant, the
validation voices every language with a validation variant, the training voices the rest,
so no clip of a test (or validation) voice is ever trained on.

Every clip is of one of two kinds (corpus version 2; version 1 had digit strings only):

- ``digits``: a string of 1 to 7 digits spoken digit by digit (``"three one four"``);
- ``number``: one number from 10 to 999 spoken as a number (``"seventeen"``, ``"forty two"``,
  ``"one hundred and five"``, British style with *and* after *hundred*): a band is drawn
  uniformly from :attr:`CorpusSpec.number_bands` (10-19, 20-99, 100-999), then the number
  uniformly within it, so that each teen word is as frequent as it would be if the bands
  were one range.

A clip is a ``number`` with probability :attr:`CorpusSpec.number_fraction` (0.5). The words
(:data:`VOCABULARY`, 30 of them) are the ten digit words, *ten* .. *nineteen*, *twenty* ..
*ninety*, *hundred* and *and*. Each clip is spoken by a voice of its split, at a random speed
(words per minute), base pitch and pitch range, all drawn from a fixed seed. eSpeak NG's output (22,050 Hz, 16-bit) is resampled to 16 kHz
(:func:`experiments.speech.audio.resample`) and stored as one ``.npz`` of int16 samples plus
a JSON manifest with the sha256 of every clip's synthesised samples and of the ``.npz``.
Determinism: eSpeak NG draws breath noise from a random generator, which
:meth:`Synthesizer.synthesize` reseeds (``espeak_ng_SetRandSeed``) before every clip; but its
output also depends on what the process spoke before (measured: the same call twice in a row
gives different samples, also after ``espeak_Terminate`` / ``espeak_Initialize``). So
:func:`render_clips` synthesises every chunk of :data:`CHUNK` clips in a fresh process, in a
fixed order: the corpus is then the same in every run (``fetch`` re-renders the first clips
in another fresh process and compares; the tests compare with a pinned hash).

Cache layout (``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``)::

    speech/corpus-v2-<hash>.npz   int16 audio at 16 kHz (all clips, concatenated) and offsets
    speech/corpus-v2-<hash>.json  the manifest: clips (split, voice, kind, text, parameters,
                                  sha256)

(``<hash>`` is a hash of the :class:`CorpusSpec`; a version-1 file is never read as v2.)
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DIGITS",
    "KINDS",
    "LANGUAGES",
    "TEENS",
    "TENS",
    "VOCABULARY",
    "CorpusSpec",
    "SpeechFetchError",
    "Synthesizer",
    "corpus_paths",
    "digits_to_text",
    "fetch",
    "load_corpus",
    "clip_text",
    "make_clips",
    "make_text",
    "number_to_words",
    "render_clips",
    "synthesize",
    "voice_split",
    "words_to_number",
]

ESPEAK_VERSION = "espeakng-loader==0.2.4"
INSTALL = f"pip install '{ESPEAK_VERSION}' (the experiments extra)"
CORPUS_VERSION = 2
SAMPLE_RATE = 16_000  # the stored rate (and the features')
CHUNK = 500  # clips synthesised by one fresh process
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")  # fmt: skip
TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")  # 20..90
#: Every word a transcript can hold.
VOCABULARY = (*DIGITS, *TEENS, *TENS, "hundred", "and")
#: The clip kinds: a digit string spoken digit by digit, or one number spoken as a number.
KINDS = ("digits", "number")

#: eSpeak NG's English languages (accents), all in every split.
LANGUAGES = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
#: Voice-quality variants per split ("" is the language's own voice).
TRAIN_VARIANTS = ("", "m1", "m2", "m4", "m5", "m8", "f1", "f3", "f5", "klatt", "klatt2",
                  "klatt4", "klatt6")  # fmt: skip
VAL_VARIANTS = ("m6", "f4", "klatt5")
TEST_VARIANTS = ("m3", "m7", "f2", "klatt3")

# espeak_AUDIO_OUTPUT / espeak_PARAMETER / flag values of speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_EE_OK = 0


class SpeechFetchError(RuntimeError):
    """The synthesiser is missing or the corpus failed a check; the message says what to run."""


def digits_to_text(digits: str) -> str:
    """``"314"`` -> ``"three one four"`` (the transcript of a clip).

    Example:
        >>> digits_to_text("907")
        'nine zero seven'
    """
    if not digits or not digits.isdigit() or not digits.isascii():
        raise ValueError(f"`digits` must be a non-empty string of 0-9, got {digits!r}")
    return " ".join(DIGITS[int(d)] for d in digits)


def number_to_words(n: int) -> str:
    """``42`` -> ``"forty two"``, for ``0 <= n <= 999`` (British: ``"one hundred and five"``).

    Example:
        >>> number_to_words(115), number_to_words(300), number_to_words(17)
        ('one hundred and fifteen', 'three hundred', 'seventeen')
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= 999:
        raise ValueError(f"`n` must be an integer from 0 to 999, got {n!r}")
    n = int(n)
    if n >= 100:
        rest = n % 100
        head = f"{DIGITS[n // 100]} hundred"
        return f"{head} and {number_to_words(rest)}" if rest else head
    if n < 10:
        return DIGITS[n]
    if n < 20:
        return TEENS[n - 10]
    tens, unit = divmod(n, 10)
    return f"{TENS[tens - 2]} {DIGITS[unit]}" if unit else TENS[tens - 2]


def words_to_number(text: str) -> int:
    """The inverse of :func:`number_to_words`: ``"forty two"`` -> ``42``.

    Only the canonical spelling is accepted (``"forty two"``, not ``"forty and two"`` or
    ``"zero hundred"``); anything else raises ``ValueError``.

    Example:
        >>> words_to_number("nine hundred and ninety nine")
        999
    """
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a string of number words, got {type(text).__name__}")
    words = text.split()
    value = {w: i for i, w in enumerate(DIGITS)}
    value.update({w: 10 + i for i, w in enumerate(TEENS)})
    value.update({w: 20 + 10 * i for i, w in enumerate(TENS)})
    total, i = 0, 0
    if len(words) >= 2 and words[1] == "hundred" and words[0] in DIGITS:
        total, i = 100 * value[words[0]], 2
        if i < len(words) and words[i] == "and":
            i += 1
    rest = words[i:]
    if rest and all(w in value for w in rest):
        total += sum(value[w] for w in rest)
    elif rest or i == 0:
        total = -1
    if not 0 <= total <= 999 or number_to_words(total) != " ".join(words):
        raise ValueError(
            f"`text` must be a number from 0 to 999 spelled as number_to_words spells it "
            f"(e.g. 'one hundred and five'), got {text!r}"
        )
    return total


def voice_split(variant: str) -> str:
    """``"train"``, ``"val"`` or ``"test"``: the split of every voice with this variant."""
    for name, variants in (("train", TRAIN_VARIANTS), ("val", VAL_VARIANTS),
                           ("test", TEST_VARIANTS)):  # fmt: skip
        if variant in variants:
            return name
    raise ValueError(
        f"`variant` must be one of {TRAIN_VARIANTS + VAL_VARIANTS + TEST_VARIANTS}, got {variant!r}"
    )


# --------------------------------------------------------------------------- synthesis


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class Synthesizer:
    """eSpeak NG's library in synchronous mode: ``synthesize(text, voice, ...) -> int16``.

    One per process (the library has global state); use :func:`synthesize`.
    """

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise SpeechFetchError(f"espeakng-loader is not installed: {INSTALL}") from None
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Info.restype = ctypes.c_char_p
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the library uses it
        data_parent = os.path.dirname(espeakng_loader.get_data_path())
        self.rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent.encode(), 0
        )
        if self.rate <= 0:
            raise SpeechFetchError(
                f"espeak_Initialize failed ({self.rate}) with data {data_parent}"
            )
        self.lib.espeak_SetSynthCallback(self._callback)
        self.version = self.lib.espeak_Info(None).decode()
        self._lock = threading.Lock()

    def _collect(self, wav, n, events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synthesize(self, text: str, voice: str, *, rate: int, pitch: int, range_: int,
                   seed: int = 0) -> np.ndarray:  # fmt: skip
        """``text`` spoken by ``voice`` (``"en-us+m3"``): int16 samples at :attr:`rate` Hz."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ValueError(f"`voice` {voice!r} is not an eSpeak NG voice")
            for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, range_)):
                self.lib.espeak_SetParameter(parameter, int(value), 0)
            self.lib.espeak_ng_SetRandSeed(seed)
            self._chunks = []
            raw = text.encode()
            err = self.lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                        None, None)  # fmt: skip
            if err != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed ({err}) for {text!r} by {voice}")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


_SYNTH: Synthesizer | None = None


def synthesize(text: str, voice: str, *, rate: int = 175, pitch: int = 50, range_: int = 50,
               seed: int = 0) -> tuple[np.ndarray, int]:  # fmt: skip
    """``(int16 samples, sample rate)`` of ``text`` by ``voice`` (the process's synthesiser)."""
    global _SYNTH
    if _SYNTH is None:
        _SYNTH = Synthesizer()
    wav = _SYNTH.synthesize(text, voice, rate=rate, pitch=pitch, range_=range_, seed=seed)
    return wav, _SYNTH.rate


# --------------------------------------------------------------------------- the corpus


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """What the corpus holds: clips per split, the text generator's parameters, the voice
    parameters' ranges.

    Attributes:
        min_digits, max_digits: the length of a ``digits`` clip's string.
        number_fraction: the probability that a clip is a ``number`` (else ``digits``).
        number_bands: inclusive ``(lo, hi)`` ranges; a ``number`` clip draws a band uniformly,
            then the number uniformly within it.
    """

    num_train: int = 3000
    num_val: int = 300
    num_test: int = 400
    min_digits: int = 1
    max_digits: int = 7
    rate: tuple[int, int] = (130, 230)  # words per minute
    pitch: tuple[int, int] = (20, 80)
    range_: tuple[int, int] = (20, 80)
    seed: int = 13
    number_fraction: float = 0.5
    number_bands: tuple[tuple[int, int], ...] = ((10, 19), (20, 99), (100, 999))

    def __post_init__(self):
        if not 0.0 <= self.number_fraction <= 1.0:
            raise ValueError(f"`number_fraction` must be in [0, 1], got {self.number_fraction!r}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"`min_digits`, `max_digits` must satisfy 1 <= min <= max, got "
                             f"{self.min_digits!r}, {self.max_digits!r}")  # fmt: skip
        bands = self.number_bands
        if not bands or any(len(b) != 2 or not 0 <= b[0] <= b[1] <= 999 for b in bands):
            raise ValueError(f"`number_bands` must be (lo, hi) pairs with 0 <= lo <= hi <= 999, "
                             f"got {bands!r}")  # fmt: skip

    def name(self) -> str:
        """A short hash of the spec: the cache's file name changes with it."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return f"corpus-v{CORPUS_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def make_text(rng: np.random.Generator, spec: CorpusSpec) -> tuple[str, str]:
    """``(kind, digits)`` of one clip drawn from ``rng``: ``digits`` is the digit string of a
    ``digits`` clip or the decimal number of a ``number`` clip (its text is
    ``digits_to_text`` or ``number_to_words`` of it)."""
    if rng.random() < spec.number_fraction:
        lo, hi = spec.number_bands[int(rng.integers(len(spec.number_bands)))]
        return "number", str(int(rng.integers(lo, hi + 1)))
    n = int(rng.integers(spec.min_digits, spec.max_digits + 1))
    return "digits", "".join(str(d) for d in rng.integers(0, 10, n))


def clip_text(kind: str, digits: str) -> str:
    """The transcript of a clip: ``digits_to_text`` or ``number_to_words`` by ``kind``."""
    if kind == "digits":
        return digits_to_text(digits)
    if kind == "number":
        if not digits.isascii() or not digits.isdigit():
            raise ValueError(f"`digits` of a number clip must be a decimal number, got {digits!r}")
        return number_to_words(int(digits))
    raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")


def make_clips(spec: CorpusSpec) -> list[dict[str, Any]]:
    """The clips' descriptions (no audio): split, voice, kind, text and parameters, drawn from
    ``spec.seed``."""
    rng = np.random.default_rng(spec.seed)
    clips = []
    splits = (("train", spec.num_train, TRAIN_VARIANTS), ("val", spec.num_val, VAL_VARIANTS),
              ("test", spec.num_test, TEST_VARIANTS))  # fmt: skip
    for split, count, variants in splits:
        for i in range(count):
            language = LANGUAGES[rng.integers(len(LANGUAGES))]
            variant = variants[rng.integers(len(variants))]
            kind, digits = make_text(rng, spec)
            clips.append({
                "id": f"{split}-{i:05d}",
                "split": split,
                "voice": f"{language}+{variant}" if variant else language,
                "language": language,
                "variant": variant,
                "kind": kind,
                "digits": digits,
                "text": clip_text(kind, digits),
                "rate": int(rng.integers(spec.rate[0], spec.rate[1] + 1)),
                "pitch": int(rng.integers(spec.pitch[0], spec.pitch[1] + 1)),
                "range": int(rng.integers(spec.range_[0], spec.range_[1] + 1)),
            })  # fmt: skip
    return clips


def _render_chunk(clips: list[dict[str, Any]]) -> tuple[list[np.ndarray], list[str], str]:
    """Runs in a fresh process: ``(int16 audio at 16 kHz, sha256s of eSpeak's own output,
    eSpeak's version)`` of ``clips``, in order."""
    from experiments.speech.audio import resample, to_int16

    audio, digests = [], []
    for clip in clips:
        wav, rate = synthesize(clip["text"], clip["voice"], rate=clip["rate"],
                               pitch=clip["pitch"], range_=clip["range"])  # fmt: skip
        digests.append(hashlib.sha256(wav.astype("<i2").tobytes()).hexdigest())
        audio.append(to_int16(resample(wav.astype(np.float32) / 32768.0, rate, SAMPLE_RATE)))
    return audio, digests, _SYNTH.version


def render_clips(clips: list[dict[str, Any]], *, workers: int = 2, chunk: int = CHUNK):
    """``(audio, sha256s, version)`` of ``clips``: each ``chunk`` of clips is synthesised by a
    fresh process (eSpeak NG's output depends on the process's history)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = [clips[i : i + chunk] for i in range(0, len(clips), chunk)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(1, min(workers, len(chunks))), mp_context=context,
                             max_tasks_per_child=1) as pool:  # fmt: skip
        results = list(pool.map(_render_chunk, chunks))
    audio = [a for r in results for a in r[0]]
    digests = [d for r in results for d in r[1]]
    return audio, digests, results[0][2] if results else ""


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    from experiments.data import default_data_dir as root

    return Path(data_dir).expanduser() if data_dir else root()


def corpus_paths(data_dir=None, spec: CorpusSpec | None = None) -> tuple[Path, Path]:
    """``(audio .npz, manifest .json)`` of ``spec`` under ``data_dir/speech``."""
    name = (spec or CorpusSpec()).name()
    base = default_data_dir(data_dir) / "speech"
    return base / f"{name}.npz", base / f"{name}.json"


def write_corpus(path: Path, manifest_path: Path, clips, audio: list[np.ndarray], **meta) -> None:
    """Stores ``audio`` (one int16 array a clip) as ``path`` and the manifest (with sha256s)."""
    from experiments.data import sha256_file
    from rnn_jax._io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(a) for a in audio]).astype(np.int64)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, audio=np.concatenate(audio).astype(np.int16), offsets=offsets)
    os.replace(tmp, path)
    manifest = {"version": CORPUS_VERSION, "sample_rate": SAMPLE_RATE, **meta,
                "npz": path.name, "npz_sha256": sha256_file(path), "clips": clips}  # fmt: skip
    atomic_write(manifest_path, json.dumps(manifest, indent=1) + "\n")


def load_corpus(data_dir=None, spec: CorpusSpec | None = None, *, manifest_path=None):
    """``(clips, audio)``: the manifest's clips and their int16 samples (sha256 checked).

    ``manifest_path`` reads another corpus (e.g. a test fixture written by
    :func:`write_corpus`).
    """
    from experiments.data import sha256_file

    if manifest_path is None:
        path, manifest_path = corpus_paths(data_dir, spec)
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} is missing: run `python -m experiments.speech fetch` (needs {INSTALL})"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    path = manifest_path.with_name(manifest["npz"])
    if not path.is_file() or sha256_file(path) != manifest["npz_sha256"]:
        raise SpeechFetchError(
            f"{path} is missing or does not match its sha256 in {manifest_path.name}: delete both "
            "and run `python -m experiments.speech fetch` again"
        )
    with np.load(path, allow_pickle=False) as z:
        samples, offsets = z["audio"], z["offsets"]
    audio = [samples[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    return manifest["clips"], audio


def fetch(data_dir=None, spec: CorpusSpec | None = None, *, verbose: bool = True) -> Path:
    """Synthesises the corpus into the cache unless it is there and intact; returns the manifest.

    Raises:
        SpeechFetchError: ``espeakng-loader`` is missing, or a second synthesis of the first
            clips differs from the first (the synthesiser is not deterministic here).
    """
    spec = spec or CorpusSpec()
    path, manifest_path = corpus_paths(data_dir, spec)
    try:
        load_corpus(manifest_path=manifest_path)
        return manifest_path
    except (FileNotFoundError, SpeechFetchError, ValueError, KeyError):
        pass
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        raise SpeechFetchError(f"espeakng-loader is not installed: {INSTALL}") from None
    clips = make_clips(spec)
    if verbose:
        print(f"synthesising {len(clips)} clips into {path}", file=sys.stderr)
    audio, digests, version = render_clips(clips)
    for clip, digest in zip(clips, digests, strict=True):
        clip["sha256"] = digest
    if render_clips(clips[:5])[1] != digests[:5]:  # determinism: a fresh process agrees
        raise SpeechFetchError("eSpeak NG gave two different outputs for the first clips")
    write_corpus(path, manifest_path, clips, audio, espeak=version, package=ESPEAK_VERSION,
                 spec=dataclasses.asdict(spec))  # fmt: skip
    return manifest_path
