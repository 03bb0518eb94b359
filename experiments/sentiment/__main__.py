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

import sys

from experiments.cli import module_main
from experiments.sentiment.data import DOMAINS, SentimentFetchError, fetch_snippets, load_snippets


def fetch(data_dir: str | None) -> str:
    """Caches the snippets (:func:`~experiments.sentiment.data.fetch_snippets`); their sizes."""
    paths = fetch_snippets(data_dir)
    return "\n".join(
        f"{paths[domain]}: {len(load_snippets(domain, data_dir))} snippets" for domain in DOMAINS
    )


if __name__ == "__main__":
    sys.exit(module_main("sentiment", __doc__, fetch=fetch, fetch_errors=(SentimentFetchError,)))
