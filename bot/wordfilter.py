"""Blocked words: matching on text normalised against the usual evasions, standard library only.

    words = WordFilter(DEFAULT_BLOCKED_WORDS)      # or a server's own list
    if (entry := words.find(prompt)) is not None:
        reply(refusal("prompt"))                   # never repeats the word

`normalise` folds what people type to hide a word: case, accents, full-width and other compatibility forms,
zero-width and other invisible format characters, the common leetspeak digits and symbols, and letters spelled
out one at a time with separators ("b.a.d", "b a d", "b-a-d"). Matching is by whole words on the normalised text,
so "class" never matches "ass"; a plural ("-s", "-es") of a blocked word matches too, and a blocked phrase also
matches written as one word ("blow job", "blowjob"). Everything runs in one pass over the text (no backtracking
regular expressions), so a 100 kB message costs milliseconds.

Look-alike letters of Cyrillic and Greek (a Cyrillic "а" for a Latin "a") are read as the Latin letter in a
word that mixes them with Latin letters, or that is made of look-alikes only; a word in those scripts that has
other letters too (most of them) stays as it is, so Russian or Greek prompts are not rewritten.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

# A token: a run of letters, digits and the symbols that stand for letters in leetspeak.
_TOKEN = re.compile(r"(?:[^\W_]|[@$!|])+")
_LEET = str.maketrans("013457@$!|", "oieastasii")
# "!" and "|" end sentences and draw boxes far more often than they spell an "i": only inside a word do they count.
_EDGE_SYMBOLS = "!|"
# Letters spelled one at a time: single-character tokens whose separators are this short and on one line.
_MAX_GAP = 3
# Single-letter words that may stand next to a spelled-out word ("draw a b a d cat"): tried with and without.
_SMALL_WORDS = "ai"
_PLURALS = ("s", "es")
# Cyrillic and Greek lower-case letters (the text is case-folded first) that look like a Latin one.
_LOOKALIKES = {
    **dict(zip("авеёкмнорстухѕіјԁԛԝһӏ", "abeekmhopctyxsijdqwhl", strict=True)),
    **dict(zip("αβεηικνορτυχω", "abeniknoptuxw", strict=True)),
}
_LATIN_LOOK = str.maketrans(_LOOKALIKES)


def _fold(text: str) -> str:
    """Case, accents, compatibility forms and invisible characters folded away (no leetspeak yet)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")


def _unmask(token: str) -> str:
    """Look-alike letters read as Latin, in a token that mixes them with Latin letters or has no other letters."""
    if not any(c in _LOOKALIKES for c in token):
        return token
    letters = [c for c in token if c.isalpha()]
    latin = any(c.isascii() for c in letters)
    if latin or all(c in _LOOKALIKES for c in letters):
        return token.translate(_LATIN_LOOK)
    return token


def _deleet(token: str) -> str:
    """One token with leetspeak read as letters, when it holds a letter at all ("2024" stays a number)."""
    token = _unmask(token)
    if not any(c.isalpha() for c in token):
        return "".join(c for c in token if c.isalnum())
    return token.strip(_EDGE_SYMBOLS).translate(_LEET)


def _tokens(text: str) -> list[tuple[str, bool]]:
    """The normalised words of `text`, each with whether it was spelled out one letter at a time."""
    folded = _fold(text)
    out: list[tuple[str, bool]] = []
    run: list[str] = []  # single characters spelled out so far
    end = -1  # where the previous token ended

    def flush() -> None:
        if run:
            out.append(("".join(run), len(run) > 1))
            run.clear()

    for match in _TOKEN.finditer(folded):
        token, gap = match.group(), folded[end : match.start()] if end >= 0 else "\n"
        end = match.end()
        if len(token) == 1:
            if run and (len(gap) > _MAX_GAP or "\n" in gap):
                flush()
            run.append(token)
            continue
        flush()
        out.append((token, False))
    flush()
    words = [(_deleet(token), spaced) for token, spaced in out]
    return [(word, spaced) for word, spaced in words if word]


def normalise(text: str) -> str:
    """`text` as the filter reads it: folded, leetspeak read as letters, spelled-out words joined, one space
    between words."""
    return " ".join(word for word, _ in _tokens(text))


def _spelled_candidates(word: str) -> set[str]:
    """A spelled-out run, and the run without a small word or two at either end ("abad" -> "bad")."""
    out = {word}
    for head in range(3):
        if head and word[head - 1] not in _SMALL_WORDS:
            break
        for tail in range(3):
            if tail and word[len(word) - tail] not in _SMALL_WORDS:
                break
            if len(word) - head - tail > 1:
                out.add(word[head : len(word) - tail])
    return out


class WordFilter:
    """A list of blocked words and phrases, matched as whole words on normalised text."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words: tuple[str, ...] = tuple(w for w in words if normalise(w))
        self._single: dict[str, str] = {}  # one normalised word -> the entry
        self._phrases: dict[str, list[tuple[tuple[str, ...], str]]] = {}  # first word -> (words, entry)
        for entry in self.words:
            parts = tuple(word for word, _ in _tokens(entry))
            self._single.setdefault("".join(parts), entry)  # a phrase also matches written as one word
            if len(parts) > 1:
                self._phrases.setdefault(parts[0], []).append((parts, entry))

    @classmethod
    def default(cls) -> WordFilter:
        """The built-in list (`bot/data/blocked_words.txt`)."""
        return cls(load_words())

    def __len__(self) -> int:
        return len(self.words)

    def _lookup(self, word: str) -> str | None:
        if word in self._single:
            return self._single[word]
        for suffix in _PLURALS:
            if word.endswith(suffix) and word[: -len(suffix)] in self._single:
                return self._single[word[: -len(suffix)]]
        return None

    def find(self, text: str) -> str | None:
        """The blocked entry that `text` contains (as written in the list), or None."""
        tokens = _tokens(text)
        words = [word for word, _ in tokens]
        for i, (word, spaced) in enumerate(tokens):
            for candidate in _spelled_candidates(word) if spaced else (word,):
                entry = self._lookup(candidate)
                if entry is not None:
                    return entry
            for parts, entry in self._phrases.get(word, ()):
                tail = words[i + 1 : i + len(parts)]
                if len(tail) == len(parts) - 1 and tail[:-1] == list(parts[1:-1]):
                    last, wanted = tail[-1], parts[-1]
                    if last == wanted or any(last == wanted + suffix for suffix in _PLURALS):
                        return entry
        return None


def refusal(where: str) -> str:
    """The sentence that refuses a text, without repeating the word: `where` names it ("prompt", "title")."""
    return f"The {where} contains a word this server does not allow; please rephrase it."


def parse_words(text: str) -> tuple[str, ...]:
    """The entries of a word list: one per line, `#` starts a comment, blank lines ignored."""
    entries = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(entry for entry in entries if entry)


def load_words(path: str | Path | None = None) -> tuple[str, ...]:
    """The entries of a word-list file; the built-in list when `path` is None."""
    if path is None:
        return _builtin_words()
    return parse_words(Path(path).read_text(encoding="utf-8"))


@functools.cache
def _builtin_words() -> tuple[str, ...]:
    return parse_words(resources.files("bot").joinpath("data/blocked_words.txt").read_text(encoding="utf-8"))


def __getattr__(name: str):
    # DEFAULT_BLOCKED_WORDS is read from the package's data file on first use, not at import.
    if name == "DEFAULT_BLOCKED_WORDS":
        return _builtin_words()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
