"""``python -m experiments.genes {fetch,train,eval,memory,summary} ...``.

- ``fetch [--data-dir ROOT]``: download (once, from PyPI) the ``biopython==1.88`` source
  archive, check its sha256 and cache ``Tests/GenBank/NC_000932.gb`` (sha256-checked) under
  ``ROOT/genes`` (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``);
- ``train --workdir DIR [--seed N] [--quick] [--config.k=v ...]``: train every model of
  ``config.models`` (each resumes from its latest checkpoint), run the baselines, evaluate on
  the test region read as one sequence, write ``DIR/results.{json,md}`` and ``DIR/track.png``;
- ``eval --workdir DIR [--genbank FILE ...]``: the same evaluation from the checkpoints in
  ``DIR``; with ``--genbank``, the best model and the ORF finder on each file's whole record
  (per-base F1 of both);
- ``memory --workdir DIR [--config.bench_lengths=1000,10000,100000]``: XLA's compiled memory
  and the step time of one gradient, full BPTT vs chunked recomputation, by window length;
- ``summary --workdir OUT DIR ...``: mean ± sd over several runs (seeds).
"""

import sys

from experiments.cli import module_main
from experiments.genes.data import GeneFetchError, fetch_genome, load_genbank


def fetch(data_dir: str | None) -> str:
    """Caches the genome (:func:`~experiments.genes.data.fetch_genome`); its sizes."""
    path = fetch_genome(data_dir)
    genome = load_genbank(path)
    return f"{path}: {genome.name}, {len(genome):,} bp, {len(genome.genes)} CDS"


def genbank_overrides(argv: list[str]) -> list[str]:
    """``--genbank A B`` / ``--genbank=A`` -> ``--config.genbank_files=A,B``.

    Example:
        >>> genbank_overrides(["eval", "--workdir", "w", "--genbank", "a.gb", "b.gb", "--debug"])
        ['eval', '--workdir', 'w', '--debug', '--config.genbank_files=a.gb,b.gb']
    """
    out, files, i = [], [], 0
    while i < len(argv):
        item = argv[i]
        if item.startswith("--genbank="):
            files.append(item.split("=", 1)[1])
        elif item == "--genbank":
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                files.append(argv[i])
                i += 1
            continue
        else:
            out.append(item)
        i += 1
    return out + ([f"--config.genbank_files={','.join(files)}"] if files else [])


if __name__ == "__main__":
    errors = (GeneFetchError,)
    sys.exit(
        module_main("genes", __doc__, fetch=fetch, fetch_errors=errors, rewrite=genbank_overrides)
    )
