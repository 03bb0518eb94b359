"""Tests for rnn_jax.vocab: tokenizers, Vocabulary, one_hot, JSON persistence."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_jax import _io as rnn_io
from rnn_jax.vocab import DEFAULT_SPECIALS, Vocabulary, char_tokenize, one_hot, tokenize

SENTENCE = "Sherlock Holmes and John Watson lived at 221B Baker Street in London."


# --------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            SENTENCE,
            ["Sherlock", "Holmes", "and", "John", "Watson", "lived", "at", "221B", "Baker"]
            + ["Street", "in", "London", "."],
        ),
        ("Holmes's pipe", ["Holmes", "'s", "pipe"]),
        ("Holmes\u2019s pipe", ["Holmes", "\u2019s", "pipe"]),
        ("I don't know, they'll see.", ["I", "do", "n't", "know", ",", "they", "'ll", "see", "."]),
        ("O'Brien's well-known case", ["O'Brien", "'s", "well-known", "case"]),
        ("Pi is 3.14, not 1,000!", ["Pi", "is", "3.14", ",", "not", "1,000", "!"]),
        ("Zürich, 東京 и Москва…", ["Zürich", ",", "東京", "и", "Москва", "…"]),
        ("  \n\t ", []),
        ("«Hi»—(x)", ["«", "Hi", "»", "—", "(", "x", ")"]),
    ],
)
def test_tokenize_examples(text, expected):
    assert tokenize(text) == expected


def test_tokenize_lower_and_nfc():
    decomposed = "Cafe\u0301 ZÜRICH"  # e + combining acute accent
    assert tokenize(decomposed, lower=True) == ["café", "zürich"]
    assert tokenize(decomposed) == ["Café", "ZÜRICH"]


def test_char_tokenize():
    assert char_tokenize("Ab e\u0301!") == ["A", "b", " ", "é", "!"]
    assert char_tokenize("AB", lower=True) == ["a", "b"]


def test_tokenizers_reject_non_str():
    with pytest.raises(ValueError, match=r"`text` must be a str, got list"):
        tokenize(["a"])
    with pytest.raises(ValueError, match=r"`text` must be a str, got bytes"):
        char_tokenize(b"a")


@given(st.text(max_size=60))
@settings(max_examples=100, deadline=None)
def test_tokenize_loses_only_whitespace(text):
    """The tokens give the (NFC) text without whitespace and invisible format characters."""
    import unicodedata

    visible = "".join(
        ch
        for ch in text
        if unicodedata.category(ch) != "Cf"
        and not 0xFE00 <= ord(ch) <= 0xFE0F
        and not 0xE0100 <= ord(ch) <= 0xE01EF
    )
    norm = unicodedata.normalize("NFC", visible)
    assert "".join(tokenize(text)) == "".join(ch for ch in norm if not ch.isspace())


# --------------------------------------------------------------------------- build


def test_specials_have_fixed_ids():
    v = Vocabulary.build(["a b"])
    assert (v.pad_id, v.unk_id, v.bos_id, v.eos_id) == (0, 1, 2, 3)
    assert v.tokens[:4] == DEFAULT_SPECIALS == v.specials
    assert [v.token_to_id(s) for s in DEFAULT_SPECIALS] == [0, 1, 2, 3]


def test_build_ties_broken_by_first_occurrence():
    corpus = [["zeta", "alpha", "mid", "alpha"], ["mid", "beta", "zeta", "gamma"]]
    v = Vocabulary.build(corpus)
    # counts: zeta 2, alpha 2, mid 2, beta 1, gamma 1 -> ties keep corpus order
    assert v.tokens[4:] == ("zeta", "alpha", "mid", "beta", "gamma")
    assert v.counts == (2, 2, 2, 1, 1)
    # reordering the corpus reorders the ties, nothing else
    v2 = Vocabulary.build([corpus[1], corpus[0]])
    assert v2.tokens[4:] == ("mid", "zeta", "alpha", "beta", "gamma")


def test_build_is_deterministic_across_hash_seeds(tmp_path):
    """The same corpus gives the same vocabulary in fresh interpreters with other hash seeds."""
    import subprocess
    import sys

    script = (
        "from rnn_jax.vocab import Vocabulary;"
        "print(Vocabulary.build(['c b a d e f g h b a c h g'], max_size=5).tokens)"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed, "JAX_PLATFORMS": "cpu"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert "('<PAD>', '<UNK>', '<BOS>', '<EOS>', 'c', 'b', 'a', 'g', 'h')" in outs.pop()


def test_max_size_counts_regular_words_only():
    corpus = ["a a a b b c d"]
    v = Vocabulary.build(corpus, max_size=2)
    assert len(v) == 2 + len(DEFAULT_SPECIALS)
    assert v.tokens[4:] == ("a", "b")
    assert len(Vocabulary.build(corpus, max_size=None)) == 4 + 4
    assert len(Vocabulary.build(corpus, max_size=100)) == 4 + 4


def test_min_count_and_specials_in_corpus():
    v = Vocabulary.build([["a", "a", "b", "<UNK>", "<UNK>", "<PAD>"]], min_count=2)
    assert v.tokens == (*DEFAULT_SPECIALS, "a")
    assert v.counts == (2,)


def test_extra_specials_are_reserved():
    v = Vocabulary.build(["a"], specials=(*DEFAULT_SPECIALS, "<MASK>"))
    assert v.token_to_id("<MASK>") == 4 and v.token_to_id("a") == 5
    assert v.decode([4, 5, 1]) == ["a", "<UNK>"]


def test_lower_vocabulary_normalises_lookups():
    v = Vocabulary.build(["The cat. THE CAT"], lower=True)
    assert v.tokens[4:] == ("the", "cat", ".")
    assert "The" in v and "CAT" in v
    assert v.token_to_id("Cat") == v.token_to_id("cat")


def test_char_level_vocabulary():
    v = Vocabulary.build(["abca", "b"], level="char")
    assert v.tokens[4:] == ("a", "b", "c")
    assert v.decode(v.encode("cab z")) == ["c", "a", "b", "<UNK>", "<UNK>"]


def test_unk_mapping_221b():
    corpus = ["Holmes and Watson lived in London.", "Sherlock John at Baker Street"]
    v = Vocabulary.build(corpus)
    assert "221B" not in v
    ids = v.encode(SENTENCE)
    assert ids.dtype == np.int32 and ids.shape == (13,)
    assert ids[7] == v.unk_id
    assert (ids[np.arange(13) != 7] >= 4).all()
    assert v.decode(ids)[7] == "<UNK>"
    assert v.token_to_id("221B") == v.unk_id


# --------------------------------------------------------------------------- encode / decode


WORDS = st.lists(
    st.sampled_from(["Holmes", "Watson", "221B", "Baker", ".", "'s", "é"]), max_size=20
)


@given(WORDS, st.booleans(), st.booleans())
@settings(max_examples=50, deadline=None)
def test_encode_decode_round_trip(tokens, add_bos, add_eos):
    v = Vocabulary.build([["Holmes", "Watson", "221B", "Baker", ".", "'s", "é"]])
    ids = v.encode(tokens, add_bos=add_bos, add_eos=add_eos)
    assert ids.shape == (len(tokens) + add_bos + add_eos,)
    assert v.decode(ids) == tokens
    raw = v.decode(ids, strip_special=False)
    assert raw == ["<BOS>"] * add_bos + tokens + ["<EOS>"] * add_eos


def test_encode_text_matches_tokenize():
    v = Vocabulary.build([SENTENCE])
    assert v.decode(v.encode(SENTENCE)) == tokenize(SENTENCE)
    assert v.encode([]).shape == (0,) and v.encode([]).dtype == np.int32


def test_decode_keeps_unk_strips_pad_bos_eos():
    v = Vocabulary.build(["a"])
    assert v.decode([2, 4, 1, 3, 0, 0]) == ["a", "<UNK>"]
    assert v.decode([2, 4, 1, 3, 0], strip_special=False) == [
        "<BOS>",
        "a",
        "<UNK>",
        "<EOS>",
        "<PAD>",
    ]


def test_batch_helpers_round_trip():
    v = Vocabulary.build(["the cat sat on the mat"])
    texts = ["the cat", "the cat sat on the mat", "mat"]
    ids, lengths = v.encode_batch(texts, add_eos=True, pad_to_multiple=4)
    assert ids.shape == (3, 8) and ids.dtype == np.int32
    np.testing.assert_array_equal(lengths, [3, 7, 2])
    assert (ids[0, 3:] == v.pad_id).all()
    assert v.decode_batch(ids, lengths) == [t.split() for t in texts]
    assert v.decode_batch(ids) == [t.split() for t in texts]


def test_decode_errors():
    v = Vocabulary.build(["a"])
    with pytest.raises(ValueError, match=r"`ids` must lie in \[0, 5\), got values in \[0, 5\]"):
        v.decode([0, 5])
    with pytest.raises(ValueError, match=r"`ids` must be 1-D \(T,\), got shape \(1, 2\)"):
        v.decode([[0, 1]])
    with pytest.raises(ValueError, match=r"`ids` must have an integer dtype, got float64"):
        v.decode([0.0])
    with pytest.raises(ValueError, match=r"`id` must be in \[0, 5\), got 7"):
        v.id_to_token(7)
    with pytest.raises(ValueError, match=r"`lengths` must have shape \(B,\) = \(1,\), got \(2,\)"):
        v.decode_batch(np.zeros((1, 2), np.int32), [1, 1])
    assert v.id_to_token(4) == "a"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("max_size", [0, -3, 2.5, True, "10"])
def test_build_rejects_bad_max_size(max_size):
    with pytest.raises(ValueError, match=r"`max_size` must be a positive int, got"):
        Vocabulary.build(["a"], max_size=max_size)


def test_build_validation_messages():
    with pytest.raises(ValueError, match=r"`min_count` must be a positive int, got 0"):
        Vocabulary.build(["a"], min_count=0)
    with pytest.raises(ValueError, match=r"`corpus` must be an iterable .* got a single str"):
        Vocabulary.build("Holmes and Watson")
    with pytest.raises(ValueError, match=r"`corpus\[1\]` must contain only str tokens"):
        Vocabulary.build([["a"], ["b", 3]])
    with pytest.raises(
        ValueError, match=r"`corpus\[0\]` must be a str or a sequence of str, got int"
    ):
        Vocabulary.build([3])
    with pytest.raises(ValueError, match=r"`specials` must name at least the 4 roles"):
        Vocabulary.build(["a"], specials=("<PAD>", "<UNK>"))
    with pytest.raises(ValueError, match=r"`level` must be 'word' or 'char', got 'byte'"):
        Vocabulary.build(["a"], level="byte")
    with pytest.raises(ValueError, match=r"`tokens` must be distinct, got 'a' more than once"):
        Vocabulary(tokens=(*DEFAULT_SPECIALS, "a", "a"), counts=(1, 1))
    with pytest.raises(
        ValueError, match=r"`counts` must have one entry per regular word \(1\), got 0"
    ):
        Vocabulary(tokens=(*DEFAULT_SPECIALS, "a"), counts=())


def test_vocabulary_is_frozen():
    v = Vocabulary.build(["a"])
    with pytest.raises(AttributeError):
        v.tokens = ()


# --------------------------------------------------------------------------- one_hot


def test_one_hot_times_W_ax_is_column_lookup():
    H, V, T = 5, 11, 7
    W_ax = jax.random.normal(jax.random.key(0), (H, V))
    ids = jnp.array([3, 0, 10, 3, 7, 1, 2], dtype=jnp.int32)
    X = one_hot(ids, V)
    assert X.shape == (T, V) and X.dtype == jnp.float32
    # reference: float64 loop over the formulation x<t> = e_{id_t}
    W64 = np.asarray(W_ax, dtype=np.float64)
    for t in range(T):
        x_t = np.zeros(V)
        x_t[int(ids[t])] = 1.0
        np.testing.assert_array_equal(np.asarray(X[t]), x_t)
        np.testing.assert_allclose(W64 @ x_t, W64[:, int(ids[t])])
    np.testing.assert_array_equal(np.asarray(W_ax @ X.T), np.asarray(W_ax[:, ids]))


def test_one_hot_validation():
    with pytest.raises(ValueError, match=r"`ids` must have an integer dtype, got float32"):
        one_hot(jnp.array([1.0, 2.0]), 4)
    with pytest.raises(
        ValueError, match=r"`ids` must lie in \[0, V\) = \[0, 4\), got values in \[0, 4\]"
    ):
        one_hot(np.array([0, 4]), 4)
    with pytest.raises(
        ValueError, match=r"`ids` must lie in \[0, V\) = \[0, 4\), got values in \[-1, 2\]"
    ):
        one_hot([2, -1], 4)
    with pytest.raises(ValueError, match=r"`V` must be a positive int, got 0"):
        one_hot([0], 0)


def test_one_hot_under_jit():
    f = jax.jit(lambda ids: one_hot(ids, 3))
    np.testing.assert_array_equal(np.asarray(f(jnp.array([2, 0]))), [[0, 0, 1], [1, 0, 0]])


# --------------------------------------------------------------------------- persistence


def test_json_round_trip(tmp_path):
    v = Vocabulary.build(["Zürich 東京 Holmes's 221B", "zürich"], lower=True, max_size=3)
    path = tmp_path / "vocab.json"
    v.save(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == "rnn_jax.Vocabulary" and doc["version"] == 1
    assert "東京" in path.read_text(encoding="utf-8")  # stored readable, not escaped
    w = Vocabulary.load(path)
    assert w == v
    assert w.encode(SENTENCE).tolist() == v.encode(SENTENCE).tolist()
    char = Vocabulary.build(["abc"], level="char")
    char.save(tmp_path / "c.json")
    assert Vocabulary.load(str(tmp_path / "c.json")) == char


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "vocab.json"
    old = Vocabulary.build(["old words"])
    old.save(path)
    new = Vocabulary.build(["new words entirely"])
    new.save(path)  # overwrite works
    assert Vocabulary.load(path) == new
    assert sorted(os.listdir(tmp_path)) == ["vocab.json"]  # no temp file left behind

    def exploding_fsync(fd):  # the disk fills up after part of the new file was written
        raise OSError("disk full")

    monkeypatch.setattr(rnn_io.os, "fsync", exploding_fsync)
    with pytest.raises(OSError, match="disk full"):
        old.save(path)
    assert Vocabulary.load(path) == new  # the previous file is intact
    assert sorted(os.listdir(tmp_path)) == ["vocab.json"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"format": "rnn_jax.Vocabulary", "version": 1, "tokens": [', "Expecting"),
        (b"\xff\xfe\x00garbage", "codec can't decode"),
        ('{"weights": [1, 2, 3]}', "not an rnn_jax.Vocabulary document"),
        ("[1, 2]", "not an rnn_jax.Vocabulary document"),
        (
            '{"format": "rnn_jax.Vocabulary", "version": 99}',
            "unsupported rnn_jax.Vocabulary version 99",
        ),
        (
            '{"format": "rnn_jax.Vocabulary", "version": 1, "level": "word", "lower": false,'
            ' "specials": ["<PAD>", "<UNK>", "<BOS>", "<EOS>"], "tokens": ["a", "a"], "counts": [1, 1]}',
            "`tokens` must be distinct",
        ),
        (
            '{"format": "rnn_jax.Vocabulary", "version": 1, "level": "word", "lower": false,'
            ' "specials": ["<PAD>", "<UNK>", "<BOS>", "<EOS>"], "tokens": ["a"], "counts": "1"}',
            "field 'counts' must be a list",
        ),
    ],
)
def test_load_rejects_corrupted_or_foreign_files(tmp_path, content, reason):
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json' is not a valid vocabulary file: .*") as info:
        Vocabulary.load(path)
    assert reason in str(info.value)


# --------------------------------------------------------------------------- hostile inputs
def test_none_is_named_not_iterated():
    with pytest.raises(ValueError, match=r"`corpus` must be an iterable .* got NoneType\."):
        Vocabulary.build(None)
    vocab = Vocabulary.build(["a b"])
    with pytest.raises(ValueError, match=r"`tokens_or_text` must be a str .* got NoneType\."):
        vocab.encode(None)
    with pytest.raises(ValueError, match=r"`tokens_or_text\[1\]` must be a str token, got int\."):
        vocab.encode(["a", 3])
    with pytest.raises(ValueError, match=r"`texts` must be a sequence .* got NoneType\."):
        vocab.encode_batch(None)


def test_hand_edited_upper_case_tokens_with_lower_true_are_rejected_at_load(tmp_path):
    path = tmp_path / "vocab.json"
    Vocabulary.build(["holmes and watson"], lower=True).save(path)
    doc = json.loads(path.read_text())
    doc["tokens"][1] = "Watson"
    path.write_text(json.dumps(doc))
    with pytest.raises(
        ValueError,
        match=r"`tokens\[5\]` = 'Watson' can never be looked up: .* lower-cased because "
        r"`lower` is True\) to 'watson'",
    ):
        Vocabulary.load(path)


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff", "\ufe0f", "\u00ad", "\u2060"])
def test_invisible_format_characters_never_become_tokens(invisible):
    text = f"{invisible}Holmes{invisible} and{invisible} Wat{invisible}son {invisible}"
    assert tokenize(text) == ["Holmes", "and", "Watson"]
    assert invisible not in char_tokenize(text)
    vocab = Vocabulary.build([text, [f"{invisible}", f"a{invisible}"]])
    assert vocab.tokens[4:] == ("Holmes", "and", "Watson", "a")
    assert vocab.encode(text).tolist() == vocab.encode("Holmes and Watson").tolist()
    with pytest.raises(ValueError, match=r"can never be looked up"):
        Vocabulary(tokens=(*DEFAULT_SPECIALS, f"x{invisible}"), counts=(1,))


def test_lone_surrogate_is_rejected_at_build_naming_the_token():
    with pytest.raises(
        ValueError, match=r"`tokens\[5\]` = 'b\\udc80' holds the lone surrogate U\+DC80"
    ):
        Vocabulary.build([["a", "b\udc80"]])
    with pytest.raises(ValueError, match=r"lone surrogate U\+D800"):
        Vocabulary.build(["text with \ud800 inside"])


def test_repr_is_short():
    vocab = Vocabulary.build([[f"w{i}" for i in range(10_000)]], max_size=None)
    text = repr(vocab)
    assert len(text) < 200 and str(vocab) == text
    assert text.startswith("Vocabulary(size=10004, level='word', lower=False, tokens=['<PAD>'")
    assert text.endswith("... 9996 more])")
    assert repr(Vocabulary.build(["a"])).endswith(
        "tokens=['<PAD>', '<UNK>', '<BOS>', '<EOS>', 'a'])"
    )
