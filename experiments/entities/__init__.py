"""Typed entity tagging on WNUT-16 tweets: the formulation's "Apple is an organisation".

``python -m experiments.entities {fetch,train,eval,predict,summary} --workdir DIR [--quick]
[--config.k=v]``. See ``experiments/entities/RESULTS.md``.
"""
