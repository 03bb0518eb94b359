"""The baselines a practitioner would try first, fitted on the same split as the RNNs.

- ``majority``: the most frequent training label;
- ``vader``: VADER's own lexicon and rules (``SentimentIntensityAnalyzer``), positive iff
  ``compound > 0`` (nothing is fitted);
- ``bow_lr``: unigram bag-of-words (counts) logistic regression;
- ``tfidf_lr``: tf-idf uni+bigram logistic regression;
- ``tfidf_ridge`` (when the ratings are given): the rating in ``[-4, 4]`` regressed on the
  same tf-idf features (ridge regression, clipped to the range): the star baseline.

Both logistic regressions use the library's tokenizer (lower-cased), scikit-learn's
``LogisticRegression`` (L2, liblinear) and tune ``C`` over :data:`C_GRID` on the validation
accuracy; the ridge tunes ``alpha`` over :data:`ALPHA_GRID` on the validation squared error.
Each baseline is a ``predict(texts)`` function returning ``P(positive)``, or the rating for
``tfidf_ridge`` (its info says ``"target": "score"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rnn_jax.vocab import tokenize

__all__ = ["ALPHA_GRID", "BASELINES", "C_GRID", "fit_baselines"]

BASELINES = ("majority", "vader", "bow_lr", "tfidf_lr", "tfidf_ridge")
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
ALPHA_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)

Predictor = Callable[[Sequence[str]], np.ndarray]


def _analyzer(text: str) -> list[str]:
    return tokenize(text, lower=True)


def _majority(labels: np.ndarray) -> Predictor:
    p = float(np.mean(labels) > 0.5)
    return lambda texts: np.full(len(texts), p)


def vader_predict(texts: Sequence[str]) -> np.ndarray:
    """``P(positive)`` from VADER: ``(compound + 1) / 2`` (so ``> 0.5`` iff ``compound > 0``)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return np.array([(analyzer.polarity_scores(t)["compound"] + 1.0) / 2.0 for t in texts])


def _tuned_lr(vectorizer_factory, train, val) -> tuple[Predictor, dict]:
    from sklearn.linear_model import LogisticRegression

    (x_train, y_train), (x_val, y_val) = train, val
    vectorizer = vectorizer_factory()
    X_train = vectorizer.fit_transform(x_train)
    X_val = vectorizer.transform(x_val)
    scores = {}
    for C in C_GRID:
        model = LogisticRegression(C=C, solver="liblinear", max_iter=1000)
        model.fit(X_train, y_train)
        scores[C] = float(np.mean(model.predict(X_val) == y_val))
    best_C = max(scores, key=lambda c: (scores[c], -c))  # ties: the stronger regulariser
    model = LogisticRegression(C=best_C, solver="liblinear", max_iter=1000).fit(X_train, y_train)

    def predict(texts):
        return model.predict_proba(vectorizer.transform(list(texts)))[:, 1]

    return predict, {"C": best_C, "val_accuracy": scores[best_C], "features": X_train.shape[1]}


def _tfidf():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        tokenizer=_analyzer, lowercase=False, token_pattern=None, ngram_range=(1, 2),
        sublinear_tf=True,
    )  # fmt: skip


def _tuned_ridge(train_texts, train_scores, val_texts, val_scores) -> tuple[Predictor, dict]:
    from sklearn.linear_model import Ridge

    vectorizer = _tfidf()
    X_train = vectorizer.fit_transform(list(train_texts))
    X_val = vectorizer.transform(list(val_texts))
    errors = {}
    for alpha in ALPHA_GRID:
        model = Ridge(alpha=alpha).fit(X_train, train_scores)
        errors[alpha] = float(np.mean((np.clip(model.predict(X_val), -4, 4) - val_scores) ** 2))
    best = min(errors, key=lambda a: (errors[a], -a))  # ties: the stronger regulariser
    model = Ridge(alpha=best).fit(X_train, train_scores)

    def predict(texts):
        return np.clip(model.predict(vectorizer.transform(list(texts))), -4.0, 4.0)

    info = {"alpha": best, "val_mse": errors[best], "target": "score"}
    return predict, info


def fit_baselines(
    train: tuple[Sequence[str], np.ndarray],
    val: tuple[Sequence[str], np.ndarray],
    *,
    scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict[str, Predictor], dict[str, dict]]:
    """Fits every baseline on ``train`` ((texts, labels)), tuning on ``val``.

    ``scores``: the ratings of ``train`` and ``val``; with them ``tfidf_ridge`` is fitted too.

    Returns:
        ``({name: predict}, {name: info})`` where ``info`` holds the tuned ``C`` (``alpha``).
    """
    from sklearn.feature_extraction.text import CountVectorizer

    train = (list(train[0]), np.asarray(train[1]))
    val = (list(val[0]), np.asarray(val[1]))
    bow, bow_info = _tuned_lr(lambda: CountVectorizer(analyzer=_analyzer, binary=False), train, val)
    tfidf, tfidf_info = _tuned_lr(_tfidf, train, val)
    predictors = {
        "majority": _majority(train[1]),
        "vader": vader_predict,
        "bow_lr": bow,
        "tfidf_lr": tfidf,
    }
    info = {"majority": {}, "vader": {}, "bow_lr": bow_info, "tfidf_lr": tfidf_info}
    if scores is not None:
        predictors["tfidf_ridge"], info["tfidf_ridge"] = _tuned_ridge(
            train[0], np.asarray(scores[0]), val[0], np.asarray(scores[1])
        )
    return predictors, info
