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

import argparse
import sys

from experiments.translate.data import TranslateFetchError, fetch_pairs, load_pairs


def fetch_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.translate fetch")
    parser.add_argument("--data-dir", default=None, help="cache root (default $RNN_JAX_DATA)")
    args = parser.parse_args(argv)
    try:
        path = fetch_pairs(args.data_dir)
    except (TranslateFetchError, OSError) as err:
        print(f"python -m experiments.translate fetch: error: {err}", file=sys.stderr)
        return 1
    print(f"{path}: {len(load_pairs(args.data_dir))} verse pairs")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["fetch"]:
        sys.exit(fetch_main(sys.argv[2:]))
    from experiments.translate.task import EXPERIMENT

    sys.exit(EXPERIMENT.main(sys.argv[1:], description=__doc__))
