"""A byte-level BPE tokenizer that tokenizes exactly like llama.cpp's ``gpt2`` BPE.

Contract: :func:`train` learns merges from text; :meth:`Tokenizer.encode` splits text
with the GPT-2 pre-tokenizer (a hand-written mirror of llama.cpp's
``unicode_regex_split_custom_gpt2``, so no ``regex`` package is needed), maps bytes
to printable characters (GPT-2's ``bytes_to_unicode``) and applies merges lowest
rank first, leftmost on ties, as llama.cpp does. Every byte is a token, so any UTF-8
text round-trips. The llmos special tokens are control tokens, recognised only with
``special=True`` (trusted markup), never in content. Merges never touch digits, so
numbers are spelled digit by digit and a small model can copy any figure.

Not covered: normalisation (none is done), other pre-tokenizers, Unicode-version
differences between Python's ``unicodedata`` and llama.cpp's tables for rare
characters (the test checks agreement on mixed held-out text).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from llmos.dialects.llmos import SPECIAL_TOKENS

# llama.cpp's whitespace table (unicode.cpp), not Python's str.isspace, which adds U+001C..U+001F
WHITESPACE = frozenset(
    [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)
LETTER, NUMBER, SPACE, OTHER = "L", "N", "S", "O"


def _kind(char: str) -> str:
    if ord(char) in WHITESPACE:
        return SPACE
    category = unicodedata.category(char)[0]
    return category if category in (LETTER, NUMBER) else OTHER


def pretokenize(text: str) -> list[str]:
    """'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"""
    chunks, pos, n = [], 0, len(text)
    kinds = [_kind(c) for c in text]
    while pos < n:
        start = pos
        if text[pos] == "'" and pos + 1 < n:
            if text[pos + 1] in "stmd":
                chunks.append(text[pos : pos + 2])
                pos += 2
                continue
            if text[pos + 1 : pos + 3] in ("re", "ve", "ll"):
                chunks.append(text[pos : pos + 3])
                pos += 3
                continue
        kind = kinds[pos + 1] if text[pos] == " " and pos + 1 < n else kinds[pos]
        if text[pos] == " " and pos + 1 >= n:
            kind = SPACE
        if kind in (LETTER, NUMBER, OTHER):
            pos += text[pos] == " "
            while pos < n and kinds[pos] == kind:
                pos += 1
        else:
            spaces = 0
            while pos + spaces < n and kinds[pos + spaces] == SPACE:
                spaces += 1
            # \s+(?!\S): leave the last space to the next word; \s+ at the end takes them all
            pos += spaces - 1 if spaces > 1 and pos + spaces < n else max(spaces, 1)
        chunks.append(text[start:pos])
    return chunks


