"""The blocked-word filter: normalisation against the usual evasions, whole-word matching, the built-in list."""

from __future__ import annotations

import functools
import re
import statistics
import time
import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.wordfilter import DEFAULT_BLOCKED_WORDS, WordFilter, load_words, normalise, parse_words, refusal

WORDS = WordFilter(["bad", "ass", "nude", "blow job", "sex"])
DEFAULT = WordFilter(DEFAULT_BLOCKED_WORDS)
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
ACCENTS = ["\u0301", "\u0300", "\u0308", "\u0327", "\u030c"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello World", "hello world"),
        ("Crème Brûlée", "creme brulee"),
        ("ｆｕｌｌ ｗｉｄｔｈ", "full width"),
        ("zero\u200bwidth\u00adsoft\ufeff", "zerowidthsoft"),
        ("Straße", "strasse"),
        ("b.a.d", "bad"),
        ("b a d", "bad"),
        ("b-a-d", "bad"),
        ("b . a . d", "bad"),
        ("n00b h4x0r", "noob haxor"),
        ("@ss 5ex", "ass sex"),
        ("sh!t", "shit"),
        ("stop!", "stop"),
        ("wow!!! really?!", "wow really"),
        ("the year 2024, 16:9", "the year 2024 16 9"),
        ("one\n\ntwo", "one two"),
        ("\u0274\u1d1c\u1d05\u1d07 \ua731\u1d0d\u1d00\u029f\u029f", "nude small"),
        ("\U0001f1f3\U0001f1fa\U0001f1e9\U0001f1ea", "nude"),
        ("n\nu\nd\ne", "nude"),
        ("8ad", "bad"),
        ("s\u00f8ster \u0142\u00f3d\u017a", "soster lodz"),
        ("\u0639\u0640\u0640\u0631\u0628\u064a", "\u0639\u0631\u0628\u064a"),  # an Arabic word stretched by tatweels
    ],
)
def test_normalise(text, expected):
    assert normalise(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "something bad",
        "BAD",
        "b.a.d",
        "b a d idea",
        "draw a b a d cat",
        "b\u200ba\u200bd",
        "bäd",
        "ｂａｄ",
        "so b-a-d",
        "a$$",
        "@ss",
        "asses",
        "nud3",
        "blow job",
        "blowjob",
        "blow-jobs",
        "b l o w j o b",
        "s3x",
        "5 e x",
    ],
)
def test_finds_evasions(text):
    assert WORDS.find(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "a class act",
        "grass and bass",
        "badge of a badger",
        "assassin's creed",
        "Sussex countryside",
        "a nudibranch",
        "blow the job away",  # the phrase's words, not in order
        "b a d g e",  # spelled out, but a longer word
        "the year 2024",
        "",
        "!!!",
    ],
)
def test_innocent_text_does_not_match(text):
    assert WORDS.find(text) is None


def test_find_returns_the_entry_as_listed():
    words = WordFilter(["Blow Job", "Crème"])
    assert words.find("a b-l-o-w-j-o-b") == "Blow Job"
    assert words.find("CREME") == "Crème"


def test_phrase_plural_and_partial_phrase():
    assert WORDS.find("two blow jobs") == "blow job"
    assert WORDS.find("a blow") is None
    assert WORDS.find("blow") is None


def test_refusal_never_repeats_the_word():
    sentence = refusal("prompt")
    assert sentence == "The prompt contains a word this server does not allow; please rephrase it."
    for entry in DEFAULT_BLOCKED_WORDS:
        assert WordFilter([entry]).find(sentence) is None


def test_builtin_list():
    assert 40 <= len(DEFAULT_BLOCKED_WORDS) <= 100
    assert len(set(map(normalise, DEFAULT_BLOCKED_WORDS))) == len(DEFAULT_BLOCKED_WORDS)  # no duplicates
    assert all(not e.startswith("#") and e == e.strip() for e in DEFAULT_BLOCKED_WORDS)
    assert load_words() == DEFAULT_BLOCKED_WORDS
    assert len(WordFilter.default()) == len(DEFAULT_BLOCKED_WORDS)
    for entry in DEFAULT_BLOCKED_WORDS:
        assert DEFAULT.find(f"a picture of {entry} please") is not None, entry
    for innocent in ["a class photo", "a therapist", "cocktail hour", "a raccoon", "Scunthorpe", "data analysis"]:
        assert DEFAULT.find(innocent) is None, innocent


