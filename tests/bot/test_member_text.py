"""Member text wherever the bot shows it: a prompt is shown as typed, never as Markdown of its own (no masked link,
bold, spoiler or code block forms), and single-line places get no control, bidi or format characters."""

from __future__ import annotations

import json
import re

import pytest

from cogs.imagine._embeds import one_line, recipe_text, short, top_embed
from engine.spec import JobSpec
from storage import JobState

# A masked link as Discord's parser (simple-markdown) reads one: the text may hold brackets, the target no spaces.
_MASKED = re.compile(
    r"\[((?:\[[^\]]*\]|[^\[\]]|\](?=[^\[]*\]))*)\]\(\s*<?((?:\([^)]*\)|[^\s\\]|\\.)*?)>?(?:\s+['\"][\s\S]*?['\"])?\s*\)"
)
_AUTOLINK = re.compile(r"https?://[^\s<]+[^<.,:;\"')\]\s]")

EVIL = "a cat](https://evil.example) · **Claim your prize** [x"
LINKED = "[Claim your prize](https://evil.example) ||secret|| <@123> # big `code`"


def links(text: str) -> list[str]:
    """The targets of the links that `text` forms in Discord's Markdown: masked links, and bare URLs outside them;
    an escaped character (backslash and punctuation) is text, as in Discord."""
    found, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and not text[i + 1].isalnum() and not text[i + 1].isspace():
            i += 2
            continue
        if text[i] == "[" and (masked := _MASKED.match(text, i)):
            found.append(masked.group(2))
            i = masked.end()
            continue
        if (bare := _AUTOLINK.match(text, i)) and (i == 0 or not text[i - 1].isalnum()):
            found.append(bare.group())
            i = bare.end()
            continue
        i += 1
    return found


def test_the_link_finder_finds_what_discord_would_link():
    assert links("see https://evil.example now") == ["https://evil.example"]
    assert links(f"**1.** +0 · [{EVIL}](https://discord.com/x)") == ["https://evil.example", "https://discord.com/x"]
    # A masked link's text may run over a "]" that another "]" follows: a link of the bot's own before member text
    # is taken over by a "](" in that text, escaped or not (the parser reads no escapes inside link text).
    assert links(f"[#1](https://discord.com/x) · {EVIL}") == ["https://evil.example"]
    assert links(r"[#1](https://discord.com/x) · a cat\](https://evil.example)") == ["https://evil.example"]
    assert links(r"\[a](https://x.y)") == ["https://x.y"]  # the bare URL inside still links
    assert links(r"\[a\]\(https\://x.y\)") == []


# -- one_line: plain text on one line ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat", "a cat"),
        ("a\ncat\r\non\tmat", "a cat on mat"),
        ("admin\u202e\u2066gnp.exe\u2069", "admingnp.exe"),  # bidi override and isolates
        ("l\u200er\u200fm", "lrm"),  # direction marks
        ("nul\x00here\x1b[31m", "nul here [31m"),  # control characters are spaces
        ("zero\u200bwidth\ufeff\u2060", "zerowidth"),
        ("line\u2028para\u2029end\x85", "line para end"),
        ("family 👨\u200d👩\u200d👧", "family 👨\u200d👩\u200d👧"),  # joiners stay: emoji sequences need them
        ("  spaced   out  ", "spaced out"),
        ("**bold** [x](y)", "**bold** [x](y)"),  # plain text: no Markdown to escape
    ],
)
def test_one_line_keeps_plain_visible_text(text, expected):
    assert one_line(text) == expected


def test_one_line_breaks_mentions():
    """A thread's name is also the content of the message announcing the thread, where no AllowedMentions apply."""
    assert one_line("@everyone and @here meet <@123456789012345678>") == (
        "@\u200beveryone and @\u200bhere meet <@\u200b123456789012345678>"
    )
    assert one_line("@\u200beveryone") == "@\u200beveryone"  # a zero-width space of the member's own is removed first


def test_one_line_cuts_with_an_ellipsis():
    assert one_line("abcdef", 6) == "abcdef"
    assert one_line("abcdefg", 6) == "abcde…" and len(one_line("x" * 500, 100)) == 100
    assert one_line("\u202e" * 50 + "ab", 3) == "ab"  # counted after cleaning


# -- short: member text where Markdown renders ------------------------------------------------------------------
def test_short_shows_markdown_as_typed():
    shown = short(LINKED)
    assert links(shown) == [] and "**" not in shown and "||" not in shown
    assert "<@123>" in shown  # a mention shows as written; the bot's AllowedMentions keep it from pinging
    assert shown.startswith(r"\[Claim your prize\]") and r"\`code\`" in shown
    assert short("# a heading") == r"\# a heading" and short("-# small") == r"\-\# small"
    assert short("1. first") == r"1\. first" and short("> quoted") == r"\> quoted"
    assert short("a cat | fog:0.5") == r"a cat \| fog:0.5"
    assert short("a\\b") == "a\\\\b"  # a backslash cannot escape what follows it


