"""Tests of the sentiment experiment: parsing, split, stars, metrics, and a tiny end-to-end run."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest

from experiments.cli import apply_overrides
from experiments.sentiment import data as sdata
from experiments.sentiment.config import MODEL_SPECS, default_config
from experiments.sentiment.data import (
    SentimentFetchError,
    cv_split,
    kfold_indices,
    load_snippets,
    parse_snippets,
    split_indices,
    stars_from_score,
)
from experiments.sentiment.task import (
    EXPERIMENT,
    accuracy,
    decide,
    predict_texts,
    stars_from_proba,
    summarize,
)


# ----------------------------------------------------------------------------- parsing
def test_parse_snippets_crlf_tabs_in_text_and_blank_lines():
    text = "1\t2.26666666667\tThe Rock is ''great''\r\n\r\n2\t-0.6\tToo\ttepid\r\n3\t0\tMeh\n"
    s = parse_snippets(text)
    assert s.ids == ("1", "2", "3")
    np.testing.assert_allclose(s.scores, [2.26666666667, -0.6, 0.0])
    assert s.texts == ("The Rock is ''great''", "Too\ttepid", "Meh")
    assert s.labels.tolist() == [1, 0, 0]  # a score of exactly 0 is negative (score > 0)
    assert s.stars.tolist() == [4, 3, 3]
    sub = s.subset([2, 0])
    assert sub.ids == ("3", "1") and sub.labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    "line, match",
    [
        ("1\t2.0", "line 1: expected id<TAB>score<TAB>text"),
        ("1\tgood\tx", "line 1: the score 'good' is not a number"),
        ("1\t4.5\tx", r"line 1: the score 4.5 is outside \[-4, 4\]"),
    ],
)
def test_parse_snippets_rejects_malformed_lines(line, match):
    with pytest.raises(ValueError, match=match):
        parse_snippets(line)


def test_stars_from_score_bins_are_equal_fifths_of_the_range():
    edges = np.array([-4.0, -2.4, -0.8, 0.8, 2.4, 4.0])
    assert stars_from_score(edges).tolist() == [1, 2, 3, 4, 5, 5]
    assert stars_from_score(edges - 1e-9)[1:].tolist() == [1, 2, 3, 4, 5]


def test_split_is_fixed_disjoint_and_80_10_10():
    parts = split_indices(10_605, seed=0)
    assert [len(p) for p in parts] == [8484, 1060, 1061]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10_605))
    again = split_indices(10_605, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not np.array_equal(parts[2], split_indices(10_605, seed=1)[2])
    folds = kfold_indices(100, seed=0, k=10)
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(100))
    assert all(len(np.intersect1d(tr, te)) == 0 for tr, te in folds)
    # cross-validation folds: 80/10/10 parts of the same permutation, each index tested once
    cv = [cv_split(10_605, seed=0, fold=k) for k in range(10)]
    assert all(sorted(np.concatenate(f).tolist()) == list(range(10_605)) for f in cv)
    assert sorted(np.concatenate([test for _, _, test in cv]).tolist()) == list(range(10_605))
    assert all(np.array_equal(cv[k][1], cv[(k + 1) % 10][2]) for k in range(10))
    assert all({len(val), len(test)} <= {1060, 1061} for _, val, test in cv)
    with pytest.raises(ValueError, match="`fold` must be in"):
        cv_split(100, seed=0, fold=10)


# ----------------------------------------------------------------------------- fetch / load
def _fake_sdist(directory: Path, files: dict[str, bytes]) -> Path:
    """A stand-in for vaderSentiment-3.3.2.tar.gz: an sdist holding the inner archive."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{sdata.INNER_DIR}/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    outer = directory / sdata.SDIST
    with tarfile.open(outer, mode="w:gz") as tar:
        info = tarfile.TarInfo(sdata.INNER_ARCHIVE)
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))
    return outer


