"""The n-gram event models the RNNs are compared with, on the same tokens and split.

Each tune is its event ids ``e<1..n>`` then ``<EOS>``; contexts before the first event are
``<BOS>``. Every model spreads its probability over the same targets as the RNNs: the
training vocabulary's events, ``<UNK>`` and ``<EOS>`` (``K`` of them). Counts come from the
training tunes only; the smoothing constant is chosen on the validation tunes.

- unigram: add-one, ``p(y) = (c(y) + 1) / (N + K)``;
- add-k bigram / trigram: ``p(y | h) = (c(h, y) + k) / (c(h) + k K)``;
- interpolated (Jelinek–Mercer) bigram / trigram:
  ``p2(y | x) = λ c(x, y) / c(x) + (1 - λ) p1(y)`` and
  ``p3(y | w, x) = λ' c(w, x, y) / c(w, x) + (1 - λ') p2(y | x)``, where an unseen context
  falls back to the lower order.

NLL is reported in nats per predicted symbol (every event and every tune's ``<EOS>``).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = ["NGramCounts", "ngram_results"]


class NGramCounts:
    """Unigram, bigram and trigram counts of the training tunes.

    Args:
        tunes: event-id sequences (without ``<BOS>``/``<EOS>``).
        targets: the ids a model may predict (events, ``<UNK>``, ``<EOS>``).
        bos_id, eos_id: the specials' ids.

    Example:
        >>> counts = NGramCounts([[4, 5, 4]], targets=[1, 3, 4, 5], bos_id=2, eos_id=3)
        >>> round(counts.nll([[4, 5]], "unigram"), 3)  # p(4) = 3/8, p(5) = 2/8, p(EOS) = 2/8
        1.251
    """

    def __init__(self, tunes: Sequence[Sequence[int]], *, targets, bos_id: int, eos_id: int):
        self.bos, self.eos = bos_id, eos_id
        self.targets = np.asarray(sorted(set(int(t) for t in targets)))
        self.K = len(self.targets)
        self.c1: Counter = Counter()
        self.c2: Counter = Counter()
        self.c3: Counter = Counter()
        self.h1: Counter = Counter()  # bigram contexts
        self.h2: Counter = Counter()  # trigram contexts
        for w, x, y in self._trigrams(tunes):
            self.c1[y] += 1
            self.c2[x, y] += 1
            self.c3[w, x, y] += 1
            self.h1[x] += 1
            self.h2[w, x] += 1
        self.N = sum(self.c1.values())

    def _trigrams(self, tunes):
        for tune in tunes:
            seq = [self.bos, self.bos, *[int(t) for t in tune], self.eos]
            yield from zip(seq, seq[1:], seq[2:], strict=False)

    def columns(self, tunes) -> dict[str, np.ndarray]:
        """Per held-out target: every count the smoothed probabilities need."""
        rows = list(self._trigrams(tunes))
        allowed = set(self.targets.tolist())
        for _, _, y in rows:
            if y not in allowed:
                raise ValueError(f"`tunes` holds id {y}, which is not a target id")
        return {
            "c1": np.array([self.c1[y] for _, _, y in rows], float),
            "c2": np.array([self.c2[x, y] for _, x, y in rows], float),
            "h1": np.array([self.h1[x] for _, x, _ in rows], float),
            "c3": np.array([self.c3[w, x, y] for w, x, y in rows], float),
            "h2": np.array([self.h2[w, x] for w, x, _ in rows], float),
        }

    def probabilities(self, tunes, model: str, param=None) -> np.ndarray:
        """``p(y<t> | history)`` of every held-out target under ``model``.

        ``tunes`` may also be the counts of :meth:`columns` (computed once for many models).
        """
        c = tunes if isinstance(tunes, dict) else self.columns(tunes)
        p1 = (c["c1"] + 1.0) / (self.N + self.K)
        if model == "unigram":
            return p1
        if model in ("bigram add-k", "trigram add-k"):
            num, den = (c["c2"], c["h1"]) if model.startswith("bigram") else (c["c3"], c["h2"])
            return (num + param) / (den + param * self.K)
        lam2, lam3 = (param, None) if model == "bigram interpolated" else param
        p2 = np.where(c["h1"] > 0, lam2 * c["c2"] / np.maximum(c["h1"], 1) + (1 - lam2) * p1, p1)
        if model == "bigram interpolated":
            return p2
        if model == "trigram interpolated":
            return np.where(
                c["h2"] > 0, lam3 * c["c3"] / np.maximum(c["h2"], 1) + (1 - lam3) * p2, p2
            )
        raise ValueError(f"`model` must be an n-gram name of ngram_results, got {model!r}")

    def nll(self, tunes, model: str, param=None) -> float:
        """Mean negative log-likelihood in nats per target."""
        return float(-np.mean(np.log(self.probabilities(tunes, model, param))))


def ngram_results(
    counts: NGramCounts,
    val: Sequence[Sequence[int]],
    test: Sequence[Sequence[int]],
    *,
    smoothing: Sequence[float],
    interpolation: Sequence[float],
) -> dict[str, dict[str, object]]:
    """``{model: {"param": chosen on val, "val": nats, "test": nats}}`` for every n-gram."""
    grids = {
        "unigram": [None],
        "bigram add-k": list(smoothing),
        "trigram add-k": list(smoothing),
        "bigram interpolated": list(interpolation),
        "trigram interpolated": list(itertools.product(interpolation, interpolation)),
    }
    val, test = counts.columns(val), counts.columns(test)  # counted once for every model
    out: dict[str, dict[str, object]] = {}
    for model, grid in grids.items():
        scored = [(counts.nll(val, model, p), p) for p in grid]
        best_val, best = min(scored, key=lambda s: s[0])
        out[model] = {
            "param": list(best) if isinstance(best, tuple) else best,
            "val": best_val,
            "test": counts.nll(test, model, best),
        }
    return out
