"""``python -m experiments.sentiment {fetch,train,eval,predict,summary} ...``.

- ``fetch [--data-dir ROOT]``: download (once, from PyPI) the ``vaderSentiment==3.3.2``
  source archive, check its sha256 and cache the four ``*_GroundTruth.txt`` files (each
  sha256-checked) under ``ROOT/sentiment`` (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``);
- ``train --workdir DIR [--seed N] [--quick] [--config.k=v ...]``: train every model of
  ``config.models`` (each resumes from its latest checkpoint), fit the baselines, evaluate on
  the movie test split and the cross domains, write ``DIR/results.{json,md}``;
- ``eval --workdir DIR``: the same evaluation from the checkpoints in ``DIR``;
- ``predict --workdir DIR [TEXT ...]`` (or lines on stdin): ``positive|negative <probability>
  <stars> <text>`` from the model with the best validation accuracy;
- ``summary --workdir OUT DIR ...``: mean ± sd over several runs (seeds).
"""

import argparse
import sys

from experiments.sentiment.data import DOMAINS, SentimentFetchError, fetch_snippets, load_snippets


def fetch_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sentiment fetch")
    parser.add_argument("--data-dir", default=None, help="cache root (default $RNN_JAX_DATA)")
    args = parser.parse_args(argv)
    try:
        paths = fetch_snippets(args.data_dir)
    except SentimentFetchError as err:
        print(f"python -m experiments.sentiment fetch: error: {err}", file=sys.stderr)
        return 1
    for domain in DOMAINS:
        print(f"{paths[domain]}: {len(load_snippets(domain, args.data_dir))} snippets")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["fetch"]:
        sys.exit(fetch_main(sys.argv[2:]))
    from experiments.sentiment.task import EXPERIMENT

    sys.exit(EXPERIMENT.main(sys.argv[1:], description=__doc__))
