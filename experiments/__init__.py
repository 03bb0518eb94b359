"""Runnable experiments: ``python -m experiments.<name> {train,eval,predict} --workdir DIR``.

The shared command-line machinery is :mod:`experiments.cli`; each experiment is a package
with a config dataclass (seed included), its models and a thin ``__main__``.
"""
