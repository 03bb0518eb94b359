"""Runnable experiments: ``python -m experiments.<name> {train,eval,predict} --workdir DIR``.

Thin layers over :mod:`rnn_jax`: :mod:`experiments.cli` parses the command line and turns every
error into one line; :mod:`experiments.common` holds what all experiments share (named keys,
the nested ``Config(model, train, report)``, the run directory, optimiser, checkpoints and the
logged training run); :mod:`experiments.data` fetches and generates their data sets. Each
experiment is a package with its config dataclasses (seed included), its models as
``(init, apply)`` pairs, its task and a one-line ``__main__``.
"""