def test_fetch_from_a_local_archive_checks_every_sha256(tmp_path, monkeypatch):
    contents = {name: f"1\t{i}.5\ttext {i}\r\n".encode() for i, (name, _) in enumerate(sdata.FILES.values())}  # fmt: skip
    files = {d: (name, sdata._sha256(contents[name])) for d, (name, _) in sdata.FILES.items()}
    (tmp_path / "sentiment").mkdir()
    archive = _fake_sdist(tmp_path / "sentiment", contents)
    monkeypatch.setattr(sdata, "FILES", files)
    monkeypatch.setattr(sdata, "SDIST_SHA256", sdata._sha256(archive.read_bytes()))
    paths = sdata.fetch_snippets(tmp_path)
    assert load_snippets("tweets", tmp_path).scores.tolist() == [3.5]
    assert paths["movies"].read_bytes() == contents[files["movies"][0]]
    # a corrupted cache file is named, with the command that fetches it again
    paths["nyt"].write_bytes(b"1\t0.5\tchanged\r\n")
    with pytest.raises(SentimentFetchError, match="sha256 of .*`python -m experiments.sentiment fetch"):  # fmt: skip
        load_snippets("nyt", tmp_path)
    sdata.fetch_snippets(tmp_path)  # repaired from the archive in the cache directory
    assert load_snippets("nyt", tmp_path).texts == ("text 2",)
    # a wrong archive is refused
    monkeypatch.setattr(sdata, "SDIST_SHA256", "0" * 64)
    paths["nyt"].unlink()
    with pytest.raises(SentimentFetchError, match="sha256 of .*vaderSentiment-3.3.2.tar.gz"):
        sdata.fetch_snippets(tmp_path)


def test_missing_data_names_the_fetch_command(tmp_path):
    with pytest.raises(SentimentFetchError, match=r"does not exist: run `python -m experiments.sentiment fetch --data-dir"):  # fmt: skip
        load_snippets("movies", tmp_path)


# ----------------------------------------------------------------------------- metrics
def test_accuracy_stars_from_proba_and_summary():
    assert accuracy(np.array([0.9, 0.5, 0.1, 0.7]), np.array([1, 1, 0, 0])) == 0.5
    positive, stars = decide(np.array([-4.0, -0.5, 0.0, 0.3, 3.0]), "score")
    assert positive.tolist() == [False, False, False, True, True]  # as labels: score > 0
    assert stars.tolist() == [1, 3, 3, 3, 5]
    assert stars_from_proba([0.0, 0.2, 0.39, 0.6, 0.99, 1.0]).tolist() == [1, 2, 2, 4, 5, 5]
    row = lambda a: {"val": a, "test": a, "star_accuracy": a, "star_mae": 1.0, "cross": {"nyt": a}}  # noqa: E731
    runs = [{"models": {"m": row(a)}, "baselines": {"b": row(0.5)}} for a in (0.7, 0.8)]
    s = summarize(runs)
    assert s["models"]["m"]["test"] == pytest.approx((0.75, np.std([0.7, 0.8], ddof=1)))
    assert s["baselines"]["b"]["cross"]["nyt"] == (0.5, 0.0)


def test_config_names_and_quick():
    assert {"rnn_last", "rnnbi_mean", "rnnbi2_max", "gru_mean", "lstmbi_last"} <= set(MODEL_SPECS)
    assert MODEL_SPECS["rnnbi2_max"] == ("rnn", 2, True, "max", False, "label", False)
    assert MODEL_SPECS["rnnbi_mean_lm"] == ("rnn", 1, True, "mean", True, "label", False)
    assert MODEL_SPECS["gru_mean_score"].target == "score" and "gru_mean_lm" not in MODEL_SPECS
    quick = default_config(quick=True)
    assert quick.model.hidden_size == 64 and set(quick.models) <= set(MODEL_SPECS)
    with pytest.raises(ValueError, match="`models` must be"):
        default_config().__class__(models=("cnn",))
    with pytest.raises(ValueError, match=r"`fold` must be one of \(0, 1, .*9\), got 10"):
        apply_overrides(default_config(), {"fold": "10"})


