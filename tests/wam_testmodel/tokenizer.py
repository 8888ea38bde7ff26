"""The `vocab` instruction tokenizer of the test bundle.

The Rust node reimplements exactly this algorithm; both must give the same ids for every text:

1. Lowercase the whole text (Unicode lowercase: Python ``str.lower``, Rust
   ``str::to_lowercase``; for the ASCII vocabulary of the test bundle only ASCII letters matter).
2. Split on runs of whitespace; leading and trailing whitespace yields no word (Python
   ``str.split()`` with no argument, Rust ``str::split_whitespace``). The two agree on every
   character except the ASCII separators U+001C..U+001F, which Python counts as whitespace and
   Rust does not; texts holding them are out of contract.
3. Strip leading and trailing ASCII punctuation from each word: the 32 characters
   ``!"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~`` (Python ``string.punctuation``, Rust
   ``char::is_ascii_punctuation``). Punctuation inside a word stays (``don't`` stays ``don't``).
4. Drop words that became empty (a word made only of punctuation).
5. Look each word up in the vocab file: id = 0-based line index; a word not in the file ->
   ``unk_id``.
6. Truncate the ids to ``max_tokens`` (keep the first ones), then pad with ``pad_id`` up to
   ``max_tokens``.

Vocab file: one word per line, UTF-8, each line ended by ``\\n``; line 0 is ``<pad>`` (``pad_id``
0) and line 1 is ``<unk>`` (``unk_id`` 1). The special lines can never match a word: ``<`` and
``>`` are punctuation and are stripped before the look-up.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Final

from . import spec

PUNCTUATION: Final = string.punctuation

VOCAB: Final[tuple[str, ...]] = (
    "<pad>",
    "<unk>",
    "reach",
    "touch",
    "push",
    "the",
    "red",
    "green",
    "blue",
    "object",
    "cube",
    "to",
    "zone",
    "marked",
    "a",
)


def vocab_text(vocab: Sequence[str] = VOCAB) -> str:
    """Content of vocab.txt: one word per line, each line ended by a newline."""
    return "".join(f"{word}\n" for word in vocab)


def vocab_index(vocab: Sequence[str] = VOCAB) -> dict[str, int]:
    """Word -> id (line index). The first line wins if a word repeats."""
    index: dict[str, int] = {}
    for i, word in enumerate(vocab):
        index.setdefault(word, i)
    return index


def words(text: str) -> list[str]:
    """Steps 1-4: the normalized, non-empty words of ``text``."""
    out: list[str] = []
    for raw in text.lower().split():
        word = raw.strip(PUNCTUATION)
        if word:
            out.append(word)
    return out


def tokenize(
    text: str,
    vocab: Mapping[str, int] | None = None,
    max_tokens: int = spec.L,
    pad_id: int = spec.PAD_ID,
    unk_id: int = spec.UNK_ID,
) -> list[int]:
    """Token ids of ``text``, exactly ``max_tokens`` long."""
    index = vocab_index() if vocab is None else vocab
    ids = [index.get(word, unk_id) for word in words(text)][:max_tokens]
    return ids + [pad_id] * (max_tokens - len(ids))
