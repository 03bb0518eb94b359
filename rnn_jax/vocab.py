"""Tokenizers and a frozen vocabulary mapping tokens to the integer ids the network reads.

In the formulation every input ``x<t>`` is a one-hot vector of length ``|V|``: the token's
position in the vocabulary. A vocabulary holds the ``max_size`` most frequent corpus words plus
the special tokens; a word outside it is read as ``<UNK>``.

>>> from rnn_jax.vocab import Vocabulary, tokenize
>>> sentence = "Sherlock Holmes and John Watson lived at 221B Baker Street in London."
>>> tokenize(sentence)
['Sherlock', 'Holmes', 'and', 'John', 'Watson', 'lived', 'at', '221B', 'Baker', 'Street', 'in', 'London', '.']
>>> vocab = Vocabulary.build(["Holmes and Watson lived in London.", "Sherlock John at Baker Street"])
>>> "221B" in vocab
False
>>> ids = vocab.encode(sentence)
>>> int(ids[7]) == vocab.unk_id
True
>>> vocab.decode(ids)
['Sherlock', 'Holmes', 'and', 'John', 'Watson', 'lived', 'at', '<UNK>', 'Baker', 'Street', 'in', 'London', '.']

Ids 0-3 are always ``<PAD>``, ``<UNK>``, ``<BOS>``, ``<EOS>``; the regular words follow in order
of decreasing corpus count.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from rnn_jax._io import write_json_atomic
from rnn_jax.batching import pad_batch

__all__ = [
    "DEFAULT_SPECIALS",
    "Vocabulary",
    "char_tokenize",
    "one_hot",
    "tokenize",
]

DEFAULT_SPECIALS: tuple[str, ...] = ("<PAD>", "<UNK>", "<BOS>", "<EOS>")
"""The special tokens, in id order: padding, unknown word, begin and end of sequence."""

_FORMAT = "rnn_jax.Vocabulary"
_FORMAT_VERSION = 1

_APOSTROPHE = "'\u2019"  # ASCII and typographic apostrophe
_CLITIC = rf"[{_APOSTROPHE}](?:s|re|ve|ll|d|m)\b"
_TOKEN_RE = re.compile(
    rf"""
      \w+?(?=n[{_APOSTROPHE}]t\b)         # "do" of "don't"
    | n[{_APOSTROPHE}]t\b                 # "n't"
    | {_CLITIC}                           # "'s", "'re", "'ve", "'ll", "'d", "'m"
    | \d+(?:[.,]\d+)+                     # 3.14, 1,000
    | \w+(?:(?:-|[{_APOSTROPHE}](?!(?:s|re|ve|ll|d|m)\b))\w+)*   # words, 221B, well-known, O'Brien
    | [^\w\s]                             # any other symbol, one per token
    """,
    re.VERBOSE | re.IGNORECASE,
)


_VARIATION_SELECTORS = (*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0))


@functools.cache
def _format_characters() -> dict[int, None]:
    """A ``str.translate`` table deleting the invisible characters that carry no text.

    Every Unicode format character (category Cf) and the variation selectors (U+FE00-FE0F,
    U+E0100-E01EF). Built once, on the first non-ASCII text.
    """
    cf = (c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf")
    return dict.fromkeys((*cf, *_VARIATION_SELECTORS))


def _normalize(text: str, lower: bool) -> str:
    """NFC, invisible characters (see ``_format_characters``) removed, lower-cased if ``lower``."""
    if not text.isascii():  # ASCII has no format characters and is already NFC
        text = unicodedata.normalize("NFC", text.translate(_format_characters()))
    return text.lower() if lower else text


def tokenize(text: str, *, lower: bool = False) -> list[str]:
    """Splits text into word tokens (Unicode aware).

    Rules, in order of precedence: English clitics are split off (``"Holmes's"`` ->
    ``"Holmes", "'s"``; ``"don't"`` -> ``"do", "n't"``); numbers with separators stay whole
    (``"3.14"``, ``"1,000"``); a run of Unicode word characters is one token (``"221B"``,
    ``"Zürich"``, ``"東京"``), also across inner hyphens and non-clitic apostrophes
    (``"well-known"``, ``"O'Brien"``); every other non-space character is its own token.
    The text is NFC-normalised first, and invisible format characters (Unicode category
    Cf: zero-width space U+200B, byte-order mark U+FEFF, soft hyphen U+00AD, zero-width
    (non-)joiners U+200C/U+200D, ...) and the variation selectors (U+FE00-FE0F, e.g. the
    emoji selector U+FE0F) are removed, so they never become tokens or split a word.

    Args:
      text: the text.
      lower: lower-case the tokens.

    Returns:
      The tokens.

    Example:
      >>> tokenize("Holmes's pipe, isn't it? It's in Zürich!")
      ['Holmes', "'s", 'pipe', ',', 'is', "n't", 'it', '?', 'It', "'s", 'in', 'Zürich', '!']
    """
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a str, got {type(text).__name__}.")
    return _TOKEN_RE.findall(_normalize(text, lower))


def char_tokenize(text: str, *, lower: bool = False) -> list[str]:
    """Splits text into characters (NFC code points, so ``"é"`` is one token), spaces included.

    Invisible format characters are removed first, as in :func:`tokenize`.

    Example:
      >>> char_tokenize("Hé!")
      ['H', 'é', '!']
    """
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a str, got {type(text).__name__}.")
    return list(_normalize(text, lower))


def one_hot(ids: Int[Array, " T"], V: int) -> Float[Array, "T V"]:
    """The formulation's input matrix: row ``t`` is the one-hot vector ``x<t>`` of ``ids[t]``.

    ``X[t, v] = 1 if v == ids[t] else 0``. It is only for exposition and tests: because
    ``W_ax @ one_hot(id) == W_ax[:, id]``, the library's fast path reads the column of ``W_ax``
    directly and never builds this ``(T, V)`` matrix.

    Args:
      ids: integer token ids, any shape (usually ``(T,)``), each in ``[0, V)``.
      V: the vocabulary size.

    Returns:
      ``float32`` array of shape ``ids.shape + (V,)``.

    Raises:
      ValueError: ``ids`` is not integer or has an id outside ``[0, V)`` (checked when ``ids``
        is concrete, i.e. not traced under ``jit``), or ``V`` is not a positive int.

    Example:
      >>> import jax.numpy as jnp
      >>> W_ax = jnp.arange(12.0).reshape(3, 4)          # H = 3, V = 4
      >>> x_t = one_hot(jnp.array([2]), 4)[0]
      >>> x_t
      Array([0., 0., 1., 0.], dtype=float32)
      >>> bool(jnp.array_equal(W_ax @ x_t, W_ax[:, 2]))
      True
    """
    if isinstance(V, bool) or not isinstance(V, int | np.integer) or V <= 0:
        raise ValueError(f"`V` must be a positive int, got {V!r}.")
    if not isinstance(ids, jax.Array):
        ids = np.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"`ids` must have an integer dtype, got {ids.dtype}.")
    if not isinstance(ids, jax.core.Tracer) and ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= V:
            raise ValueError(f"`ids` must lie in [0, V) = [0, {V}), got values in [{lo}, {hi}].")
    return jax.nn.one_hot(ids, int(V), dtype=jnp.float32)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return int(value)


_REPR_TOKENS = 8  # tokens shown by repr(vocab)


def _check_token(token: str, i: int, *, lower: bool, regular: bool) -> None:
    """``tokens[i]`` must be valid Unicode and, if a regular word, findable by a lookup."""
    try:
        token.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"`tokens[{i}]` = {token!r} holds the lone surrogate U+{ord(token[e.start]):04X}, "
            "which is not valid Unicode text (and cannot be saved as UTF-8); decode the corpus "
            "with errors='replace' or clean it."
        ) from None
    if regular and _normalize(token, lower) != token:
        rule = "NFC, invisible format characters removed"
        if lower:
            rule += ", lower-cased because `lower` is True"
        raise ValueError(
            f"`tokens[{i}]` = {token!r} can never be looked up: lookups normalise text "
            f"({rule}) to {_normalize(token, lower)!r}; fix the token or the `lower` flag."
        )


@dataclass(frozen=True, repr=False)
class Vocabulary:
    """An immutable token <-> id mapping.

    ``tokens[i]`` is the token of id ``i``. The first ``num_specials`` tokens are the specials,
    with fixed roles by position: ``<PAD>`` = 0, ``<UNK>`` = 1, ``<BOS>`` = 2, ``<EOS>`` = 3
    (any further specials are reserved, e.g. ``<MASK>``). Then come the regular words in order
    of decreasing corpus count, ``counts`` holding those counts.

    Build one with :meth:`Vocabulary.build`; save/load it as JSON.

    Attributes:
      tokens: all tokens, specials first.
      counts: corpus count of each regular word (``len(tokens) - num_specials`` entries).
      num_specials: how many leading tokens are specials (>= 4).
      lower: text and tokens are lower-cased before lookup.
      level: ``"word"`` (text goes through :func:`tokenize`) or ``"char"`` (:func:`char_tokenize`).
    """

    tokens: tuple[str, ...]
    counts: tuple[int, ...]
    num_specials: int = len(DEFAULT_SPECIALS)
    lower: bool = False
    level: Literal["word", "char"] = "word"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))
        if not all(isinstance(t, str) and t for t in self.tokens):
            raise ValueError("`tokens` must be non-empty strings.")
        if len(set(self.tokens)) != len(self.tokens):
            dup = next(t for t, c in Counter(self.tokens).items() if c > 1)
            raise ValueError(f"`tokens` must be distinct, got {dup!r} more than once.")
        if isinstance(self.num_specials, bool) or not isinstance(self.num_specials, int):
            raise ValueError(f"`num_specials` must be an int, got {self.num_specials!r}.")
        if not len(DEFAULT_SPECIALS) <= self.num_specials <= len(self.tokens):
            raise ValueError(
                f"`num_specials` must be in [{len(DEFAULT_SPECIALS)}, len(tokens)] = "
                f"[{len(DEFAULT_SPECIALS)}, {len(self.tokens)}], got {self.num_specials}."
            )
        if len(self.counts) != len(self.tokens) - self.num_specials:
            raise ValueError(
                f"`counts` must have one entry per regular word "
                f"({len(self.tokens) - self.num_specials}), got {len(self.counts)}."
            )
        if any(c < 1 for c in self.counts):
            raise ValueError("`counts` must be positive.")
        if self.level not in ("word", "char"):
            raise ValueError(f"`level` must be 'word' or 'char', got {self.level!r}.")
        if not isinstance(self.lower, bool):
            raise ValueError(f"`lower` must be a bool, got {self.lower!r}.")
        for i, t in enumerate(self.tokens):
            _check_token(t, i, lower=self.lower, regular=i >= self.num_specials)
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    def __repr__(self) -> str:
        shown = ", ".join(repr(t) for t in self.tokens[:_REPR_TOKENS])
        more = f", ... {len(self.tokens) - _REPR_TOKENS} more" if len(self) > _REPR_TOKENS else ""
        return (
            f"Vocabulary(size={len(self)}, level={self.level!r}, lower={self.lower}, "
            f"tokens=[{shown}{more}])"
        )

    # ---------------------------------------------------------------- construction

    @classmethod
    def build(
        cls,
        corpus: Iterable[str] | Iterable[Sequence[str]],
        *,
        max_size: int | None = 10_000,
        min_count: int = 1,
        lower: bool = False,
        level: Literal["word", "char"] = "word",
        specials: Sequence[str] = DEFAULT_SPECIALS,
    ) -> Vocabulary:
        """Builds the vocabulary of the ``max_size`` most frequent tokens of ``corpus``.

        ``max_size`` counts regular words only, so ``len(vocab) <= max_size + len(specials)``.
        Ties in count are broken by first occurrence in the corpus (earlier first), which makes
        the result deterministic and independent of hash seeds. Corpus tokens equal to a special
        are not counted as words.

        Args:
          corpus: texts (tokenized according to ``level``) or already tokenized sequences.
          max_size: the number of regular words kept, or ``None`` for all of them.
          min_count: words seen fewer times are left out (read as ``<UNK>``).
          lower: lower-case everything.
          level: ``"word"`` or ``"char"``: how texts are tokenized, here and in :meth:`encode`.
          specials: special tokens, with roles by position: padding, unknown, begin, end, then
            any extra reserved ones.

        Example:
          >>> v = Vocabulary.build([["b", "a", "c", "a"], ["c", "d"]], max_size=2)
          >>> v.tokens
          ('<PAD>', '<UNK>', '<BOS>', '<EOS>', 'a', 'c')
        """
        if isinstance(corpus, str | bytes):
            raise ValueError(
                "`corpus` must be an iterable of texts or token sequences, got a single "
                f"{type(corpus).__name__}; wrap it in a list."
            )
        if not isinstance(corpus, Iterable):
            raise ValueError(
                "`corpus` must be an iterable of texts or token sequences, got "
                f"{type(corpus).__name__}."
            )
        if max_size is not None:
            max_size = _positive_int(max_size, "max_size")
        min_count = _positive_int(min_count, "min_count")
        if level not in ("word", "char"):
            raise ValueError(f"`level` must be 'word' or 'char', got {level!r}.")
        specials = tuple(specials)
        if len(specials) < len(DEFAULT_SPECIALS):
            raise ValueError(
                f"`specials` must name at least the {len(DEFAULT_SPECIALS)} roles "
                f"{DEFAULT_SPECIALS}, got {specials}."
            )
        split = tokenize if level == "word" else char_tokenize
        counts: Counter[str] = Counter()  # insertion order = first occurrence
        for i, item in enumerate(corpus):
            if isinstance(item, str):
                counts.update(split(item, lower=lower))
                continue
            if isinstance(item, bytes) or not isinstance(item, Iterable):
                raise ValueError(
                    f"`corpus[{i}]` must be a str or a sequence of str, got {type(item).__name__}."
                )
            toks = list(item)
            if not all(isinstance(t, str) for t in toks):
                raise ValueError(f"`corpus[{i}]` must contain only str tokens.")
            counts.update(n for n in (_normalize(t, lower) for t in toks) if n)
        special_set = set(specials)
        ranked = sorted(
            ((t, c) for t, c in counts.items() if c >= min_count and t not in special_set),
            key=lambda tc: -tc[1],  # stable: ties keep first-occurrence order
        )
        if max_size is not None:
            ranked = ranked[:max_size]
        return cls(
            tokens=specials + tuple(t for t, _ in ranked),
            counts=tuple(c for _, c in ranked),
            num_specials=len(specials),
            lower=lower,
            level=level,
        )

    # ---------------------------------------------------------------- lookups

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int:
        return 2

    @property
    def eos_id(self) -> int:
        return 3

    @property
    def specials(self) -> tuple[str, ...]:
        return self.tokens[: self.num_specials]

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and _normalize(token, self.lower) in self._index

    def token_to_id(self, token: str) -> int:
        """The id of ``token`` (normalised like the corpus), ``unk_id`` when unknown."""
        if not isinstance(token, str):
            raise ValueError(f"`token` must be a str, got {type(token).__name__}.")
        return self._index.get(_normalize(token, self.lower), self.unk_id)

    def id_to_token(self, id: int) -> str:
        """The token of ``id``; ``ValueError`` when ``id`` is not in ``[0, len(self))``."""
        if isinstance(id, bool) or not isinstance(id, int | np.integer):
            raise ValueError(f"`id` must be an int, got {type(id).__name__}.")
        if not 0 <= id < len(self.tokens):
            raise ValueError(f"`id` must be in [0, {len(self.tokens)}), got {id}.")
        return self.tokens[int(id)]

    # ---------------------------------------------------------------- encode / decode

    def tokenize(self, text: str) -> list[str]:
        """Tokenizes ``text`` the way this vocabulary was built (``level`` and ``lower``)."""
        split = tokenize if self.level == "word" else char_tokenize
        return split(text, lower=self.lower)

    def encode(
        self, tokens_or_text: str | Sequence[str], *, add_bos: bool = False, add_eos: bool = False
    ) -> Int[np.ndarray, " T"]:
        """Maps a text (tokenized first) or a token sequence to ``int32`` ids.

        Example:
          >>> v = Vocabulary.build(["a b a"])
          >>> v.encode("a b c", add_bos=True, add_eos=True)
          array([2, 4, 5, 1, 3], dtype=int32)
        """
        if isinstance(tokens_or_text, str):
            toks = self.tokenize(tokens_or_text)
        elif isinstance(tokens_or_text, Iterable) and not isinstance(tokens_or_text, bytes):
            toks = list(tokens_or_text)
            for i, t in enumerate(toks):
                if not isinstance(t, str):
                    raise ValueError(
                        f"`tokens_or_text[{i}]` must be a str token, got {type(t).__name__}."
                    )
        else:
            raise ValueError(
                "`tokens_or_text` must be a str or a sequence of str tokens, got "
                f"{type(tokens_or_text).__name__}."
            )
        ids = [self.token_to_id(t) for t in toks]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return np.asarray(ids, dtype=np.int32)

    def decode(
        self, ids: Sequence[int] | np.ndarray | Array, *, strip_special: bool = True
    ) -> list[str]:
        """Maps ids back to tokens.

        With ``strip_special`` the padding, begin/end and extra reserved specials are dropped;
        ``<UNK>`` is kept, since it stands for a real word.
        """
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"`ids` must be 1-D (T,), got shape {arr.shape}.")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"`ids` must have an integer dtype, got {arr.dtype}.")
        if arr.size and (arr.min() < 0 or arr.max() >= len(self.tokens)):
            raise ValueError(
                f"`ids` must lie in [0, {len(self.tokens)}), got values in "
                f"[{int(arr.min())}, {int(arr.max())}]."
            )
        out = [self.tokens[i] for i in arr.tolist()]
        if strip_special:
            out = [
                t
                for i, t in zip(arr.tolist(), out, strict=True)
                if i >= self.num_specials or i == self.unk_id
            ]
        return out

    def encode_batch(
        self,
        texts: Sequence[str | Sequence[str]],
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        pad_to_multiple: int | None = None,
    ) -> tuple[Int[np.ndarray, "B T"], Int[np.ndarray, " B"]]:
        """Encodes several texts and pads them with ``pad_id``: returns ``(ids (B, T), lengths (B,))``.

        Example:
          >>> v = Vocabulary.build(["a b"])
          >>> ids, lengths = v.encode_batch(["a b a", "b"])
          >>> ids
          array([[4, 5, 4],
                 [5, 0, 0]], dtype=int32)
          >>> lengths
          array([3, 1], dtype=int32)
        """
        if isinstance(texts, str | bytes) or not isinstance(texts, Iterable):
            raise ValueError(
                f"`texts` must be a sequence of texts or token sequences, got {type(texts).__name__}."
            )
        seqs = [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]
        return pad_batch(seqs, pad_value=self.pad_id, pad_to_multiple=pad_to_multiple)

    def decode_batch(
        self,
        ids: Int[np.ndarray, "B T"] | Int[Array, "B T"],
        lengths: Int[np.ndarray, " B"] | Int[Array, " B"] | None = None,
        *,
        strip_special: bool = True,
    ) -> list[list[str]]:
        """Decodes each row of ``ids`` (up to its length, when ``lengths`` is given)."""
        arr = np.asarray(ids)
        if arr.ndim != 2:
            raise ValueError(f"`ids` must be 2-D (B, T), got shape {arr.shape}.")
        if lengths is None:
            lens = [arr.shape[1]] * arr.shape[0]
        else:
            lens = np.asarray(lengths)
            if lens.shape != (arr.shape[0],):
                raise ValueError(
                    f"`lengths` must have shape (B,) = ({arr.shape[0]},), got {lens.shape}."
                )
        return [
            self.decode(row[: int(n)], strip_special=strip_special)
            for row, n in zip(arr, lens, strict=True)
        ]

    # ---------------------------------------------------------------- persistence

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON document written by :meth:`save`."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "level": self.level,
            "lower": self.lower,
            "specials": list(self.specials),
            "tokens": list(self.tokens[self.num_specials :]),
            "counts": list(self.counts),
        }

    @classmethod
    def from_json_dict(cls, doc: Any) -> Vocabulary:
        """Inverse of :meth:`to_json_dict`; ``ValueError`` when ``doc`` is not a vocabulary."""
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise ValueError(f"not an {_FORMAT} document (missing or wrong 'format' field).")
        if doc.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"unsupported {_FORMAT} version {doc.get('version')!r}; "
                f"this library reads version {_FORMAT_VERSION}."
            )
        expected = {"specials": list, "tokens": list, "counts": list, "lower": bool, "level": str}
        for name, typ in expected.items():
            if not isinstance(doc.get(name), typ):
                raise ValueError(f"field {name!r} must be a {typ.__name__}, got {doc.get(name)!r}.")
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in doc["counts"]):
            raise ValueError("field 'counts' must hold integers.")
        return cls(
            tokens=tuple(doc["specials"]) + tuple(doc["tokens"]),
            counts=tuple(doc["counts"]),
            num_specials=len(doc["specials"]),
            lower=doc["lower"],
            level=doc["level"],
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the vocabulary as UTF-8 JSON, atomically.

        The document goes to a temporary file in the same directory, is flushed to disk and
        then renamed over ``path`` (``os.replace``), so a crash never leaves a half-written file.
        """
        write_json_atomic(path, self.to_json_dict(), ensure_ascii=False, indent=1, sort_keys=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Reads a vocabulary written by :meth:`save`.

        Raises:
          ValueError: the file is not valid UTF-8 JSON, or not a vocabulary of a supported
            format version, or its contents are inconsistent; the message names the file.
        """
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            return cls.from_json_dict(doc)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            raise ValueError(
                f"{os.fspath(path)!r} is not a valid vocabulary file: {str(e).rstrip('.')}."
            ) from e
