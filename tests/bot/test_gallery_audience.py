"""What reaches the open web: through simcord, images posted where not everyone in the server could see them (a
private channel, an age-restricted channel or server, a private thread) and images from channels staff left out
never appear on the web gallery's pages or image routes; an image posted in a public channel does."""

from __future__ import annotations

import re

import discord
import pytest
from aiohttp.test_utils import TestClient, TestServer
from simcord.backend import serializers
from simcord.backend.models import Overwrite
from simcord.builders import ChannelHandle
from simcord.enums import ChannelType, OverwriteType

from bot.gallery import make_app
from storage import JobState


@pytest.fixture
def simcord_bot(make_gated_bot, gated):
    return make_gated_bot()


@pytest.fixture
def world(simcord_env, gated):
    gated.env = simcord_env
    guild = simcord_env.create_guild()
    admins = guild.create_role("Admins", permissions=discord.Permissions(manage_guild=True))
    users = {"alice": guild.add_member(simcord_env.create_user("alice"))}
    users["admin"] = guild.add_member(simcord_env.create_user("admin"), roles=[admins])
    return guild, users


@pytest.fixture
async def web(simcord_env, settings):
    """The gallery's real application over HTTP, reading the bot's own database and data folder."""
    async with TestClient(TestServer(make_app(simcord_env.bot.store, settings.data_dir))) as client:
        yield client


def _private_channel(guild, name, *members):
    """A channel that @everyone cannot view; `members` (and the bot) can."""
    hidden, shown = discord.PermissionOverwrite(view_channel=False), discord.PermissionOverwrite(view_channel=True)
    return guild.create_text_channel(
        name, overwrites={guild.default_role: hidden, guild.me: shown, **dict.fromkeys(members, shown)}
    )


async def _announce(env, event: str, payload: dict) -> None:
    """Send the bot a gateway event as Discord would (simcord's models lack some fields: the age-restricted flags)."""
    env.backend.emit(event, payload)
    await env.settle()


async def _age_restrict_channel(env, channel) -> None:
    payload = dict(serializers.channel_payload(env.backend, env.backend.get_channel(channel.id)))
    await _announce(env, "CHANNEL_UPDATE", {**payload, "nsfw": True})
    assert env.bot.get_channel(channel.id).is_nsfw()


async def _private_thread(env, channel, owner):
    """A private thread of `channel` with `owner` and the bot in it."""
    thread = env.backend.create_thread(channel.id, "just us", owner.id, type=ChannelType.PRIVATE_THREAD)
    env.backend.add_thread_member(thread.id, env.bot.user.id)
    await env.settle()
    return ChannelHandle(env, channel.guild, thread)


async def _imagine(env, member, where, prompt: str):
    """`member` runs /imagine in `where`; returns the finished job."""
    await env.advance_time(10)  # past the /imagine cooldown
    answer = await member.slash(where, "imagine", prompt=prompt)
    assert not answer.ephemeral, answer.response.content
    await env.settle()
    job = (await env.bot.store.history(where.guild.id, member.id, limit=1))[0]
    assert job.state == JobState.DONE and job.spec.prompt == prompt, job
    return job


