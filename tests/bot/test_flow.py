"""Queueing, cancelling, failures and restarts, with a fake backend that can hold a job mid-run."""

from __future__ import annotations

import gc
from pathlib import Path

import discord
import pytest

from engine.errors import OutOfMemory
from storage import JobState


@pytest.fixture
def simcord_bot(make_gated_bot, gated):
    return make_gated_bot()


@pytest.fixture
def world(simcord_env, gated):
    gated.env = simcord_env
    guild = simcord_env.create_guild()
    channel = guild.create_text_channel("art")
    mods = guild.create_role("Mods", permissions=discord.Permissions(manage_messages=True))
    users = {name: guild.add_member(simcord_env.create_user(name)) for name in ("alice", "bob", "carol")}
    users["mod"] = guild.add_member(simcord_env.create_user("mod"), roles=[mods])
    return guild, channel, users


def _status(thread, job_id):
    return next(m for m in thread.history() if m.embeds and m.embeds[0].title.startswith(f"#{job_id} ·"))


async def test_cancel_is_for_the_author_or_a_moderator(simcord_env, world, gated):
    guild, channel, u = world
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="a castle")
    [thread] = channel.threads
    status = _status(thread, 1)
    assert [c.label for row in status.components for c in row.children] == ["Cancel", "Steer"]
    refused = await u["bob"].click(status, label="Cancel")
    assert refused.ephemeral and "Only the member who asked" in refused.response.content
    assert (await simcord_env.bot.store.get_job(1)).state == JobState.RUNNING
    ok = await u["alice"].click(status, label="Cancel")
    assert ok.ephemeral and "Cancelling #1" in ok.response.content
    gated.release(1)
    await simcord_env.settle()
    job = await simcord_env.bot.store.get_job(1)
    assert job.state == JobState.CANCELLED and job.steps_done == 1
    assert any("was cancelled at step 1" in m.content for m in thread.history())
    assert _status(thread, 1).components == []


async def test_moderator_cancels_a_waiting_job(simcord_env, world, gated):
    guild, channel, u = world
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="first")
    await u["bob"].slash(channel, "imagine", prompt="second")
    assert gated.started == [1]
    queue = await u["carol"].slash(channel, "queue")
    assert "▶️ #1" in queue.response.content and "1. #2" in queue.response.content
    queued = next(m for m in channel.history() if m.content.startswith("Queued #2"))
    refused = await u["carol"].click(queued, label="Cancel")
    assert "Only the member who asked" in refused.response.content
    done = await u["mod"].click(queued, label="Cancel")
    assert done.ephemeral and "Cancelling #2" in done.response.content
    assert (await simcord_env.bot.store.get_job(2)).state == JobState.CANCELLED
    assert any("#2 was cancelled before it started" in m.content for m in channel.threads[1].history())
    gated.release(1)
    await simcord_env.settle()
    assert gated.started == [1]  # the cancelled job never ran


async def test_members_take_turns_and_limits_answer_clearly(simcord_env, world, gated):
    guild, channel, u = world
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="a1")  # job 1 runs and is held
    await u["alice"].slash(channel, "imagine", prompt="a2")
    await simcord_env.advance_time(10)
    await u["alice"].slash(channel, "imagine", prompt="a3")
    over = await u["alice"].slash(channel, "imagine", prompt="a4")
    assert over.ephemeral and over.response.content == (
        "You already have 2 images waiting; wait until one starts, or cancel one, then try again."
    )
    await u["bob"].slash(channel, "imagine", prompt="b1")
    gated.hold = False
    gated.release(1)
    await simcord_env.settle()
    # bob's single job is not stuck behind alice's line
    assert gated.started == [1, 2, 4, 3]
    jobs = [await simcord_env.bot.store.get_job(i) for i in (1, 2, 3, 4)]
    assert all(j.state == JobState.DONE for j in jobs)


