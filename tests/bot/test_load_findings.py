"""Regressions found by driving the real bot under load against the loopback Discord stand-in.

1. A job pumped by another job's end while its announcement (the "Queued" message and its thread) was still being
   posted started at once: its status message went to the parent channel, and later edits aimed at its thread failed
   with 404 Unknown Message. A job now starts only once its announcement is recorded.
2. /imagine with a picture downloaded it before answering: a download slower than Discord's 3 s made the answer late
   (10062 Unknown interaction, "This interaction failed" for the member). It now answers "thinking" first, to the
   member only; the job's "Queued" message is posted in the channel (its thread made from it) and the private answer
   is filled in with a link to it, or, when the request is refused after the download, with the reason."""

from __future__ import annotations

import asyncio
import io
import time

import discord
import pytest
import yarl
from PIL import Image

from bot.backends.fake import FakeBackend
from bot.jobs import JobService, Origin, Posted
from engine.spec import JobSpec
from storage import JobState, Store
from tests.bot.loopback import CHANNEL_ID, DEADLINE, USER_ID, LoopbackDiscord
from tests.bot.loopback._payloads import EPHEMERAL, LOADING
from tests.bot.test_concurrency import RecordingPresenter

SLOW_DOWNLOAD = DEADLINE + 0.5  # seconds the stand-in's file server takes per attachment


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (30, 90, 200)).save(out, format="PNG")
    return out.getvalue()


async def _wait_for(predicate, timeout: float = 60.0, what: str = "the bot") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- 1. a job starts only once its announcement is recorded ------------------------------------------------------


class WherePresenter(RecordingPresenter):
    """Records the thread each job's status message goes to as the job starts."""

    def __init__(self) -> None:
        super().__init__()
        self.started_in: dict[int, int | None] = {}

    async def job_started(self, job):
        self.started_in[job.id] = job.thread_id
        return await super().job_started(job)


async def test_a_job_pumped_during_its_announcement_waits_for_its_thread(tmp_path):
    """Job 2's announcement is still posting when job 1 ends and pumps the queue: job 2 starts only after its
    thread is recorded, and starts in it."""
    store = await Store.open(tmp_path / "db.sqlite")
    backend, presenter = FakeBackend(), WherePresenter()
    service = JobService(store, backend, presenter, tmp_path / "data", max_concurrent=1, snapshot_every=0)
    service.posting.timelapse = False
    try:

        def posted(message_id: int, thread_id: int):
            async def announce(ticket):
                return Posted(message_id, thread_id)

            return announce

        backend.hold = True
        await service.submit(Origin(None, 1, 1), JobSpec("first", steps=10), announce=posted(101, 1001))
        await _wait_for(lambda: 1 in backend.gates, 10, "job 1 to run and be held")
        backend.hold = False

        announcing, release = asyncio.Event(), asyncio.Event()

        async def slow_announce(ticket):  # the thread is being made (Discord slow, a 429 ridden out)
            announcing.set()
            await release.wait()
            return Posted(102, 1002)

        submit = asyncio.create_task(
            service.submit(Origin(None, 1, 2), JobSpec("second", steps=10), announce=slow_announce)
        )
        await asyncio.wait_for(announcing.wait(), 10)
        backend.release(1)  # job 1 ends and pumps: job 2 leaves the waiting line while its thread is being made
        await _wait_for(lambda: 1 not in service._tasks, 10, "job 1 to end")  # its task's end pumps job 2
        pumped = service._tasks.get(2)
        if pumped is not None:
            await asyncio.wait({pumped}, timeout=1.0)  # unfixed, job 2 runs (to its end) meanwhile
        assert 2 not in presenter.started_in, f"job 2 started in thread {presenter.started_in[2]}, unannounced"
        assert 2 not in backend.started and 2 in service._tasks  # pumped, and waiting for its announcement
        assert (await store.get_job(2)).state == JobState.QUEUED

        release.set()
        ticket = await asyncio.wait_for(submit, 10)
        assert ticket.job.thread_id == 1002 and ticket.job.queued_message_id == 102
        await _wait_for(lambda: 2 not in service._tasks, 10, "job 2 to end")
        assert presenter.started_in == {1: 1001, 2: 1002}  # each status message went to the job's own thread
        assert backend.started == [1, 2]
        assert (await store.get_job(2)).state == JobState.DONE
    finally:
        await service.close()
        await store.close()


