"""``python -m experiments.names {train,eval,predict,demo} --workdir DIR [--seed N] [--quick]``.

- ``train``: fetch/load the corpus, train every model of ``config.models`` (each resumes from
  its latest checkpoint), evaluate on the test split, run the probes, print the tables and
  write ``DIR/results.{json,md}``;
- ``eval``: the same evaluation from the checkpoints in ``DIR``;
- ``predict TEXT ...`` (or lines on stdin): every model's label for every word;
- ``demo``: ``train`` then ``predict`` on the formulation's two example sentences.
"""

import sys

from experiments.names.task import EXPERIMENT

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main(sys.argv[1:], description=__doc__))
