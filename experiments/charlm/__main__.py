"""``python -m experiments.charlm {train,eval,predict,sample} --workdir DIR [--seed N] [--quick]``.

- ``train``: load the corpus (fetched and cached on first use), train the character RNN
  (resumes from the latest checkpoint), report bits per character on held-out sentences
  against unigram and bigram baselines, print temperature samples, write
  ``DIR/results.{json,md}``;
- ``eval``: the same evaluation from the best checkpoint in ``DIR``;
- ``predict SEED ...`` / ``sample SEED ...``: continue each seed text (none: from nothing)
  at the temperatures of ``--config.temperatures``.
"""

import sys

from experiments.charlm.task import EXPERIMENT

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main(sys.argv[1:], description=__doc__))
