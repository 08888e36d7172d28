"""What members can make the bot do to others: ping everyone, read DM prompts, flood the queue, stuff votes."""

from __future__ import annotations

import asyncio

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


async def _drain(env, gated):
    """Let every held and waiting job finish, so that the test ends with nothing in flight."""
    gated.hold = False
    for job_id in list(gated.gates):
        gated.release(job_id)
    await env.settle()


def _final(thread, job_id):
    return next(m for m in thread.history() if m.attachments and m.embeds and m.embeds[0].title == f"#{job_id}")


async def _burst(env, actor, message, label, times):
    """`times` clicks on one button that all reach the bot before it has answered any (a script, a fast
    double-clicker): the INTERACTION_CREATE events are emitted together, then the bot runs them concurrently."""
    from simcord import interactions
    from simcord.backend import serializers

    backend = env.backend
    stored = backend.get_message(message.channel.id, message.id)
    button = next(c for row in stored.components for c in row["components"] if c.get("label") == label)
    for _ in range(times):
        record, payload = interactions.base_payload(
            backend,
            type=3,  # a component interaction
            channel_id=stored.channel_id,
            guild_id=actor.guild.id,
            user_id=actor.id,
            data={"custom_id": button["custom_id"], "component_type": 2},
        )
        payload["message"] = dict(serializers.message_payload(backend, stored))
        record.source_message_id = stored.id
        backend.emit("INTERACTION_CREATE", payload)
    await env.settle()


async def test_a_burst_of_reroll_clicks_queues_at_most_the_cap(simcord_env, world, gated):
    guild, channel, role, u = world
    await u["alice"].slash(channel, "imagine", prompt="a lighthouse")
    final = _final(channel.threads[0], 1)
    gated.hold = True
    await u["bob"].slash(channel, "imagine", prompt="keeps the painter busy")  # job 2 runs and is held
    await simcord_env.bot.store.update_guild_settings(guild.id, max_queued_per_user=1, use_threads=True)
    await simcord_env.advance_time(10)  # her /imagine no longer counts against the cooldown
    await _burst(simcord_env, u["alice"], final, "Reroll", 12)
    store = simcord_env.bot.store
    rerolls = [j for j in [await store.get_job(i) for i in range(3, 20)] if j is not None]
    assert len(rerolls) == 1 and all(j.state == JobState.QUEUED and j.kind == "reroll" for j in rerolls)
    assert simcord_env.bot.jobs.queue.waiting_for(u["alice"].id) == 1
    transcript = simcord_env.transcript()
    assert "You already have 1 image waiting" in transcript  # the second click that passed the cooldown
    assert "Slow down a little" in transcript  # the rest
    await _drain(simcord_env, gated)


async def test_job_buttons_have_a_per_member_cooldown(simcord_env, world, gated):
    guild, channel, role, u = world
    await simcord_env.bot.store.update_guild_settings(guild.id, max_queued_per_user=10, use_threads=True)
    await u["alice"].slash(channel, "imagine", prompt="a lighthouse")
    final = _final(channel.threads[0], 1)
    gated.hold = True
    results = [await u["bob"].click(final, label="Reroll") for _ in range(3)]  # the /imagine cooldown: 2 per 10 s
    assert [r.ephemeral for r in results] == [False, False, True]
    assert results[-1].response.content.startswith("Slow down a little: try again in")
    assert await simcord_env.bot.store.get_job(4) is None
    other = await u["carol"].click(final, label="Reroll")  # per member: carol is not slowed by bob
    assert not other.ephemeral
    await simcord_env.advance_time(10)
    assert not (await u["bob"].click(final, label="Reroll")).ephemeral
    await _drain(simcord_env, gated)


