"""Running the bot for a community, through simcord: /settings, blocked words, the output check, Delete, DMs."""

from __future__ import annotations

import discord
import pytest

from storage import JobState


@pytest.fixture
def simcord_bot(make_gated_bot, gated):
    return make_gated_bot()


@pytest.fixture
def world(simcord_env, gated):
    gated.env = simcord_env
    guild = simcord_env.create_guild()
    channel = guild.create_text_channel("art")
    other = guild.create_text_channel("general")
    admins = guild.create_role("Admins", permissions=discord.Permissions(manage_guild=True))
    mods = guild.create_role("Mods", permissions=discord.Permissions(manage_messages=True))
    users = {name: guild.add_member(simcord_env.create_user(name)) for name in ("alice", "bob")}
    users["admin"] = guild.add_member(simcord_env.create_user("admin"), roles=[admins])
    users["mod"] = guild.add_member(simcord_env.create_user("mod"), roles=[mods])
    return guild, channel, other, users


def _text(result) -> str:
    message = result.response
    parts = [message.content or ""]
    for embed in message.embeds:
        parts += [embed.title or "", embed.description or ""] + [f"{f.name}: {f.value}" for f in embed.fields]
    return "\n".join(parts)


def _result_message(thread, job_id: int):
    return next(m for m in thread.history() if f"imagine:reroll:{job_id}:" in _components(m))


def _components(message) -> str:
    return " ".join(getattr(c, "custom_id", "") or "" for row in message.components for c in row.children)


async def test_an_admin_changes_a_limit_and_a_member_meets_it(simcord_env, world):
    guild, channel, other, u = world
    refused = await u["alice"].slash(channel, "settings limits", max_steps=20)
    assert refused.ephemeral and "Manage Server" in refused.response.content
    shown = await u["admin"].slash(channel, "settings limits", max_steps=20, default_steps=15, per_member=1)
    assert "at most 20" in _text(shown) and "default 15" in _text(shown)
    too_many = await u["alice"].slash(channel, "imagine", prompt="a castle", steps=30)
    assert too_many.ephemeral and "at most 20 steps" in too_many.response.content
    await u["alice"].slash(channel, "imagine", prompt="a castle")
    job = await simcord_env.bot.jobs.get(1)
    assert job.spec.steps == 15  # the server's default


async def test_channels_and_sizes_limit_where_and_what(simcord_env, world, gated):
    guild, channel, other, u = world
    await u["admin"].slash(channel, "settings channels", action="add", channel=channel)
    elsewhere = await u["alice"].slash(other, "imagine", prompt="a castle")
    await simcord_env.advance_time(10)  # past the /imagine cooldown (refusals count as tries)
    assert elsewhere.ephemeral and f"<#{channel.id}>" in elsewhere.response.content
    await u["admin"].slash(channel, "settings sizes", allowed="square, portrait")
    wide = await u["alice"].slash(channel, "imagine", prompt="a castle", size="wide")
    assert wide.ephemeral and "square, portrait" in wide.response.content
    assert await simcord_env.bot.jobs.get(1) is None
    await simcord_env.advance_time(10)
    await u["alice"].slash(channel, "imagine", prompt="a castle", size="portrait")
    assert (await simcord_env.bot.jobs.get(1)).state == JobState.DONE
    await u["admin"].slash(channel, "settings channels", action="everywhere")
    await simcord_env.advance_time(10)
    await u["alice"].slash(other, "imagine", prompt="a tower")
    assert await simcord_env.bot.jobs.get(2) is not None


async def test_a_server_wide_cap_counts_every_member(simcord_env, world, gated):
    guild, channel, other, u = world
    await u["admin"].slash(channel, "settings limits", server_queue=1)
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="runs")  # job 1 runs and is held
    await u["alice"].slash(channel, "imagine", prompt="waits")  # job 2 waits: the server's one place
    refused = await u["bob"].slash(channel, "imagine", prompt="no room")
    assert refused.ephemeral and "This server allows 1 image waiting" in refused.response.content
    gated.hold = False
    gated.release(1)
    await simcord_env.settle()


async def test_a_blocked_word_is_refused_without_being_echoed(simcord_env, world, gated):
    guild, channel, other, u = world
    added = await u["admin"].slash(channel, "settings words", action="add", word="ogre")
    assert added.response.content == "Blocked."
    for prompt in ("a green OGRE in a swamp", "an o.g.r.e at dawn", "an ógre", "an o\u200bgre"):
        refused = await u["alice"].slash(channel, "imagine", prompt=prompt)
        await simcord_env.advance_time(10)
        assert refused.ephemeral and "does not allow" in refused.response.content, prompt
        assert "ogre" not in refused.response.content.lower()
    assert await simcord_env.bot.jobs.get(1) is None
    await u["alice"].slash(channel, "imagine", prompt="a programmer")  # "ogre" inside a word is not the word
    assert (await simcord_env.bot.jobs.get(1)).state == JobState.DONE
    await simcord_env.advance_time(10)
    # Steer text is screened too
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="a lake")
    [thread] = [t for t in channel.threads if t.name.startswith("#2")]
    status = next(m for m in thread.history() if m.embeds and m.embeds[0].title.startswith("#2 ·"))
    shown = await u["alice"].click(status, label="Steer")
    steered = await u["alice"].submit_modal(shown, {"prompt": "an ogre"})
    assert "does not allow" in steered.response.content and gated.steered == []
    gated.release(2)
    await simcord_env.settle()
    # the built-in list is on by default and can be turned off
    listed = await u["admin"].slash(channel, "settings words", action="list")
    assert "||ogre||" in listed.response.content
    removed = await u["admin"].slash(channel, "settings words", action="remove", word="ogre")
    assert removed.response.content == "Unblocked."


