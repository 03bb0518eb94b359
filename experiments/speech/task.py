"""The speech recogniser: audio in, transcript out, trained with CTC (``T_y != T_x``, unaligned).

Every clip (see :mod:`experiments.speech.corpus`) becomes log-mel features
(:func:`experiments.speech.audio.log_mel`), normalised per utterance (each channel's mean
and standard deviation over the clip's frames), with ``model.stack`` frames stacked into one
input step. One bidirectional recogniser per cell (``rnn``, ``gru``, ``lstm``:
``init_rnn(cell=..., bidirectional=True)``) emits, at every step, a distribution over the
characters of :data:`ALPHABET` and the CTC blank (id 0), trained with
:func:`rnn_jax.ctc.rnn_ctc_loss`. Training clips are augmented afresh every epoch (gain,
reverberation, noise: :func:`experiments.speech.audio.augment`, seeded by the run's seed, the
epoch and the clip). Decoding is best path (:func:`rnn_jax.ctc.ctc_greedy_decode`) or CTC
prefix beam search (:func:`rnn_jax.ctc.ctc_prefix_beam_search`).

Metrics on the held-out voices: character error rate (CER: character edit distance over
the reference's characters, spaces included) and word error rate (WER: word edit distance
over the reference's words), pooled over the clips, overall and per clip kind (digit strings,
number words: the manifest's ``kind``), with the clip error rate (the share of clips whose
transcript is not exactly right); a digit confusion table and per-word errors of the other
words (from the word alignment); PocketSphinx on the same clips
(:mod:`experiments.speech.baselines`).

Run directory layout (see :mod:`experiments.common`)::

    DIR/run_config.json, DIR/results.{json,md}, DIR/alignment.png
    DIR/<cell>/config.json, checkpoints/, metrics.jsonl, curves.png, train.json
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.cli import Experiment, Invocation
from experiments.speech import audio as sound
from experiments.speech.config import SpeechConfig, default_config
from experiments.speech.corpus import DIGITS, KINDS, SAMPLE_RATE, VOCABULARY, load_corpus
from rnn_jax.ctc import ctc_greedy_decode, ctc_prefix_beam_search, rnn_ctc_loss
from rnn_jax.network import rnn_apply
from rnn_jax.params import count_params, init_rnn

__all__ = [
    "ALPHABET",
    "Data",
    "confusion",
    "decode_ids",
    "edit_distance",
    "encode_text",
    "error_rates",
    "error_rates_by_kind",
    "eval_command",
    "featurize",
    "format_summary",
    "load_data",
    "predict_command",
    "summarize",
    "summary_command",
    "train_command",
    "transcribe",
]

EXPERIMENT_NAME = "speech"
BEST = common.Best("wer", "min")  # validation WER (greedy)
#: Output characters: the letters of the corpus's words (:data:`VOCABULARY`) and the space (a
#: transcript holds nothing else); id ``i + 1`` is ``ALPHABET[i]``, id 0 the CTC blank.
ALPHABET = "".join(sorted(set(" ".join(VOCABULARY))))
BLANK = 0
_PREFETCH = 2  # training batches prepared ahead
_STEP_MULTIPLE = 16  # batch widths are rounded up to this many steps (few compiles)


def encode_text(text: str) -> np.ndarray:
    """Label ids of ``text`` (lower-cased; blank is 0).

    Example:
        >>> ALPHABET
        ' adefghilnorstuvwxyz'
        >>> encode_text("one two").tolist()
        [11, 10, 4, 1, 14, 17, 11]
    """
    text = " ".join(text.lower().split())
    bad = sorted({c for c in text if c not in ALPHABET})
    if bad:
        raise ValueError(f"`text` may hold only {ALPHABET!r}, got {bad} in {text!r}")
    return np.array([ALPHABET.index(c) + 1 for c in text], np.int32)


def decode_ids(ids: Sequence[int]) -> str:
    """The text of label ids (blank and padding ``-1`` skipped), spaces normalised."""
    return " ".join("".join(ALPHABET[i - 1] for i in ids if 0 < i <= len(ALPHABET)).split())


# --------------------------------------------------------------------------- metrics


def _alignment(ref: Sequence[Any], hyp: Sequence[Any]) -> np.ndarray:
    d = np.zeros((len(ref) + 1, len(hyp) + 1), np.int64)
    d[:, 0] = np.arange(len(ref) + 1)
    d[0, :] = np.arange(len(hyp) + 1)
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1,
                          d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))  # fmt: skip
    return d


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions cost 1).

    Example:
        >>> edit_distance("kitten", "sitting")
        3
    """
    return int(_alignment(ref, hyp)[-1, -1])


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Pooled ``{"cer", "wer"}`` of transcripts against references (fractions, not %)."""
    if len(refs) != len(hyps):
        raise ValueError(f"`hyps` must have one transcript per reference ({len(refs)}), "
                         f"got {len(hyps)}")  # fmt: skip
    chars = sum(edit_distance(r, h) for r, h in zip(refs, hyps, strict=True))
    words = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))
    return {
        "cer": chars / max(1, sum(len(r) for r in refs)),
        "wer": words / max(1, sum(len(r.split()) for r in refs)),
    }


def error_rates_by_kind(refs: Sequence[str], hyps: Sequence[str],
                        kinds: Sequence[str]) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{kind: {"cer", "wer", "clip_error", "clips", "words"}}`` for each clip kind present
    (``clip_error``: the share of clips whose transcript is not exactly the reference)."""
    if not len(refs) == len(hyps) == len(kinds):
        raise ValueError(f"`hyps` and `kinds` must have one entry per reference ({len(refs)}), "
                         f"got {len(hyps)} and {len(kinds)}")  # fmt: skip
    out = {}
    for kind in sorted(set(kinds)):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        r, h = [refs[i] for i in idx], [hyps[i] for i in idx]
        out[kind] = {**error_rates(r, h), "clips": len(idx),
                     "words": sum(len(x.split()) for x in r),
                     "clip_error": sum(a.split() != b.split() for a, b in zip(r, h, strict=True))
                     / len(idx)}  # fmt: skip
    return out


