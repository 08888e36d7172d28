"""What members can make the bot do to others: ping everyone, read DM prompts, flood the queue, stuff votes."""

from __future__ import annotations

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
    role = guild.create_role("Artists", mentionable=True)
    users = {name: guild.add_member(simcord_env.create_user(name)) for name in ("alice", "bob", "carol")}
    return guild, channel, role, users


def _sent(env, channel):
    """Every message the bot left in `channel` and its threads, as simcord's backend recorded it."""
    backend = env.backend
    bot_id = env.bot.user.id
    ids = [channel.id, *(t.id for t in channel.threads)]
    return [m for cid in ids for m in backend.messages.get(cid, {}).values() if m.author_id == bot_id]


def _assert_pings_at_most(messages, allowed_user_ids):
    assert messages
    for m in messages:
        assert not m.mention_everyone, m.content
        assert m.ping_role_ids == [], m.content
        assert set(m.ping_user_ids) <= set(allowed_user_ids), m.content


async def test_prompt_and_steer_text_ping_nobody_but_the_author(simcord_env, world, gated):
    guild, channel, role, u = world
    bob = u["bob"]
    gated.hold = True
    evil = f"@everyone @here {bob.mention} <@&{role.id}> a castle"
    await u["alice"].slash(channel, "imagine", prompt=evil)
    [thread] = channel.threads
    status = next(m for m in thread.history() if m.embeds and m.embeds[0].title.startswith("#1 ·"))
    shown = await u["alice"].click(status, label="Steer")
    await u["alice"].submit_modal(shown, {"prompt": f"@everyone {bob.mention} <@&{role.id}> ruins"})
    gated.release(1)
    await simcord_env.settle()
    assert (await simcord_env.bot.store.get_job(1)).state == JobState.DONE
    sent = _sent(simcord_env, channel)
    assert any(evil in m.content for m in sent)  # the text is shown as written...
    _assert_pings_at_most(sent, {u["alice"].id})  # ...but pings only the author (the "ready" line)
    ready = next(m for m in sent if m.content.endswith("your image is ready."))
    assert ready.ping_user_ids == [u["alice"].id]


async def test_tournament_grid_pings_only_its_author(simcord_env, world, gated):
    guild, channel, role, u = world
    await u["alice"].slash(channel, "imagine", prompt=f"@everyone {u['bob'].mention} <@&{role.id}> ships", candidates=2)
    grid = next(m for m in _sent(simcord_env, channel) if m.content.startswith(f"<@{u['alice'].id}> the candidates"))
    assert u["bob"].mention in grid.content
    assert grid.ping_user_ids == [u["alice"].id] and grid.ping_role_ids == [] and not grid.mention_everyone
    _assert_pings_at_most(_sent(simcord_env, channel), {u["alice"].id})
