"""``python -m experiments.translate {fetch,train,eval,predict} ...`` (English -> Spanish).

- ``fetch [--data-dir ROOT]``: ``apt-get download`` the Debian packages ``sword-text-web``
  and ``sword-text-sparv`` (sha256-checked), extract them under ``ROOT/translate`` (default
  ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``), read the SWORD modules with ``pysword`` and
  cache the verse pairs (markup stripped) as ``pairs.json``;
- ``train --workdir DIR [--seed N] [--quick] [--config.k=v ...]``: train one encoder–decoder
  (``--config.cell=rnn|gru|lstm``, ``--config.attention=additive|none``), evaluate it and
  the baselines (copy, IBM Model 1) on the held-out books, write ``DIR/results.{json,md}``
  and, with attention, ``DIR/attention.png``;
- ``eval --workdir DIR``: the same evaluation from the best checkpoint in ``DIR``;
- ``predict --workdir DIR [TEXT ...]`` (or lines on stdin): ``<text>\\t<greedy>\\t(beam: ...)``.
"""

import sys

from experiments.cli import module_main
from experiments.translate.data import TranslateFetchError, fetch_pairs, load_pairs


def fetch(data_dir: str | None) -> str:
    """Caches the verse pairs (:func:`~experiments.translate.data.fetch_pairs`); their number."""
    path = fetch_pairs(data_dir)
    return f"{path}: {len(load_pairs(data_dir))} verse pairs"


if __name__ == "__main__":
    errors = (TranslateFetchError, OSError)
    sys.exit(module_main("translate", __doc__, fetch=fetch, fetch_errors=errors))
