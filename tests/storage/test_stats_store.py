"""The statistics part of the store, on a real SQLite file with a clock the test moves: counts by period and state,
members by running time, the average wait, and what the engine did in the last hour."""

from __future__ import annotations

import pytest

from storage import JobState, Store

GUILD, OTHER = 10, 20
ALICE, BOB, CAROL = 1, 2, 3
DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path):
    clock = Clock(100 * DAY)
    s = await Store.open(tmp_path / "db.sqlite", clock=clock)
    s.clock = clock
    yield s
    await s.close()


async def _job(store, author, guild=GUILD, *, wait=0.0, run=None, end=JobState.DONE):
    """A job asked for now, started `wait` s later, ended `run` s after that (None: still running, or waiting)."""
    job = await store.create_job(guild_id=guild, channel_id=5, author_id=author, spec_json="{}")
    if run is None and wait is None:
        return job
    store.clock.now += wait
    await store.set_state(job.id, JobState.RUNNING)
    if run is not None:
        store.clock.now += run
        await store.set_state(job.id, end)
        store.clock.now -= wait + run  # the next job is asked for at the same time
    else:
        store.clock.now -= wait
    return job


async def test_counts_usage_and_wait_by_server_and_member(store):
    start = store.clock.now
    await _job(store, ALICE, wait=10, run=100)
    await _job(store, ALICE, wait=30, run=300, end=JobState.FAILED)
    await _job(store, BOB, wait=20, run=50)
    await _job(store, BOB, wait=None)  # still waiting
    await _job(store, CAROL, OTHER, wait=0, run=1000)  # another server
    store.clock.now = start + 3600

    counts = await store.state_counts(GUILD, start)
    assert counts == {"done": 2, "failed": 1, "queued": 1}
    assert await store.state_counts(GUILD, start, ALICE) == {"done": 1, "failed": 1}
    assert await store.state_counts(GUILD, start + 1) == {}  # asked for before `since`: not counted

    top = await store.usage(GUILD, start)
    assert [(u.author_id, u.seconds, u.jobs, u.rank) for u in top] == [(ALICE, 400.0, 2, 1), (BOB, 50.0, 1, 2)]
    assert (await store.member_usage(GUILD, BOB, start)).rank == 2
    nobody = await store.member_usage(GUILD, CAROL, start)
    assert (nobody.seconds, nobody.jobs, nobody.rank) == (0.0, 0, None)

    wait = await store.average_wait(GUILD, start)
    assert (wait.mean, wait.jobs) == (20.0, 3)
    assert (await store.average_wait(GUILD, start, ALICE)).mean == 20.0
    assert (await store.average_wait(OTHER, start)).mean == 0.0
    assert (await store.average_wait(GUILD, start + 3600)).mean is None


async def test_activity_counts_running_time_within_the_window(store):
    now = store.clock.now
    window = (now - 2100, now + 1500)  # an hour
    await _job(store, ALICE, wait=0, run=600)  # [now, now + 600]: all of it inside
    store.clock.now = now - 3000
    await _job(store, BOB, wait=0, run=2400)  # [now - 3000, now - 600]: its last 1500 s inside
    store.clock.now = now + 1000
    await _job(store, CAROL, wait=0)  # began at now + 1000, still running: 500 s up to the window's end
    waiting = await _job(store, CAROL, wait=None)
    await store.set_state(waiting.id, JobState.CANCELLED)  # cancelled while waiting: it never ran
    store.clock.now = window[1]
    hour = await store.activity(*window)
    assert hour.busy_seconds == 600 + 1500 + 500
    assert (hour.images, hour.failed, hour.cancelled, hour.started) == (2, 0, 0, 2)
    assert (await store.activity(now + 3000, now + 6600)).busy_seconds == 3600  # Carol's run, the whole hour
