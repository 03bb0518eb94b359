"""``python -m experiments.speech {fetch,train,eval,predict,summary} ...`` (audio in, transcript
out).

- ``fetch [--data-dir ROOT] [--workdir DIR]``: synthesise the spoken-number corpus (digit
  strings and number words, version 2) with eSpeak NG
  (``espeakng-loader``) into ``ROOT/speech`` (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``)
  with a manifest of sha256s, and cache two recorded digit clips from pocketsphinx's source
  archive (optional: a note if that fails); ``--workdir`` is accepted and ignored;
- ``train --workdir DIR [--seed N] [--quick] [--config.k=v ...]``: train one bidirectional CTC
  recogniser per cell of ``models`` (each resumes from its latest checkpoint), evaluate them on
  the held-out voices (greedy and beam), run PocketSphinx on the same clips, write
  ``DIR/results.{json,md}`` and ``DIR/alignment.png``;
- ``eval --workdir DIR``: the same evaluation from the checkpoints in ``DIR``;
- ``predict --workdir DIR FILE.wav ...``: ``<file>\\t<transcript>`` per file (any sample rate,
  stereo mixed to mono; ``--config.decode=beam`` for beam search);
- ``summary --workdir OUT RUN_DIR ...``: mean ± sd over runs (seeds), overall and per clip kind.
"""

import argparse
import sys


def fetch_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.speech fetch")
    parser.add_argument("--data-dir", default=None, help="cache root (default $RNN_JAX_DATA)")
    parser.add_argument("--workdir", default=None, help="ignored (the cache is shared)")
    args = parser.parse_args(argv)
    from experiments.speech.corpus import SpeechFetchError, fetch, load_corpus

    try:
        path = fetch(args.data_dir)
        clips, audio = load_corpus(manifest_path=path)
    except (SpeechFetchError, OSError, ValueError) as err:
        print(f"python -m experiments.speech fetch: error: {err}", file=sys.stderr)
        return 1
    seconds = sum(len(a) for a in audio) / 16_000
    print(f"{path}: {len(clips)} clips, {seconds / 60:.1f} minutes of audio (sha256 checked)")
    from experiments.speech.real import fetch_real

    try:
        print(f"{fetch_real(args.data_dir)}: recorded digit clips (sha256 checked)")
    except (RuntimeError, OSError) as err:
        print(
            f"note: the recorded clips were not fetched ({err}); results skip them", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["fetch"]:
        sys.exit(fetch_main(sys.argv[2:]))
    from experiments.speech.task import EXPERIMENT

    sys.exit(EXPERIMENT.main(sys.argv[1:], description=__doc__))