# ----------------------------------------------------------------------------- end to end
def _write_corpus(directory: Path, n: int = 160, seed: int = 0) -> Path:
    rng = random.Random(seed)
    pos, neg = ["a gem", "moving and funny", "brilliant"], ["a mess", "dull and tedious", "awful"]
    for name, size in (("movieReviewSnippets_GroundTruth.txt", n), ("tweets_GroundTruth.txt", 30)):
        lines = []
        for i in range(size):
            good = rng.random() < 0.5
            text = f"{rng.choice(pos if good else neg)} , {rng.choice(['the film', 'it'])} ."
            lines.append(f"{i + 1}\t{rng.uniform(0.2, 3.8) * (1 if good else -1):.3f}\t{text}")
        (directory / name).write_text("\r\n".join(lines) + "\r\n")
    return directory


def test_train_eval_predict_summary_end_to_end(tmp_path, capsys, monkeypatch):
    (tmp_path / "corpus").mkdir()
    corpus = _write_corpus(tmp_path / "corpus")
    workdir = tmp_path / "run"
    args = [
        "--workdir", str(workdir),
        f"--config.corpus_dir={corpus}",
        "--config.models=rnnbi_mean_lm,rnn_mean_score",
        "--config.lm_epochs=1",
        "--config.lm_targets=20",
        "--config.cross_domains=tweets",
        "--config.hidden_size=8",
        "--config.batch_size=16",
        "--config.num_epochs=2",
        "--config.warmup_steps=5",
        "--config.eval_batch_size=32",
        "--config.progress=false",
    ]  # fmt: skip
    assert EXPERIMENT.main(["train", *args]) == 0
    out = capsys.readouterr().out
    assert "| rnnbi_mean_lm |" in out and "| tfidf_lr |" in out and "tweets acc" in out
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["models"]) == {"rnnbi_mean_lm", "rnn_mean_score"}
    assert set(results["baselines"]) == {"majority", "vader", "bow_lr", "tfidf_lr", "tfidf_ridge"}
    for r in [*results["models"].values(), *results["baselines"].values()]:
        assert 0.0 <= r["test"] <= 1.0 and set(r["cross"]) == {"tweets"}
        assert 0.0 <= r["star_accuracy"] <= 1.0 and 0.0 <= r["star_mae"] <= 4.0
    targets = {n: r["target"] for n, r in {**results["models"], **results["baselines"]}.items()}
    assert targets["rnn_mean_score"] == targets["tfidf_ridge"] == "score"
    assert targets["rnnbi_mean_lm"] == targets["tfidf_lr"] == "label"
    train_info = json.loads((workdir / "rnn_mean_score" / "train.json").read_text())
    assert train_info["val"]["loss"] >= 0.0  # the score model keeps its best squared error
    assert (workdir / "accuracy.png").stat().st_size > 0
    assert (workdir / "language_models.npz").exists()
    assert (workdir / "rnnbi_mean_lm" / "metrics.jsonl").exists()

    assert EXPERIMENT.main(["eval", "--workdir", str(workdir), "--config.baselines=false"]) == 0
    assert "| rnnbi_mean_lm |" in capsys.readouterr().out

    texts = ["a gem , it .", "dull and tedious , the film ."]
    assert EXPERIMENT.main(["predict", "--workdir", str(workdir), *texts]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, texts, strict=True):
        label, proba, stars, rest = line.split(" ", 3)
        assert label in ("positive", "negative") and rest == text
        assert (label == "positive") == (float(proba) > 0.5)
        assert len(stars) == 5 and set(stars) <= {"★", "☆"}
    monkeypatch.setattr("sys.stdin", io.StringIO("brilliant\n\n"))
    assert EXPERIMENT.main(["predict", "--workdir", str(workdir)]) == 0
    assert capsys.readouterr().out.strip().endswith(" brilliant")

    summary_dir = tmp_path / "summary"
    runs = [str(workdir), str(workdir), f"light={workdir}"]
    assert EXPERIMENT.main(["summary", "--workdir", str(summary_dir), *runs]) == 0
    out = capsys.readouterr().out
    assert "| rnnbi_mean_lm | 2 |" in out and "| rnnbi_mean_lm (light) | 1 |" in out
    assert (summary_dir / "summary.png").exists() and (summary_dir / "results.json").exists()

    # an ensemble averages P(positive) over the run directories' classifiers
    ensemble_dir = tmp_path / "ensemble"
    assert EXPERIMENT.main(["ensemble", "--workdir", str(ensemble_dir), str(workdir), str(workdir),
                            "--config.models=rnnbi_mean_lm"]) == 0  # fmt: skip
    results = json.loads((ensemble_dir / "results.json").read_text())
    assert results["members"] == ["run/rnnbi_mean_lm"] * 2
    single = json.loads((workdir / "results.json").read_text())["models"]["rnnbi_mean_lm"]
    assert results["models"]["ensemble of 2"]["test"] == single["test"]  # two equal members
    capsys.readouterr()
    assert EXPERIMENT.main(["ensemble", "--workdir", str(ensemble_dir), str(workdir),
                            "--config.models=rnn_mean_score"]) == 1  # fmt: skip
    assert "is a _score model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- wide & deep
