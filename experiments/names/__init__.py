"""The formulation's running example on real text: is this word part of a name?

``python -m experiments.names {train,eval,predict,demo} --workdir DIR [--quick] [--config.k=v]``.
See ``experiments/names/RESULTS.md``.
"""