def test_word_list_files(tmp_path):
    assert parse_words("# comment\n\nbad  # trailing\n  worse \n") == ("bad", "worse")
    path = tmp_path / "words.txt"
    path.write_text("one\n# two\nthree\n", encoding="utf-8")
    assert load_words(path) == ("one", "three")
    assert WordFilter(["", "  ", "!!"]).words == ()  # entries that normalise to nothing are dropped


@pytest.mark.parametrize(
    "text",
    [
        "a " * 50_000,
        "b.a." * 25_000,
        "x" * 100_000,
        "!|@$" * 25_000,
        ("blow " * 20_000),
        "\u200b" * 100_000,
        "e\u0301" * 50_000,
    ],
)
def test_large_inputs_are_fast(text):
    start = time.perf_counter()
    DEFAULT.find(text)
    assert time.perf_counter() - start < 2.0


@st.composite
def disguised(draw, word: str) -> str:
    """`word` with random case, accents on its letters and zero-width characters anywhere."""
    out = []
    for c in word:
        out.append(draw(st.sampled_from([c.lower(), c.upper()])))
        if c.isalpha() and draw(st.booleans()):
            out.append(draw(st.sampled_from(ACCENTS)))
        out.extend(draw(st.lists(st.sampled_from(ZERO_WIDTH), max_size=2)))
    return "".join(out)


@settings(max_examples=300)
@given(st.data())
def test_any_disguise_of_a_listed_word_matches(data):
    entry = data.draw(st.sampled_from(DEFAULT_BLOCKED_WORDS))
    prefix = data.draw(st.sampled_from(["", "a picture of ", "Draw: ", "(", "\u200b"]))
    suffix = data.draw(st.sampled_from(["", " at night", "!", ", 4k", ")"]))
    text = prefix + data.draw(disguised(entry)) + suffix
    assert DEFAULT.find(text) is not None, ascii(text)


@functools.cache
def _clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def _clip_pieces_spell_an_entry(word: str) -> bool:
    """Whether a run of the pieces that open_clip's own tokenizer cuts `word` into spells a listed word (or its
    plural): the one way a listed word inside a longer word is judged."""
    pieces = [p.removesuffix("</w>") for p in _clip_tokenizer().bpe(word).split()]
    listed = {normalise(e).replace(" ", "") for e in DEFAULT_BLOCKED_WORDS}
    runs = {"".join(pieces[i:j]) for i in range(len(pieces)) for j in range(i + 1, len(pieces) + 1)}
    plurals = {run.removesuffix(suffix) for run in runs for suffix in ("s", "es") if run.endswith(suffix)}
    return bool((runs | plurals) & listed)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(DEFAULT_BLOCKED_WORDS),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", max_size=4),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", max_size=4),
)
def test_a_listed_word_inside_a_longer_word_matches_only_as_clips_own_pieces(entry, prefix, suffix):
    pytest.importorskip("open_clip")
    word = prefix + entry.replace(" ", "") + suffix
    assume(not re.search(r"(.)\1\1", word))  # three letters alike are read as one ("nuuude")
    text = f"a picture of {word} please"
    if not _clip_pieces_spell_an_entry(word):
        assert DEFAULT.find(text) is None, text


def test_accents_are_combining_marks():
    assert all(unicodedata.combining(a) for a in ACCENTS)
    assert all(unicodedata.category(z) == "Cf" for z in ZERO_WIDTH)


def test_look_alike_letters_of_other_scripts_are_read_as_latin():
    words = WordFilter(["ogre", "bad"])
    for disguised in ("an \u043egr\u0435", "\u0431ad", "b\u0430d", "\u0432\u0430d", "\u03bfgre", "OGR\u0415"):
        # Cyrillic o and e; a Cyrillic "б" is no look-alike; Cyrillic а; в (a capital В looks like B) + а; Greek
        # omicron; a capital Cyrillic E
        found = words.find(disguised)
        assert (found is None) == (disguised == "\u0431ad"), disguised
    # words of those scripts with letters of their own stay in their script (accents are folded as everywhere)
    assert normalise("красивый закат над") == "красивыи закат над"
    assert normalise("καλημέρα") == "καλημερα"
    assert normalise("асе морем") == "ace mopem"  # look-alikes only: read as Latin (a real word too, harmlessly)
    # a Cyrillic "г" is read as an "r" only beside Latin letters: "горе" and "гор" are Russian words
    assert normalise("горе гор") == "горе гор"
    assert normalise("og\u0433e \u0433\u043e\u0440\u0435") == "ogre горе"


