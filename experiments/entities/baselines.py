"""The baselines a practitioner would try first, fitted on the same training tweets.

- ``most_frequent``: every word form gets the tag it had most often in training (ties: the
  tag seen first); a word never seen in training gets ``O``;
- ``crf``: a linear-chain conditional random field (``sklearn-crfsuite``, L-BFGS with
  elastic-net penalties ``c1``, ``c2`` tuned over :data:`CRF_GRID` on the validation entity
  F1) over the classic hand-made features of :func:`word_features`: the word lower-cased, its
  prefixes and suffixes, its shape (capitals, digits, ``@``/``#``/URL), the same for the
  words around it, and tweet start and end.

Each baseline is a ``predict(tweets: list[list[str]]) -> list[list[str]]`` function.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from experiments.entities.metrics import entity_scores

__all__ = [
    "BASELINES",
    "CRF_GRID",
    "NUM_TOKEN_FEATURES",
    "SHORT_SHAPES",
    "fit_crf",
    "fit_most_frequent",
    "short_shape",
    "token_features",
    "word_features",
    "word_shape",
]

BASELINES = ("most_frequent", "crf")
CRF_GRID = ((0.05, 0.01), (0.1, 0.05), (0.3, 0.05))

Predictor = Callable[[Sequence[Sequence[str]]], list[list[str]]]


def fit_most_frequent(words: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> Predictor:
    """The most-frequent-tag-per-word tagger (unknown words: ``O``).

    Example:
        >>> f = fit_most_frequent([["Apple", "pie"], ["Apple", "Inc"]],
        ...                       [["B-company", "O"], ["B-company", "I-company"]])
        >>> f([["Apple", "pie", "Paris"]])
        [['B-company', 'O', 'O']]
    """
    counts: dict[str, Counter] = {}
    for ws, ts in zip(words, tags, strict=True):
        for w, t in zip(ws, ts, strict=True):
            counts.setdefault(w, Counter())[t] += 1
    best = {w: c.most_common(1)[0][0] for w, c in counts.items()}  # ties: first seen
    return lambda tweets: [[best.get(w, "O") for w in ws] for ws in tweets]


_URL = re.compile(r"^(https?://|www\.)", re.IGNORECASE)


def word_shape(word: str) -> str:
    """The word's shape with runs collapsed: ``Xx``, ``XX``, ``dd``, ``Xx-Xx``, ``@x``, ...

    Example:
        >>> [word_shape(w) for w in ["Paris", "NYC", "2016", "iPhone7", "@tom_x", "#ny"]]
        ['Xx', 'X', 'd', 'xXxd', '@x_x', '#x']
    """
    out = []
    for ch in word:
        c = "X" if ch.isupper() else "x" if ch.isalpha() else "d" if ch.isdigit() else ch
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def _own_features(word: str, prefix: str) -> dict[str, object]:
    lower = word.lower()
    return {
        f"{prefix}lower": lower,
        f"{prefix}suffix3": lower[-3:],
        f"{prefix}suffix2": lower[-2:],
        f"{prefix}prefix3": lower[:3],
        f"{prefix}shape": word_shape(word),
        f"{prefix}istitle": word.istitle(),
        f"{prefix}isupper": word.isupper(),
        f"{prefix}isdigit": word.isdigit(),
        f"{prefix}mention": word.startswith("@"),
        f"{prefix}hashtag": word.startswith("#"),
        f"{prefix}url": bool(_URL.match(word)),
    }


#: The short shapes of :func:`token_features`: 1 to 3 symbols of ``X`` (capital), ``x``
#: (other letter), ``d`` (digit), ``.`` (anything else), runs collapsed.
SHORT_SHAPES = tuple("".join(s) for n in (1, 2, 3) for s in itertools.product("Xxd.", repeat=n))
_SHORT_SHAPE_IDS = {s: i for i, s in enumerate(SHORT_SHAPES)}
_FLAGS = ("istitle", "isupper", "isdigit", "mention", "hashtag", "url", "has_digit", "length")
#: Width of :func:`token_features`: the CRF's per-token flags, a has-digit flag, the length,
#: and a one-hot short shape.
NUM_TOKEN_FEATURES = len(_FLAGS) + len(SHORT_SHAPES)


def short_shape(word: str) -> str:
    """:func:`word_shape` with every symbol outside ``X``, ``x``, ``d`` read as ``.`` (runs
    collapsed again), cut to its first 3 symbols: one of the 84 :data:`SHORT_SHAPES`.

    Example:
        >>> [short_shape(w) for w in ["Paris", "McDonald's", "@tom_x", "2016", "..."]]
        ['Xx', 'XxX', '.x.', 'd', '.']
    """
    out: list[str] = []
    for ch in word_shape(word):
        c = ch if ch in "Xxd" else "."
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out[:3])


def token_features(words: Sequence[str]) -> np.ndarray:
    """``(T, NUM_TOKEN_FEATURES)`` float32: the CRF's cheap features of each token by itself.

    The CRF baseline's per-token predicates that need no vocabulary (:func:`word_features`:
    title case, all capitals, all digits, ``@``, ``#``, URL), plus "has a digit", the length
    ``min(len, 12) / 12``, and the word's shape as a one-hot over the fixed
    :data:`SHORT_SHAPES` (:func:`short_shape`; the CRF's own :func:`word_shape` is an open
    set). The CRF's lexical features (the word, its prefix and suffixes) are what the word
    vectors and the char-RNN read; its context features (the words at ``±1``, ``±2``, tweet
    start and end) are what the recurrent layer reads.

    Example:
        >>> f = token_features(["@tom", "Paris", "2016"])
        >>> f.shape, f[0, 3].item(), f[1, 0].item(), f[2, 2].item(), f[2, 6].item()
        ((3, 92), 1.0, 1.0, 1.0, 1.0)
    """
    out = np.zeros((len(words), NUM_TOKEN_FEATURES), np.float32)
    for t, w in enumerate(words):
        out[t, : len(_FLAGS)] = (
            w.istitle(),
            w.isupper(),
            w.isdigit(),
            w.startswith("@"),
            w.startswith("#"),
            bool(_URL.match(w)),
            any(ch.isdigit() for ch in w),
            min(len(w), 12) / 12,
        )
        shape = short_shape(w)
        if shape:  # the empty word has no shape
            out[t, len(_FLAGS) + _SHORT_SHAPE_IDS[shape]] = 1.0
    return out


def word_features(words: Sequence[str], t: int) -> dict[str, object]:
    """The CRF's features of word ``t``: its own, and the words at ``t ± 1`` and ``t ± 2``.

    Example:
        >>> f = word_features(["met", "Eliza", "in"], 1)
        >>> f["lower"], f["shape"], f["-1:lower"], f["+1:lower"], f["BOS"], "+2:lower" in f
        ('eliza', 'Xx', 'met', 'in', False, False)
    """
    features: dict[str, object] = {"bias": 1.0, **_own_features(words[t], "")}
    features["length"] = min(len(words[t]), 12)
    for offset in (-2, -1, 1, 2):
        u = t + offset
        if 0 <= u < len(words):
            w = words[u]
            tag = f"{offset:+d}:"
            features[f"{tag}lower"] = w.lower()
            features[f"{tag}istitle"] = w.istitle()
            features[f"{tag}isupper"] = w.isupper()
            if abs(offset) == 1:
                features[f"{tag}shape"] = word_shape(w)
                features[f"{tag}suffix3"] = w.lower()[-3:]
    features["BOS"] = t == 0
    features["EOS"] = t == len(words) - 1
    return features


def _featurize(tweets: Sequence[Sequence[str]]) -> list[list[dict[str, object]]]:
    return [[word_features(ws, t) for t in range(len(ws))] for ws in tweets]


def fit_crf(
    train: tuple[Sequence[Sequence[str]], Sequence[Sequence[str]]],
    val: tuple[Sequence[Sequence[str]], Sequence[Sequence[str]]],
    *,
    grid: Sequence[tuple[float, float]] = CRF_GRID,
    max_iterations: int = 150,
) -> tuple[Predictor, dict[str, object]]:
    """A linear-chain CRF fitted on ``train`` ``(words, tags)``, ``(c1, c2)`` tuned on ``val``.

    Returns:
        ``(predict, info)``; ``info`` holds the chosen penalties and their validation F1.

    Raises:
        ImportError: ``sklearn-crfsuite`` is not installed (the message says how to install).
    """
    try:
        import sklearn_crfsuite
    except ImportError as err:
        raise ImportError(
            "the CRF baseline needs sklearn-crfsuite: pip install 'rnn_jax[experiments]' "
            "(or run with --config.baselines=false)"
        ) from err
    X_train, y_train = _featurize(train[0]), [list(t) for t in train[1]]
    X_val = _featurize(val[0])
    scores: dict[tuple[float, float], float] = {}
    models = {}
    for c1, c2 in grid:
        crf = sklearn_crfsuite.CRF(
            algorithm="lbfgs",
            c1=c1,
            c2=c2,
            max_iterations=max_iterations,
            all_possible_transitions=True,
        )
        crf.fit(X_train, y_train)
        scores[(c1, c2)] = float(entity_scores(val[1], crf.predict(X_val))["f1"])
        models[(c1, c2)] = crf
    best = max(scores, key=lambda k: scores[k])  # ties: the first in the grid
    crf = models[best]

    def predict(tweets):
        return [list(tags) for tags in crf.predict(_featurize(tweets))]

    return predict, {"c1": best[0], "c2": best[1], "val_f1": scores[best]}
