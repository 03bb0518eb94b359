"""The baselines: copy the source, and word-by-word translation with an IBM Model 1 lexicon.

IBM Model 1 (Brown et al., 1993) learns ``t(f | e)``, the probability that source word
``e`` (or ``NULL``) translates to target word ``f``, by EM over the training pairs:

- E step: each target word ``f`` of a pair is aligned to the source words ``e`` (and
  ``NULL``) with posterior ``t(f | e) / Σ_e' t(f | e')``;
- M step: ``t(f | e) = count(f, e) / Σ_f' count(f', e)``.

Every (target word, source word) co-occurrence of the corpus is one entry of a flat array,
so an EM iteration is a few NumPy scatter-adds. The word-by-word baseline replaces each
source word by its most probable translation ``argmax_f t(f | e)`` and keeps words never seen
in training as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["IBMModel1", "copy_source"]

NULL = "<NULL>"


def copy_source(sources: Sequence[Sequence[str]]) -> list[list[str]]:
    """The copy baseline: the source words, unchanged."""
    return [list(s) for s in sources]


class IBMModel1:
    """An IBM Model 1 lexicon trained by EM (:meth:`fit`), then :meth:`translate`."""

    def __init__(self) -> None:
        self.src_words: list[str] = [NULL]
        self.tgt_words: list[str] = []
        self.best: dict[str, str] = {}

    def fit(
        self, pairs: Sequence[tuple[Sequence[str], Sequence[str]]], iterations: int = 5
    ) -> IBMModel1:
        """Learns ``t(f | e)`` from ``(source words, target words)`` pairs."""
        if iterations < 1:
            raise ValueError(f"`iterations` must be a positive int, got {iterations!r}")
        if not pairs:
            raise ValueError("`pairs` must hold at least one (source, target) pair, got none")
        src_index = {NULL: 0}
        tgt_index: dict[str, int] = {}
        f_occ, e_occ = [], []  # per co-occurrence: target id, source id (grouped by f token)
        group_sizes = []
        for src, tgt in pairs:
            e_ids = [0] + [src_index.setdefault(w, len(src_index)) for w in src]
            for w in tgt:
                f = tgt_index.setdefault(w, len(tgt_index))
                f_occ.extend([f] * len(e_ids))
                e_occ.extend(e_ids)
                group_sizes.append(len(e_ids))
        f_occ, e_occ = np.asarray(f_occ, np.int64), np.asarray(e_occ, np.int64)
        n_e = len(src_index)
        # one parameter per distinct (f, e) pair that co-occurs
        pair_ids, occ_to_pair = np.unique(f_occ * n_e + e_occ, return_inverse=True)
        pair_e = pair_ids % n_e
        starts = np.concatenate([[0], np.cumsum(group_sizes)[:-1]])
        t = np.ones(len(pair_ids))  # uniform start: every posterior equal
        for _ in range(iterations):
            p = t[occ_to_pair]
            denom = np.add.reduceat(p, starts)
            post = p / np.repeat(denom, group_sizes)
            counts = np.bincount(occ_to_pair, weights=post, minlength=len(pair_ids))
            totals = np.bincount(pair_e, weights=counts, minlength=n_e)
            t = counts / totals[pair_e]
        self.src_words = sorted(src_index, key=src_index.get)
        self.tgt_words = sorted(tgt_index, key=tgt_index.get)
        self.table = (pair_ids // n_e, pair_e, t)  # (f id, e id, t(f | e))
        # the best translation of every source word: sort by (e, t) and take each e's last
        order = np.lexsort((t, pair_e))
        last = np.r_[pair_e[order][1:] != pair_e[order][:-1], True]
        best_f, best_e = (pair_ids // n_e)[order][last], pair_e[order][last]
        self.best = {
            self.src_words[e]: self.tgt_words[f]
            for f, e in zip(best_f, best_e, strict=True)
            if e != 0
        }
        return self

    def prob(self, f: str, e: str) -> float:
        """``t(f | e)`` (0 for a pair never seen together)."""
        f_ids, e_ids, t = self.table
        try:
            fi, ei = self.tgt_words.index(f), self.src_words.index(e)
        except ValueError:
            return 0.0
        hit = (f_ids == fi) & (e_ids == ei)
        return float(t[hit][0]) if hit.any() else 0.0

    def translate(self, sources: Sequence[Sequence[str]]) -> list[list[str]]:
        """Word by word: each source word by its best translation (unknown words copied)."""
        return [[self.best.get(w, w) for w in s] for s in sources]
