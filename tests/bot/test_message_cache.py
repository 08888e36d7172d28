"""The bot keeps no copies of Discord messages: it reads votes from raw reaction events and fetches a message when it
needs one, so discord.py's message cache only held the last 1,000 messages for nothing, and each result with its vote
reactions became a reference cycle when dropped from it, freed only by a full garbage collection."""

from __future__ import annotations

import gc

import discord
import pytest

from storage import JobState


@pytest.fixture
def simcord_bot(make_gated_bot, gated):
    return make_gated_bot()


async def test_results_and_votes_leave_no_message_behind(simcord_env, gated):
    gated.env = simcord_env
    guild = simcord_env.create_guild()
    channel = guild.create_text_channel("art")
    alice = guild.add_member(simcord_env.create_user("alice"))
    bob = guild.add_member(simcord_env.create_user("bob"))
    await alice.slash(channel, "imagine", prompt="a lighthouse")
    await simcord_env.settle()
    assert (await simcord_env.bot.store.get_job(1)).state == JobState.DONE
    [thread] = channel.threads
    thread_id = thread.id
    result = next(m for m in thread.history() if m.attachments)
    await bob.react(result, "👍")
    await simcord_env.settle()
    assert await simcord_env.bot.store.vote_total(1) == 1  # votes come from raw reaction events
    assert list(simcord_env.bot.cached_messages) == []
    del result, thread  # this test's own copies
    gc.collect()
    alive = [
        o for o in gc.get_objects() if issubclass(type(o), discord.Message) and o.channel.id in (channel.id, thread_id)
    ]
    assert alive == []  # the bot's own, freed as soon as it was done with them