@pytest.mark.parametrize(
    ("level", "unsafe", "shown"),
    [
        ("spoiler", 0.9, "spoiler"),
        ("spoiler", 0.1, "plain"),
        ("withhold", 0.9, "withheld"),
        ("withhold", 0.4, "plain"),
        ("strict", 0.4, "withheld"),
        ("off", 0.99, "plain"),
    ],
)
async def test_a_flagged_image_is_spoilered_or_withheld_per_level(simcord_env, world, gated, level, unsafe, shown):
    guild, channel, other, u = world
    await u["admin"].slash(channel, "settings moderation", level=level)
    gated.unsafe = unsafe
    await u["alice"].slash(channel, "imagine", prompt="a castle")
    job = await simcord_env.bot.jobs.get(1)
    assert job.state == JobState.DONE and job.spec.moderation == level
    [thread] = channel.threads
    ready = _result_message(thread, 1)
    if shown == "withheld":
        assert "withheld" in ready.content and not ready.attachments
        assert job.moderation == "withhold"
    else:
        [attachment] = ready.attachments
        assert attachment.filename.startswith("SPOILER_") == (shown == "spoiler")
        assert bool(ready.embeds[0].image.url) == (shown == "plain")
    events = [e for e in await simcord_env.bot.store.events(1) if e[0] == "moderation"]
    assert (len(events) == 1) == (level != "off")  # every decision is logged in the job's events
    top = await u["bob"].slash(channel, "top", period="all time")
    assert ("a castle" in _text(top)) == (shown != "withheld")


async def test_delete_by_author_and_by_moderator_and_refused_for_others(simcord_env, world, gated):
    guild, channel, other, u = world
    await u["alice"].slash(channel, "imagine", prompt="a red fox")
    await u["bob"].slash(channel, "imagine", prompt="a blue whale")
    threads = {t.name[:2]: t for t in channel.threads}
    first, second = _result_message(threads["#1"], 1), _result_message(threads["#2"], 2)
    await u["bob"].react(first, "👍")
    refused = await u["bob"].click(first, label="Delete")
    assert refused.ephemeral and "Only the image's author" in refused.response.content
    done = await u["alice"].click(first, label="Delete")
    assert done.response.content == "Deleted #1."
    assert first.id not in simcord_env.backend.messages.get(threads["#1"].id, {})
    await simcord_env.advance_time(10)
    by_mod = await u["mod"].click(second, label="Delete")
    assert by_mod.response.content == "Deleted #2."
    job = await simcord_env.bot.jobs.get(1)
    assert job.deleted_by == u["alice"].id and job.state == JobState.DONE  # the record stays
    assert not (simcord_env.bot.settings.data_dir / "images" / "1.png").exists()
    top = await u["bob"].slash(channel, "top", period="all time")
    assert "a red fox" not in _text(top) and "a blue whale" not in _text(top)


async def test_finished_images_come_by_dm_for_members_who_ask(simcord_env, world, gated):
    guild, channel, other, u = world
    answer = await u["alice"].slash(channel, "settings me", dm=True)
    assert "by DM" in answer.response.content
    await u["alice"].slash(channel, "imagine", prompt="a castle")
    dms = _dms(simcord_env, u["alice"])
    assert len(dms) == 1 and dms[0].attachments and "#1" in dms[0].content
    await u["bob"].slash(channel, "imagine", prompt="a tower")  # bob did not ask
    assert not _dms(simcord_env, u["bob"])


def _dms(env, member):
    channel = env.backend.get_dm_channel(member.id)
    return [m for m in env.backend.messages.get(channel.id, {}).values() if m.author_id == env.bot.user.id]


async def test_closed_dms_are_said_in_the_thread(simcord_env, world, gated, monkeypatch):
    """Discord answers 50007 to a DM the member's privacy settings refuse: the stand-in's send route does so here."""
    from simcord.backend import errors
    from simcord.http.routes import messages

    guild, channel, other, u = world
    await u["alice"].slash(channel, "settings me", dm=True)
    dm_id = simcord_env.backend.get_dm_channel(u["alice"].id).id
    real = messages._send_permissions

    def closed(ctx, channel_id):
        if channel_id == dm_id:
            raise errors.cannot_dm_bot()  # the same 403 / 50007 "Cannot send messages to this user"
        return real(ctx, channel_id)

    monkeypatch.setattr(messages, "_send_permissions", closed)
    await u["alice"].slash(channel, "imagine", prompt="a castle")
    assert (await simcord_env.bot.jobs.get(1)).state == JobState.DONE
    [thread] = channel.threads
    assert any("could not send #1 by DM" in m.content for m in thread.history())
    assert not _dms(simcord_env, u["alice"])


def test_every_moderation_level_is_a_choice_that_explains_itself():
    from cogs.settings import MODERATION_CHOICES
    from engine.moderation import LEVELS

    assert [c.value for c in MODERATION_CHOICES] == list(LEVELS)
    assert all(c.name.startswith(f"{c.value}: ") and len(c.name) <= 100 for c in MODERATION_CHOICES)
