"""Translating human-readable dates to ISO ``YYYY-MM-DD`` with a character-level encoder–decoder.

``python -m experiments.dates {train,eval,predict} --workdir DIR [--quick] [--config.k=v]``.
See ``experiments/dates/RESULTS.md``.
"""