# With "ogre" listed: look-alike letters and stretching marks in or around it, each refused.
OGRE_LOOK_ALIKES = [
    pytest.param("a green og\u027ee", id="r-with-fishhook"),
    pytest.param("a green og\u0433e", id="cyrillic-ghe-among-latin"),
    pytest.param("a green OG\u0413E", id="capital-cyrillic-ghe-among-latin"),
    pytest.param("a green \u0275gre", id="barred-o"),
    pytest.param("a green \u019fGRE", id="capital-barred-o"),
    pytest.param("a green ogr\u01dde", id="turned-e"),
    pytest.param("a green OGR\u018e", id="capital-turned-e"),
    pytest.param("a green ogr\u0258", id="reversed-e"),
    pytest.param("a green \u2c9fgre", id="coptic-o"),
    pytest.param("a green \u2c9eGRE", id="capital-coptic-o"),
    pytest.param("a green \u1d11gre", id="sideways-o"),
    pytest.param("a green og\ua783e", id="insular-r"),
    pytest.param("a green OG\ua782E", id="capital-insular-r"),
    pytest.param("a green o\u0640gre", id="tatweel"),
    pytest.param("a green o\u0640\u0640gr\u0640e", id="tatweels"),
    pytest.param("a green o\ufe77gre", id="tatweel-in-a-compatibility-form"),
    pytest.param("a green \u0275g\u0433\u01dd", id="three-look-alikes"),
]


@pytest.mark.parametrize("text", OGRE_LOOK_ALIKES)
def test_look_alikes_of_a_listed_word_are_refused(text):
    assert WordFilter(["ogre"]).find(text) == "ogre", ascii(text)