def _numpy_wide(wide, ids, lengths, vocab_size, buckets, norm):
    """The linear term by explicit loops over each snippet's valid tokens and bigrams."""
    W_uni, W_bi, b = (np.asarray(wide[k], np.float64) for k in ("W_uni", "W_bi", "b"))
    out = np.zeros((len(ids), W_uni.shape[0]))
    for i, (row, n) in enumerate(zip(ids.tolist(), lengths.tolist(), strict=True)):
        total = sum((W_uni[:, row[t]] for t in range(n)), np.zeros(W_uni.shape[0]))
        for t in range(1, n):  # bigrams of two valid tokens only
            total += W_bi[:, (row[t - 1] * vocab_size + row[t]) % buckets]
        out[i] = total / (max(n, 1) if norm == "mean" else np.sqrt(max(n, 1))) + b
    return out


@pytest.mark.parametrize("norm", ["mean", "sqrt"])
def test_bigram_hash_and_wide_term_match_a_numpy_loop(norm):
    import jax.numpy as jnp

    from experiments.sentiment.models import bigram_ids, wide_logits

    rng = np.random.default_rng(0)
    V, buckets, T = 50, 37, 7
    lengths = np.array([7, 1, 3, 0, 5])
    ids = rng.integers(0, V, size=(5, T))
    padded = ids.copy()
    for i, n in enumerate(lengths):
        padded[i, n:] = rng.integers(0, V, size=T - n)  # garbage past the end: must not count
    hashed, mask = bigram_ids(jnp.asarray(padded), jnp.asarray(lengths), V, buckets)
    for i, n in enumerate(lengths):
        expected = [(ids[i, t - 1] * V + ids[i, t]) % buckets for t in range(1, n)]
        assert np.asarray(hashed)[i, 1:n].tolist() == expected
        assert np.asarray(mask)[i].tolist() == [1 <= t < n for t in range(T)]
    assert not np.asarray(mask)[1].any()  # a 1-token snippet has no bigram
    wide = {
        "W_uni": rng.normal(size=(2, V)).astype(np.float32),
        "W_bi": rng.normal(size=(2, buckets)).astype(np.float32),
        "b": rng.normal(size=2).astype(np.float32),
    }
    got = wide_logits(
        {k: jnp.asarray(v) for k, v in wide.items()}, jnp.asarray(padded), jnp.asarray(lengths),
        norm=norm,
    )  # fmt: skip
    want = _numpy_wide(wide, padded, lengths, V, buckets, norm)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got)[3], wide["b"], rtol=1e-6)  # empty: the bias


def test_wide_dropout_needs_a_key_and_keeps_the_mean():
    import jax
    import jax.numpy as jnp

    from experiments.sentiment.models import wide_logits

    wide = {"W_uni": jnp.ones((2, 5)), "W_bi": jnp.ones((2, 3)), "b": jnp.zeros(2)}
    ids, lengths = jnp.ones((4000, 6), jnp.int32), jnp.full((4000,), 6)
    with pytest.raises(ValueError, match="`key` must be a PRNG key"):
        wide_logits(wide, ids, lengths, dropout=0.5)
    out = wide_logits(wide, ids, lengths, dropout=0.5, key=jax.random.key(0))
    assert float(jnp.std(out)) > 0.1  # terms are dropped per snippet
    assert float(jnp.mean(out)) == pytest.approx((6 + 5) / 6, rel=0.02)  # inverted scaling


