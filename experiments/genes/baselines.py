"""What a practitioner tries first: an ORF finder, and a codon-usage/GC3 logistic model.

- :func:`orf_coding`: in each of the six reading frames, an open reading frame runs from
  an ``ATG`` to the next in-frame stop codon (``TAA``, ``TAG``, ``TGA``); every base of an ORF
  of at least ``min_codons`` codons (stop excluded) is predicted coding. The first ``ATG``
  after a stop starts the ORF (the longest one); no training.
- :class:`CodonLogistic`: per base, the window of ``window`` bases centred on it is scored
  in all six frames by the codon log-odds (coding codons of the training CDS vs
  trinucleotides of the training non-coding bases); the features are the six frame scores
  sorted, the window's GC, the GC3 and the stop-codon rate of the best frame; a logistic
  regression (scikit-learn) fitted on training bases says coding or not.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.genes.data import OTHER, Region, reverse_complement_ids

__all__ = ["CodonLogistic", "codon_ids", "orf_coding"]

_ATG = 0 * 16 + 3 * 4 + 2  # A T G
_STOPS = (3 * 16 + 0 * 4 + 0, 3 * 16 + 0 * 4 + 2, 3 * 16 + 2 * 4 + 0)  # TAA TAG TGA


def codon_ids(ids: np.ndarray) -> np.ndarray:
    """The codon starting at every base, ``16 b0 + 4 b1 + b2`` in ``[0, 64)``, or -1.

    -1 where the codon has a non-ACGT base or runs past the end.

    Example:
        >>> from experiments.genes.data import encode_bases
        >>> codon_ids(encode_bases("ATGAN")).tolist()
        [14, 56, -1, -1, -1]
    """
    ids = np.asarray(ids)
    n = len(ids)
    out = np.full(n, -1, np.int64)
    if n < 3:
        return out
    b0, b1, b2 = ids[:-2], ids[1:-1], ids[2:]
    c = 16 * b0.astype(np.int64) + 4 * b1 + b2
    bad = (b0 == OTHER) | (b1 == OTHER) | (b2 == OTHER)
    out[:-2] = np.where(bad, -1, c)
    return out


def _orfs_one_strand(ids: np.ndarray, min_codons: int) -> np.ndarray:
    """Coding mask of the ORFs of the three forward frames of ``ids``."""
    n = len(ids)
    codons = codon_ids(ids)
    mask = np.zeros(n, bool)
    for frame in range(3):
        positions = np.arange(frame, n - 2, 3)
        start = None
        for p in positions:
            c = codons[p]
            if start is None:
                if c == _ATG:
                    start = p
            elif c in _STOPS:
                if (p - start) // 3 >= min_codons:
                    mask[start : p + 3] = True
                start = None
    return mask


def orf_coding(ids: np.ndarray, min_codons: int = 100) -> np.ndarray:
    """Per-base 0/1: inside an ORF of ``>= min_codons`` codons in any of the six frames.

    An ORF cut by the end of ``ids`` (no stop before the end) does not count.

    Example:
        >>> from experiments.genes.data import encode_bases
        >>> seq = encode_bases("CC" + "ATG" + "GCT" * 4 + "TAA" + "CC")
        >>> orf_coding(seq, min_codons=5).tolist()
        [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    """
    if min_codons < 1:
        raise ValueError(f"`min_codons` must be a positive int, got {min_codons!r}")
    ids = np.asarray(ids)
    forward = _orfs_one_strand(ids, min_codons)
    backward = _orfs_one_strand(reverse_complement_ids(ids), min_codons)[::-1]
    return (forward | backward).astype(np.int32)


def _window_sum(x: np.ndarray, width: int) -> np.ndarray:
    """Sum of ``x`` over the window of ``width`` centred on each position (clipped at the ends)."""
    c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
    n = len(x)
    lo = np.clip(np.arange(n) - width // 2, 0, n)
    hi = np.clip(np.arange(n) - width // 2 + width, 0, n)
    return c[hi] - c[lo]


def _coding_codons(region: Region) -> np.ndarray:
    """The codons read in frame by the CDS of ``region`` (both strands), as ids."""
    out = []
    for _, parts in region.genes:
        seq = np.concatenate([region.ids[s:e] for s, e in parts])
        # The strand and frame are not stored: the reading whose codons have the fewest
        # stops (a CDS has none but its last) is the gene's.
        readings = [
            codon_ids(strand)[f::3][: (len(strand) - f) // 3]
            for strand in (seq, reverse_complement_ids(seq))
            for f in range(3)
        ]
        out.append(min(readings, key=lambda c: int(np.isin(c[:-1], _STOPS).sum())))
    codons = np.concatenate(out) if out else np.zeros(0, np.int64)
    return codons[codons >= 0]


@dataclasses.dataclass
class CodonLogistic:
    """The per-window codon-usage/GC3 logistic model (see the module docstring)."""

    window: int = 96
    stride: int = 7
    log_odds: np.ndarray | None = None
    model: object = None

    def features(self, ids: np.ndarray) -> np.ndarray:
        """``(N, 10)`` features of the window around every base of ``ids``."""
        if self.log_odds is None:
            raise ValueError("CodonLogistic must be fitted first")
        n = len(ids)
        scores, gc3, stops = [], [], []
        gc = np.isin(ids, (1, 2)).astype(float)
        for strand in (ids, reverse_complement_ids(ids)):
            codons = codon_ids(strand)
            ok = codons >= 0
            s = np.where(ok, self.log_odds[np.maximum(codons, 0)], 0.0)
            third_gc = np.zeros(n)
            third_gc[:-2] = np.isin(strand[2:], (1, 2))
            stop = np.isin(codons, _STOPS).astype(float)
            for f in range(3):
                phase = (np.arange(n) % 3 == f).astype(float)
                cols = np.stack([s * phase, ok * phase, third_gc * phase * ok, stop * phase], 1)
                w = _window_sum(cols, self.window)
                count = np.maximum(w[:, 1], 1.0)
                if strand is not ids:  # back to genome coordinates
                    w, count = w[::-1], count[::-1]
                scores.append(w[:, 0] / count)
                gc3.append(w[:, 2] / count)
                stops.append(w[:, 3] / count)
        scores, gc3, stops = np.stack(scores, 1), np.stack(gc3, 1), np.stack(stops, 1)
        best = np.argmax(scores, axis=1)
        rows = np.arange(n)
        gc_window = _window_sum(gc[:, None], self.window)[:, 0] / self.window
        return np.column_stack(
            [
                -np.sort(-scores, axis=1),
                gc_window,
                gc3[rows, best],
                stops[rows, best],
                scores.max(1) - np.median(scores, 1),
            ]
        )

    def fit(self, train: Region) -> CodonLogistic:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        coding = np.bincount(_coding_codons(train), minlength=64) + 1.0
        noncoding_bases = train.labels == 0
        nc = np.concatenate(
            [
                codon_ids(train.ids)[noncoding_bases],
                codon_ids(reverse_complement_ids(train.ids))[::-1][noncoding_bases],
            ]
        )
        noncoding = np.bincount(nc[nc >= 0], minlength=64) + 1.0
        self.log_odds = np.log(coding / coding.sum()) - np.log(noncoding / noncoding.sum())
        x = self.features(train.ids)[:: self.stride]
        y = train.labels[:: self.stride]
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.model.fit(x, y)
        return self

    def predict_proba(self, ids: np.ndarray) -> np.ndarray:
        """``P(coding)`` of every base."""
        return self.model.predict_proba(self.features(ids))[:, 1]  # type: ignore[union-attr]
