"""Smoke and unit tests of experiments/genes (a synthetic GenBank file; no download)."""

from __future__ import annotations

import json
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.genes import data as gdata
from experiments.genes.__main__ import genbank_overrides
from experiments.genes.baselines import CodonLogistic, codon_ids, orf_coding
from experiments.genes.models import make_model, parse_model_name, sequence_loss
from experiments.genes.task import EXPERIMENT, ORF_LENGTHS, base_scores, gene_recall

STOPS = ("TAA", "TAG", "TGA")
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in STOPS]


def _revcomp(s: str) -> str:
    return s[::-1].translate(str.maketrans("ACGT", "TGCA"))


def _gene(rng, codons: int) -> str:
    return "ATG" + "".join(rng.choice(SENSE, codons)) + "TAA"


def write_genome(path, seed: int = 0, length: int = 12_000):
    """A random genome with planted genes on both strands (one split into two exons)."""
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqFeature import CompoundLocation, SeqFeature, SimpleLocation
    from Bio.SeqRecord import SeqRecord

    rng = np.random.default_rng(seed)
    seq = list(rng.choice(list("ACGT"), length))
    features = []
    pos = 300
    i = 0
    while pos + 700 < length:
        gene = _gene(rng, int(rng.integers(120, 180)))
        strand = 1 if i % 2 == 0 else -1
        text = gene if strand == 1 else _revcomp(gene)
        seq[pos : pos + len(text)] = list(text)
        loc = SimpleLocation(pos, pos + len(text), strand=strand)
        if i == 2:  # an "intron": the CDS is the two ends of the stretch
            mid = pos + 150
            loc = CompoundLocation(
                [SimpleLocation(pos, mid, strand=1), SimpleLocation(mid + 30, pos + len(text), 1)]
            )
        features.append(SeqFeature(loc, type="CDS", qualifiers={"gene": [f"g{i}"]}))
        pos += len(text) + int(rng.integers(200, 500))
        i += 1
    record = SeqRecord(Seq("".join(seq)), id="SYN0001", name="SYN0001", description="synthetic")
    record.annotations["molecule_type"] = "DNA"
    record.features = features
    SeqIO.write(record, str(path), "genbank")
    return path


@pytest.fixture(scope="module")
def genbank(tmp_path_factory):
    return write_genome(tmp_path_factory.mktemp("genes") / "synthetic.gb")


def test_encode_and_reverse_complement():
    ids = gdata.encode_bases("ACGTNacgtR")
    assert ids.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert gdata.reverse_complement_ids(gdata.encode_bases("AACGN")).tolist() == [4, 1, 2, 3, 3]


def test_load_genbank_labels_exons_of_both_strands(genbank):
    genome = gdata.load_genbank(genbank)
    assert genome.name == "SYN0001" and len(genome) == 12_000
    names = [n for n, _ in genome.genes]
    assert names[:3] == ["g0", "g1", "g2"]
    (s0, e0), (s1, e1) = genome.genes[2][1]  # the join: the intron stays 0
    assert genome.labels[s0:e0].all() and genome.labels[s1:e1].all()
    assert not genome.labels[e0:s1].any()
    assert genome.labels[:300].sum() == 0
    rev_start, rev_end = genome.genes[1][1][0]  # a minus-strand gene is labelled too
    assert genome.labels[rev_start:rev_end].all()


def test_load_genbank_rejects_files_without_cds(tmp_path):
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqRecord import SeqRecord

    record = SeqRecord(Seq("ACGT" * 10), id="X1", name="X1")
    record.annotations["molecule_type"] = "DNA"
    SeqIO.write(record, str(tmp_path / "x.gb"), "genbank")
    with pytest.raises(ValueError, match="`genbank`.*CDS features"):
        gdata.load_genbank(tmp_path / "x.gb")
    (tmp_path / "bad.gb").write_text("not a genbank file\n")
    with pytest.raises(ValueError):
        gdata.load_genbank(tmp_path / "bad.gb")


def test_split_regions_cover_the_genome_without_overlap():
    n = 1001
    g = gdata.Genome("g", np.zeros(n, np.int32), np.zeros(n, np.int32), (("a", ((650, 740),)),))
    for assignment in ("forward", "reverse"):
        train, val, test = gdata.split_regions(g, assignment)
        spans = sorted([(r.start, r.end) for r in (train, val, test)])
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    train, val, test = gdata.split_regions(g, "forward")
    assert (test.start, len(train)) == (801, 701)
    assert train.genes == (("a", ((650, 701),)),)  # 51 of 90 bases inside: kept, clipped
    assert val.genes == ()  # 39 of 90: counted where most of it lies
    with pytest.raises(ValueError, match="`assignment`"):
        gdata.split_regions(g, "middle")


def test_fetch_rejects_a_wrong_archive(tmp_path):
    target = gdata.genome_path(tmp_path)
    target.parent.mkdir(parents=True)
    with tarfile.open(target.parent / gdata.SDIST, "w:gz"):
        pass
    with pytest.raises(gdata.GeneFetchError, match="sha256"):
        gdata.fetch_genome(tmp_path)
    assert not target.exists()


