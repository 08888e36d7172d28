"""/stats server and /stats me through simcord: staff see the server's figures, members their own; the jobs are real
runs of the gated fake backend, their running times set afterwards so that the ranking is the test's."""

from __future__ import annotations

import discord
import pytest

from cogs.stats import span
from storage import JobState


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


def _text(result) -> str:
    message = result.response
    parts = [message.content or ""]
    for embed in message.embeds:
        parts += [embed.title or "", embed.description or ""] + [f"{f.name}: {f.value}" for f in embed.fields]
    return "\n".join(parts)


async def _ran(bot, job_id: int, seconds: float, waited: float = 30.0) -> None:
    """Make job `job_id`'s run have waited `waited` s and taken `seconds` s, all of it in the last half hour."""
    await bot.store._db.execute(
        "UPDATE jobs SET created_at = created_at - 1800, started_at = created_at - 1800 + ?, "
        "finished_at = created_at - 1800 + ? + ? WHERE id = ?",
        (waited, waited, seconds, job_id),
    )
    await bot.store._db.commit()


async def test_staff_see_the_server_and_members_their_own(simcord_env, world, gated):
    guild, channel, u = world
    bot = simcord_env.bot
    for name, prompt in (("alice", "a castle"), ("alice", "a tower"), ("bob", "a moat")):
        await u[name].slash(channel, "imagine", prompt=prompt)
        await simcord_env.advance_time(10)  # past the cooldown
    for job_id, seconds in ((1, 300), (2, 200), (3, 100)):
        assert (await bot.jobs.get(job_id)).state == JobState.DONE
        await _ran(bot, job_id, seconds)
    gated.hold = True
    await u["bob"].slash(channel, "imagine", prompt="a drawbridge")  # job 4: held while it runs

    refused = await u["alice"].slash(channel, "stats server")
    assert refused.ephemeral and "Manage Server" in refused.response.content
    shown = await u["admin"].slash(channel, "stats server")
    text = _text(shown)
    assert shown.ephemeral
    assert "This week: **4** asked for · 3 finished · 1 running" in text
    alice, bob = u["alice"].id, u["bob"].id
    assert f"1. <@{alice}>: 8 min (2 runs)\n2. <@{bob}>: 2 min (1 run)" in text
    assert "This server: 0 waiting, 1 running" in text and "1 running of 1 at once" in text
    assert "(4 jobs started this week)" in text
    assert "3 images finished" in text and "10 min of running time" in text

    mine = _text(await u["alice"].slash(channel, "stats me"))
    assert "All time: **2** asked for · 2 finished" in mine
    assert "GPU time this week: 8 min in 2 run(s) · #1 of this server's members" in mine
    assert "30 s on average (2 jobs started this week)" in mine and "Yours: 0 waiting, 0 running" in mine
    bobs = _text(await u["bob"].slash(channel, "stats me"))
    assert "#2 of this server's members" in bobs and "Yours: 0 waiting, 1 running" in bobs
    gated.hold = False
    gated.release(4)


def test_spans_read_as_people_read_them():
    assert [span(s) for s in (None, 0, 42.4, 90, 3599, 3600, 3 * 3600 + 5 * 60)] == [
        "-",
        "0 s",
        "42 s",
        "2 min",
        "60 min",
        "1 h 00 min",
        "3 h 05 min",
    ]
