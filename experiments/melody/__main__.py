"""``python -m experiments.melody {fetch,train,eval,sample} ...``.

- ``fetch [--data-dir ROOT] [--workdir DIR]``: parse the music21 corpus (Bach chorale soprano
  lines, a documented subset of the Essen folk songs) into event sequences, cached with their
  sha256 under ``ROOT/melody`` (default ``$RNN_JAX_DATA`` or ``~/.cache/rnn_jax``; ``--workdir``
  is accepted and ignored);
- ``train --workdir DIR [--seed N] [--quick] [--config.k=v ...]``: train the RNN, GRU and LSTM
  event language models (each resumes from its latest checkpoint), run the unigram, bigram
  and trigram baselines, evaluate NLL per event on the held-out tunes, the sanity table of
  samples under several prompts, write ``DIR/results.{json,md}`` and ``DIR/samples.png``;
- ``eval --workdir DIR``: the same evaluation from the checkpoints in ``DIR``;
- ``sample --workdir DIR [--num N] [--temperature T] [--top-k K] [--prime "C4:1 E4:1 G4:2"]
  [--prompt style=folk,mode=major] [--model lstm] [--out OUT]``: write ``N`` samples as
  ``OUT/sample_XX.mid`` and ``.png``, print their paths and their events;
- ``summary --workdir OUT DIR ...``: mean ± sd over the ``results.json`` of several runs.
"""

import sys

from experiments.cli import module_main

#: ``sample``'s own flags and the report fields they set.
SAMPLE_FLAGS = {
    "--num": "num_samples",
    "--temperature": "temperature",
    "--top-k": "top_k",
    "--prime": "prime",
    "--prompt": "prompt",
    "--model": "sample_model",
    "--out": "out",
}


def translate_sample_flags(argv: list[str]) -> list[str]:
    """``--num 4`` / ``--num=4`` (and the other sample flags) as ``--config.num_samples=4``.

    Example:
        >>> translate_sample_flags(["sample", "--num", "2", "--prompt=style=folk"])
        ['sample', '--config.num_samples=2', '--config.prompt=style=folk']
    """
    out, items = [], iter(argv)
    for item in items:
        flag, eq, value = item.partition("=")
        if flag in SAMPLE_FLAGS:
            if not eq:
                value = next(items, None)
                if value is None:
                    raise SystemExit(
                        f"python -m experiments.melody sample: error: {flag} needs a value"
                    )
            out.append(f"--config.{SAMPLE_FLAGS[flag]}={value}")
        else:
            out.append(item)
    return out


def fetch(data_dir: str | None) -> str:
    """Extracts and caches the tunes (:func:`experiments.melody.data.fetch`); their sizes."""
    from experiments.melody import data

    path = data.fetch(data_dir)
    tunes = data.read_cache(path)
    styles = {s: sum(t["style"] == s for t in tunes) for s in ("chorale", "folk")}
    return (
        f"{path}: {len(tunes)} tunes ({styles['chorale']} chorales, {styles['folk']} folk songs), "
        f"{sum(len(t['events']) for t in tunes)} events (sha256 checked)"
    )


def rewrite(argv: list[str]) -> list[str]:
    """``sample``'s own flags as config overrides (:func:`translate_sample_flags`)."""
    return translate_sample_flags(argv) if argv[:1] == ["sample"] else argv


if __name__ == "__main__":
    errors = (RuntimeError, OSError, ValueError)
    sys.exit(
        module_main(
            "melody", __doc__, fetch=fetch, fetch_errors=errors, workdir_flag=True, rewrite=rewrite
        )
    )
