"""Blocked words: matching on text normalised against the usual evasions, and on the text CLIP is given.

    words = WordFilter(DEFAULT_BLOCKED_WORDS)      # or a server's own list
    if (entry := words.find(prompt)) is not None:
        reply(refusal("prompt"))                   # never repeats the word

`normalise` folds what people type to hide a word: case, accents, full-width and other compatibility forms,
invisible characters (Unicode's default-ignorable code points and format characters, and the Arabic tatweel that
only stretches a word), letters that look like Latin ones (small capitals, letters with strokes, turned and reversed
letters, enclosed and regional-indicator letters), the common leetspeak digits and symbols, and letters spelled out
one at a time with separators ("b.a.d", "b a d", "b-a-d", one a line).
Matching is by whole words on the normalised text, so "class" never matches "ass"; a plural ("-s", "-es") of a
blocked word matches too, and a blocked phrase also matches written as one word ("blow job", "blowjob").

`find` also reads the text the way CLIP's tokenizer does (`engine.cliptext`: ftfy's repairs, HTML entities
unescaped twice, so "&#110;ude" is read as the word it spells) and judges the pieces CLIP's BPE cuts each word
into: a word whose consecutive pieces spell a blocked word is refused ("nudestatue" is cut "nu de statue"), while
one that CLIP keeps whole or cuts elsewhere passes ("class", "therapist", "Scunthorpe"). A few ordinary words that
CLIP happens to cut around a blocked word ("sextant", "scrape") are listed in `_ORDINARY` and pass. Fragments
joined by punctuation or a prompt's "|" ("nu|de", "nu-de"), letters repeated ("nuuude") and text under a
right-to-left override are read as what they show.

Look-alike letters of Cyrillic, Greek, Coptic and Armenian (a Cyrillic "а" for a Latin "a") are read as the Latin
letter in a word that mixes them with Latin letters, or that is made of look-alikes only; a word in those scripts that
has other letters too (most of them) stays as it is, so Russian or Greek prompts are not rewritten. A few letters that
only resemble a Latin one by their shape (a Cyrillic "г" for an "r") are read so only beside Latin letters.
Everything runs in a few passes over the text (no backtracking regular expressions), so a 100 kB message costs little.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path

from engine import cliptext

# A token: a run of letters, digits and the symbols that stand for letters in leetspeak.
_TOKEN = re.compile(r"(?:[^\W_]|[@$!|])+")
_LEET = str.maketrans("013456789@$!|", "oieasgtbgasii")
# "!" and "|" end sentences and draw boxes far more often than they spell an "i": only inside a word do they count,
# and there they may also just cut a word in two ("nu|de").
_EDGE_SYMBOLS = "!|"
_BARS = re.compile(r"[!|]+")
# Letters spelled one at a time: single-character tokens with at most this many visible characters between them.
_MAX_GAP = 3
# Between two fragments of one word: a few punctuation characters and no space ("nu-de", "nu.de"), or a prompt's
# "|" with or without spaces ("nu | de").
_GLUE = re.compile(r"[^\w\s]{1,3}|_{1,3}|\s*\|\s*")
# Single-letter words that may stand next to a spelled-out word ("draw a b a d cat"): tried with and without.
_SMALL_WORDS = "ai"
_PLURALS = ("s", "es")
_ES_AFTER = ("s", "x", "z", "ch", "sh", "o")  # "-es" makes a plural only after these ("sexes", not "spices")
_REPEATED = re.compile(r"(.)\1\1+")  # three or more of one letter ("nuuude")
# A Roman numeral ("mcmlxxx") is a number, whatever CLIP cuts it into.
_ROMAN = re.compile(r"m{0,4}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})")
# CLIP reads at most 75 pieces of a text, so no further than this into one word: only this much of a word is cut.
_LONGEST_WORD = 1000

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): drawn as nothing, so removed before matching.
# NFKC keeps them, and several are letters or marks with no combining class (U+3164, U+034F), not format characters.
_IGNORABLE = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors and vowel separator
    (0x200B, 0x200F),  # zero-width space, non-joiner and joiner, direction marks
    (0x202A, 0x202E),  # bidirectional embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidirectional isolates, deprecated format characters
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),  # reserved
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol format controls
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement, reserved
)
# The Arabic tatweel stretches the letters either side of it and stands for nothing itself ("o\u0640gre"); some
# compatibility forms of Arabic marks carry one, so it is removed after NFKC as well.
_TATWEEL = "\u0640"
_INVISIBLE = {cp: None for first, last in _IGNORABLE for cp in range(first, last + 1)} | {ord(_TATWEEL): None}
_RIGHT_TO_LEFT = re.compile("\u202e([^\u202a-\u202c\u2066-\u2069\n]*)")  # an override, up to its end or the line's

_A_TO_Z = "abcdefghijklmnopqrstuvwxyz"
# Latin letters that NFKC leaves as they are but that read as a plain one: small capitals, letters with strokes or
# hooks, turned, reversed and sideways letters, IPA and insular forms; and letters drawn in boxes and circles that have
# no compatibility form. Read everywhere.
_LATIN_FORMS = str.maketrans(
    {
        **dict(zip("ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘꞯʀꜱᴛᴜᴠᴡʏᴢ", _A_TO_Z.replace("x", ""), strict=True)),
        **dict(
            zip(
                "øđłħŧƀɨʉƶɍȼɇɉǥᵽꝑıȷɑɡɩʋɛɔƒʂȿɦɱɲŋɳƞʈɖɗƙƈɓƥʠɠʐȥɫɭɬɾɵǝɘᴑꞃ",
                "odlhtbiuzrcejgppijagivoefsshmnnnntddkcbpqgzzlllroeeor",
                strict=True,
            )
        ),
        "æ": "ae",
        "œ": "oe",
        "ð": "d",
        **{chr(0x1F150 + i): c for i, c in enumerate(_A_TO_Z)},  # negative circled capitals
        **{chr(0x1F170 + i): c for i, c in enumerate(_A_TO_Z)},  # negative squared capitals
        **{chr(0x1F1E6 + i): c for i, c in enumerate(_A_TO_Z)},  # regional indicators (flags are pairs of them)
    }
)
# Cyrillic, Greek, Coptic and Armenian lower-case letters (the text is case-folded first) that look like a Latin one.
_LOOKALIKES = {
    **dict(zip("авеёкмнорстухѕіјԁԛԝһӏ", "abeekmhopctyxsijdqwhl", strict=True)),
    **dict(zip("αβεηικνορτυχω", "abeniknoptuxw", strict=True)),
    "ⲟ": "o",
    **dict(zip("օսոհցզ", "ounhgq", strict=True)),
}
_LATIN_LOOK = str.maketrans(_LOOKALIKES)
# Letters that pass for a Latin one among Latin letters, but that words of their own script are often made of with
# look-alikes alone ("горе", "гор" are Russian words): read as Latin only in a word that has Latin letters too.
_BESIDE_LATIN = {"г": "r"}
_LATIN_LOOK_BESIDE_LATIN = str.maketrans(_LOOKALIKES | _BESIDE_LATIN)

# Ordinary words (and the stems of their families) that CLIP happens to cut so that some pieces spell a listed word
# or a short word servers often list: the pieces inside one of these are not judged. The whole word still is.
_ORDINARY = (
    *("sextant", "sexton", "sextet", "sextuple", "sextill", "sextile", "sextan", "sexagen", "sexages", "wessex"),
    *("misex", "crossex", "intersex", "unisex"),
    *("conspicu", "perspic", "auspic", "haruspic", "spicul", "spicat", "spicc", "spicier", "spicil", "spicin"),
    *("talcum", "cecum", "locum", "mecum", "tecum", "viscum", "chalcum", "cumber", "cumbr", "circum", "cumquat"),
    *("raccoon", "cocoon", "tycoon", "laocoon", "coonhound", "coonskin", "coontail", "coondog"),
    *("scrape", "grape", "drape", "crape", "trapez", "broomrape", "rapeseed", "satrap"),
    *("fagot", "fagus", "fagac", "fagal", "fagopyr", "fagott", "pussycat", "pussyfoot", "pussywillow", "nipplewort"),
    *("gobbledygook", "gobbledegook", "piloerect", "sclerotic", "xerotic", "hellen", "nosegay", "margay"),
    *("cocktail", "cockpit", "cockatoo", "cockatiel", "cockroach", "cockney", "cockle", "cockerel", "cockscomb"),
    *("peacock", "woodcock", "shuttlecock", "weathercock", "hancock", "hitchcock", "stopcock", "poppycock"),
    *("gamecock", "babcock", "dickinson", "dickens", "titmouse", "tomtit", "titbit", "titrat", "titillat", "stalactit"),
    *("titan", "titlark", "titter", "buttress", "rebutt", "scuttlebutt", "trespass", "harass", "morass", "embass"),
    *("amass", "kvass", "coarse", "hoarse", "analog", "analg", "analect", "analemm", "analeptic"),
    *("homogen", "homolog", "homograph", "homonym", "homophon", "prickl", "pinprick", "shittim"),
)


def _fold(text: str) -> str:
    """Case, accents, compatibility forms, look-alike Latin forms and invisible characters folded away."""
    text = unicodedata.normalize("NFKC", text.translate(_INVISIBLE)).casefold().translate(_LATIN_FORMS)
    decomposed = unicodedata.normalize("NFKD", text).replace(_TATWEEL, "")
    return "".join(c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")


def _unmask(token: str) -> str:
    """Look-alike letters read as Latin, in a token that mixes them with Latin letters or has no other letters
    (those of `_BESIDE_LATIN` only in the first)."""
    if not any(c in _LOOKALIKES or c in _BESIDE_LATIN for c in token):
        return token
    letters = [c for c in token if c.isalpha()]
    if any(c.isascii() for c in letters):
        return token.translate(_LATIN_LOOK_BESIDE_LATIN)
    if all(c in _LOOKALIKES for c in letters):
        return token.translate(_LATIN_LOOK)
    return token


def _deleet(token: str) -> str:
    """One token with leetspeak read as letters, when it holds a letter at all ("2024" stays a number)."""
    token = _unmask(token)
    if not any(c.isalpha() for c in token):
        return "".join(c for c in token if c.isalnum())
    return token.strip(_EDGE_SYMBOLS).translate(_LEET)


def _cut(token: str) -> str:
    """The other reading of a token with "|" or "!" inside: a cut, not a letter ("nu|de" -> "nude")."""
    token = _unmask(token)
    if not any(c.isalpha() for c in token):
        return ""
    return token.replace("|", "").replace("!", "").translate(_LEET)


def _raw_tokens(folded: str) -> list[tuple[str, str]]:
    """The tokens of folded text, each with the text between it and the one before ("\\n" before the first);
    symbols that stand alone ("|", "$") count as part of that gap."""
    out: list[tuple[str, str]] = []
    end = -1
    for match in _TOKEN.finditer(folded):
        token = match.group()
        if not any(c.isalnum() for c in token):
            continue
        gap = folded[end : match.start()] if end >= 0 else "\n"
        end = match.end()
        out.append((token, gap))
    return out


def _spells(gap: str) -> bool:
    """Whether a gap may stand between letters spelled one at a time: any white space, few visible characters."""
    return len("".join(gap.split())) <= _MAX_GAP


def _words(raw: list[tuple[str, str]]) -> list[tuple[str, bool]]:
    """The normalised words, each with whether it was spelled out one letter at a time."""
    out: list[tuple[str, bool]] = []
    run: list[str] = []  # single characters spelled out so far

    def flush() -> None:
        if run:
            out.append(("".join(run), len(run) > 1))
            run.clear()

    for token, gap in raw:
        if len(token) == 1:
            if run and not _spells(gap):
                flush()
            run.append(token)
            continue
        flush()
        out.append((token, False))
    flush()
    words = [(_deleet(token), spaced) for token, spaced in out]
    return [(word, spaced) for word, spaced in words if word]


def _tokens(text: str) -> list[tuple[str, bool]]:
    """The normalised words of `text`, each with whether it was spelled out one letter at a time."""
    return _words(_raw_tokens(_fold(text)))


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


def _glued(raw: list[tuple[str, str]], longest: int) -> Iterator[str]:
    """Fragments joined across the punctuation or "|" between them ("nu-de", "nu | de"), two or more at a time,
    no longer than a listed word can be. Single letters alone are left to the spelled-out words."""
    group: list[str] = []
    for token, gap in [*raw, ("", "\n")]:
        if group and _GLUE.fullmatch(gap) is None:
            if len(group) > 1 and any(len(part) > 1 for part in group):
                for i in range(len(group)):
                    joined = group[i]
                    for j in range(i + 1, len(group)):
                        part = group[j]
                        if len(joined) + len(part) > longest:
                            break
                        joined += part
                        yield joined
            group = []
        if token:
            group.append(_deleet(token))


def _unrepeated(word: str) -> tuple[str, ...]:
    """A word with letters typed three or more times in a row read once, and twice ("nuuude" -> nude, nuude)."""
    if _REPEATED.search(word) is None:
        return ()
    return _REPEATED.sub(r"\1", word), _REPEATED.sub(r"\1\1", word)


def _views(text: str, cleaned: str) -> list[str]:
    """The readings of `text` to judge: as typed, as CLIP's tokenizer cleans it, and with right-to-left overrides
    undone (the letters after one are shown in reverse)."""
    views = [text]
    if cleaned != " ".join(text.split()).lower():
        views.append(cleaned)
    if "\u202e" in text:
        views.append(_RIGHT_TO_LEFT.sub(lambda m: m.group(1)[::-1], text))
    return views


def _ordinary(word: str, start: int, stop: int) -> bool:
    """Whether word[start:stop] lies inside an ordinary word of `_ORDINARY` written in `word`."""
    if _ROMAN.fullmatch(word):
        return True
    for stem in _ORDINARY:
        at = word.find(stem)
        while at >= 0:
            if at <= start and stop <= at + len(stem):
                return True
            at = word.find(stem, at + 1)
    return False


class WordFilter:
    """A list of blocked words and phrases, matched as whole words on normalised text and on CLIP's pieces."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words: tuple[str, ...] = tuple(w for w in words if normalise(w))
        self._single: dict[str, str] = {}  # one normalised word -> the entry
        self._phrases: dict[str, list[tuple[tuple[str, ...], str]]] = {}  # first word -> (words, entry)
        for entry in self.words:
            parts = tuple(word for word, _ in _tokens(entry))
            self._single.setdefault("".join(parts), entry)  # a phrase also matches written as one word
            if len(parts) > 1:
                self._phrases.setdefault(parts[0], []).append((parts, entry))
        self._longest = max(map(len, self._single), default=0) + max(map(len, _PLURALS))

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
            stem = word[: -len(suffix)]
            if word.endswith(suffix) and stem in self._single and (suffix == "s" or stem.endswith(_ES_AFTER)):
                return self._single[stem]
        return None

    def _lookup_any(self, words: Iterable[str]) -> str | None:
        for word in words:
            for candidate in (word, *_unrepeated(word)):
                entry = self._lookup(candidate)
                if entry is not None:
                    return entry
        return None

    def find(self, text: str) -> str | None:
        """The blocked entry that `text` contains (as written in the list), or None."""
        cleaned = cliptext.clean(text)
        for view in _views(text, cleaned):
            entry = self._find_words(_raw_tokens(_fold(view)))
            if entry is not None:
                return entry
        return self._find_clip_words(cleaned)

    def _find_words(self, raw: list[tuple[str, str]]) -> str | None:
        """The entry among the normalised words: whole, spelled out, glued from fragments, as a phrase, or as a run
        of the pieces CLIP cuts a word into."""
        tokens = _words(raw)
        words = [word for word, _ in tokens]
        for i, (word, spaced) in enumerate(tokens):
            entry = self._lookup_any(_spelled_candidates(word) if spaced else (word,))
            if entry is None and not spaced:
                entry = self._find_pieces(word)
            if entry is not None:
                return entry
            for parts, entry in self._phrases.get(word, ()):
                tail = words[i + 1 : i + len(parts)]
                if len(tail) == len(parts) - 1 and tail[:-1] == list(parts[1:-1]):
                    last, wanted = tail[-1], parts[-1]
                    if last == wanted or any(last == wanted + suffix for suffix in _PLURALS):
                        return entry
        cuts = [_cut(token) for token, _ in raw if any(c in token.strip(_EDGE_SYMBOLS) for c in _EDGE_SYMBOLS)]
        if cuts:  # the fragments between the cuts are glued like any others
            raw = [(part, gap if i == 0 else "|") for token, gap in raw for i, part in enumerate(_BARS.split(token))]
            raw = [(token, gap) for token, gap in raw if any(c.isalnum() for c in token)]
        return self._lookup_any(cuts) or self._lookup_any(_glued(raw, self._longest))

    def _find_pieces(self, word: str) -> str | None:
        """The entry that a run of consecutive pieces of a normalised word spells, as CLIP's BPE cuts it."""
        if not word.isascii():
            return None  # CLIP's own pieces of the text are judged in _find_clip_words
        word = word[:_LONGEST_WORD]
        return self._find_runs(word, [piece.removesuffix(cliptext.END) for piece in cliptext.bpe(word)], str)

    def _find_clip_words(self, cleaned: str) -> str | None:
        """The entry among the words CLIP's pattern cuts the cleaned text into, whole or as a run of their pieces."""
        seen: set[str] = set()
        for word in cliptext.split(cleaned):
            if word in seen:
                continue
            seen.add(word)
            folded = _fold(word)
            entry = self._lookup(folded)
            if entry is None and len(folded) > 1 and folded.isalpha():
                word = word[:_LONGEST_WORD]
                entry = self._find_runs(_fold(word), list(cliptext.bpe(word)), _read_symbols)
            if entry is not None:
                return entry
        return None

    def _find_runs(self, word: str, pieces: list[str], read: Callable[[str], str]) -> str | None:
        """The entry that consecutive `pieces` of `word` spell (`read` gives the text of a run of them), unless they
        lie inside an ordinary word."""
        if len(pieces) < 2:
            return None
        start = 0
        for i in range(len(pieces)):
            run = ""
            for piece in pieces[i:]:
                run += piece
                text = read(run)
                if len(text) > self._longest:
                    break
                # Other scripts are cut into little more than bytes, which say nothing of where a word begins:
                # there, as before, only whole words count.
                entry = self._lookup(text) if text.isascii() else None
                if entry is not None and not _ordinary(word, start, start + len(text)):
                    return entry
            start += len(read(pieces[i]))
        return None


def _read_symbols(symbols: str) -> str:
    """The folded text of a run of CLIP's pieces (bytes of a character cut in two are read as a replacement)."""
    return _fold(cliptext.from_symbols(symbols))


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