# Ways around the filter: each gives CLIP a word of the built-in list, or shows one to a reader, and is refused.
# The ids name the trick; those named "before-..." were refused already and stay so.
BYPASSES = [
    pytest.param("&#110;ude", id="numeric-entity"),
    pytest.param("&amp;#110;ude", id="double-escaped-entity"),
    pytest.param("&amp;amp;#110;ude", id="triple-escaped-entity"),
    pytest.param("&#x6E;ude", id="hex-entity"),
    pytest.param("&#110ude", id="entity-without-semicolon"),
    pytest.param("nud&eacute;", id="named-entity"),
    pytest.param("n&nbsp;u&nbsp;d&nbsp;e", id="nbsp-entities-between-letters"),
    pytest.param("nu&ZeroWidthSpace;de", id="named-invisible-entity"),
    pytest.param("nu&shy;de", id="soft-hyphen-entity"),
    pytest.param("n&#8203;ude", id="zero-width-space-entity"),
    pytest.param("\u0274\u1d1c\u1d05\u1d07", id="small-capitals"),
    pytest.param("n\u1d1cde", id="a-small-capital-among-letters"),
    pytest.param("p\u00f8rn", id="letter-with-a-stroke"),
    pytest.param("n\u0131pple", id="dotless-i"),
    pytest.param("nu\u034fde", id="combining-grapheme-joiner"),
    pytest.param("nu\ufe0fde", id="variation-selector"),
    pytest.param("nu\U000e0100de", id="variation-selector-supplement"),
    pytest.param("nu\u3164de", id="hangul-filler"),
    pytest.param("nu\uffa0de", id="halfwidth-hangul-filler"),
    pytest.param("nu\u115fde", id="hangul-choseong-filler"),
    pytest.param("nu\u180bde", id="mongolian-variation-selector"),
    pytest.param("nu\u17b4de", id="khmer-inherent-vowel"),
    pytest.param("n    u    d    e", id="wide-gaps"),
    pytest.param("n\nu\nd\ne", id="a-letter-a-line"),
    pytest.param("nudestatue", id="compound"),
    pytest.param("a bignudestatue", id="compound-in-the-middle"),
    pytest.param("NudeStatue", id="camel-case-compound"),
    pytest.param("sextoy", id="compound-with-sex"),
    pytest.param("pornhub", id="compound-with-porn"),
    pytest.param("xxxmix", id="compound-of-roman-numeral-letters"),
    pytest.param("nudeee", id="letters-added"),
    pytest.param("nude\u30fcstatue", id="compound-joined-by-a-katakana-mark"),
    pytest.param("nu\u00b7de", id="middle-dot-between-fragments"),
    pytest.param("nu**de**", id="markdown-between-fragments"),
    pytest.param("n||ude||", id="spoiler-bars-between-fragments"),
    pytest.param("nud3statue", id="leetspeak-compound"),
    pytest.param("nude3statue", id="digit-glued-to-a-word"),
    pytest.param("8dsm", id="eight-for-b"),
    pytest.param("ni99er", id="nine-for-g"),
    pytest.param("nu|de", id="bar-inside-a-word"),
    pytest.param("nu | de", id="bar-between-prompt-parts"),
    pytest.param("nu-de", id="hyphen-between-fragments"),
    pytest.param("nu/de", id="slash-between-fragments"),
    pytest.param("nu_de", id="underscore-between-fragments"),
    pytest.param("nud\u00c3\u00a9", id="mojibake"),
    pytest.param("\U0001f17d\U0001f184\U0001f173\U0001f174", id="negative-squared-letters"),
    pytest.param("\U0001f15d\U0001f164\U0001f153\U0001f154", id="negative-circled-letters"),
    pytest.param("\U0001f1f3\U0001f1fa\U0001f1e9\U0001f1ea", id="regional-indicators"),
    pytest.param("\u202eedun", id="right-to-left-override"),
    pytest.param("nuuude", id="repeated-letters"),
    pytest.param("pornnnn", id="repeated-last-letter"),
    pytest.param("\u0578\u057dde", id="armenian-look-alikes"),
    pytest.param("po\u027en", id="r-with-fishhook"),
    pytest.param("po\u0433n", id="cyrillic-ghe-among-latin"),
    pytest.param("p\u0275rn", id="barred-o"),
    pytest.param("nud\u01dd", id="turned-e"),
    pytest.param("nud\u0258", id="reversed-e"),
    pytest.param("p\u2c9frn", id="coptic-o"),
    pytest.param("p\u1d11rn", id="sideways-o"),
    pytest.param("po\ua783n", id="insular-r"),
    pytest.param("nu\u0640de", id="tatweel"),
    pytest.param("\uff4e\uff55\uff44\uff45", id="before-full-width"),
    pytest.param("\U0001d427\U0001d42e\U0001d41d\U0001d41e", id="before-mathematical-bold"),
    pytest.param("\u24dd\u24e4\u24d3\u24d4", id="before-circled-letters"),
    pytest.param("\u207f\u1d58\u1d48\u1d49", id="before-superscript-letters"),
    pytest.param("n\u0336u\u0336d\u0336e\u0336", id="before-strikethrough"),
    pytest.param("nu\u200dde", id="before-zero-width-joiner"),
    pytest.param("n\u0334\u0321\u031bu\u0335\u0354d\u0336e\u0337", id="before-stacked-combining-marks"),
    pytest.param("n.u.d.e", id="before-dotted"),
    pytest.param("N\u00daD\u00c9", id="before-accented-capitals"),
    pytest.param("nudes", id="before-plural"),
    pytest.param("nud\u0435", id="before-cyrillic-e"),
]


@pytest.mark.parametrize("text", BYPASSES)
def test_bypasses_are_refused(text):
    assert DEFAULT.find(text) is not None, ascii(text)
    assert DEFAULT.find(f"a photo of {text} at dusk") is not None, ascii(text)