async def test_every_tournament_candidate_counts_against_the_cap(simcord_env, world, gated):
    guild, channel, role, u = world
    gated.hold = True
    await u["bob"].slash(channel, "imagine", prompt="keeps the painter busy")
    await u["alice"].slash(channel, "imagine", prompt="one waiting")
    await simcord_env.advance_time(10)
    refused = await u["alice"].slash(channel, "imagine", prompt="a harbour", candidates=9)
    assert refused.ephemeral and refused.response.content.startswith(
        "A tournament of 9 seeds needs 9 places in your waiting line; you have 1 free (at most 2 images"
    )
    store = simcord_env.bot.store
    assert await store.get_job(3) is None and await store.get_tournament(1) is None
    await simcord_env.advance_time(10)
    ok = await u["carol"].slash(channel, "imagine", prompt="a harbour", candidates=2)
    assert not ok.ephemeral and [j.state for j in await store.tournament_jobs(2)] == [JobState.QUEUED] * 2
    assert simcord_env.bot.jobs.queue.waiting_for(u["carol"].id) == 2
    await _drain(simcord_env, gated)


async def test_top_in_dms_does_not_show_other_members_dm_prompts(simcord_env, world, gated):
    guild, channel, role, u = world
    store = simcord_env.bot.store
    for author, prompt in ((u["alice"], "alice's secret"), (u["bob"], "bob's own")):
        job = await store.create_job(guild_id=None, channel_id=1, author_id=author.id, spec_json='{"prompt": "x"}')
        await store.update_job(job.id, spec_json=f'{{"prompt": "{prompt}", "steps": 10}}')
        await store.set_state(job.id, JobState.DONE, score=0.5)
    result = await u["bob"].user.slash("top", period="all time")
    text = result.response.embeds[0].description
    assert "bob's own" in text and "alice's secret" not in text


async def test_reactions_from_bots_never_count_as_votes(simcord_env, world, gated):
    guild, channel, role, u = world
    robot = guild.add_member(simcord_env.create_user("votebot", bot=True))
    await u["alice"].slash(channel, "imagine", prompt="a lighthouse")
    final = _final(channel.threads[0], 1)
    await robot.react(final, "👍")
    await u["bob"].react(final, "👍")
    assert await simcord_env.bot.store.vote_total(1) == 1
    await robot.unreact(final, "👍")
    assert await simcord_env.bot.store.vote_total(1) == 1


async def test_bots_do_not_vote_in_tournaments(simcord_env, world, gated):
    guild, channel, role, u = world
    robots = [guild.add_member(simcord_env.create_user(f"votebot{i}", bot=True)) for i in range(2)]
    await u["alice"].slash(channel, "imagine", prompt="a quiet harbour", candidates=2)
    store = simcord_env.bot.store
    grid = next(m for t in channel.threads for m in t.history() if m.content.startswith(f"<@{u['alice'].id}> the"))
    for robot in robots:
        await robot.react(grid, "2️⃣")
    await u["bob"].react(grid, "1️⃣")
    await simcord_env.advance_time(61)
    tournament = await store.get_tournament(1)
    assert (tournament.state, tournament.chosen, tournament.decided_by) == ("decided", 1, "votes")


async def test_simultaneous_submissions_cannot_overshoot_the_cap(tmp_path):
    """The job service's own race: submissions that all pass a check before any of them is recorded."""
    from bot.jobs import JobService, Origin
    from bot.queue import Cooldown, QueueFull
    from engine.spec import JobSpec
    from storage import Store
    from tests.bot.conftest import GatedBackend

    store = await Store.open(tmp_path / "db.sqlite")
    try:
        # the cooldown let through: the caps alone must hold (the store checks them in the statement that records)
        service = JobService(
            store, GatedBackend(), presenter=None, data_dir=tmp_path, max_queued_per_user=2, cooldown=(100, 10.0)
        )
        spec = JobSpec("a castle", steps=10)

        async def admit():  # the door without the start (there is no backend here)
            service.enqueue(job := await service.admit(Origin(1, 2, 3), spec))
            return job

        results = await asyncio.gather(*(admit() for _ in range(12)), return_exceptions=True)
        assert sum(not isinstance(r, Exception) for r in results) == 2
        assert all(
            isinstance(r, QueueFull) and not isinstance(r, Cooldown) for r in results if isinstance(r, Exception)
        )
        assert service.queue.waiting_for(3) == 2 and await store.waiting(3) == (2, 2)
    finally:
        await store.close()