def confusion(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, dict[str, int]]:
    """``counts[ref_word][hyp_word]`` from a minimal word alignment of every clip.

    A deleted reference word counts as ``"<del>"``, an inserted word under ``"<ins>"``.
    """
    counts: dict[str, dict[str, int]] = {}

    def add(r: str, h: str) -> None:
        row = counts.setdefault(r, {})
        row[h] = row.get(h, 0) + 1

    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = ref.split(), hyp.split()
        d = _alignment(r, h)
        i, j = len(r), len(h)
        while i or j:
            if i and j and d[i, j] == d[i - 1, j - 1] + (r[i - 1] != h[j - 1]):
                add(r[i - 1], h[j - 1])
                i, j = i - 1, j - 1
            elif i and d[i, j] == d[i - 1, j] + 1:
                add(r[i - 1], "<del>")
                i -= 1
            else:
                add("<ins>", h[j - 1])
                j -= 1
    return counts


# --------------------------------------------------------------------------- data


def featurize(wave: np.ndarray, config: SpeechConfig) -> np.ndarray:
    """``(steps, n_mels * stack)`` float32 inputs of a float waveform at 16 kHz."""
    m = config.model
    f = sound.log_mel(wave, SAMPLE_RATE, n_mels=m.n_mels)
    f = (f - f.mean(axis=0)) / (f.std(axis=0) + 1e-5)
    return sound.stack_frames(f, m.stack).astype(np.float32)


@dataclasses.dataclass
class Data:
    """The clips (manifest records) and int16 audio of each split."""

    clips: dict[str, list[dict[str, Any]]]
    audio: dict[str, list[np.ndarray]]

    @property
    def vocabs(self) -> tuple[()]:
        return ()  # the alphabet is fixed (ALPHABET)

    @property
    def num_train(self) -> int:
        return len(self.clips["train"])

    def describe(self) -> str:
        c = self.clips
        voices = {s: len({x["voice"] for x in c[s]}) for s in c}
        return (
            f"{len(c['train'])} train / {len(c['val'])} val / {len(c['test'])} test clips; "
            f"{voices['train']} / {voices['val']} / {voices['test']} voices"
        )

    def texts(self, split: str) -> list[str]:
        return [c["text"] for c in self.clips[split]]

    def kinds(self, split: str) -> list[str]:
        """Each clip's kind (``digits`` for a version-1 manifest, which has no ``kind``)."""
        return [c.get("kind", "digits") for c in self.clips[split]]