async def test_engine_failure_is_shown_in_the_thread_and_the_bot_stays_up(simcord_env, world, gated):
    guild, channel, u = world
    gated.fail_with = OutOfMemory("The GPU ran out of memory at 512x512 with 32 cutouts. Try a smaller size.")
    await u["alice"].slash(channel, "imagine", prompt="huge")
    [thread] = channel.threads
    assert any(m.content.startswith("❌ #1 failed: The GPU ran out of memory") for m in thread.history())
    job = await simcord_env.bot.store.get_job(1)
    assert job.state == JobState.FAILED and "ran out of memory" in job.error
    gated.fail_with = None
    await u["bob"].slash(channel, "imagine", prompt="small")
    assert (await simcord_env.bot.store.get_job(2)).state == JobState.DONE


async def test_restart_mid_run_resumes_and_buttons_and_votes_survive(simcord_env, world, gated, make_gated_bot):
    guild, channel, u = world
    await u["alice"].slash(channel, "imagine", prompt="finished before the restart")
    [thread1] = channel.threads
    final = next(m for m in thread1.history() if m.attachments and m.embeds)
    gated.hold = True
    await simcord_env.advance_time(10)
    await u["bob"].slash(channel, "imagine", prompt="running at the crash")
    await u["carol"].slash(channel, "imagine", prompt="waiting at the crash")
    running = await simcord_env.bot.store.get_job(2)
    assert running.state == JobState.RUNNING and running.snapshot_path

    gated.hold = False
    gated.gates.clear()
    await simcord_env.restart_bot(make_gated_bot())
    await simcord_env.settle()
    store = simcord_env.bot.store
    # the running job resumed from its snapshot and finished in the same thread; the queued one ran too
    assert gated.resumed[2] == b"snapshot of job 2 at 1"  # the saved state's bytes, not a path
    assert Path(running.snapshot_path).read_bytes() == gated.resumed[2]
    job2, job3 = await store.get_job(2), await store.get_job(3)
    assert job2.state == JobState.DONE and job2.thread_id == running.thread_id
    assert job3.state == JobState.DONE
    thread2 = next(t for t in channel.threads if t.id == running.thread_id)
    assert any(m.attachments and m.embeds and m.embeds[0].title == "#2" for m in thread2.history())
    events = [s for s, _, _ in await store.events(2)]
    assert events == ["queued", "running", "queued", "running", "posting", "done"]

    # buttons on a message posted before the restart still work; votes still count
    await u["bob"].click(final, label="Reroll")
    assert (await store.get_job(4)).kind == "reroll"
    await u["carol"].react(final, "👍")
    assert await store.vote_total(1) == 1


async def test_no_thread_permission_falls_back_to_the_channel(simcord_env, world, gated):
    guild, channel, u = world
    await simcord_env.bot.store.update_guild_settings(guild.id, max_queued_per_user=None, use_threads=False)
    await u["alice"].slash(channel, "imagine", prompt="in the channel")
    assert channel.threads == []
    job = await simcord_env.bot.store.get_job(1)
    assert job.thread_id is None and job.state == JobState.DONE
    assert any(m.attachments and m.embeds and m.embeds[0].title == "#1" for m in channel.history())


async def test_steer_a_running_job(simcord_env, world, gated):
    import json

    guild, channel, u = world
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="a castle | fog:0.5")
    [thread] = channel.threads
    status = _status(thread, 1)
    refused = await u["bob"].click(status, label="Steer")
    assert refused.ephemeral and "Only the member who asked" in refused.response.content
    shown = await u["alice"].click(status, label="Steer")
    assert shown.modal is not None and "Steer" in shown.modal["title"]
    bad = await u["alice"].submit_modal(shown, {"prompt": "oops:1,5"})
    assert bad.ephemeral and "is not a number" in bad.response.content
    shown = await u["alice"].click(status, label="Steer")
    done = await u["alice"].submit_modal(shown, {"prompt": "a ruined castle at dawn"})
    assert "now aims at **a ruined castle at dawn** from step 1" in done.response.content
    assert gated.steered == [(1, "a ruined castle at dawn")]
    spec = json.loads((await simcord_env.bot.store.get_job(1)).spec_json)
    assert spec["prompt_schedule"] == [[1, "a ruined castle at dawn"]] and spec["prompt"] == "a castle | fog:0.5"
    gated.release(1)
    await simcord_env.settle()
    assert (await simcord_env.bot.store.get_job(1)).state == JobState.DONE
    late = await u["alice"].click(status, label="Steer") if _status(thread, 1).components else None
    assert late is None  # the buttons are gone once the job ends


