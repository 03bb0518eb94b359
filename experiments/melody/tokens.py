"""Events as tokens, the prompt, and the vocabulary.

One joint vocabulary: a token is a whole event ``PITCH:DURATION`` — ``C#4:1/2`` (MIDI pitch
spelt with sharps, octave as in scientific pitch notation, the duration in quarter notes as
an exact fraction) or ``R:1`` for a rest. A joint token keeps the softmax exact (no
independence of pitch and duration is assumed) at the price of a larger vocabulary (a few
hundred events with ``transpose="c"``); events seen fewer than ``min_count`` times in the
training tunes read as ``<UNK>``.

The prompt is three tokens read before the first event, one per field, so the model's state
after them (its initial state for the melody) carries the texture:

- ``style=chorale|folk|*``, ``mode=major|minor|*``,
  ``metre=duple|triple|compound|other|*`` (``*``: not given).

They are specials of the vocabulary (never predicted, never counted in the NLL). A model
reads ``[<BOS>, style, mode, metre, e<1>, ..., e<n>]`` and predicts
``[style, mode, metre, e<1>, ..., e<n>, <EOS>]``; only the events and ``<EOS>`` are scored.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import numpy as np

from experiments.melody.data import REST
from rnn_jax.vocab import DEFAULT_SPECIALS, Vocabulary

__all__ = [
    "PROMPT_FIELDS",
    "PROMPT_LEN",
    "SPECIALS",
    "build_vocab",
    "event_token",
    "parse_event",
    "parse_prime",
    "parse_prompt",
    "prompt_tokens",
    "token_event",
    "tune_tokens",
]

PROMPT_FIELDS: dict[str, tuple[str, ...]] = {
    "style": ("chorale", "folk"),
    "mode": ("major", "minor"),
    "metre": ("duple", "triple", "compound", "other"),
}
PROMPT_LEN = len(PROMPT_FIELDS)
PROMPT_TOKENS = tuple(f"{f}={v}" for f, values in PROMPT_FIELDS.items() for v in (*values, "*"))
SPECIALS = tuple(DEFAULT_SPECIALS) + PROMPT_TOKENS
NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ALTER = {"": 0, "#": 1, "##": 2, "b": -1, "bb": -2, "-": -1, "--": -2}
_EVENT = re.compile(r"^(?:(R)|([A-Ga-g])(##|#|bb|b|--|-)?(\d)):(\S+)$")


def event_token(midi: int, duration: str | Fraction) -> str:
    """The token of an event.

    Example:
        >>> event_token(61, "1/2"), event_token(-1, Fraction(3, 2))
        ('C#4:1/2', 'R:3/2')
    """
    name = "R" if midi == REST else f"{NAMES[midi % 12]}{midi // 12 - 1}"
    return f"{name}:{Fraction(duration)}"


def token_event(token: str) -> tuple[int, Fraction]:
    """``(midi or -1, duration)`` of a canonical event token (:func:`event_token`'s)."""
    return parse_event(token)


def parse_event(text: str) -> tuple[int, Fraction]:
    """``(midi or -1, duration)`` of ``"C4:1"``, ``"Eb4:1/2"``, ``"F#5:1.5"`` or ``"R:2"``.

    Example:
        >>> parse_event("Eb4:0.5")
        (63, Fraction(1, 2))
    """
    match = _EVENT.match(text.strip())
    if match is None:
        raise ValueError(
            f"`prime` events must look like C4:1, Eb4:1/2, F#5:1.5 or R:2 (pitch or R, a colon, "
            f"a duration in quarter notes), got {text!r}"
        )
    rest, letter, accidental, octave, duration = match.groups()
    try:
        length = Fraction(duration)
    except (ValueError, ZeroDivisionError):
        length = Fraction(0)
    if length <= 0:
        raise ValueError(f"`prime` event {text!r} needs a positive duration, got {duration!r}")
    if rest:
        return REST, length
    midi = 12 * (int(octave) + 1) + _STEPS[letter.upper()] + _ALTER[accidental or ""]
    return midi, length


def parse_prime(text: str) -> list[str]:
    """The canonical tokens of a space-separated opening like ``"C4:1 E4:1 G4:2"``."""
    return [event_token(*parse_event(part)) for part in text.split()]


def parse_prompt(text: str) -> dict[str, str]:
    """``{"style": ..., "mode": ..., "metre": ...}`` from ``"style=folk,mode=major"``.

    Fields not given are ``*``. Fields are separated by commas or ``+`` (``+`` inside the
    comma-separated ``--config.sanity_prompts``).

    Example:
        >>> parse_prompt("style=chorale, mode=minor")
        {'style': 'chorale', 'mode': 'minor', 'metre': '*'}
    """
    prompt = dict.fromkeys(PROMPT_FIELDS, "*")
    for part in filter(None, (p.strip() for p in re.split(r"[,+]", text))):
        field, _, value = part.partition("=")
        field, value = field.strip(), value.strip()
        if field not in PROMPT_FIELDS:
            raise ValueError(
                f"`prompt` fields must be among {tuple(PROMPT_FIELDS)}, got {field!r} in {text!r}"
            )
        if value not in (*PROMPT_FIELDS[field], "*"):
            raise ValueError(
                f"`prompt` field {field} must be one of {(*PROMPT_FIELDS[field], '*')}, "
                f"got {value!r}"
            )
        prompt[field] = value
    return prompt


def prompt_tokens(prompt: dict[str, str]) -> list[str]:
    """The prompt's three tokens, in field order."""
    return [f"{field}={prompt.get(field, '*')}" for field in PROMPT_FIELDS]


def tune_prompt(tune: dict[str, Any]) -> dict[str, str]:
    """The true prompt of a tune (its labels)."""
    return {field: tune[field] for field in PROMPT_FIELDS}


def tune_tokens(tune: dict[str, Any], transpose: str) -> list[str]:
    """The event tokens of a cached tune, moved to C/Am when ``transpose == "c"``."""
    shift = tune["shift"] if transpose == "c" else 0
    return [event_token(m if m == REST else m + shift, d) for m, d in tune["events"]]


def build_vocab(token_lists: list[list[str]], min_count: int) -> Vocabulary:
    """The joint event vocabulary of the training tunes (prompt tokens as specials)."""
    return Vocabulary.build(token_lists, max_size=None, min_count=min_count, specials=SPECIALS)


def event_ids(vocab: Vocabulary) -> np.ndarray:
    """Ids a model may predict: every event, ``<UNK>`` and ``<EOS>``."""
    return np.array([vocab.unk_id, vocab.eos_id, *range(vocab.num_specials, len(vocab))])
