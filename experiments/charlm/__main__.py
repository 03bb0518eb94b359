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

from experiments.charlm.config import default_config
from experiments.charlm.task import eval_command, sample_command, train_command
from experiments.cli import main

if __name__ == "__main__":
    sys.exit(
        main(
            sys.argv[1:],
            prog="python -m experiments.charlm",
            description=__doc__,
            default_config=default_config,
            commands={
                "train": train_command,
                "eval": eval_command,
                "predict": sample_command,
                "sample": sample_command,
            },
        )
    )
