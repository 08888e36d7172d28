"""CLIP's text as its tokenizer reads it, without torch: the cleaning, the pattern and the byte-level BPE.

    clean("Nude&amp;#32;Statue")   # -> "nude statue": what the tokenizer goes on to split
    words("nudestatue!")           # -> ["nudestatue", "!"]: the pattern's pieces of the cleaned text
    bpe("nudestatue")              # -> ("nu", "de", "statue</w>"): the merges' pieces of one word
    encode("a nude statue")        # -> the token ids open_clip's SimpleTokenizer gives (no start/end tokens)

This is the tokenizer of OpenAI's CLIP that open_clip ships (`open_clip.tokenizer.SimpleTokenizer`, cleaning
"lower"): `ftfy.fix_text`, HTML entities unescaped twice, runs of white space made one space, lower case; then
the pattern that cuts contractions, runs of letters, single digits and runs of other symbols; then byte-level BPE
with the merges of `bpe_simple_vocab_16e6.txt.gz`. The bot's word filter uses it to judge the text that CLIP is
given, so it must not import torch: the merges file is found with `importlib.util.find_spec`, which locates
open_clip's package without running it, and is read once.

Where open_clip is not installed there are no merges: `bpe` returns a word as one piece and `encode` raises
LookupError, while `clean` and `words` work as before. Where ftfy is not installed, `clean` skips its repairs.
Letters and digits are told by `unicodedata` (Unicode 14 on Python 3.11), so code points that a newer Unicode
assigned are read as symbols, where open_clip's `regex` may read them as letters.
"""

from __future__ import annotations

import functools
import gzip
import heapq
import html
import importlib.util
import unicodedata
from dataclasses import dataclass
from pathlib import Path

try:
    import ftfy
except ImportError:  # pragma: no cover - ftfy comes with open_clip
    ftfy = None

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
END = "</w>"  # marks the last piece of a word
SPECIAL = ("<start_of_text>", "<end_of_text>")
_MERGE_COUNT = 49152 - 256 - 2  # the merges the tokenizer reads: the file's lines 1..48894
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Matched by none of the pattern's branches when it ignores case (its upper case is a Greek letter): dropped.
_UNMATCHED = "\u0345"


@functools.cache
def _byte_symbols() -> tuple[str, ...]:
    """The printable character that stands for each byte (printable Latin-1 bytes stand for themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return tuple(symbols[b] for b in range(256))


@functools.cache
def _symbol_bytes() -> dict[str, int]:
    return {symbol: b for b, symbol in enumerate(_byte_symbols())}


def to_symbols(text: str) -> str:
    """`text` as BPE symbols: its UTF-8 bytes, each written as its printable stand-in."""
    table = _byte_symbols()
    return "".join(table[b] for b in text.encode("utf-8"))


def from_symbols(symbols: str) -> str:
    """The text that BPE symbols stand for (an end-of-word marker dropped; a cut character replaced)."""
    lookup = _symbol_bytes()
    return bytes(lookup[s] for s in symbols.replace(END, "")).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class _Merges:
    pairs: list[tuple[str, str]]  # the merges in order: a pair of pieces that becomes one
    ranks: dict[tuple[str, str], int]  # a pair -> its place in `pairs` (lower merges first)
    vocab: dict[str, int]  # a piece -> its token id


def merges_path() -> Path | None:
    """Where open_clip keeps the merges file, found without importing open_clip (None if it is not installed)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / MERGES_FILE
        if path.is_file():
            return path
    return None


@functools.cache
def _merges() -> _Merges | None:
    path = merges_path()
    if path is None:
        return None
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[1 : _MERGE_COUNT + 1]
    pairs = [tuple(line.split()) for line in lines]
    # The vocabulary lists the bytes' stand-ins printable ones first (as the tokenizer's table was built).
    symbols = sorted(_byte_symbols(), key=lambda s: (ord(s) >= 256, ord(s)))
    pieces = [*symbols, *(s + END for s in symbols), *("".join(pair) for pair in pairs), *SPECIAL]
    ranks = {pair: rank for rank, pair in enumerate(pairs)}
    return _Merges(pairs=pairs, ranks=ranks, vocab={piece: i for i, piece in enumerate(pieces)})


def available() -> bool:
    """Whether the merges are at hand (open_clip is installed), so that `bpe` splits words as CLIP does."""
    return _merges() is not None


def clean(text: str) -> str:
    """`text` as the tokenizer cleans it: repaired by ftfy, HTML entities unescaped twice, white space collapsed,
    lower case."""
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