def test_wide_config_names_and_bad_values():
    from experiments.sentiment.config import ModelConfig

    assert MODEL_SPECS["wide_rnnbi_mean"] == ("rnn", 1, True, "mean", False, "label", True)
    assert MODEL_SPECS["wide_only"].wide and MODEL_SPECS["wide_only"].cell == "none"
    assert MODEL_SPECS["wide_rnnbi_mean_lm"] == ("rnn", 1, True, "mean", True, "label", True)
    assert "wide_gru_mean_lm" not in MODEL_SPECS and "wide_rnnbi2_mean" not in MODEL_SPECS
    assert "wide_rnn_mean_score" not in MODEL_SPECS and not MODEL_SPECS["rnn_mean"].wide
    with pytest.raises(ValueError, match="`wide_weight` must be one of .*got 'tfidf'"):
        ModelConfig(wide_weight="tfidf")
    with pytest.raises(ValueError, match="`wide_norm` must be one of"):
        ModelConfig(wide_norm="sum")
    with pytest.raises(ValueError, match="`wide_scale` must be a positive number, got 0"):
        ModelConfig(wide_scale=0)
    with pytest.raises(ValueError, match="`ngram_dropout` must be in"):
        ModelConfig(ngram_dropout=1.0)
    with pytest.raises(ValueError, match="`bigram_buckets` must be"):
        ModelConfig(bigram_buckets=0)


def test_wide_models_train_evaluate_and_predict_quick(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    corpus = _write_corpus(tmp_path / "corpus", n=120)
    workdir = tmp_path / "run"
    args = ["--workdir", str(workdir), "--quick", f"--config.corpus_dir={corpus}",
            "--config.models=wide_rnn_mean,wide_only", "--config.cross_domains=",
            "--config.baselines=false", "--config.batch_size=16",
            "--config.warmup_steps=5", "--config.progress=false", "--config.hidden_size=8",
            "--config.num_epochs=5"]  # fmt: skip
    assert EXPERIMENT.main(["train", *args]) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["models"]) == {"wide_rnn_mean", "wide_only"}
    assert (
        results["models"]["wide_only"]["params"]
        == 2 * 2**18 + 2 * results["data"]["vocab_size"] + 2
    )
    for r in results["models"].values():
        assert r["steps"] > 0 and 0.0 <= r["test"] <= 1.0
    # the synthetic classes are separable from their words: the linear term alone learns them
    wide_only = json.loads((workdir / "wide_only" / "train.json").read_text())
    assert wide_only["val"]["accuracy"] >= 0.9 and results["models"]["wide_only"]["test"] >= 0.75
    capsys.readouterr()
    assert EXPERIMENT.main(["predict", "--workdir", str(workdir), "brilliant , it ."]) == 0
    assert capsys.readouterr().out.rstrip("\n").endswith(" brilliant , it .")
    texts = ["brilliant , it .", "awful , it .", "a gem , the film .", "a mess , the film ."]
    proba = [float(line.split()[1]) for line in predict_texts(workdir, texts, model="wide_only")]
    assert proba[0] > proba[1] and proba[2] > proba[3]  # (30 steps: still near 0.5)


