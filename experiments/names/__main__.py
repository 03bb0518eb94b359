"""``python -m experiments.names {train,eval,predict,demo} --workdir DIR [--seed N] [--quick]``.

- ``train``: fetch/load the corpus, train every model of ``config.models`` (each resumes from
  its latest checkpoint), evaluate on the test split, run the probes, print the tables and
  write ``DIR/results.{json,md}``;
- ``eval``: the same evaluation from the checkpoints in ``DIR``;
- ``predict TEXT ...`` (or lines on stdin): every model's label for every word;
- ``demo``: ``train`` then ``predict`` on the formulation's two example sentences.
"""

import sys

from experiments.cli import main
from experiments.names.config import default_config
from experiments.names.task import demo_command, eval_command, predict_command, train_command

if __name__ == "__main__":
    sys.exit(
        main(
            sys.argv[1:],
            prog="python -m experiments.names",
            description=__doc__,
            default_config=default_config,
            commands={
                "train": train_command,
                "eval": eval_command,
                "predict": predict_command,
                "demo": demo_command,
            },
        )
    )
