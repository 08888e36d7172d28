"""The member's flow through real discord.py in simcord, with jobs run by Celery worker processes: the same
pictures as the embedded backend, and Cancel and Steer on a job that runs in another process."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from storage import JobState
from tests.bot.cluster import wait_for_workers

pytestmark = pytest.mark.simcord(settle_timeout=180)


@pytest.fixture
def simcord_bot(settings, redis_server, start_worker):
    from bot.client import ImagineBot, backend_for

    start_worker()
    wait_for_workers(redis_server.client(), 1)
    celery = dataclasses.replace(settings, backend="celery", redis_url=redis_server.url)
    return ImagineBot(celery, backend_for(celery))


def _world(env):
    guild = env.create_guild()
    channel = guild.create_text_channel("art")
    return guild, channel, guild.add_member(env.create_user("alice")), guild.add_member(env.create_user("bob"))


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


async def test_imagine_on_a_worker_posts_the_embedded_picture(simcord_env, pool):
    import json

    from engine.spec import JobSpec

    guild, channel, alice, bob = _world(simcord_env)
    await alice.slash(channel, "imagine", prompt="a lighthouse in a storm", size="square-small", seed=3)
    [thread] = channel.threads
    final = next(m for m in thread.history() if m.attachments and m.embeds and m.embeds[0].title == "#1")
    job = await simcord_env.bot.store.get_job(1)
    assert job.state == JobState.DONE and job.result_message_id == final.id
    status = next(m for m in thread.history() if m.embeds and m.embeds[0].title.startswith("#1 ·"))
    assert status.embeds[0].title == "#1 · Done"
    spec = JobSpec.from_json(job.spec_json)
    alone = pool.engine_for(spec).generate(spec)
    posted = final.attachments[0].data if hasattr(final.attachments[0], "data") else None
    if posted is None:
        posted = open(job.image_path, "rb").read()
    assert np.array_equal(_pixels(posted), _pixels(alone.image))
    assert json.loads(job.spec_json)["seed"] == 3


async def _until(env, predicate, timeout=180.0, what="the condition"):
    """Wait in real time while a worker process computes (the bot is idle meanwhile, waiting on the worker)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
        await env.settle()


def _declare_worker_waits(env):
    env.bot.backend.await_workers = lambda awaitable: env.external_wait(awaitable, reason="a worker computes")


def _status(thread, job_id):
    return next(m for m in thread.history() if m.embeds and m.embeds[0].title.startswith(f"#{job_id} ·"))


async def test_cancel_and_steer_a_job_running_on_a_worker(simcord_env):
    import json

    _declare_worker_waits(simcord_env)
    store = simcord_env.bot.store
    guild, channel, alice, bob = _world(simcord_env)
    await alice.slash(channel, "imagine", prompt="a castle | fog:0.5", size="square-small", steps=50)
    [thread] = channel.threads

    async def progressed():
        job = await store.get_job(1)
        return job.steps_done >= 2

    await _until(simcord_env, progressed, what="the first steps")
    status = _status(thread, 1)
    assert [c.label for row in status.components for c in row.children] == ["Cancel", "Steer"]
    shown = await alice.click(status, label="Steer")
    done = await alice.submit_modal(shown, {"prompt": "a ruined castle at dawn"})
    assert "now aims at **a ruined castle at dawn** from step" in done.response.content
    spec = json.loads((await store.get_job(1)).spec_json)
    assert spec["prompt_schedule"][0][1] == "a ruined castle at dawn" and spec["prompt_schedule"][0][0] >= 2
    refused = await bob.click(status, label="Cancel")
    assert refused.ephemeral and "Only the member who asked" in refused.response.content
    ok = await alice.click(status, label="Cancel")
    assert ok.ephemeral and "Cancelling #1" in ok.response.content

    async def ended():
        return (await store.get_job(1)).state == JobState.CANCELLED

    await _until(simcord_env, ended, what="the cancellation")
    job = await store.get_job(1)
    assert 2 <= job.steps_done < 50
    assert any("was cancelled at step" in m.content for m in thread.history())
