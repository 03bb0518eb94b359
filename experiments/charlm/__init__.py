"""A character-level RNN language model on the sentences of the tagged English corpus.

``python -m experiments.charlm {train,eval,sample} --workdir DIR [--quick] [--config.k=v]``.
See ``experiments/charlm/RESULTS.md``.
"""
