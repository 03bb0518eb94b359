"""Entity-level precision, recall and F1: exact span and type (CoNLL's ``conlleval`` rules),
and the BIO-constrained decoding of a tagger's per-token probabilities.

An entity is a maximal run ``B-X I-X ... I-X``. As in ``conlleval`` (and ``seqeval``'s
default mode), a tagger's ill-formed output is read leniently: an ``I-X`` that does not
continue an entity of type ``X`` (after ``O``, after another type, or at the start) begins a
new entity of type ``X``. A predicted entity counts as correct only if its first token, last
token and type all equal those of a gold entity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["allowed_transitions", "entity_scores", "extract_entities", "prf", "viterbi_bio"]

Span = tuple[str, int, int]  # (type, first token, one past the last token)


def extract_entities(tags: Sequence[str]) -> list[Span]:
    """The entities of one BIO sequence as ``(type, start, end)`` (``end`` exclusive).

    Example:
        >>> extract_entities(["B-person", "I-person", "O", "I-geo-loc", "B-geo-loc"])
        [('person', 0, 2), ('geo-loc', 3, 4), ('geo-loc', 4, 5)]
    """
    spans: list[Span] = []
    kind, start = None, 0
    for t, tag in enumerate(list(tags) + ["O"]):
        prefix, _, tag_kind = tag.partition("-")
        if tag != "O" and (prefix not in ("B", "I") or not tag_kind):
            raise ValueError(f"`tags` must be O, B-<type> or I-<type>, got {tag!r} at {t}")
        continues = prefix == "I" and tag_kind == kind
        if kind is not None and not continues:
            spans.append((kind, start, t))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = tag_kind, t
    return spans


def prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    """Precision, recall and F1 from counts (0 where a denominator is 0).

    Example:
        >>> prf(3, 4, 6)
        {'precision': 0.75, 'recall': 0.5, 'f1': 0.6, 'correct': 3, 'predicted': 4, 'gold': 6}
    """
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "precision": p,
        "recall": r,
        "f1": f1,
        "correct": correct,
        "predicted": predicted,
        "gold": gold,
    }


def entity_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, object]:
    """Micro-averaged entity P/R/F1 over all sentences, and the same per type.

    Returns:
        ``{"precision", "recall", "f1", "correct", "predicted", "gold", "per_type": {type:
        {...}}}``; ``per_type`` holds every type seen in ``gold`` or ``predicted``.

    Example:
        >>> s = entity_scores([["B-person", "O", "B-geo-loc"]], [["B-person", "O", "B-person"]])
        >>> round(s["f1"], 3), s["per_type"]["person"]["precision"]
        (0.5, 0.5)
    """
    if len(gold) != len(predicted):
        raise ValueError(
            f"`gold` and `predicted` must hold as many sentences, got {len(gold)} and "
            f"{len(predicted)}"
        )
    counts: dict[str, list[int]] = {}  # type -> [correct, predicted, gold]
    for i, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i} has {len(g)} gold tags but {len(p)} predicted ones")
        gold_spans = set(extract_entities(g))
        pred_spans = set(extract_entities(p))
        for kind, *_ in gold_spans:
            counts.setdefault(kind, [0, 0, 0])[2] += 1
        for span in pred_spans:
            c = counts.setdefault(span[0], [0, 0, 0])
            c[1] += 1
            c[0] += span in gold_spans
    total = [sum(c[k] for c in counts.values()) for k in range(3)]
    return {**prf(*total), "per_type": {k: prf(*counts[k]) for k in sorted(counts)}}


def allowed_transitions(tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """BIO's grammar: ``(start (C,), transition (C, C))`` booleans over ``tags``.

    ``I-X`` may only follow ``B-X`` or ``I-X`` (so it never starts a sentence); every other
    tag may follow anything.

    Example:
        >>> start, allowed = allowed_transitions(["O", "B-x", "I-x"])
        >>> start.tolist(), allowed[:, 2].tolist()
        ([True, True, False], [False, True, True])
    """
    kinds = [t.partition("-")[2] if t.startswith("I-") else None for t in tags]
    start = np.array([k is None for k in kinds])
    allowed = np.ones((len(tags), len(tags)), bool)
    for j, kind in enumerate(kinds):
        if kind is not None:
            allowed[:, j] = [t in (f"B-{kind}", f"I-{kind}") for t in tags]
    return start, allowed


def viterbi_bio(log_probs: np.ndarray, tags: Sequence[str]) -> list[str]:
    """The tag sequence of highest total ``log_probs`` ``(T, C)`` that obeys BIO's grammar.

    A tagger's softmax is per token; its argmax can put ``I-person`` after ``O``. This picks
    the best *well-formed* sequence instead (the constraint a CRF layer learns; here it is
    imposed, with no parameters).

    Example:
        >>> lp = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]]))  # argmax: O I-x
        >>> viterbi_bio(lp, ["O", "B-x", "I-x"])
        ['B-x', 'I-x']
    """
    log_probs = np.asarray(log_probs, np.float64)
    T, C = log_probs.shape if log_probs.ndim == 2 else (0, 0)
    if log_probs.ndim != 2 or C != len(tags):
        raise ValueError(f"`log_probs` must have shape (T, {len(tags)}), got {np.shape(log_probs)}")
    if T == 0:
        return []
    start, allowed = allowed_transitions(tags)
    penalty = np.where(allowed, 0.0, -np.inf)
    score = np.where(start, log_probs[0], -np.inf)
    back = np.zeros((T, C), np.int64)
    for t in range(1, T):
        total = score[:, None] + penalty  # (previous, current)
        back[t] = np.argmax(total, axis=0)
        score = total[back[t], np.arange(C)] + log_probs[t]
    path = [int(np.argmax(score))]
    for t in range(T - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return [tags[k] for k in reversed(path)]