def test_kmer_sharing_sees_reverse_complements():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, 500).astype(np.int32)
    assert gdata.shared_kmer_fraction(gdata.reverse_complement_ids(x), x) == 1.0
    assert gdata.shared_kmer_fraction(rng.integers(0, 4, 500).astype(np.int32), x) < 0.05


def test_orf_finder_six_frames():
    rng = np.random.default_rng(1)
    gene = _gene(rng, 110)
    short = _gene(rng, 50)
    for text in (gene, _revcomp(gene)):
        seq = "CC" + text + "GGG" + short + "C"
        pred = orf_coding(gdata.encode_bases(seq), min_codons=100)
        truth = np.zeros(len(seq), int)
        truth[2 : 2 + len(gene)] = 1
        assert pred.tolist() == truth.tolist()
    assert codon_ids(gdata.encode_bases("ATGN")).tolist() == [14, -1, -1, -1]
    with pytest.raises(ValueError, match="`min_codons`"):
        orf_coding(gdata.encode_bases("ATG"), min_codons=0)


def test_codon_logistic_learns_planted_genes(genbank):
    genome = gdata.load_genbank(genbank)
    train, _, test = gdata.split_regions(genome, "reverse")
    proba = CodonLogistic().fit(train).predict_proba(test.ids)
    assert base_scores(proba > 0.5, test.labels)["f1"] > 0.6


def test_metrics():
    assert base_scores(np.array([0, 0]), np.array([0, 1])) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
    }
    r = gdata.Region("r", 0, 10, np.zeros(10), np.zeros(10), (("a", ((0, 4),)), ("b", ((6, 10),))))
    pred = np.array([1, 1, 0, 0, 0, 0, 1, 0, 0, 0])
    assert gene_recall(pred, r) == {"gene_recall": 0.5, "genes": 2}


def test_bidirectional_remat_matches_full_backprop():
    # The LSTM: its carry is a pair (h, c); the GRU's remat runs in the end-to-end test.
    params = make_model("lstmbi", 4).init(jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (2, 23), 0, 5)  # 23 = 4 chunks of 6, padded
    labels = (ids > 1).astype(jnp.int32)

    @jax.jit
    def both(p):
        full = jax.value_and_grad(lambda q: sequence_loss(q, ids, labels, mode="bptt"))(p)
        remat = jax.value_and_grad(
            lambda q: sequence_loss(q, ids, labels, mode="remat", chunk_size=6)
        )(p)
        return full, remat

    (full, g_full), (remat, g_remat) = both(params)
    np.testing.assert_allclose(float(full), float(remat), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_remat), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    with pytest.raises(ValueError, match="`mode`"):
        sequence_loss(params, ids, labels, mode="truncated")


def test_model_names_and_orf_tokens():
    assert parse_model_name("grubi_orf") == ("gru", True, True)
    with pytest.raises(ValueError, match="`models`"):
        parse_model_name("transformer")
    model = make_model("rnnbi_orf", 8)
    assert model.tokens(np.array([0, 3, 4]), np.array([1, 0, 1])).tolist() == [5, 3, 9]
    with pytest.raises(ValueError, match="`orf`"):
        model.tokens(np.array([0, 3]), None)


def test_genbank_flag_becomes_a_report_override():
    argv = ["eval", "--workdir", "w", "--genbank=a.gb", "--genbank", "b.gb", "c.gb"]
    assert genbank_overrides(argv) == [
        "eval",
        "--workdir",
        "w",
        "--config.genbank_files=a.gb,b.gb,c.gb",
    ]


def test_cli_errors(tmp_path, capsys):
    assert EXPERIMENT.main(["train", "--workdir", str(tmp_path), "--config.assignment=x"]) == 2
    assert "`assignment` must be one of" in capsys.readouterr().err
    assert EXPERIMENT.main(["eval", "--workdir", str(tmp_path / "none")]) == 1
    assert "train first" in capsys.readouterr().err


def test_train_and_eval_end_to_end(genbank, tmp_path, capsys):
    workdir = tmp_path / "run"
    common = [
        "--workdir",
        str(workdir),
        "--quick",
        f"--config.genbank={genbank}",
        "--config.hidden_size=8",
        "--config.window=300",
        "--config.backward=remat",
        "--config.batch_size=8",
        "--config.windows_per_epoch=16",
        "--config.num_epochs=1",
        "--config.progress=false",
        "--config.figure_bases=3000",
    ]
    assert EXPERIMENT.main(["train", *common]) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["models"]) == {"grubi"}
    assert set(results["baselines"]) == {"orf_finder", "orf_finder_tuned", "codon_logistic"}
    assert results["baselines"]["orf_finder_tuned"]["min_codons"] in ORF_LENGTHS
    assert results["baselines"]["orf_finder"]["f1"] > 0.8  # planted genes are long ORFs
    assert 0.0 <= results["models"]["grubi"]["f1"] <= 1.0
    assert (workdir / "track.png").stat().st_size > 0
    capsys.readouterr()
    argv = genbank_overrides(["eval", "--workdir", str(workdir), "--genbank", str(genbank)])
    assert EXPERIMENT.main(argv) == 0
    out = capsys.readouterr().out
    assert "synthetic.gb (SYN0001, 12,000 bp): per-base F1 grubi" in out
    assert "ORF finder" in out
