"""English–Spanish verse pairs: the World English Bible and the Reina-Valera 1909.

``fetch`` downloads the Debian packages ``sword-text-web`` and ``sword-text-sparv`` with
``apt-get download`` into a temporary directory (no root needed), checks their sha256,
extracts them with ``dpkg-deb -x`` under ``$RNN_JAX_DATA/translate`` (default
``~/.cache/rnn_jax/translate``), reads the SWORD modules ``engWEB2015eb`` and
``spaRV1909eb`` with ``pysword``, strips the OSIS markup (Strong's ``<w>`` tags, footnotes,
paragraph marks) and caches the verse-aligned pairs as ``pairs.json``: one record
``[book, chapter, verse, english, spanish]`` per verse both modules have (never committed).
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import tempfile
from pathlib import Path

from experiments.data import default_data_dir
from experiments.data import sha256_file as _sha256
from rnn_jax._io import atomic_write

__all__ = [
    "PACKAGES",
    "TranslateFetchError",
    "clean_markup",
    "fetch_pairs",
    "load_pairs",
    "pairs_path",
    "tokenize",
]

#: Debian bookworm's packages and the sha256 of their .deb files.
PACKAGES = {
    "sword-text-web": (
        "sword-text-web_426.0-1_all.deb",
        "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
    ),
    "sword-text-sparv": (
        "sword-text-sparv_2.60-1_all.deb",
        "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf",
    ),
}
MODULES = ("engWEB2015eb", "spaRV1909eb")
PAIRS_FILE = "pairs.json"


class TranslateFetchError(RuntimeError):
    """The packages could not be downloaded, verified or read."""


def pairs_path(data_dir: str | Path | None = None) -> Path:
    return default_data_dir(data_dir) / "translate" / PAIRS_FILE


_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?»”’)\]])")


def clean_markup(text: str) -> str:
    """OSIS verse text -> plain text: footnotes dropped, tags removed, spaces normalised.

    Example:
        >>> clean_markup('<w lemma="x">God</w><note placement="foot">a note</note><w>created</w> .')
        'God created.'
    """
    text = _NOTE.sub(" ", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    text = _SPACE.sub(" ", text).strip()
    return _BEFORE_PUNCT.sub(r"\1", text)


_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks (``’`` and ``'`` normalised).

    Example:
        >>> tokenize("God’s Spirit, hovering!")
        ['god', "'", 's', 'spirit', ',', 'hovering', '!']
    """
    return _WORD.findall(text.lower().replace("’", "'").replace("‘", "'"))


def _download(tmp: Path) -> list[Path]:
    debs = []
    for package, (filename, sha256) in PACKAGES.items():
        proc = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True
        )
        path = tmp / filename
        if proc.returncode != 0 or not path.is_file():
            raise TranslateFetchError(
                f"`apt-get download {package}` did not give {filename} "
                f"(exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
            )
        got = _sha256(path)
        if got != sha256:
            raise TranslateFetchError(f"sha256 of {filename} is {got}, expected {sha256}")
        debs.append(path)
    return debs


def _read_verses(sword_dir: Path, module: str) -> dict[tuple[str, int, int], str]:
    from pysword.modules import SwordModules

    modules = SwordModules(str(sword_dir))
    modules.parse_modules()
    bible = modules.get_bible_from_module(module)
    books = bible.get_structure().get_books()
    out = {}
    for testament in ("ot", "nt"):
        for book in books.get(testament, []):
            for ch, n in enumerate(book.chapter_lengths, start=1):
                verses = range(1, n + 1)
                texts = bible.get_iter(books=[book.osis_name], chapters=[ch], verses=verses,
                                       clean=False)  # fmt: skip
                for v, text in zip(verses, texts, strict=False):
                    out[(book.osis_name, ch, v)] = clean_markup(text)
    return out


def fetch_pairs(data_dir: str | Path | None = None) -> Path:
    """Downloads, verifies, extracts and reads both Bibles; writes ``pairs.json`` once."""
    target = pairs_path(data_dir)
    if target.is_file():
        return target
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for deb in _download(Path(tmp)):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    sword = root / "usr" / "share" / "sword"
    eng, spa = (_read_verses(sword, m) for m in MODULES)
    pairs = [
        [book, ch, v, eng[key], spa[key]]
        for key in eng
        if key in spa and eng[key] and spa[key]
        for book, ch, v in [key]
    ]
    if not pairs:
        raise TranslateFetchError(f"no verse pairs read from {sword}")
    atomic_write(target, json.dumps(pairs, ensure_ascii=False).encode())
    return target


def load_pairs(data_dir: str | Path | None = None) -> list[tuple[str, int, int, str, str]]:
    """The cached pairs; a clear error naming the fetch command when they are missing."""
    path = pairs_path(data_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run `python -m experiments.translate fetch` first"
        )
    return [tuple(r) for r in json.loads(path.read_text())]