def _cards(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<li class="card">\s*<a href="/i/(\d+)"', html)]


async def _published(web, guild_id: int) -> list[int]:
    response = await web.get(f"/g/{guild_id}?period=all")
    return _cards(await response.text()) if response.status == 200 else []


async def _served(web, job_id: int) -> bool:
    """Whether any route of the gallery serves the image (its page and its file agree)."""
    page, png = await web.get(f"/i/{job_id}"), await web.get(f"/img/{job_id}.png")
    assert page.status == png.status, (page.status, png.status)
    return page.status == 200


async def test_only_images_everyone_could_see_reach_the_web(simcord_env, world, web):
    guild, u = world
    public = guild.create_text_channel("art")
    private = _private_channel(guild, "staff-room", u["alice"])
    adult = guild.create_text_channel("after-dark")
    await _age_restrict_channel(simcord_env, adult)
    secret_thread = await _private_thread(simcord_env, public, u["alice"])
    on = await u["admin"].slash(public, "settings gallery", on=True)
    assert "on for this server" in on.response.content

    shown = await _imagine(simcord_env, u["alice"], public, "a lighthouse at dusk")
    hidden = {
        "private channel": await _imagine(simcord_env, u["alice"], private, "a staff portrait"),
        "age-restricted channel": await _imagine(simcord_env, u["alice"], adult, "a midnight scene"),
        "private thread": await _imagine(simcord_env, u["alice"], secret_thread, "a secret garden"),
    }
    assert simcord_env.bot.get_channel(adult.id).is_nsfw()  # still flagged after the posts

    assert (await simcord_env.bot.store.get_job(shown.id)).audience == "everyone"
    assert await _published(web, guild.id) == [shown.id] and await _served(web, shown.id)
    for why, job in hidden.items():
        assert (await simcord_env.bot.store.get_job(job.id)).audience == "restricted", why
        assert not await _served(web, job.id), why


async def test_the_audience_is_the_one_when_posted(simcord_env, world, web):
    guild, u = world
    channel = guild.create_text_channel("art")
    await u["admin"].slash(channel, "settings gallery", on=True)
    before = await _imagine(simcord_env, u["alice"], channel, "posted while public")
    view = discord.Permissions(view_channel=True).value
    backend = simcord_env.backend
    backend.set_overwrite(channel.id, Overwrite(guild.default_role.id, OverwriteType.ROLE, deny=view))
    for member_id in (simcord_env.bot.user.id, u["alice"].id):
        backend.set_overwrite(channel.id, Overwrite(member_id, OverwriteType.MEMBER, allow=view))
    await simcord_env.settle()
    after = await _imagine(simcord_env, u["alice"], channel, "posted once private")
    assert await _published(web, guild.id) == [before.id]
    assert not await _served(web, after.id)


async def test_an_age_restricted_server_publishes_nothing(simcord_env, world, web):
    guild, u = world
    channel = guild.create_text_channel("art")
    await u["admin"].slash(channel, "settings gallery", on=True)
    payload = dict(serializers.guild_create_payload(simcord_env.backend, simcord_env.backend.get_guild(guild.id)))
    await _announce(simcord_env, "GUILD_UPDATE", {**payload, "nsfw_level": discord.NSFWLevel.age_restricted.value})
    assert simcord_env.bot.get_guild(guild.id).nsfw_level == discord.NSFWLevel.age_restricted
    job = await _imagine(simcord_env, u["alice"], channel, "a lighthouse at dusk")
    assert job.audience == "restricted" and not await _served(web, job.id)


async def test_staff_exclude_and_include_a_channel(simcord_env, world, web):
    guild, u = world
    public, memes = guild.create_text_channel("art"), guild.create_text_channel("memes")
    await u["admin"].slash(public, "settings gallery", on=True)
    kept = await _imagine(simcord_env, u["alice"], public, "a lighthouse at dusk")
    joke = await _imagine(simcord_env, u["alice"], memes, "a cat in a hat")
    assert sorted(await _published(web, guild.id)) == [kept.id, joke.id]

    nothing = await u["admin"].slash(public, "settings gallery")
    assert nothing.ephemeral and "exclude or include" in nothing.response.content
    refused = await u["alice"].slash(public, "settings gallery", exclude=memes)
    assert refused.ephemeral and "Manage Server" in refused.response.content
    excluded = await u["admin"].slash(public, "settings gallery", exclude=memes)
    assert f"<#{memes.id}>" in excluded.response.content
    shown = await u["admin"].slash(public, "settings show")
    gallery_field = next(f.value for f in shown.response.embeds[0].fields if f.name == "Web gallery")
    assert f"<#{memes.id}>" in gallery_field and f"<#{public.id}>" not in gallery_field
    later = await _imagine(simcord_env, u["alice"], memes, "a dog in a hat")  # left out as it is posted, too
    assert later.audience == "everyone"  # the channel is public; the exclusion applies when the gallery reads
    assert await _published(web, guild.id) == [kept.id]
    for job in (joke, later):
        assert not await _served(web, job.id)

    again = await u["admin"].slash(public, "settings gallery", include=memes)
    assert f"<#{memes.id}>" in again.response.content
    assert sorted(await _published(web, guild.id)) == sorted([kept.id, joke.id, later.id])
    shown = await u["admin"].slash(public, "settings show")
    assert f"<#{memes.id}>" not in next(f.value for f in shown.response.embeds[0].fields if f.name == "Web gallery")
