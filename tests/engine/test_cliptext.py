"""CLIP's text without torch: the cleaning, the pattern and the BPE agree with open_clip's own tokenizer."""

from __future__ import annotations

import functools
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from engine import cliptext

ROOT = Path(__file__).resolve().parents[2]

PROMPTS = [
    "a lighthouse on a cliff at sunset, oil painting by Ivan Aivazovsky",
    "A Cute Kitten | studio lighting:0.5 | 4k, trending on ArtStation",
    "portrait of a man, 85mm, f/1.8, bokeh",
    "the Sussex countryside in spring; watercolour",
    "it's what they'd've wanted, isn't it? We'll see, I'm sure you're right",
    "IT'S LOUD — “quotes” and ‘single’ … ellipsis",
    "Crème brûlée, Straße, naïve café, smörgåsbord",
    "красивый закат над морем",
    "καλημέρα κόσμε",
    "東京の夜景、サイバーパンク",
    "서울의 밤 풍경",
    "مدينة في الليل",
    "एक सुंदर सूर्यास्त",
    "emoji 🐱🚀🌌 and flags 🇫🇷🇯🇵",
    "nudestatue bignudestatue NudeStatue sextoy pornhub",
    "&#110;ude &amp;#110;ude &amp;amp;#110;ude &#x6E;ude &#110ude nud&eacute;",
    "n&nbsp;u&nbsp;d&nbsp;e nu&shy;de n&#8203;ude &lt;b&gt;bold&lt;/b&gt; &copy; 2024",
    "nudÃ© cafÃ© â€œmojibakeâ€\x9d",
    "\u0274\u1d1c\u1d05\u1d07 p\u00f8rn n\u0131pple",
    "nu\u034fde nu\ufe0fde nu\u3164de nu\uffa0de nu\u115fde nu\u180bde nu\u17b4de nu\U000e0100de",
    "n    u    d    e\nn\nu\nd\ne\ttabs\r\nand\u00a0nbsp\u2003em space",
    "nu|de nu | de nu-de nu/de nu_de n.u.d.e",
    "\U0001f17d\U0001f184\U0001f173\U0001f174 \U0001f15d\U0001f164 \U0001f1f3\U0001f1fa\U0001f1e9\U0001f1ea",
    "\u202eedun nuuude pornnnn \u0578\u057dde",
    "\uff4e\uff55\uff44\uff45 \U0001d427\U0001d42e \u24dd\u24e4 \u207f\u1d58\u1d48\u1d49 n\u0336u\u0336d\u0336e\u0336",
    "<start_of_text>hello<end_of_text> !<start_of_text> <START_OF_TEXT>",
    "'s 't 're 've 'm 'll 'd ''s '\u017f x'\u017fy 'S'T",
    "1234567890 3.14159 1,000,000 ½ ² ③ Ⅻ ٣ ໓",
    "a\u0345a \u1fb3 e\u0301 \u00e9 \ufb01ne \u2126 \u212b",
    "!!!??? ... --- *** ~~~ ___ ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
    "",
    "   ",
    "x" * 300,
    "antidisestablishmentarianism supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
]


def _random_strings(count: int) -> list[str]:
    """Seeded strings from a pool of characters the tokenizer treats differently."""
    pool = [
        *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        *"0123456789",
        *" \t\n.,;:!?'\"-_/|&#<>()[]{}@$%^*+=~`",
        *"éèêëàâäôöûüçñßøæœłđ",
        *"абвгдежзαβγδεζηθ東京夜景서울",
        "&amp;",
        "&#110;",
        "&nbsp;",
        "&lt;",
        "\u200b",
        "\u00ad",
        "\u034f",
        "\ufe0f",
        "\u0301",
        "\U0001f431",
        "\U0001f1eb",
        "'s",
        "'ll",
        "Ã©",
    ]
    rng = random.Random(20240611)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(count)]


@functools.cache
def _reference():
    tokenizer = pytest.importorskip("open_clip.tokenizer")
    return tokenizer.SimpleTokenizer()


def test_merges_are_found_without_importing_open_clip():
    pytest.importorskip("open_clip")
    assert cliptext.available()
    assert cliptext.merges_path().name == cliptext.MERGES_FILE
    code = (
        "import sys; from engine import cliptext; cliptext.encode('a nudestatue'); "
        "print(sorted(m for m in ('torch', 'numpy', 'open_clip', 'regex') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("text", [*PROMPTS, *_random_strings(400)])
def test_tokens_match_open_clip(text):
    reference = _reference()
    assert cliptext.clean(text) == reference.clean_fn(text)
    assert cliptext.encode(text) == reference.encode(text), ascii(text)


def test_the_pattern_matches_open_clip_for_every_character():
    regex = pytest.importorskip("regex")
    reference = _reference()
    characters = [
        chr(cp)
        for cp in range(0x110000)
        if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) not in ("Cn", "Cs")
    ]
    for context in ("a{}a", "1{}1", "!{}!", "'{}", "{}'s", "<{}"):
        for start in range(0, len(characters), 1000):
            text = " ".join(context.format(c) for c in characters[start : start + 1000])
            cleaned = reference.clean_fn(text)
            assert cliptext.split(cleaned) == regex.findall(reference.pat, cleaned), (context, start)


def test_long_words_are_merged_as_the_tokenizer_merges_them():
    reference = _reference()
    rng = random.Random(7)
    for length in (50, 300, 1000):
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzéß") for _ in range(length))
        assert cliptext.encode(word) == reference.encode(word)
    assert cliptext.encode("x" * 5000) == reference.encode("x" * 5000)


def test_clean():
    assert cliptext.clean("  Nude&amp;#32;Statue  ") == "nude statue"
    assert cliptext.clean("&amp;amp;#110;ude") == "nude"  # ftfy unescapes once, then twice more
    assert cliptext.clean("a\n\n b\t\u00a0c") == "a b c"
    assert cliptext.clean("caf\u00c3\u00a9") == "café"


def test_words_and_pieces():
    assert cliptext.words("Nudestatue, it's!!") == ["nudestatue", ",", "it", "'s", "!!"]
    assert cliptext.words("x'\u017f") == ["x", "'\u017f"]  # the pattern ignores case: a long s is an s
    assert cliptext.words("a\u0345a 12") == ["a", "a", "1", "2"]  # no branch matches U+0345
    if cliptext.available():
        assert cliptext.bpe("class") == ("class</w>",)
        assert cliptext.bpe("nudestatue") == ("nu", "de", "statue</w>")
    assert cliptext.bpe("") == ()
    assert cliptext.bpe("<end_of_text>") == ("<end_of_text>",)


def test_symbols_round_trip():
    for text in ["plain", "é東京🐱", "\x00\x7f space"]:
        symbols = cliptext.to_symbols(text)
        assert all(c.isprintable() and not c.isspace() for c in symbols)
        assert cliptext.from_symbols(symbols + cliptext.END) == text
    assert cliptext.to_symbols("abc") == "abc"  # printable ASCII stands for itself


def test_without_open_clip_words_are_one_piece(monkeypatch):
    monkeypatch.setattr(cliptext, "merges_path", lambda: None)
    cliptext._merges.cache_clear()
    cliptext._bpe_symbols.cache_clear()
    try:
        assert not cliptext.available()
        assert cliptext.bpe("nudestatue") == ("nudestatue</w>",)
        assert cliptext.clean("&#110;ude") == "nude"
        with pytest.raises(LookupError, match="open_clip"):
            cliptext.encode("a cat")
    finally:
        cliptext._merges.cache_clear()
        cliptext._bpe_symbols.cache_clear()