def test_ngram_idf_counts_snippets_and_weights_the_wide_term():
    import jax
    import jax.numpy as jnp

    from experiments.sentiment.models import ngram_idf, wide_logits

    V, buckets = 6, 5
    docs = [np.array([0, 1, 0, 2]), np.array([0, 3]), np.array([4]), np.array([0, 1])]
    uni, bi = ngram_idf(docs, V, buckets)
    n = len(docs)
    raw_uni = np.array([np.log((1 + n) / (1 + sum(w in d for d in docs))) + 1 for w in range(V)])
    grams = [{(a * V + b) % buckets for a, b in zip(d[:-1], d[1:], strict=True)} for d in docs]
    raw_bi = np.array(
        [np.log((1 + n) / (1 + sum(h in g for g in grams))) + 1 for h in range(buckets)]
    )
    occurrences = [raw_uni[w] for d in docs for w in d] + [
        raw_bi[(a * V + b) % buckets] for d in docs for a, b in zip(d[:-1], d[1:], strict=True)
    ]
    mean = np.mean(occurrences)
    np.testing.assert_allclose(uni, raw_uni / mean, rtol=1e-6)
    np.testing.assert_allclose(bi, raw_bi / mean, rtol=1e-6)
    assert uni[4] > uni[1] > uni[0]  # rarer in the snippets: heavier
    with pytest.raises(ValueError, match=r"`ids` must be token ids in \[0, 6\), got 0..6"):
        ngram_idf([np.array([0, 6])], V, buckets)
    with pytest.raises(ValueError, match="`ids` must hold at least one snippet"):
        ngram_idf([], V, buckets)

    # the weighted term: each occurrence times its n-gram's idf; no gradient reaches the idf
    rng = np.random.default_rng(1)
    wide = {
        "W_uni": rng.normal(size=(2, V)).astype(np.float32),
        "W_bi": rng.normal(size=(2, buckets)).astype(np.float32),
        "b": np.zeros(2, np.float32),
    }
    ids = np.array([[0, 1, 0, 2], [4, 0, 0, 0]])
    lengths = np.array([4, 1])
    weighted = {
        **{k: jnp.asarray(v) for k, v in wide.items()},
        "idf_uni": jnp.asarray(uni),
        "idf_bi": jnp.asarray(bi),
    }
    got = np.asarray(wide_logits(weighted, jnp.asarray(ids), jnp.asarray(lengths), norm="sqrt"))
    want = np.zeros((2, 2))
    for i, (row, m) in enumerate(zip(ids.tolist(), lengths.tolist(), strict=True)):
        want[i] = sum(wide["W_uni"][:, row[t]] * uni[row[t]] for t in range(m))
        for t in range(1, m):
            h = (row[t - 1] * V + row[t]) % buckets
            want[i] += wide["W_bi"][:, h] * bi[h]
        want[i] /= np.sqrt(m)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    def loss(params):
        return jnp.sum(wide_logits(params, jnp.asarray(ids), jnp.asarray(lengths)) ** 2)

    grads = jax.grad(loss)(weighted)
    assert not np.asarray(grads["idf_uni"]).any() and not np.asarray(grads["idf_bi"]).any()
    assert np.asarray(grads["W_uni"]).any()


def test_wide_pretrained_idf_model_trains_and_keeps_its_idf(tmp_path, capsys):
    from experiments.sentiment.models import with_idf
    from experiments.sentiment.task import PIECES, _trained, load_data

    (tmp_path / "corpus").mkdir()
    corpus = _write_corpus(tmp_path / "corpus", n=80)
    workdir = tmp_path / "run"
    args = ["--workdir", str(workdir), f"--config.corpus_dir={corpus}",
            "--config.models=wide_rnnbi_mean_lm", "--config.wide_weight=idf",
            "--config.lm_epochs=1", "--config.lm_targets=20", "--config.cross_domains=",
            "--config.baselines=false", "--config.batch_size=16", "--config.warmup_steps=5",
            "--config.progress=false", "--config.hidden_size=8", "--config.num_epochs=2",
            "--config.bigram_buckets=1024"]  # fmt: skip
    assert EXPERIMENT.main(["train", *args]) == 0
    assert (workdir / "language_models.npz").is_file()  # the forward and backward LMs
    results = json.loads((workdir / "results.json").read_text())
    assert 0.0 <= results["models"]["wide_rnnbi_mean_lm"]["test"] <= 1.0
    config = PIECES.read_config(workdir)
    data = load_data(config)
    run, params = _trained(config, data.vocab, workdir, "wide_rnnbi_mean_lm")
    want = with_idf(run.params0, [x[: config.train.max_len] for x in data.train.ids])["wide"]
    for key in ("idf_uni", "idf_bi"):  # stored with the checkpoint, unchanged by training
        np.testing.assert_allclose(np.asarray(params["wide"][key]), np.asarray(want[key]))
    assert float(np.asarray(params["wide"]["idf_uni"]).std()) > 0.1
    with pytest.raises(ValueError, match="`params` must be those of a wide_ model"):
        with_idf({"wide": {"W_uni": 0, "W_bi": 0, "b": 0}}, data.train.ids)