def load_data(config: SpeechConfig, vocabs: tuple | None = None) -> Data:
    """The corpus split by voice (the manifest's ``split``), training clips capped."""
    c = config.train
    clips, audio = load_corpus(config.report.data_dir, manifest_path=c.corpus_file)
    data = Data(
        {s: [] for s in ("train", "val", "test")}, {s: [] for s in ("train", "val", "test")}
    )
    for clip, wav in zip(clips, audio, strict=True):
        data.clips[clip["split"]].append(clip)
        data.audio[clip["split"]].append(wav)
    if c.max_train is not None:
        data.clips["train"] = data.clips["train"][: c.max_train]
        data.audio["train"] = data.audio["train"][: c.max_train]
    for split in ("train", "val", "test"):
        if not data.clips[split]:
            raise ValueError(f"the corpus has no {split} clips")
    return data


def clean_features(data: Data, split: str, config: SpeechConfig) -> list[np.ndarray]:
    return [featurize(w.astype(np.float32) / 32768.0, config) for w in data.audio[split]]


def pad_inputs(feats: Sequence[np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(xs (rows, T, D), lengths (rows,))``, ``T`` rounded up to :data:`_STEP_MULTIPLE`."""
    D = feats[0].shape[1]
    T = -(-max(len(f) for f in feats) // _STEP_MULTIPLE) * _STEP_MULTIPLE
    xs = np.zeros((rows, T, D), np.float32)
    lengths = np.zeros(rows, np.int32)
    for i, f in enumerate(feats):
        xs[i, : len(f)] = f
        lengths[i] = len(f)
    return xs, lengths


def pad_labels(texts: Sequence[str], rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((rows, width), np.int32)
    lengths = np.zeros(rows, np.int32)
    for i, text in enumerate(texts):
        ids = encode_text(text)[:width]
        labels[i, : len(ids)] = ids
        lengths[i] = len(ids)
    return labels, lengths


# --------------------------------------------------------------------------- model


def init_model(name: str, config: SpeechConfig, key: jax.Array):
    m = config.model
    return init_rnn(key, m.n_mels * m.stack, m.hidden_size, len(ALPHABET) + 1, cell=name,
                    num_layers=m.num_layers, bidirectional=True)  # fmt: skip


@jax.jit
def _logits(params, xs, lengths):
    return rnn_apply(params, xs, lengths)


def transcribe(params, feats: Sequence[np.ndarray], config: SpeechConfig, *,
               method: str = "greedy", return_logits: bool = False):  # fmt: skip
    """Transcripts of the input features by ``"greedy"`` or ``"beam"`` decoding.

    With ``return_logits``, also each clip's ``(steps, C)`` log-probabilities.
    """
    if method not in ("greedy", "beam"):
        raise ValueError(f"`method` must be 'greedy' or 'beam', got {method!r}")
    out, logps = [], []
    B = common.row_bucket(len(feats), cap=config.report.eval_batch_size)
    for i in range(0, len(feats), B):
        chunk = list(feats[i : i + B])
        xs, lengths = pad_inputs(chunk, B)
        logits = _logits(params, jnp.asarray(xs), jnp.asarray(lengths))
        if method == "greedy":
            ids, n = (np.asarray(a) for a in ctc_greedy_decode(logits, jnp.asarray(lengths)))
            out.extend(decode_ids(ids[r, : n[r]]) for r in range(len(chunk)))
            if not return_logits:
                continue
        log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
        for r in range(len(chunk)):
            lp = log_probs[r, : lengths[r]]
            if method == "beam":
                best = ctc_prefix_beam_search(lp, beam_width=config.report.beam_width)
                out.append(decode_ids(best[0][0]))
            if return_logits:
                logps.append(lp)
    return (out, logps) if return_logits else out


# --------------------------------------------------------------------------- training


def augmented_features(data: Data, index: int, epoch: int, config: SpeechConfig) -> np.ndarray:
    """Training clip ``index`` augmented for ``epoch`` (seeded by seed, epoch and clip)."""
    c = config.train
    rng = np.random.default_rng([c.seed, epoch, index])
    wave = sound.augment(data.audio["train"][index].astype(np.float32) / 32768.0, SAMPLE_RATE, rng,
                     noise_prob=c.noise_prob, snr_db=c.snr_db, reverb_prob=c.reverb_prob,
                     rt60=c.rt60, gain_db=c.gain_db)  # fmt: skip
    return featurize(wave, config)


def train_model(name: str, config: SpeechConfig, data: Data, workdir: Path) -> dict[str, Any]:
    """Trains one cell's recogniser in ``workdir/<name>`` (resuming from its latest checkpoint)."""
    c, m, keys = config.train, config.model, common.make_keys(config.train.seed, name)
    texts = data.texts("train")
    label_width = max(len(encode_text(t)) for t in texts)
    val_feats, val_texts = clean_features(data, "val", config), data.texts("val")

    def loss_fn(params, batch, *, key):
        xs, lengths, labels, label_lengths = batch
        return rnn_ctc_loss(params, xs, lengths, labels, label_lengths, blank_id=BLANK,
                            dropout=m.dropout, key=key)  # fmt: skip

    def make_batch(idx: np.ndarray, epoch: int):
        xs, lengths = pad_inputs([augmented_features(data, int(i), epoch, config) for i in idx],
                                 c.batch_size)  # fmt: skip
        labels, label_lengths = pad_labels([texts[i] for i in idx], c.batch_size, label_width)
        return xs, lengths, labels, label_lengths

    def epoch_batches(epoch: int, start: int):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(keys.data, epoch), len(texts)))
        chunks = [order[b * c.batch_size : (b + 1) * c.batch_size]
                  for b in range(start, len(texts) // c.batch_size)]  # fmt: skip
        # the next batches are augmented on a host thread while the current one trains
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = [pool.submit(make_batch, idx, epoch) for idx in chunks[:_PREFETCH]]
            for b in range(len(chunks)):
                batch = pending.pop(0).result()
                if b + _PREFETCH < len(chunks):
                    pending.append(pool.submit(make_batch, chunks[b + _PREFETCH], epoch))
                yield tuple(map(jnp.asarray, batch))

    def evaluate_fn(params):
        return error_rates(val_texts, transcribe(params, val_feats, config))

    (workdir / name).mkdir(parents=True, exist_ok=True)
    params = init_model(name, config, keys.init)
    checkpointer = common.run_checkpointer(config, workdir, BEST, model=name, cell=name)
    return common.train_logged(
        config, loss_fn, epoch_batches, params=params, keys=keys, num_train=len(texts),
        workdir=workdir / name, checkpointer=checkpointer, best=BEST,
        name=f"speech {name}", evaluate_fn=evaluate_fn,
    )  # fmt: skip


def best_params(name: str, config: SpeechConfig, workdir: Path):
    return common.restore_best(
        config,
        lambda key: init_model(name, config, key),
        BEST,
        experiment=EXPERIMENT_NAME,
        workdir=workdir,
        model=name,
        cell=name,
    )


# --------------------------------------------------------------------------- evaluation


def plot_alignment(wave: np.ndarray, log_probs: np.ndarray, text: str, hyp: str,
                   config: SpeechConfig, path: Path) -> None:  # fmt: skip
    """The clip's log-mel spectrogram above the CTC argmax path (a label per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = sound.log_mel(wave, SAMPLE_RATE, n_mels=config.model.n_mels)
    best = log_probs.argmax(axis=-1)
    k = config.model.stack
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})  # fmt: skip
    top.imshow(spec.T, origin="lower", aspect="auto", cmap="magma",
               extent=(0, len(spec) * 0.01, 0, config.model.n_mels))  # fmt: skip
    top.set_ylabel("mel channel")
    top.set_title(f"reference: {text!r}   greedy: {hyp!r}")
    probs = np.exp(log_probs)
    steps = np.arange(len(best)) * k * 0.01
    bottom.plot(steps + k * 0.005, probs[:, BLANK], color="0.7", label="p(blank)")
    bottom.plot(steps + k * 0.005, probs.max(axis=-1), color="C0", lw=0.8, label="p(argmax)")
    for t, c in enumerate(best):
        if c != BLANK and (t == 0 or best[t - 1] != c):
            bottom.text(steps[t] + k * 0.005, 1.03, ALPHABET[c - 1].strip() or "_",
                        ha="center", fontsize=9, color="C3")  # fmt: skip
            bottom.axvline(steps[t] + k * 0.005, color="C3", lw=0.4, alpha=0.5)
    bottom.set_ylim(0, 1.15)
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("CTC output")
    bottom.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _real_speech(params, config: SpeechConfig) -> list[dict[str, Any]]:
    from experiments.speech.baselines import PocketSphinx, available
    from experiments.speech.real import load_real_clips

    rows = []
    for clip in load_real_clips(config.report.data_dir):
        hyp = transcribe(params, [featurize(clip["wave"], config)], config)[0]
        row = {"file": clip["name"], "reference": clip["text"], "rnn": hyp}
        if config.report.baseline and available():
            row["pocketsphinx_grammar"] = PocketSphinx("grammar").transcribe(
                [sound.to_int16(clip["wave"])])[0][0]  # fmt: skip
        rows.append(row)
    return rows


def _baseline(results: dict[str, Any], data: Data, config: SpeechConfig, best: dict) -> None:
    from experiments.speech.baselines import PocketSphinx, available

    if not (config.report.baseline and available()):
        results["pocketsphinx"] = "not run (report.baseline=false or pocketsphinx not installed)"
        return
    refs, clips = data.texts("test"), data.audio["test"]
    n = min(len(clips), config.report.baseline_clips or len(clips))
    grammar, secs = PocketSphinx("grammar").transcribe(clips)
    free, free_secs = PocketSphinx("unrestricted").transcribe(clips[:n])
    results["pocketsphinx"] = {
        "grammar": {**error_rates(refs, grammar), "clips": len(clips), "seconds": secs,
                    "by_kind": error_rates_by_kind(refs, grammar, data.kinds("test"))},
        "unrestricted": {**error_rates(refs[:n], free), "clips": n, "seconds": free_secs,
                         "by_kind": error_rates_by_kind(refs[:n], free, data.kinds("test")[:n])},
        "rnn_on_unrestricted_clips": {
            "model": best["name"], **error_rates(refs[:n], best["greedy"][:n]),
            "by_kind": error_rates_by_kind(refs[:n], best["greedy"][:n], data.kinds("test")[:n])},
        "grammar_confusion": confusion(refs, grammar),
        "examples": [{"reference": r, "grammar": g, "unrestricted": f}
                     for r, g, f in zip(refs, grammar, free, strict=False)][:8],
    }  # fmt: skip


def evaluate(config: SpeechConfig, data: Data, workdir: Path) -> dict[str, Any]:
    """Every trained cell on the test voices (greedy and beam), PocketSphinx, real speech."""
    test_feats, refs = clean_features(data, "test", config), data.texts("test")
    kinds = data.kinds("test")
    results: dict[str, Any] = {
        "num_train": data.num_train,
        "num_val": len(data.clips["val"]),
        "num_test": len(refs),
        "test_voices": sorted({c["voice"] for c in data.clips["test"]}),
        "model": dataclasses.asdict(config.model),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "models": {},
    }
    best = None
    for name in config.models:
        if not (workdir / name / "checkpoints").exists():
            continue
        params = best_params(name, config, workdir)
        row: dict[str, Any] = {"num_params": count_params(params)}
        train_json = workdir / name / "train.json"
        if train_json.is_file():
            row["train"] = json.loads(train_json.read_text(encoding="utf-8"))
        hyps = {}
        for method in ("greedy", "beam"):
            t0 = time.perf_counter()
            hyps[method] = transcribe(params, test_feats, config, method=method)
            row[method] = {**error_rates(refs, hyps[method]), "seconds": time.perf_counter() - t0}
        by_variant: dict[str, list[int]] = {}
        for i, clip in enumerate(data.clips["test"]):
            by_variant.setdefault(clip["variant"], []).append(i)
        row["wer_by_variant"] = {
            v: error_rates([refs[i] for i in idx], [hyps["greedy"][i] for i in idx])["wer"]
            for v, idx in sorted(by_variant.items())
        }
        row["by_kind"] = {m: error_rates_by_kind(refs, hyps[m], kinds) for m in hyps}
        row["confusion"] = confusion(refs, hyps["greedy"])
        row["errors"] = [
            {"id": clip["id"], "voice": clip["voice"], "kind": kinds[i], "reference": refs[i],
             "greedy": hyps["greedy"][i], "beam": hyps["beam"][i]}
            for i, clip in enumerate(data.clips["test"])
            if refs[i].split() != hyps["greedy"][i].split()
            or refs[i].split() != hyps["beam"][i].split()
        ]  # fmt: skip
        row["examples"] = [{"reference": r, "greedy": g, "beam": b} for r, g, b in zip(
            refs, hyps["greedy"], hyps["beam"], strict=True)][: config.report.num_examples]  # fmt: skip
        if config.report.real_speech:
            row["real_speech"] = _real_speech(params, config)
        results["models"][name] = row
        if best is None or row["greedy"]["wer"] < best["wer"]:
            best = {"name": name, "wer": row["greedy"]["wer"], "greedy": hyps["greedy"],
                    "params": params}  # fmt: skip
    if best is None:
        raise FileNotFoundError(
            f"no trained model in {workdir}: train first with "
            f"`python -m experiments.speech train --workdir {workdir}`"
        )
    results["best"] = best["name"]
    _baseline(results, data, config, best)
    i = int(np.argmax([len(r.split()) for r in refs[:50]]))
    (hyp,), (lp,) = transcribe(best["params"], [test_feats[i]], config, return_logits=True)
    plot_alignment(data.audio["test"][i].astype(np.float32) / 32768.0, lp, refs[i], hyp, config,
                   Path(workdir) / "alignment.png")  # fmt: skip
    results["figure"] = "alignment.png"
    return results


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def format_confusion(counts: dict[str, dict[str, int]]) -> list[str]:
    """The digit words' confusion table (other hypothesised words under *other*)."""
    cols = [*DIGITS, "<del>"]
    lines = ["| ref \\ hyp | " + " | ".join(cols) + " | other |", "|---" * (len(cols) + 2) + "|"]
    for d in DIGITS:
        row = counts.get(d, {})
        other = sum(v for k, v in row.items() if k not in cols)
        lines.append(f"| {d} | " + " | ".join(str(row.get(c, 0)) for c in cols) + f" | {other} |")
    ins = counts.get("<ins>", {})
    lines.append("| <ins> | " + " | ".join(str(ins.get(c, 0)) for c in cols) + " | "
                 + str(sum(v for k, v in ins.items() if k not in cols)) + " |")  # fmt: skip
    return lines


def format_word_errors(counts: dict[str, dict[str, int]]) -> list[str]:
    """One row per non-digit word of :data:`VOCABULARY`: how often it was right, deleted or
    replaced, and its most frequent replacement."""
    lines = ["| word | in reference | right | deleted | replaced | most frequent replacement |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for word in VOCABULARY[len(DIGITS) :]:
        row = counts.get(word, {})
        wrong = {k: v for k, v in row.items() if k not in (word, "<del>")}
        top = max(wrong.items(), key=lambda kv: (kv[1], kv[0]), default=None)
        lines.append(f"| {word} | {sum(row.values())} | {row.get(word, 0)} | "
                     f"{row.get('<del>', 0)} | {sum(wrong.values())} | "
                     f"{f'{top[0]} ({top[1]})' if top else '-'} |")  # fmt: skip
    return lines


def format_by_kind(name: str, by_kind: dict[str, dict[str, float]]) -> list[str]:
    return [f"| {name} | {k} | {v['clips']} | {v['words']} | {_pct(v['cer'])} | {_pct(v['wer'])} "
            f"| {_pct(v['clip_error'])} |" for k, v in by_kind.items()]  # fmt: skip


_MAX_ERRORS = 40  # wrong clips listed in results.md (results.json has them all)


def format_results(results: dict[str, Any]) -> str:
    m = results["model"]
    lines = [
        f"held-out voices ({len(results['test_voices'])}): {results['num_test']} test clips "
        f"(train {results['num_train']}, val {results['num_val']}); features {m['n_mels']} "
        f"log-mels x {m['stack']} frames; bidirectional, H={m['hidden_size']}, "
        f"{m['num_layers']} layer(s)",
        "",
        "| system | test CER % | test WER % | val WER % (best) | parameters | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["models"].items():
        tr = row.get("train", {})
        val = tr.get("val", {}).get("wer")
        for method in ("greedy", "beam"):
            r = row[method]
            lines.append(
                f"| {name} ({method}) | {_pct(r['cer'])} | {_pct(r['wer'])} | "
                f"{_pct(val) if val is not None else '-'} | {row['num_params']:,} | "
                f"{tr.get('train_seconds', 0):.0f} |"
            )
    ps = results["pocketsphinx"]
    if isinstance(ps, dict):
        g, f, r = ps["grammar"], ps["unrestricted"], ps["rnn_on_unrestricted_clips"]
        lines += [
            f"| PocketSphinx, grammar ({g['clips']} clips) | {_pct(g['cer'])} | "
            f"{_pct(g['wer'])} | - | - | - |",
            f"| PocketSphinx, unrestricted LM (first {f['clips']} clips) | {_pct(f['cer'])} | "
            f"{_pct(f['wer'])} | - | - | - |",
            f"| {r['model']} (greedy) on those {f['clips']} clips | {_pct(r['cer'])} | "
            f"{_pct(r['wer'])} | - | - | - |",
        ]
    else:
        lines.append(f"\nPocketSphinx: {ps}")
    lines += ["", "per clip kind:", "",
              "| system | kind | clips | words | CER % | WER % | clip error % |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in results["models"].items():
        for method in ("greedy", "beam"):
            if "by_kind" in row:
                lines += format_by_kind(f"{name} ({method})", row["by_kind"][method])
    if isinstance(ps, dict) and "by_kind" in ps["grammar"]:
        lines += format_by_kind("PocketSphinx, grammar", ps["grammar"]["by_kind"])
        lines += format_by_kind(f"PocketSphinx, unrestricted (first {ps['unrestricted']['clips']})",
                                ps["unrestricted"]["by_kind"])  # fmt: skip
        lines += format_by_kind(f"{ps['rnn_on_unrestricted_clips']['model']} (greedy) on those",
                                ps["rnn_on_unrestricted_clips"]["by_kind"])  # fmt: skip
    best = results["models"][results["best"]]
    lines += ["", f"WER % by held-out variant ({results['best']}, greedy): "
              + ", ".join(f"{v or 'default'} {_pct(w)}" for v, w in best["wer_by_variant"].items()),
              "", f"digit confusion ({results['best']}, greedy, test clips):", "",
              *format_confusion(best["confusion"]), "",
              f"the other words ({results['best']}, greedy, test clips):", "",
              *format_word_errors(best["confusion"])]  # fmt: skip
    if isinstance(ps, dict):
        lines += ["", "digit confusion (PocketSphinx, grammar):", "",
                  *format_confusion(ps["grammar_confusion"]), "",
                  "the other words (PocketSphinx, grammar):", "",
                  *format_word_errors(ps["grammar_confusion"])]  # fmt: skip
    lines += ["", "| reference | greedy | beam |", "|---|---|---|"]
    lines += [f"| {e['reference']} | {e['greedy']} | {e['beam']} |" for e in best["examples"]]
    errors = best.get("errors", [])
    lines += ["", f"wrong test clips ({results['best']}, greedy or beam; {len(errors)}, at most "
              f"{_MAX_ERRORS} shown):", "", "| clip | voice | kind | reference | greedy | beam |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {e['id']} | {e['voice']} | {e['kind']} | {e['reference']} | {e['greedy']} | "
              f"{e['beam']} |" for e in errors[:_MAX_ERRORS]]  # fmt: skip
    if best.get("real_speech"):
        lines += ["", "recorded speech (not synthetic):", "",
                  f"| file | reference | {results['best']} (greedy) | PocketSphinx, grammar |",
                  "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['file']} | {r['reference']} | {r['rnn']} | "
                  f"{r.get('pocketsphinx_grammar', '-')} |" for r in best["real_speech"]]  # fmt: skip
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def train(config: SpeechConfig, data: Data, workdir: Path) -> None:
    """Trains every cell of ``config.models`` (each resumes from its checkpoints)."""
    common.train_each(
        config.models, lambda name: (workdir / name, train_model(name, config, data, workdir))
    )


PIECES = common.Pieces(
    EXPERIMENT_NAME,
    SpeechConfig,
    load_data,
    train,
    lambda *args: evaluate(*args),  # late-bound: tests replace it
    format_results,
    vocab_files=(),
)
#: ``train``: trains every cell of ``models`` (each resumes from its checkpoints), evaluates.
train_command = PIECES.train_command
#: ``eval``: evaluates the best checkpoints of ``workdir`` with its stored configuration.
eval_command = PIECES.eval_command


def _predict_model(config: SpeechConfig, workdir: Path) -> str:
    if config.report.model_name != "best":
        return config.report.model_name
    path = workdir / "results.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8")).get("best", config.models[0])
    return config.models[0]


def predict_command(run: Invocation) -> int:
    """Prints ``<file>\\t<transcript>`` for each WAV file (any rate; stereo is mixed to mono)."""
    if not run.inputs:
        raise ValueError(
            "`predict` needs one or more WAV files: predict --workdir DIR FILE.wav ..."
        )
    config = PIECES.stored_config(run)
    waves = [sound.read_wav(path, SAMPLE_RATE) for path in run.inputs]  # all read before any output
    params = best_params(_predict_model(config, Path(run.workdir)), config, Path(run.workdir))
    hyps = transcribe(params, [featurize(w, config) for w in waves], config,
                      method=config.report.decode)  # fmt: skip
    for path, hyp in zip(run.inputs, hyps, strict=True):
        print(f"{path}\t{hyp}")
    return 0


# --------------------------------------------------------------------------- summary


def _flat(row: dict[str, Any], methods: Sequence[str]) -> dict[str, float]:
    """``{"<method>_<metric>", "<method>_<kind>_<metric>", ...}`` of one system's results."""
    out = {}
    for method in methods:
        r = row[method] if method in row else row
        out.update({f"{method}_{k}": r[k] for k in ("cer", "wer")})
        kinds = row.get("by_kind", {}).get(method, {}) if method in row else r.get("by_kind", {})
        for kind, v in kinds.items():
            out.update({f"{method}_{kind}_{k}": v[k] for k in ("cer", "wer", "clip_error")})
    val = row.get("train", {}).get("val", {}).get("wer")
    if val is not None:
        out["val_wer"] = val
    if "train_seconds" in row.get("train", {}):
        out["train_seconds"] = row["train"]["train_seconds"]
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd over runs (seeds) of every cell's and PocketSphinx's test scores,
    overall and per clip kind (PocketSphinx does not depend on the seed: the runs with it).

    Example:
        >>> r = lambda w: {"models": {"gru": {"greedy": {"cer": w, "wer": w},
        ...     "beam": {"cer": w, "wer": w}}}, "pocketsphinx": "not run"}
        >>> s = summarize([r(0.1), r(0.3)])
        >>> [round(x, 3) for x in s["models"]["gru"]["greedy_wer"]], s["models"]["gru"]["runs"]
        ([0.2, 0.141], 2)
    """
    flat = []
    for r in runs:
        baselines = {}
        ps = r.get("pocketsphinx")
        if isinstance(ps, dict):
            baselines["PocketSphinx, grammar"] = _flat(ps["grammar"], ["all"])
            n = ps["unrestricted"]["clips"]
            baselines[f"PocketSphinx, unrestricted LM (first {n})"] = _flat(
                ps["unrestricted"], ["all"]
            )
        flat.append({"models": {name: _flat(row, ("greedy", "beam"))
                                for name, row in r["models"].items()},
                     "baselines": baselines})  # fmt: skip

    def entry(rows: list[dict[str, float]]) -> dict[str, Any]:
        keys = dict.fromkeys(k for row in rows for k in row)
        return {k: common.mean_sd([row[k] for row in rows if k in row]) for k in keys}

    return common.summarize_runs(flat, entry)


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown: one row per cell and decoder, and per PocketSphinx search (mean ± sd, %)."""

    def cell(e: dict[str, Any], key: str) -> str:
        return f"{100 * e[key][0]:.2f} ± {100 * e[key][1]:.2f}" if key in e else "-"

    cols = ["system", "runs", "CER %", "WER %"]
    cols += [f"{kind} {m}" for kind in KINDS for m in ("CER %", "WER %", "clip error %")]
    lines = [*common.table_head([*cols, "val WER %", "train s"])]
    rows = [(f"{name} ({m})", e, m) for name, e in summary["models"].items()
            for m in ("greedy", "beam")]  # fmt: skip
    rows += [(name, e, "all") for name, e in summary["baselines"].items()]
    for label, e, m in rows:
        kinds = [cell(e, f"{m}_{kind}_{k}") for kind in KINDS for k in ("cer", "wer", "clip_error")]
        seconds = e.get("train_seconds")
        lines.append(
            f"| {label} | {e['runs']} | {cell(e, f'{m}_cer')} | {cell(e, f'{m}_wer')} | "
            + " | ".join(kinds)
            + f" | {cell(e, 'val_wer') if m != 'all' else '-'} | "
            + (f"{seconds[0]:.0f} ± {seconds[1]:.0f} |" if seconds else "- |")
        )
    return "\n".join(lines)


def summary_command(run: Invocation) -> int:
    """``summary --workdir OUT RUN_DIR ...``: mean ± sd over the runs' ``results.json``."""
    return common.summary_command(run, summarize, format_summary)


EXPERIMENT = Experiment(
    EXPERIMENT_NAME,
    default_config,
    {
        "train": train_command,
        "eval": eval_command,
        "predict": predict_command,
        "summary": summary_command,
    },  # fmt: skip
    data_parallel=True,
)
