"""Losing nothing: a job whose post did not happen (or whose reply was lost) is posted exactly once after a
restart; a button from a deleted database is refused; a database that fails under the bot stops it."""

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
    users = {name: guild.add_member(simcord_env.create_user(name)) for name in ("alice", "bob")}
    return guild, channel, users


def _results(thread, job_id):
    """The result messages of a job: the bot's posts whose Reroll button names the job."""
    found = []
    for m in thread.history():
        ids = [getattr(c, "custom_id", "") or "" for row in m.components for c in row.children]
        if any(i.startswith(f"imagine:reroll:{job_id}:") for i in ids):
            found.append(m)
    return found


async def test_a_failed_upload_leaves_the_job_posting_and_the_restart_posts_it_once(
    simcord_env, world, gated, make_gated_bot
):
    guild, channel, u = world
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="a lighthouse")
    [thread] = channel.threads
    # the final upload fails (as when the process stops while it is on its way)
    simcord_env.inject_error("POST", f"/channels/{thread.id}/messages", status=503, times=None)
    gated.release(1)
    await simcord_env.settle()
    job = await simcord_env.bot.store.get_job(1)
    assert job.state == JobState.POSTING and job.image_path and job.result_message_id is None
    assert _results(thread, 1) == []
    simcord_env.backend.faults.clear()

    gated.hold = False
    await simcord_env.restart_bot(make_gated_bot())
    await simcord_env.settle()
    store = simcord_env.bot.store
    job = await store.get_job(1)
    [posted] = _results(thread, 1)
    assert job.state == JobState.DONE and job.result_message_id == posted.id
    assert [s for s, _, _ in await store.events(1)] == ["queued", "running", "posting", "done"]
    assert gated.started == [1]  # posted from the saved image, not computed again
    # buttons and votes work on it
    await u["bob"].react(posted, "👍")
    assert await store.vote_total(1) == 1
    await u["bob"].click(posted, label="Reroll")
    assert (await store.get_job(2)).kind == "reroll"


async def test_a_post_whose_reply_was_lost_is_found_not_posted_again(simcord_env, world, gated, make_gated_bot):
    guild, channel, u = world
    await u["alice"].slash(channel, "imagine", prompt="a harbour")
    [thread] = channel.threads
    [posted] = _results(thread, 1)
    store = simcord_env.bot.store
    # what a stop right after Discord made the message leaves: posting, no message id recorded
    await store.set_state(1, JobState.POSTING, result_message_id=None)

    await simcord_env.restart_bot(make_gated_bot())
    await simcord_env.settle()
    job = await simcord_env.bot.store.get_job(1)
    assert job.state == JobState.DONE and job.result_message_id == posted.id
    assert len(_results(thread, 1)) == 1


async def test_a_button_from_a_deleted_database_is_refused(simcord_env, world, gated, make_gated_bot, settings):
    guild, channel, u = world
    await u["alice"].slash(channel, "imagine", prompt="alice's secret castle")
    [old] = _results(channel.threads[0], 1)

    await simcord_env.restart_bot(make_gated_bot())
    await simcord_env.settle()
    await simcord_env.bot.store.close()
    for file in settings.data_dir.glob("imagine.sqlite*"):
        file.unlink()  # the database is deleted; the next start makes a new one and ids begin at 1 again
    await simcord_env.restart_bot(make_gated_bot())
    await u["bob"].slash(channel, "imagine", prompt="bob's unrelated meadow")
    store = simcord_env.bot.store
    assert (await store.get_job(1)).author_id == u["bob"].id

    recipe = await u["alice"].click(old, label="Recipe")
    assert recipe.ephemeral and "earlier database" in recipe.response.content
    assert "meadow" not in recipe.response.content
    reroll = await u["alice"].click(old, label="Reroll")
    assert reroll.ephemeral and "earlier database" in reroll.response.content
    assert await store.get_job(2) is None  # nothing was rerolled
    [new] = _results(next(t for t in channel.threads if t.id != channel.threads[0].id), 1)
    fresh = await u["bob"].click(new, label="Recipe")
    assert "meadow" in fresh.response.content


async def test_a_database_deleted_while_running_stops_the_bot(simcord_env, world, gated, settings):
    # the connected bot runs this check every STORAGE_CHECK_EVERY seconds (see test_kill for the real process)
    guild, channel, u = world
    await u["alice"].slash(channel, "imagine", prompt="before the deletion")
    bot = simcord_env.bot
    assert await bot.check_storage()
    for file in settings.data_dir.glob("imagine.sqlite*"):
        file.unlink()
    assert not await bot.check_storage()
    assert bot.storage_error is not None and "was deleted or moved" in str(bot.storage_error)
    assert bot.is_closed()


async def test_frames_are_removed_once_the_timelapse_is_posted(simcord_env, world, gated, settings):
    guild, channel, u = world
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="a slow sunrise")
    frames = settings.data_dir / "frames" / "1"
    assert list(frames.glob("*.webp"))  # kept while the job runs
    gated.release(1)
    await simcord_env.settle()
    [thread] = channel.threads
    assert any(m.content.startswith("Timelapse of #1") for m in thread.history())
    assert not frames.exists()


async def test_a_database_failing_under_a_job_stops_the_bot_instead_of_failing_the_job(simcord_env, world, gated):
    guild, channel, u = world
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="a tower")
    bot = simcord_env.bot
    await bot.store._db.execute("DROP TABLE job_events")  # the database breaks while the job runs
    gated.release(1)
    await simcord_env.settle()
    assert bot.storage_error is not None and "cannot be used: no such table" in str(bot.storage_error)
    assert bot.is_closed()
    [thread] = channel.threads
    assert not any("failed" in m.content for m in thread.history())  # no generic failure told to the member