@lru_cache(maxsize=1)
def byte_chars() -> list[str]:
    """GPT-2's bytes_to_unicode: a printable character for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def to_symbols(chunk: str) -> list[str]:
    table = byte_chars()
    return [table[b] for b in chunk.encode("utf-8")]


class Tokenizer:
    """Vocabulary: 256 byte tokens, one token per merge, then the special tokens."""

    def __init__(self, merges: list[tuple[str, str]], specials: tuple[str, ...] = SPECIAL_TOKENS) -> None:
        self.merges = merges
        self.specials = specials
        self.vocab = byte_chars() + [a + b for a, b in merges] + list(specials)
        self.ids = {token: i for i, token in enumerate(self.vocab)}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.n_normal = 256 + len(merges)
        self.special_pattern = re.compile("(" + "|".join(re.escape(s) for s in sorted(specials, key=len)[::-1]) + ")")
        self.byte_of = {c: b for b, c in enumerate(byte_chars())}
        self._cache: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.vocab)

    def special_id(self, token: str) -> int:
        return self.ids[token]

    def encode(self, text: str, special: bool = False) -> list[int]:
        """Tokens of ``text``; with ``special``, the special tokens in it become control tokens."""
        if not special:
            return [t for chunk in pretokenize(text) for t in self._encode_chunk(chunk)]
        out: list[int] = []
        for part in self.special_pattern.split(text):
            if part in self.specials:
                out.append(self.ids[part])
            elif part:
                out += self.encode(part)
        return out

    def _encode_chunk(self, chunk: str) -> list[int]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        symbols = to_symbols(chunk)
        while len(symbols) > 1:
            ranked = [(self.ranks.get(pair, 1 << 30), i) for i, pair in enumerate(pairwise(symbols))]
            rank, i = min(ranked)
            if rank == 1 << 30:
                break
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        tokens = [self.ids[s] for s in symbols]
        if len(self._cache) < 200_000:
            self._cache[chunk] = tokens
        return tokens

    def decode(self, tokens: list[int]) -> str:
        data = bytearray()
        for t in tokens:
            token = self.vocab[t]
            if t >= self.n_normal:
                data += token.encode("utf-8")
            else:
                data += bytes(self.byte_of[c] for c in token)
        return data.decode("utf-8", "replace")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"merges": self.merges, "specials": list(self.specials)}))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        data = json.loads(Path(path).read_text())
        return cls([tuple(m) for m in data["merges"]], tuple(data["specials"]))


SPACE_CHARS = frozenset(byte_chars()[b] for b in b" \t\n\r\x0b\x0c")


def _digit_free(a: str, b: str) -> bool:
    return not any(c.isdigit() for c in a + b)


def _word_only(a: str, b: str) -> bool:
    """Digits never merge, and whitespace joins nothing but lower-case letters."""
    merged = a + b
    rest = [c for c in merged if c not in SPACE_CHARS]
    return _digit_free(a, b) and (len(rest) == len(merged) or all("a" <= c <= "z" for c in rest))


def train(
    texts: list[str], vocab_size: int, specials: tuple[str, ...] = SPECIAL_TOKENS, *, split_spaces: bool = False
) -> Tokenizer:
    """Learn ``vocab_size - 256 - len(specials)`` merges from ``texts`` (specials excluded).

    Only ASCII chunks are learned from (the curriculum is English), so other scripts
    fall back to bytes; digits never merge. With ``split_spaces`` no token mixes
    whitespace with other bytes, so a word is the same tokens after a space, a quote
    or a slash: copying a name from the user's words into a call is then a plain
    token-for-token copy (GPT-2's pre-tokenizer glues the space to the word).
    """
    mergeable = _word_only if split_spaces else _digit_free
    split = re.compile("|".join(re.escape(s) for s in specials))
    counts: Counter[str] = Counter()
    for text in texts:
        for part in split.split(text):
            counts.update(c for c in pretokenize(part) if c.isascii())
    words = [to_symbols(chunk) for chunk in counts]
    freqs = list(counts.values())
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for w, symbols in enumerate(words):
        for pair in pairwise(symbols):
            if mergeable(*pair):
                pairs[pair] += freqs[w]
                where.setdefault(pair, set()).add(w)
    merges: list[tuple[str, str]] = []
    while len(merges) < vocab_size - 256 - len(specials) and pairs:
        best = max(pairs, key=lambda p: (pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        for w in where.pop(best, set()):
            _replace(words, w, best, freqs[w], pairs, where, mergeable)
        pairs.pop(best, None)
    return Tokenizer(merges, specials)


def _replace(
    words: list[list[str]], w: int, pair: tuple[str, str], freq: int, pairs: Counter, where: dict, mergeable
) -> None:
    """Apply one merge inside word ``w``, keeping the pair counts up to date."""
    old = words[w]
    for p in pairwise(old):
        if mergeable(*p):
            pairs[p] -= freq
    new, i = [], 0
    while i < len(old):
        if i + 1 < len(old) and (old[i], old[i + 1]) == pair:
            new.append(old[i] + old[i + 1])
            i += 2
        else:
            new.append(old[i])
            i += 1
    words[w] = new
    for p in pairwise(new):
        if mergeable(*p):
            pairs[p] += freq
            where.setdefault(p, set()).add(w)
    for p in [p for p in pairwise(old) if pairs.get(p, 1) <= 0]:
        pairs.pop(p, None)