# -- the real bot against the stand-in ----------------------------------------------------------------------------


@pytest.fixture
async def connected(monkeypatch, settings, gated):
    """The real bot (discord.py over sockets, the gated fake backend) connected to a stand-in of three members with
    Discord's limits enforced."""
    from bot.client import ImagineBot

    server = LoopbackDiscord(members=3, enforce_limits=True)
    await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url))
    bot = ImagineBot(settings, backend_factory=lambda s: gated)
    task = asyncio.create_task(bot.start("loopback-token"))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 60)
        yield bot, server
    finally:
        await bot.close()
        await asyncio.wait_for(task, 30)
        await server.stop()


async def _job(bot, job_id: int):
    return await bot.store.get_job(job_id)


async def _until_state(bot, job_id: int, state: JobState, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (job := await _job(bot, job_id)) is None or job.state != state:
        assert time.monotonic() < deadline, f"job {job_id}: {job and job.state}, waiting for {state}"
        await asyncio.sleep(0.05)


async def test_a_job_whose_thread_is_slow_to_make_posts_its_status_in_its_thread(connected, gated):
    """Job 2's thread is still being made when job 1 ends: job 2 waits for it, and its status message, edits and
    image all go to its thread (none to the parent channel, no 404)."""
    bot, stand_in = connected
    gated.hold = True
    await stand_in.slash("imagine", {"prompt": "a held lighthouse", "size": "square-small", "seed": 1}, user=0)
    await _wait_for(lambda: 1 in gated.gates, what="job 1 to run and be held")
    gated.hold = False

    making, release = asyncio.Event(), asyncio.Event()
    make_thread = stand_in._create_thread

    async def slow_thread(call):  # the stand-in's route handler, held for job 2's thread
        making.set()
        await release.wait()
        return await make_thread(call)

    stand_in._create_thread = slow_thread
    try:
        await stand_in.slash("imagine", {"prompt": "a harbour", "size": "square-small", "seed": 2}, user=1)
        await asyncio.wait_for(making.wait(), 30)
        gated.release(1)  # job 1 ends and pumps the queue while job 2's thread is being made
        await _until_state(bot, 1, JobState.DONE)
        await _wait_for(lambda: 2 in bot.jobs._tasks or 2 in gated.started, 10, "job 1's end to pump job 2")
        deadline = time.monotonic() + 1.5  # unfixed, job 2 starts here and posts its status in the parent channel
        while 2 not in gated.started and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert 2 not in gated.started, "job 2 started before its thread was made"
    finally:
        release.set()  # a failed test must not leave the request held (the stand-in would wait for it)
    await _until_state(bot, 2, JobState.DONE)
    job = await _job(bot, 2)
    assert job.thread_id is not None and job.thread_id in stand_in.threads
    assert job.thread_id == job.queued_message_id  # the thread of its "Queued" message
    status = stand_in.messages.get(job.status_message_id)
    assert status is not None and status["channel_id"] == str(job.thread_id), "the status went elsewhere"
    [image] = stand_in.final_images()[2]
    assert stand_in.messages[image]["channel_id"] == str(job.thread_id)
    parent = [m for m in stand_in.history(CHANNEL_ID) if m["embeds"] or m["attachments"]]
    assert parent == [], "a job's status or image was posted in the parent channel"
    refused = [(r.route, r.status) for r in stand_in.requests if r.status == 404]
    assert refused == [], refused


# -- 2. /imagine with a slow picture is answered in time -------------------------------------------------------


def _left_thinking(stand_in) -> list[dict]:
    """Messages still "thinking" (a loading answer never filled in), anywhere."""
    return [m for k, m in stand_in.messages.items() if isinstance(k, int) and m["flags"] & LOADING]


async def test_imagine_with_a_slow_picture_answers_in_time_and_posts_the_job(connected):
    """The download outlasts Discord's 3 s: the member is answered "thinking" (privately) in time; the job's "Queued"
    message goes to the channel, its thread is made from it, and the private answer links to it."""
    bot, stand_in = connected
    stand_in.attachment_delay = SLOW_DOWNLOAD
    token = await stand_in.slash(
        "imagine",
        {"prompt": "a lighthouse from a picture", "size": "square-small", "seed": 3},
        user=0,
        attachments={"init_image": ("seed.png", _png())},
    )
    await _until_state(bot, 1, JobState.DONE)
    record = stand_in.interactions[token]
    assert record.clean and record.callback_type == 5, record.callbacks  # "thinking", once, accepted
    assert record.latency < DEADLINE and record.error_code is None
    assert stand_in.downloads, "the picture was not downloaded"
    job = await _job(bot, 1)
    assert job.spec.init_image
    # the job's public message, in the channel: "Queued" when posted, its thread made from it
    queued = stand_in.messages[job.queued_message_id]
    assert queued["channel_id"] == str(CHANNEL_ID) and not queued["flags"] & (EPHEMERAL | LOADING)
    [posted] = [
        r.json for r in stand_in.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"
    ]
    assert posted["content"].startswith(f"<@{USER_ID}> · Queued #1 ·"), posted  # names the member, pings no one
    assert posted["allowed_mentions"]["parse"] == [], posted
    assert job.thread_id == job.queued_message_id and job.thread_id in stand_in.threads
    assert stand_in.messages[job.status_message_id]["channel_id"] == str(job.thread_id)
    # the member's private answer, filled in with a link to it: nothing left "thinking"
    answer = stand_in.messages[record.original_id]
    assert answer["flags"] & EPHEMERAL and not answer["flags"] & LOADING
    assert answer["content"].startswith("Queued") and answer["content"].endswith(f"/{job.queued_message_id}")
    assert record.followups == [] and _left_thinking(stand_in) == []


@pytest.mark.parametrize(
    ("prompt", "picture", "delay", "said"),
    [
        # refused before any download: the declared type is not a picture's
        ("a lighthouse", ("notes.txt", b"not a picture"), 0.0, "must be a picture"),
        # refused by the gate once the slow download is done: a blocked word in the prompt (the built-in list)
        ("a nude lighthouse", ("seed.png", None), SLOW_DOWNLOAD, "does not allow"),
    ],
    ids=["not-a-picture", "blocked-word-after-a-slow-download"],
)
async def test_imagine_refused_after_thinking_says_why_to_the_member_only(connected, prompt, picture, delay, said):
    """A request refused after the "thinking" answer: that answer (private) is filled in with the reason; nothing
    public is posted and nothing is left "thinking"."""
    bot, stand_in = connected
    stand_in.attachment_delay = delay
    filename, data = picture
    before = {k for k in stand_in.messages if isinstance(k, int)}
    token = await stand_in.slash(
        "imagine",
        {"prompt": prompt, "size": "square-small"},
        user=0,
        attachments={"init_image": (filename, data or _png())},
    )
    record = stand_in.interactions[token]

    def told() -> bool:
        answer = stand_in.messages.get(record.original_id)
        return record.error_code is not None or bool(answer and not answer["flags"] & LOADING) or bool(record.followups)

    await _wait_for(told, 30, "the refusal")
    assert record.clean and record.callback_type == 5 and record.latency < DEADLINE, record.callbacks
    shown = [m for k, m in stand_in.messages.items() if isinstance(k, int) and k not in before]
    assert [m["id"] for m in shown] == [str(record.original_id)], shown  # the answer only: no public message
    [answer] = shown
    assert answer["flags"] & EPHEMERAL and said in answer["content"], answer
    assert _left_thinking(stand_in) == [] and record.followups == []
    assert await _job(bot, 1) is None


async def test_a_blocked_word_in_the_pictures_name_is_refused_at_once(connected):
    """The picture's name is screened before anything else: refused in the first answer, nothing downloaded."""
    bot, stand_in = connected
    stand_in.attachment_delay = SLOW_DOWNLOAD
    token = await stand_in.slash(
        "imagine", {"prompt": "a lighthouse"}, user=0, attachments={"init_image": ("nude.png", _png())}
    )
    record = stand_in.interactions[token]
    await _wait_for(lambda: record.answered_at is not None, 30, "the refusal")
    assert record.clean and record.callback_type == 4 and record.latency < DEADLINE
    answer = stand_in.messages[record.original_id]
    assert answer["flags"] & EPHEMERAL and "does not allow" in answer["content"]
    assert stand_in.downloads == [] and await _job(bot, 1) is None
