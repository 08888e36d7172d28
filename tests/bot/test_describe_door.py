"""/describe holds the rules of every other door: a cooldown, one picture at a time on the engine's thread, the answer
to the member only unless they share it, and nothing the server blocks in what it shows or proposes."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import discord
import pytest
from PIL import Image

from tests.bot.conftest import GatedBackend


@dataclasses.dataclass(frozen=True)
class Described:
    """The fields of `engine.describe.Description` (which needs torch to import)."""

    prompt: str
    prompt_similarity: float
    ranked: dict
    flavors: tuple
    model: str


class DescribingBackend(GatedBackend):
    """The gated fake with a describe: it answers at once, or waits for `describe_gate` (a call the test makes)."""

    can_describe = True
    describe_gate: asyncio.Future | None = None
    described = 0

    async def describe(self, image, clip_model, cache_dir):
        self.described += 1
        if self.describe_gate is not None:
            await self.describe_gate
        return Described(
            "a castle, an oil painting by Ogre Master, cubism, glowing",
            0.31,
            {
                "subjects": (("a castle", 0.30),),
                "mediums": (("an oil painting", 0.25),),
                "artists": (("Ogre Master", 0.24), ("Claude Monet", 0.2)),
                "movements": (("cubism", 0.2),),
                "flavors": (("glowing", 0.1),),
            },
            ("glowing",),
            "tiny-clip",
        )


@pytest.fixture
def gated():
    return DescribingBackend()


@pytest.fixture
def simcord_bot(make_gated_bot, gated):
    return make_gated_bot()


@pytest.fixture
def world(simcord_env, gated):
    gated.env = simcord_env
    guild = simcord_env.create_guild()
    channel = guild.create_text_channel("art")
    admins = guild.create_role("Admins", permissions=discord.Permissions(manage_guild=True))
    users = {name: guild.add_member(simcord_env.create_user(name)) for name in ("alice", "bob")}
    users["admin"] = guild.add_member(simcord_env.create_user("admin"), roles=[admins])
    return guild, channel, users


def _picture() -> tuple[str, bytes]:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 60, 200)).save(out, format="PNG")
    return "holiday.png", out.getvalue()


def _answer(result):
    return (result.followups or [result.response])[0]


async def test_describe_answers_the_member_only_unless_shared(simcord_env, world):
    guild, channel, u = world
    private = await u["alice"].slash(channel, "describe", image=_picture())
    assert _answer(private).embeds[0].title == "What CLIP sees" and private.ephemeral
    await simcord_env.advance_time(31)
    shared = await u["alice"].slash(channel, "describe", image=_picture(), share=True)
    assert _answer(shared).embeds[0].title == "What CLIP sees" and not shared.ephemeral


async def test_describe_has_a_cooldown(simcord_env, world, gated):
    guild, channel, u = world
    await u["alice"].slash(channel, "describe", image=_picture())
    again = await u["alice"].slash(channel, "describe", image=_picture())
    assert again.ephemeral and "Slow down" in _answer(again).content
    assert gated.described == 1
    await simcord_env.advance_time(31)
    await u["alice"].slash(channel, "describe", image=_picture())
    assert gated.described == 2


async def test_one_picture_is_described_at_a_time(simcord_env, world, gated):
    """A description holds the engine's thread; another member asking meanwhile is told to wait, not queued."""
    from bot.jobs import Origin

    guild, channel, u = world
    gated.describe_gate = asyncio.get_running_loop().create_future()
    origin = Origin(guild.id, channel.id, u["alice"].id)
    first = asyncio.create_task(simcord_env.bot.jobs.describe(origin, _picture()[1], "tiny-clip"))
    await asyncio.sleep(0)
    refused = await u["bob"].slash(channel, "describe", image=_picture())
    assert refused.ephemeral and "being described" in _answer(refused).content
    gated.describe_gate.set_result(None)
    assert (await first).model == "tiny-clip" and gated.described == 1


async def test_describe_shows_and_proposes_nothing_the_server_blocks(simcord_env, world, gated):
    guild, channel, u = world
    await u["admin"].slash(channel, "settings words", action="add", word="ogre")
    result = await u["alice"].slash(channel, "describe", image=_picture())
    embed = _answer(result).embeds[0]
    shown = " ".join([embed.description or "", *(f"{f.name} {f.value}" for f in embed.fields)])
    assert "ogre" not in shown.lower() and "Claude Monet" in shown and "a castle" in embed.description


async def test_a_blocked_phrase_across_the_prompts_parts_leaves_no_prompt(simcord_env, world):
    guild, channel, u = world
    await u["admin"].slash(channel, "settings words", action="add", word="cubism glowing")
    answer = _answer(await u["alice"].slash(channel, "describe", image=_picture(), share=True))
    assert "cubism, glowing" not in (answer.embeds[0].description or "")
    assert not answer.components  # no Imagine this without a prompt


async def test_describe_keeps_to_the_servers_picture_channels(simcord_env, world, gated):
    guild, channel, u = world
    studio = guild.create_text_channel("studio")
    await u["admin"].slash(channel, "settings channels", action="add", channel=studio)
    refused = await u["alice"].slash(channel, "describe", image=_picture(), share=True)
    assert refused.ephemeral and f"<#{studio.id}>" in _answer(refused).content and gated.described == 0


async def test_a_picture_behind_a_spoiler_is_not_described(simcord_env, world, gated):
    guild, channel, u = world
    await u["admin"].slash(channel, "settings moderation", level="spoiler")
    gated.unsafe = 0.99
    await u["alice"].slash(channel, "imagine", prompt="a castle")
    [thread] = channel.threads
    result = next(m for m in thread.history() if m.attachments and m.attachments[0].filename.startswith("SPOILER_"))
    answer = await u["bob"].context_menu(thread, "Describe image", result)
    assert "spoiler" in _answer(answer).content and gated.described == 0
