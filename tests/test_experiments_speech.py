"""Smoke tests of the speech experiment: features against a direct reference, WAV reading,
the text generator (vocabulary, determinism, words <-> number), synthesis determinism, the
baseline's grammar, metrics, and a tiny train -> eval -> predict round trip."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from experiments.cli import main
from experiments.speech import audio as sound
from experiments.speech.config import default_config
from experiments.speech.corpus import (
    KINDS,
    VOCABULARY,
    CorpusSpec,
    clip_text,
    digits_to_text,
    make_clips,
    number_to_words,
    words_to_number,
    write_corpus,
)
from experiments.speech.task import (
    ALPHABET,
    confusion,
    decode_ids,
    edit_distance,
    encode_text,
    error_rates,
    error_rates_by_kind,
    eval_command,
    predict_command,
    summary_command,
    train_command,
)

COMMANDS = {"train": train_command, "eval": eval_command, "predict": predict_command,
            "summary": summary_command}  # fmt: skip


# --------------------------------------------------------------------------- features


def _reference_log_mel(x, rate, n_mels, n_fft, win, hop, fmin, fmax):
    """Log-mel by the definitions: an explicit DFT sum and filters computed point by point."""
    hann = [0.5 - 0.5 * np.cos(2 * np.pi * n / win) for n in range(win)]  # periodic Hann
    n_frames = 1 + (len(x) - win) // hop
    bins = n_fft // 2 + 1
    dft = np.array([[np.exp(-2j * np.pi * k * n / n_fft) for n in range(win)] for k in range(bins)])

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    step = (mel(fmax) - mel(fmin)) / (n_mels + 1)
    edges = [hz(mel(fmin) + i * step) for i in range(n_mels + 2)]
    filters = np.zeros((n_mels, bins))
    for j in range(n_mels):
        lo, c, hi = edges[j], edges[j + 1], edges[j + 2]
        for k in range(bins):
            f = k * rate / n_fft
            if lo < f <= c:
                filters[j, k] = (f - lo) / (c - lo)
            elif c < f < hi:
                filters[j, k] = (hi - f) / (hi - c)
    out = np.zeros((n_frames, n_mels))
    for t in range(n_frames):
        frame = np.array([x[t * hop + n] * hann[n] for n in range(win)])
        power = np.abs(dft @ frame) ** 2
        out[t] = np.log(np.maximum(filters @ power, 1e-10))
    return out


def test_log_mel_matches_the_definition_on_a_sine_plus_noise():
    rate, n = 8000, 1400
    t = np.arange(n) / rate
    rng = np.random.default_rng(0)
    x = 0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.01 * rng.standard_normal(n)
    kw = dict(n_mels=12, n_fft=256, win=200, hop=80, fmin=50.0, fmax=4000.0)
    got = sound.log_mel(x, rate, **kw)
    want = _reference_log_mel(x, rate, **kw)
    assert got.shape == want.shape == (1 + (n - 200) // 80, 12)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_a_tone_peaks_in_the_mel_channel_around_its_frequency(freq):
    rate = 16_000
    x = np.sin(2 * np.pi * freq * np.arange(rate // 2) / rate)
    energies = sound.log_mel(x, rate, n_mels=40).mean(axis=0)
    centres = sound.mel_to_hz(np.linspace(sound.hz_to_mel(20.0), sound.hz_to_mel(8000.0), 42))[1:-1]
    assert abs(centres[int(np.argmax(energies))] - freq) <= 0.12 * freq


def test_stack_frames_and_resample_lengths():
    f = np.arange(14.0).reshape(7, 2)
    s = sound.stack_frames(f, 3)
    assert s.shape == (3, 6) and s[0].tolist() == [0, 1, 2, 3, 4, 5] and s[2, 2:].sum() == 0
    x = np.sin(np.arange(22_050) * 0.01)
    assert len(sound.resample(x, 22_050, 16_000)) == 16_000
    with pytest.raises(ValueError, match="mono"):
        sound.log_mel(np.zeros((2, 400)))


def test_augment_is_seeded_and_keeps_the_length():
    x = np.sin(np.arange(8000) * 0.05).astype(np.float32)
    kw = dict(noise_prob=1.0, snr_db=(10.0, 10.0), reverb_prob=1.0, rt60=(0.2, 0.2),
              gain_db=(0.0, 0.0))  # fmt: skip
    a = sound.augment(x, 16_000, np.random.default_rng(1), **kw)
    b = sound.augment(x, 16_000, np.random.default_rng(1), **kw)
    c = sound.augment(x, 16_000, np.random.default_rng(2), **kw)
    assert a.shape == x.shape and np.array_equal(a, b) and not np.array_equal(a, c)


# --------------------------------------------------------------------------- WAV input


def _write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(sound.to_int16(samples).tobytes())
    return path


def test_read_wav_mixes_stereo_and_resamples(tmp_path):
    rate = 8000
    left = 0.5 * np.sin(2 * np.pi * 500 * np.arange(rate) / rate)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).reshape(-1)  # interleaved L, R
    got = sound.read_wav(_write_wav(tmp_path / "s.wav", stereo, rate, channels=2), 16_000)
    mono = sound.read_wav(_write_wav(tmp_path / "m.wav", left / 2, rate), 16_000)
    assert got.shape == (16_000,)
    np.testing.assert_allclose(got, mono, atol=2e-4)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValueError, match="bad.wav"):
        sound.read_wav(tmp_path / "bad.wav")
    with pytest.raises(ValueError, match="missing.wav"):
        sound.read_wav(tmp_path / "missing.wav")
    (tmp_path / "short.wav").write_bytes(b"hello\n")  # ends inside the RIFF header
    with pytest.raises(ValueError, match=r"short.wav` is not a readable .*ends before its header"):
        sound.read_wav(tmp_path / "short.wav")


# --------------------------------------------------------------------------- text generator


def test_number_words_round_trip_and_reject_other_spellings():
    assert [number_to_words(n) for n in (0, 10, 19, 20, 42, 100, 105, 999)] == [
        "zero", "ten", "nineteen", "twenty", "forty two", "one hundred", "one hundred and five",
        "nine hundred and ninety nine"]  # fmt: skip
    for n in range(1000):
        words = number_to_words(n)
        assert words_to_number(words) == n and set(words.split()) <= set(VOCABULARY)
    for bad in ("", "forty and two", "two forty", "zero hundred", "one hundred and",
                "hundred", "ten two", "twenty zero", "one hundred five", "eleventy"):  # fmt: skip
        with pytest.raises(ValueError, match="`text`"):
            words_to_number(bad)
    for bad in (1000, -1, 4.0, True):
        with pytest.raises(ValueError, match="`n` must be an integer from 0 to 999"):
            number_to_words(bad)


def test_text_generator_vocabulary_mix_and_determinism():
    spec = CorpusSpec()
    clips = make_clips(spec)
    assert clips == make_clips(CorpusSpec())  # the same seed, the same corpus
    # pinned: a change here means another corpus (bump CORPUS_VERSION)
    assert [c["text"] for c in clips[:3]] == [
        "eight", "seven zero eight nine one nine eight", "eighty five"]  # fmt: skip
    assert spec.name().startswith("corpus-v2-") and spec.name() != CorpusSpec(seed=14).name()
    assert len(clips) == spec.num_train + spec.num_val + spec.num_test
    words = {w for c in clips for w in c["text"].split()}
    assert words == set(VOCABULARY)  # every word occurs, no other
    assert set(" ".join(VOCABULARY)) == set(ALPHABET)
    for clip in clips:
        assert clip["text"] == clip_text(clip["kind"], clip["digits"])
        if clip["kind"] == "number":
            assert 10 <= int(clip["digits"]) <= 999
            assert words_to_number(clip["text"]) == int(clip["digits"])
        else:
            assert 1 <= len(clip["digits"]) <= 7
    for split in ("train", "val", "test"):
        kinds = [c["kind"] for c in clips if c["split"] == split]
        assert set(kinds) == set(KINDS) and 0.4 < kinds.count("number") / len(kinds) < 0.6
    bands = [sum(lo <= int(c["digits"]) <= hi for c in clips if c["kind"] == "number")
             for lo, hi in spec.number_bands]  # fmt: skip
    assert min(bands) > 0.28 * sum(bands)  # each band drawn with probability 1/3
    only_digits = make_clips(CorpusSpec(num_train=50, num_val=5, num_test=5, number_fraction=0))
    assert {c["kind"] for c in only_digits} == {"digits"}
    with pytest.raises(ValueError, match="`number_fraction` must be in"):
        CorpusSpec(number_fraction=1.5)
    with pytest.raises(ValueError, match="`number_bands`"):
        CorpusSpec(number_bands=((10, 1000),))
    with pytest.raises(ValueError, match="`kind`"):
        clip_text("roman", "12")


def test_the_baseline_grammar_has_the_corpus_vocabulary():
    from experiments.speech.baselines import GRAMMAR

    body = GRAMMAR.split("grammar numbers;")[1]
    words = set(body.replace("<", " <").replace(">", "> ").split()) - set("|;=[]()+")
    words = {w for w in words if not w.startswith("<") and w != "public"}
    assert words == set(VOCABULARY)
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    from experiments.speech.baselines import PocketSphinx

    decoder = PocketSphinx("grammar").decoder  # parses GRAMMAR
    assert all(decoder.lookup_word(w) for w in VOCABULARY)


# --------------------------------------------------------------------------- synthesis


def test_synthesis_is_deterministic_across_processes():
    pytest.importorskip("espeakng_loader", reason="espeakng-loader is not installed")
    from experiments.speech.corpus import render_clips

    clip = {"text": "three one four", "voice": "en-us+f2", "rate": 170, "pitch": 60, "range": 40}
    # the same clip by two fresh processes at once (one chunk each)
    audio, digests, version = render_clips([clip, clip], workers=2, chunk=1)
    assert digests[0] == digests[1] and np.array_equal(audio[0], audio[1])
    # pinned for espeakng-loader 0.2.4 (eSpeak NG 1.52.0): a change means another corpus
    assert digests[0][:16] == PINNED_DIGEST, f"eSpeak NG {version} gave {digests[0]}"
    assert 0.5 < len(audio[0]) / 16_000 < 3.0 and audio[0].dtype == np.int16


PINNED_DIGEST = "aacbb9c90615d97e"  # sha256 prefix of eSpeak NG 1.52.0's output


# --------------------------------------------------------------------------- metrics


def test_text_codes_and_error_rates():
    assert decode_ids(encode_text("Nine  zero")) == "nine zero" == digits_to_text("90")
    with pytest.raises(ValueError, match="text"):
        encode_text("nine 9")
    assert edit_distance("seven", "eleven") == 2 and edit_distance([], ["a"]) == 1
    rates = error_rates(["one two three", "four"], ["one too three", ""])
    assert rates["wer"] == pytest.approx(2 / 4)
    assert rates["cer"] == pytest.approx((1 + 4) / (13 + 4))
    by_kind = error_rates_by_kind(["one two", "forty two", "ten"], ["one two", "forty", "ten"],
                                  ["digits", "number", "number"])  # fmt: skip
    assert by_kind["digits"] == {"cer": 0.0, "wer": 0.0, "clips": 1, "words": 2, "clip_error": 0.0}
    assert by_kind["number"]["wer"] == pytest.approx(1 / 3)
    assert by_kind["number"]["clip_error"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="`hyps` and `kinds`"):
        error_rates_by_kind(["one"], ["one"], [])
    counts = confusion(["one two three", "four", "six"], ["one three", "five", "six six"])
    assert counts["one"] == {"one": 1} and counts["two"] == {"<del>": 1}
    assert counts["three"] == {"three": 1} and counts["four"] == {"five": 1}
    assert counts["six"] == {"six": 1} and counts["<ins>"] == {"six": 1}


def test_config_checks(capsys):
    args = ["train", "--workdir", "w", "--config.num_layers=1", "--config.dropout=0.2"]
    assert main(args, prog="speech", commands=COMMANDS, default_config=default_config) == 2
    assert "`dropout` acts between stacked layers" in capsys.readouterr().err
    from experiments.speech.config import TrainConfig

    with pytest.raises(ValueError, match="snr_db"):
        TrainConfig(snr_db=(30.0, 5.0))


# --------------------------------------------------------------------------- round trip


def _fixture_corpus(tmp_path: Path) -> Path:
    """A handful of clips without a synthesiser: each digit a tone of its own pitch (a number
    clip sounds like its digits, with its words as the transcript)."""
    rng = np.random.default_rng(0)
    clips, audio = [], []
    for split, count in (("train", 8), ("val", 3), ("test", 3)):
        for i in range(count):
            kind = KINDS[i % 2]
            if kind == "digits":
                digits = "".join(str(d) for d in rng.integers(0, 10, rng.integers(1, 3)))
            else:
                digits = str(rng.integers(10, 100))
            t = np.arange(2400) / 16_000
            wav = np.concatenate([np.zeros(800)] + [
                0.3 * np.sin(2 * np.pi * (300 + 150 * int(d)) * t) for d in digits])  # fmt: skip
            variant = {"train": "m1", "val": "m6", "test": "f2"}[split]
            clips.append({"id": f"{split}-{i}", "split": split, "voice": f"en+{variant}",
                          "variant": variant, "kind": kind, "digits": digits,
                          "text": clip_text(kind, digits)})  # fmt: skip
            audio.append(sound.to_int16(wav))
    manifest = tmp_path / "corpus" / "fixture.json"
    write_corpus(manifest.with_suffix(".npz"), manifest, clips, audio)
    return manifest


def test_train_eval_predict_round_trip(tmp_path, capsys):
    manifest = _fixture_corpus(tmp_path)
    workdir = tmp_path / "run"
    args = ["--workdir", str(workdir), "--quick", f"--config.corpus_file={manifest}",
            "--config.models=rnn", "--config.hidden_size=8", "--config.batch_size=4",
            "--config.num_epochs=1", "--config.warmup_steps=1", "--config.baseline_clips=1",
            "--config.real_speech=false", "--config.progress=false"]  # fmt: skip
    kw = dict(prog="speech", commands=COMMANDS, default_config=default_config)
    assert main(["train", *args], **kw) == 0
    results = json.loads((workdir / "results.json").read_text())
    row = results["models"]["rnn"]
    assert results["num_test"] == 3 and row["train"]["steps"] == 2
    for method in ("greedy", "beam"):
        assert 0.0 <= row[method]["cer"] and 0.0 <= row[method]["wer"]
    assert (workdir / "alignment.png").stat().st_size > 0
    assert set(row["confusion"]) <= {*VOCABULARY, "<ins>"}
    assert set(row["by_kind"]["greedy"]) == set(KINDS)
    assert row["by_kind"]["beam"]["number"]["clips"] == 1  # test clips: digits, number, digits
    wrong = sum(e["reference"] != e["greedy"] for e in row["errors"])
    assert wrong == round(row["by_kind"]["greedy"]["digits"]["clip_error"] * 2
                          + row["by_kind"]["greedy"]["number"]["clip_error"])  # fmt: skip
    assert all(e["reference"] != e["greedy"] or e["reference"] != e["beam"] for e in row["errors"])
    capsys.readouterr()
    assert main(["eval", "--workdir", str(workdir)], **kw) == 0
    assert "test WER" in capsys.readouterr().out
    summary = tmp_path / "summary"
    assert main(["summary", "--workdir", str(summary), str(workdir), str(workdir)], **kw) == 0
    combined = json.loads((summary / "results.json").read_text())["models"]["rnn"]
    assert combined["runs"] == 2 and combined["greedy_number_wer"][1] == 0.0  # two equal runs
    assert combined["greedy_wer"][0] == pytest.approx(row["greedy"]["wer"])
    assert "number WER %" in capsys.readouterr().out

    rate = 44_100  # stereo at another rate: mixed and resampled inside
    tone = 0.3 * np.sin(2 * np.pi * 450 * np.arange(rate // 4) / rate)
    stereo = _write_wav(tmp_path / "x.wav", np.repeat(tone, 2), rate, channels=2)
    mono = _write_wav(tmp_path / "y.wav", tone, 8000)
    assert main(["predict", "--workdir", str(workdir), str(stereo), str(mono)], **kw) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(stereo), str(mono)]
    assert all(set(line.split("\t")[1]) <= set(ALPHABET) for line in lines)

    (tmp_path / "broken.wav").write_bytes(b"\x00" * 10)
    assert main(["predict", "--workdir", str(workdir), str(tmp_path / "broken.wav")], **kw) == 1
    err = capsys.readouterr()
    assert "broken.wav" in err.err and err.out == ""