def _kind(c: str) -> str:
    """The pattern's class of one character: Letter, Number, Space, Other (or "" for one no branch matches)."""
    if c.isascii():
        return "L" if c.isalpha() else "N" if c.isdigit() else "S" if c.isspace() else "O"
    category = unicodedata.category(c)[0]
    if category in "LN":
        return category
    if c.isspace():
        return "S"
    return "" if c in _UNMATCHED else "O"


def split(cleaned: str) -> list[str]:
    """The pattern's pieces of text that is already cleaned, in order: the special tokens, contractions ("'s"),
    runs of letters, single digits and runs of other symbols; white space between them dropped."""
    out: list[str] = []
    i, n = 0, len(cleaned)
    while i < n:
        c = cleaned[i]
        if c == "<" and cleaned.startswith(SPECIAL, i):
            special = next(s for s in SPECIAL if cleaned.startswith(s, i))
            out.append(special)
            i += len(special)
            continue
        if c == "'":
            # The pattern ignores case, and so reads the long s as an s.
            ahead = cleaned[i : i + 3].lower().replace("\u017f", "s")
            contraction = next((s for s in _CONTRACTIONS if ahead.startswith(s)), None)
            if contraction is not None:
                out.append(cleaned[i : i + len(contraction)])
                i += len(contraction)
                continue
        kind = _kind(c)
        if kind == "N":
            out.append(c)
            i += 1
            continue
        if kind in ("S", ""):
            i += 1
            continue
        j = i + 1
        while j < n and _kind(cleaned[j]) == kind:
            j += 1
        out.append(cleaned[i:j])
        i = j
    return out


def words(text: str) -> list[str]:
    """The pieces CLIP's pattern cuts `text` into after cleaning it, before BPE."""
    return split(clean(text))


_CACHED = 64  # words up to this many bytes keep their pieces (the cache stays small whatever is typed)


@functools.lru_cache(maxsize=1 << 14)
def _bpe_symbols(symbols: str) -> tuple[str, ...]:
    return _bpe_uncached(symbols)


def _bpe_uncached(symbols: str) -> tuple[str, ...]:
    merges = _merges()
    if merges is None or len(symbols) == 1:
        return (symbols + END,)
    return _merge([*symbols[:-1], symbols[-1] + END], merges)


def _merge(word: list[str], merges: _Merges) -> tuple[str, ...]:
    """The tokenizer's merging, in O(n log n) for a long word: it merges the lowest-ranked pair present everywhere,
    left to right, and only then looks for the next. The pieces are a list linked by index; a heap holds the
    pairs present by rank and place, stale entries skipped when popped."""
    ranks, pairs = merges.ranks, merges.pairs
    after = [*range(1, len(word)), -1]
    before = [*range(-1, len(word) - 1)]
    heap = [(ranks[pair], i) for i, pair in enumerate(zip(word, word[1:], strict=False)) if pair in ranks]
    heapq.heapify(heap)
    while heap:
        rank = heap[0][0]
        places = []
        while heap and heap[0][0] == rank:
            places.append(heapq.heappop(heap)[1])
        first, second = pairs[rank]
        merged = []
        for i in sorted(places):  # left to right (indices keep their order along the list)
            j = after[i]
            if word[i] != first or j < 0 or word[j] != second:
                continue  # gone, or changed by an earlier merge
            word[i], word[j] = first + second, ""
            after[i] = after[j]
            if after[j] >= 0:
                before[after[j]] = i
            merged.append(i)
        for i in merged:
            for left, right in ((before[i], i), (i, after[i])):
                if left >= 0 and right >= 0 and (word[left], word[right]) in ranks:
                    heapq.heappush(heap, (ranks[word[left], word[right]], left))
    return tuple(piece for piece in word if piece)


def bpe(word: str) -> tuple[str, ...]:
    """The BPE pieces of one word of `split`, as symbols (see `from_symbols`), the last ending in "</w>"."""
    if not word:
        return ()
    if word in SPECIAL:
        return (word,)
    symbols = to_symbols(word)
    return _bpe_symbols(symbols) if len(symbols) <= _CACHED else _bpe_uncached(symbols)


def encode(text: str) -> list[int]:
    """The token ids of `text` (without the start and end tokens), as open_clip's SimpleTokenizer.encode gives."""
    merges = _merges()
    if merges is None:
        raise LookupError(f"CLIP's merges ({MERGES_FILE}) come with open_clip, which is not installed here.")
    return [merges.vocab[piece] for word in words(text) for piece in bpe(word)]
