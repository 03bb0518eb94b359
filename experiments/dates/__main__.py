"""``python -m experiments.dates {train,eval,predict} --workdir DIR [--seed N] [--quick]``.

- ``train``: generate the date pairs (faker + babel), train the encoder–decoder (resumes
  from the latest checkpoint), evaluate greedy and beam decoding on the held-out dates and
  write ``DIR/results.{json,md}``;
- ``eval``: the same evaluation from the best checkpoint in ``DIR``;
- ``predict TEXT ...`` (or lines on stdin): ISO dates by greedy and beam decoding, e.g.
  ``python -m experiments.dates predict --workdir W "3rd of May 1979" "Tuesday, 9 July 2024"``.
"""

import sys

from experiments.cli import main
from experiments.dates.config import default_config
from experiments.dates.task import eval_command, predict_command, train_command

if __name__ == "__main__":
    sys.exit(
        main(
            sys.argv[1:],
            prog="python -m experiments.dates",
            description=__doc__,
            default_config=default_config,
            commands={"train": train_command, "eval": eval_command, "predict": predict_command},
        )
    )