async def _room_for_three(env, guild):
    """Every candidate of a tournament is a waiting job: this server lets a member have 3 waiting."""
    await env.bot.store.update_guild_settings(guild.id, max_queued_per_user=3, use_threads=True)


def _grid(channel):
    return next(
        m
        for t in channel.threads
        for m in t.history()
        if m.content.startswith("<@") and m.attachments and m.attachments[0].filename.startswith("tournament-")
    )


async def test_tournament_survives_a_restart_and_the_author_picks(simcord_env, world, gated, make_gated_bot):
    import json

    guild, channel, u = world
    gated.hold = True
    await _room_for_three(simcord_env, guild)
    await u["alice"].slash(channel, "imagine", prompt="a lighthouse in a storm", candidates=3)
    store = simcord_env.bot.store
    assert gated.started == [1]  # one at a time here; the others wait their turn
    tournament = await store.get_tournament(1)
    assert tournament.state == "running" and tournament.thread_id is not None
    specs = [json.loads(j.spec_json) for j in await store.tournament_jobs(1)]
    assert [s["steps"] for s in specs] == [4, 4, 4] and len({s["seed"] for s in specs}) == 3

    gated.hold = False
    gated.gates.clear()
    await simcord_env.restart_bot(make_gated_bot())  # a crash while candidate 1 runs
    await simcord_env.settle()
    store = simcord_env.bot.store
    tournament = await store.get_tournament(1)
    assert tournament.state == "voting" and tournament.grid_message_id
    grid = _grid(channel)
    assert [c.label for row in grid.components for c in row.children] == ["1", "2", "3"]
    assert [str(r.emoji) for r in grid.reactions] == ["1️⃣", "2️⃣", "3️⃣"]
    refused = await u["bob"].click(grid, label="2")
    assert refused.ephemeral and "Only the member who started" in refused.response.content

    await u["alice"].click(grid, label="2")
    tournament = await store.get_tournament(1)
    assert (tournament.state, tournament.chosen, tournament.decided_by) == ("decided", 2, "author")
    winner = (await store.tournament_jobs(1))[1]
    going_on = await store.get_job(4)
    assert going_on.kind == "continue" and going_on.parent_id == winner.id and going_on.state == JobState.DONE
    assert json.loads(going_on.spec_json)["steps"] == 10 and json.loads(going_on.spec_json)["seed"] == specs[1]["seed"]
    assert any(
        m.content.startswith("Candidate 2 goes on (picked by the author) → #4")
        for m in next(t for t in channel.threads if t.id == tournament.thread_id).history()
    )
    assert _grid(channel).components == []  # no more picking
    top = await u["bob"].slash(channel, "top", period="all time")
    assert top.response.embeds[0].description.count("**") == 2  # only the finished winner, not the candidates


async def test_tournament_goes_to_the_most_voted_after_the_wait(simcord_env, world, gated):
    guild, channel, u = world
    await u["alice"].slash(channel, "imagine", prompt="a quiet harbour", candidates=2)
    store = simcord_env.bot.store
    assert (await store.get_tournament(1)).state == "voting"
    grid = _grid(channel)
    await u["bob"].react(grid, "2️⃣")
    await u["carol"].react(grid, "2️⃣")
    await u["alice"].react(grid, "1️⃣")
    await simcord_env.advance_time(61)
    tournament = await store.get_tournament(1)
    assert (tournament.state, tournament.chosen, tournament.decided_by) == ("decided", 2, "votes")
    assert (await store.get_job(3)).state == JobState.DONE


async def test_cancel_a_tournament(simcord_env, world, gated):
    guild, channel, u = world
    gated.hold = True
    await _room_for_three(simcord_env, guild)
    await u["alice"].slash(channel, "imagine", prompt="a harbour at dusk", candidates=3)
    store = simcord_env.bot.store
    started = next(m for m in channel.history() if m.content.startswith("Tournament · 3 seeds"))
    refused = await u["bob"].click(started, label="Cancel")
    assert refused.ephemeral and "Only the member who started" in refused.response.content
    await u["mod"].click(started, label="Cancel")  # a moderator may
    gated.release(1)
    await simcord_env.settle()
    assert [j.state for j in await store.tournament_jobs(1)] == [JobState.CANCELLED] * 3
    assert (await store.get_tournament(1)).state == "failed"
    [thread] = channel.threads
    assert any("No candidate of this tournament finished" in m.content for m in thread.history())
    late = await u["alice"].click(started, label="Cancel")
    assert late.ephemeral and "first stage is over" in late.response.content


