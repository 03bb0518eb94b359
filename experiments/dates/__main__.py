"""``python -m experiments.dates {train,eval,predict} --workdir DIR [--seed N] [--quick]``.

- ``train``: generate the date pairs (faker + babel), train the encoder–decoder (resumes
  from the latest checkpoint), evaluate greedy and beam decoding on the held-out dates and
  write ``DIR/results.{json,md}``;
- ``eval``: the same evaluation from the best checkpoint in ``DIR``;
- ``predict TEXT ...`` (or lines on stdin): ISO dates by greedy and beam decoding, e.g.
  ``python -m experiments.dates predict --workdir W "3rd of May 1979" "Tuesday, 9 July 2024"``.
"""

import sys

from experiments.dates.task import EXPERIMENT

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main(sys.argv[1:], description=__doc__))