# Art prompts that hold a listed word's letters by accident, or that CLIP cuts near one: never refused.
ORDINARY_PROMPTS = [
    "a lighthouse on a cliff at sunset, oil painting by Ivan Aivazovsky",
    "the Sussex countryside in spring, watercolour",
    "Essex marshes at dawn",
    "Middlesex hospital, a photograph from the 1890s",
    "the hills of Wessex under snow",
    "Scunthorpe steelworks at night",
    "a class photo of schoolchildren in 1950",
    "a cocktail party on a rooftop",
    "a therapist's office full of plants",
    "Assassin's Creed concept art",
    "a bunch of grapes on a table, still life",
    "grapefruit and spices in a bowl",
    "Charles Dickens writing by candlelight",
    "data analysis dashboard, isometric",
    "pen island tourist poster",
    "a raccoon in a trash can",
    "a butterfly leaving its cocoon",
    "a tycoon's mansion by the sea",
    "a brass sextant on a ship's deck",
    "the sexton ringing the church bells",
    "a jazz sextet in a smoky bar",
    "a conspicuous red door",
    "the Laocoon group, marble sculpture",
    "a coonhound in the woods",
    "a pussycat on a windowsill",
    "a man scraping paint off a wall",
    "a field of rapeseed in bloom",
    "a tin of talcum powder, vintage advert",
    "a titan rising from the sea",
    "the Titanic at night",
    "a Hitchcock style thriller poster",
    "a peacock showing its feathers",
    "the cockpit of a jumbo jet",
    "mountains of Pakistan, K2 at dawn",
    "an analog synthesizer on a desk",
    "a canal in Venice",
    "Cumbria, the lake district fells",
    "cucumber sandwiches at tea time",
    "a documentary still",
    "Emily Dickinson's garden",
    "a bass guitar on a stand",
    "spicy ramen, food photography",
    "Van Gogh, starry night over the Rhone",
    "portrait of a man, 85mm, f/1.8",
    "a cute kitten | studio lighting | 4k",
    "a hummingbird sipping nectar",
    "the Parthenon in Athens",
    "a movie poster from MCMLXXX",
    "an XXL t-shirt mockup",
    "analysis paralysis, surreal art",
    "a vineyard in Bordeaux at grape harvest",
    "a perspicacious old owl",
    "a nudibranch on a coral reef",
    "a sea urchin spicule under a microscope",
    "a shiitake mushroom forest",
    "a grasshopper on a leaf",
    "an embassy in the rain",
    "a cucumber-green t-shirt",
    "spices/herbs market in Marrakesh",
    "e.g. a U.S.A. road trip, sci-fi",
]


@pytest.mark.parametrize("prompt", ORDINARY_PROMPTS)
def test_ordinary_prompts_pass(prompt):
    assert DEFAULT.find(prompt) is None, prompt


def test_short_listed_words_do_not_catch_ordinary_words():
    words = WordFilter(["ass", "ogre", "cunt", "cock", "dick", "rape", "anal", "tit", "sex"])
    for innocent in [
        "class",
        "programmer",
        "Scunthorpe",
        "assassin",
        "cocktail",
        "therapist",
        "grape",
        "Sussex",
        "Dickens",
        "analysis",
        "peacock",
        "Hitchcock",
        "titmouse",
        "scrape",
        "Essex",
        "passage",
        "embassy",
        "grasshopper",
        "Dickinson",
        "cockpit",
        "sextant",
        "cockatoo",
        "stalactites",
        "titration",
        "trespass",
        "coarse",
    ]:
        assert words.find(f"a picture of {innocent}") is None, innocent
    for compound in ["sexdoll", "bigasses", "rapescene", "sextantsex"]:
        assert words.find(compound) is not None, compound


def test_find_is_fast_on_a_long_prompt():
    prompt = (", ".join(ORDINARY_PROMPTS) + ", ")[:1000]
    DEFAULT.find(prompt)  # warm-up: the merges are read once
    times = []
    for _ in range(20):
        start = time.perf_counter()
        DEFAULT.find(prompt)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.010, times


def test_every_default_ignorable_code_point_is_invisible():
    regex = pytest.importorskip("regex")
    ignorable = regex.compile(r"\p{Default_Ignorable_Code_Point}")
    words = WordFilter(["nude"])
    for cp in range(0x110000):
        if ignorable.match(chr(cp)):
            assert words.find(f"nu{chr(cp)}de") == "nude", hex(cp)


def test_other_scripts_keep_whole_words():
    # CLIP cuts Cyrillic into little more than bytes: its pieces say nothing of where a word begins
    words = WordFilter(["\u0431\u043b\u044f", "cr\u00e8me"])
    assert words.find("\u043a\u043e\u0440\u0430\u0431\u043b\u044f") is None  # a word ending in the entry
    assert words.find("\u0431\u043b\u044f") is not None
    assert words.find("cr\u00e8mestatue") == "cr\u00e8me"  # accents folded in CLIP's pieces too