async def test_a_button_that_fails_answers_with_a_sentence(simcord_env, world, gated, monkeypatch, caplog):
    guild, channel, u = world
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="a castle")
    [thread] = channel.threads
    status = _status(thread, 1)

    async def broken(job_id, *where):
        raise RuntimeError("the disk at /srv/imagine is on fire")

    monkeypatch.setattr(simcord_env.bot.jobs, "get_here", broken)
    clicked = await u["alice"].click(status, label="Cancel")
    assert clicked.ephemeral and "Something went wrong" in clicked.response.content
    assert "/srv" not in clicked.response.content
    assert any("button CancelButton failed" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    gated.release(1)
    await simcord_env.settle()
    assert (await simcord_env.bot.store.get_job(1)).state == JobState.DONE


async def test_describe_says_so_where_the_engine_is_not_in_the_bot(simcord_env, world, gated):
    """The gated backend, like the celery one, has no engine in this process: a sentence, not a failure."""
    guild, channel, u = world
    answer = await u["alice"].slash(channel, "describe", image=("holiday.png", b"\x89PNG not really"))
    assert answer.ephemeral and "needs the engine in the bot's own process" in answer.response.content


async def test_the_presenter_keeps_nothing_of_ended_jobs(simcord_env, world, gated):
    """The presenter's books of a job (its status's age, its pacing, its last scores) go when the job ends: a bot that
    runs for weeks must not keep a little of every job (the soak measured the growth)."""
    guild, channel, u = world
    plan = [("alice", "done"), ("bob", "done"), ("carol", "cancelled"), ("mod", "done")]  # one each: the cooldown
    for i, (member, state) in enumerate(plan):
        gated.hold = state == "cancelled"
        await u[member].slash(channel, "imagine", prompt=f"a castle {i}")
        if state == "cancelled":
            status = next(
                m
                for t in channel.threads
                for m in t.history()
                if m.embeds and m.embeds[0].title.startswith(f"#{i + 1} ·")
            )
            await u[member].click(status, label="Cancel")
            gated.release(i + 1)
        await simcord_env.settle()
    states = [(await simcord_env.bot.store.get_job(i + 1)).state for i in range(4)]
    assert states == [JobState.DONE, JobState.DONE, JobState.CANCELLED, JobState.DONE]
    presenter = simcord_env.bot.presenter
    assert not presenter._status_born and not presenter._similarity and not presenter._prompt
    assert not presenter.pacer._asking and not presenter.pacer._channel and not presenter.pacer._last_edit


async def test_results_and_votes_leave_no_message_behind(simcord_env, world, gated):
    """The bot keeps no copies of Discord messages: it reads votes from raw reaction events and fetches a message when
    it needs one. discord.py's message cache held the last 1,000 messages for nothing, and each result with its vote
    reactions became a reference cycle when dropped from it, freed only by a full garbage collection."""
    guild, channel, u = world
    await u["alice"].slash(channel, "imagine", prompt="a lighthouse")
    await simcord_env.settle()
    assert (await simcord_env.bot.store.get_job(1)).state == JobState.DONE
    [thread] = channel.threads
    thread_id = thread.id
    result = next(m for m in thread.history() if m.attachments)
    await u["bob"].react(result, "👍")
    await simcord_env.settle()
    assert await simcord_env.bot.store.vote_total(1) == 1  # votes come from raw reaction events
    assert list(simcord_env.bot.cached_messages) == []
    del result, thread  # this test's own copies
    gc.collect()
    alive = [
        o for o in gc.get_objects() if issubclass(type(o), discord.Message) and o.channel.id in (channel.id, thread_id)
    ]
    assert alive == []  # the bot's own, freed as soon as it was done with them