def test_short_counts_its_escapes_and_never_cuts_one_in_half():
    for limit in range(1, 30):
        shown = short("*" * 40, limit)
        assert len(shown) <= limit and links(shown) == []
        assert not re.search(r"(?<!\\)(\\\\)*\\…$", shown)  # no lone backslash before the ellipsis
    assert short("plain words", 200) == "plain words"
    assert short("a\u202eb\nc") == "ab c"


# -- the embeds and texts built from member text ------------------------------------------------------------------
class _Entry:
    def __init__(self, job, votes=1):
        self.job, self.votes = job, votes


class _Job:
    def __init__(self, prompt, **kw):
        self.id, self.spec, self.guild_id, self.post_channel_id = 7, JobSpec(prompt), 1, 2
        self.result_message_id, self.author_id, self.score, self.steps_done = 3, 4, 0.25, 10
        self.scores = {prompt: 0.25}
        self.__dict__.update(kw)


@pytest.mark.parametrize("prompt", [EVIL, LINKED])
def test_the_top_board_links_only_to_its_images(prompt):
    for by in ("votes", "score"):
        text = top_embed([_Entry(_Job(prompt))], "all time", by).description
        assert links(text) == ["https://discord.com/channels/1/2/3"]
        assert "**Claim" not in text and "||secret||" not in text


def test_the_top_board_without_a_message_shows_no_link():
    text = top_embed([_Entry(_Job(EVIL, result_message_id=None))], "week").description
    assert links(text) == [] and "**1.**" in text


def test_a_recipe_keeps_its_json_whole_and_exact():
    prompt = "a ``` fence `x` \u202e" + LINKED
    text = recipe_text(_Job(prompt), JobSpec(prompt))
    assert text.count("```") == 2  # the block opened and closed by the recipe, none from the prompt
    head, body, _tail = text.split("```")
    assert links(head) == []
    assert json.loads(body.removeprefix("json\n"))["prompt"] == prompt  # the JSON still reads back exactly
    assert "\u202e" not in text


# -- through Discord -------------------------------------------------------------------------------------------
@pytest.fixture
def simcord_bot(make_gated_bot, gated):
    return make_gated_bot()


@pytest.fixture
def world(simcord_env, gated):
    gated.env = simcord_env
    guild = simcord_env.create_guild()
    channel = guild.create_text_channel("art")
    users = {name: guild.add_member(simcord_env.create_user(name)) for name in ("alice", "bob")}
    return guild, channel, users


def _shown(message) -> list[str]:
    """Every piece of a message that Discord renders as Markdown."""
    parts = [message.content or ""]
    for embed in message.embeds:
        parts += [embed.description or ""] + [f.value for f in embed.fields]
    return parts


async def test_a_prompt_cannot_become_a_link_in_top_history_or_its_cards(simcord_env, world):
    guild, channel, u = world
    for prompt in (EVIL, LINKED):
        answer = await u["alice"].slash(channel, "imagine", prompt=prompt)
        assert not answer.ephemeral, answer.response.content
        await simcord_env.advance_time(10)  # past the /imagine cooldown
    assert [(await simcord_env.bot.jobs.get(n)).state for n in (1, 2)] == [JobState.DONE] * 2
    top = await u["bob"].slash(channel, "top", period="all time")
    [board] = top.response.embeds
    assert all(link.startswith("https://discord.com/channels/") for link in links(board.description))
    assert len(links(board.description)) == 2 and "**Claim" not in board.description
    assert r"a cat\]\(https\://evil.example\)" in board.description  # the raw text: brackets escaped
    history = await u["alice"].slash(channel, "history")
    assert all(link.startswith("https://discord.com/channels/") for link in links(history.response.content))
    assert r"\[Claim your prize\]\(https\://evil.example\)" in history.response.content
    assert "**Claim" not in history.response.content and "||secret||" not in history.response.content
    for thread in channel.threads:
        for message in thread.history():
            for part in _shown(message):
                assert not any("evil.example" in link for link in links(part)), part
                assert "**Claim" not in part and "||secret||" not in part, part
    final = next(m for t in channel.threads for m in t.history() if m.embeds and m.embeds[0].title == "#2")
    recipe = await u["alice"].click(final, label="Recipe")
    assert recipe.response.content.count("```") == 2


async def test_a_thread_is_named_in_plain_text_on_one_line(simcord_env, world):
    """A thread name is plain text: no Markdown escapes, and no bidi override to turn its text around."""
    guild, channel, u = world
    await u["alice"].slash(channel, "imagine", prompt="a **bold** cat\u202e\u2066 at_night\u2069\u200f")
    [thread] = channel.threads
    assert thread.name == "#1 a **bold** cat at_night"
