"""Smoke tests of the translation experiment on fixture verses (no apt, no network): markup,
tokenisation, the book split, the IBM Model 1 baseline, and a tiny run through the CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from experiments.cli import main
from experiments.translate.baselines import IBMModel1, copy_source
from experiments.translate.config import TrainConfig, TranslateConfig, default_config
from experiments.translate.data import clean_markup, tokenize
from experiments.translate.task import (
    eval_command,
    load_data,
    predict_command,
    replace_unknowns,
    score,
    train_command,
)

COMMANDS = {"train": train_command, "eval": eval_command, "predict": predict_command}
LEXICON = {
    "the": "el", "man": "hombre", "saw": "vio", "a": "un", "dog": "perro", "king": "rey",
    "loved": "amó", "son": "hijo", "god": "dios", "gave": "dio", "bread": "pan", "house": "casa",
}  # fmt: skip
EN = list(LEXICON)


def fixture_records(n=400, seed=0):
    """Word-for-word 'verses' over a small lexicon, in a training book, a validation book
    and a held-out test book, with OSIS-like markup in the English text."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        words = [rng.choice(EN) for _ in range(rng.randint(2, 6))]
        en = " ".join(f'<w lemma="x">{w}</w>' for w in words) + "."
        es = " ".join(LEXICON[w] for w in words) + "."
        book = "Gen" if i < 0.8 * n else "Col" if i < 0.9 * n else "Mark"
        records.append([book, 1 + i // 30, 1 + i % 30, clean_markup(en), es])
    return records


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    (root / "translate").mkdir(parents=True)
    (root / "translate" / "pairs.json").write_text(json.dumps(fixture_records()))
    monkeypatch.setenv("RNN_JAX_DATA", str(root))
    return root


def test_markup_is_stripped_and_text_tokenised():
    osis = (
        '<w lemma="strong:H0430">God</w><note placement="foot"><reference>1:1 </reference>'
        'A note.</note><w lemma="x">created</w> <w>the</w> <w>earth</w>. <div eID="g" type="x-p"/>'
    )
    assert clean_markup(osis) == "God created the earth."
    assert clean_markup("a &amp; b ,c") == "a & b,c"
    assert tokenize("EN el principio crió Dios, ¿sí?") == [
        "en", "el", "principio", "crió", "dios", ",", "¿", "sí", "?",
    ]  # fmt: skip


def test_split_holds_out_whole_books():
    config = TranslateConfig(train=TrainConfig(val_books=("Col",), test_books=("Mark",)))
    data = load_data(config, records=fixture_records())
    books = {name: {b for b, _, _ in refs} for name, refs in data.refs.items()}
    assert books == {"train": {"Gen"}, "val": {"Col"}, "test": {"Mark"}}
    assert data.num_train == 320
    with pytest.raises(ValueError, match="must not overlap"):
        TrainConfig(val_books=("Mark",), test_books=("Mark",))


def test_ibm_model_1_learns_the_lexicon():
    pairs = [(tokenize(en), tokenize(es)) for _, _, _, en, es in fixture_records(300)]
    ibm = IBMModel1().fit(pairs, iterations=10)
    assert ibm.best == {**LEXICON, ".": "."}
    assert ibm.prob("perro", "dog") > 0.9 and ibm.prob("perro", "king") < 0.05
    assert ibm.translate([["the", "dog", "zebra"]]) == [["el", "perro", "zebra"]]
    one = IBMModel1().fit(pairs, iterations=1)  # uniform start: one iteration is co-occurrence
    assert one.prob("perro", "dog") < ibm.prob("perro", "dog")
    with pytest.raises(ValueError, match="`iterations` must be a positive int"):
        IBMModel1().fit(pairs, iterations=0)


def test_scores_and_copy_baseline():
    refs = [["el", "perro", "vio", "un", "rey", "."], ["un", "rey", "amó", "el", "pan", "."]]
    assert score(refs, refs) == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    copy = score(copy_source([["the", "dog", "saw", "a", "king", "."]] * 2), refs)
    assert 0 <= copy["bleu"] < 50 and 0 < copy["chrf"] < 50


def test_tiny_run_train_eval_predict(data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    tiny = [
        "--config.val_books=Col", "--config.test_books=Mark", "--config.hidden_size=16",
        "--config.num_epochs=3", "--config.batch_size=32", "--config.max_train=0",
        "--config.num_test=0", "--config.progress=false", "--config.pad_to_multiple=16",
        "--config.eval_batch_size=8", "--config.max_len=12", "--config.learning_rate=1e-2",
        "--config.warmup_steps=10", "--config.cell=rnn", "--config.num_heatmaps=2",
    ]  # fmt: skip
    argv = ["train", "--workdir", str(workdir), "--quick", *tiny]
    assert main(argv, prog="translate", commands=COMMANDS, default_config=default_config) == 0
    out = capsys.readouterr().out
    assert "| IBM Model 1 word by word |" in out and "beam (k=3)" in out
    results = json.loads((workdir / "results.json").read_text())
    assert results["num_test"] == 40
    for system in ("greedy", "beam", "copy", "ibm1"):
        for metric in ("bleu", "chrf"):
            assert 0.0 <= results[system][metric] <= 100.0 + 1e-9
    assert results["ibm1"]["bleu"] > 90  # the fixture is word for word
    for system in ("greedy+unk", "beam+unk"):  # an attention model: <UNK> replaced as well
        assert 0.0 <= results[system]["chrf"] <= 100.0 + 1e-9
        assert 0 <= results[system]["unk_replaced"] <= results[system]["output_tokens"]
    assert (workdir / "attention.png").stat().st_size > 0
    assert main(["eval", "--workdir", str(workdir)], prog="translate", commands=COMMANDS,
                default_config=default_config) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["predict", "--workdir", str(workdir), "the dog saw a king", "zebra"],
                prog="translate", commands=COMMANDS, default_config=default_config) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("the dog saw a king\t")
    assert "<UNK>: zebra" in lines[1]
    assert np.isfinite(results["train"]["val"]["loss"])


@pytest.mark.parametrize("multiple", [0, 8])
def test_bucket_multiple_sets_the_batch_shapes(monkeypatch, tmp_path, multiple):
    """0: every training batch has the longest verse's widths; k: each batch is padded to its
    own longest source and target, rounded up to a multiple of k (lengths unchanged)."""
    from experiments import common
    from experiments.translate import task

    config = default_config(quick=True)
    config = TranslateConfig(
        config.model,
        TrainConfig(val_books=("Col",), test_books=("Mark",), max_train=0, batch_size=16,
                    bucket_multiple=multiple),
        config.report,
    )  # fmt: skip
    records = fixture_records(n=300)
    # a few long verses, so that the longest training verse is far above the typical one
    records += [["Gen", 99, i, " ".join(["the dog"] * 12) + ".", " ".join(["el perro"] * 12)]
                for i in range(1, 4)]  # fmt: skip
    data = load_data(config, records=records)
    seen = []

    def fake_train_logged(config, loss_fn, epoch_batches, **kwargs):
        for src, src_lengths, tgt, tgt_lengths in epoch_batches(0, 0):
            seen.append(
                (src.shape[1], tgt.shape[1], int(src_lengths.max()), int(tgt_lengths.max()))
            )
        return {}

    monkeypatch.setattr(common, "train_logged", fake_train_logged)
    task.train(config, data, tmp_path)
    src_ids, tgt_ids = task._encode_pairs(data, data.splits["train"])
    longest_src, longest_tgt = max(map(len, src_ids)), max(map(len, tgt_ids))
    assert len(seen) == len(src_ids) // 16
    for src_w, tgt_w, src_max, tgt_max in seen:
        assert src_w >= src_max and tgt_w >= tgt_max
        if multiple:
            assert src_w % multiple == 0 and tgt_w % multiple == 0
            assert src_w - src_max < multiple and tgt_w - tgt_max < multiple
        else:
            assert src_w >= longest_src and tgt_w >= longest_tgt
    widths = {(s, t) for s, t, _, _ in seen}
    assert (len(widths) > 1) == bool(multiple)


def test_bucket_multiple_must_not_be_negative():
    with pytest.raises(ValueError, match="bucket_multiple"):
        TrainConfig(bucket_multiple=-8)


def test_replace_unknowns_follows_the_attention_argmax():
    sources = [["jonah", "saw", "nineveh"], ["the", "dog"]]
    outputs = [["<UNK>", "vio", "<UNK>"], ["el", "<UNK>"]]
    weights = [
        np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]]),
        np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]]),
    ]
    lexicon = {"nineveh": "nínive", "dog": "perro"}
    got = replace_unknowns(outputs, sources, weights, lexicon, unk="<UNK>")
    # jonah is not in the lexicon: copied; nineveh and dog are translated
    assert got == [["jonah", "vio", "nínive"], ["el", "perro"]]
    assert outputs[0][0] == "<UNK>"  # the inputs are not changed
    # the argmax decides, not the position: the same output with other weights
    flipped = [weights[0][:, ::-1], weights[1][:, ::-1]]
    got = replace_unknowns(outputs, sources, flipped, lexicon, unk="<UNK>")
    assert got == [["nínive", "vio", "jonah"], ["el", "the"]]


def test_replace_unknowns_rejects_bad_shapes():
    with pytest.raises(ValueError, match="`weights\\[0\\]` must have shape"):
        replace_unknowns([["<UNK>"]], [["a", "b"]], [np.ones((1, 3))], {}, unk="<UNK>")
    with pytest.raises(ValueError, match="one entry per verse"):
        replace_unknowns([["<UNK>"]], [["a"]], [], {}, unk="<UNK>")
