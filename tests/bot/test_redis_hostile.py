"""Whoever can write to Redis (it must stay private; this is defence in depth) forges entries there: heartbeats,
steering requests, tasks and events. Each unreadable entry fails one job with a sentence, or is skipped with a
warning; it never stops the bot's count of workers, a worker's loop, or the output check. A real redis-server, real
worker processes on the tiny models, the bot's job service."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import struct
import uuid
import zlib

import pytest
import redis
from PIL import Image

from bot.backends.celery.backend import CeleryBackend
from bot.backends.celery.protocol import QUEUE, TASK, key, make_app, worker_key
from bot.backends.celery.wire import MalformedEvent, Steered, check_pictures, decode, encode
from bot.jobs import JobService, Origin
from engine.errors import InvalidSpec
from engine.events import Failed, Finished, Progress, Result, Snapshotted
from engine.spec import JobSpec
from storage import JobState, Store
from tests.bot.cluster import until, wait_for_workers
from tests.bot.test_concurrency import RecordingPresenter


def _spec(prompt="a lighthouse", steps=8, **kw) -> JobSpec:
    fields = dict(width=64, height=48, steps=steps, seed=3, cutn=4, model="tiny_f16", clip_model="tiny-clip")
    fields.update(progress_every=1)
    fields.update(kw)
    return JobSpec(prompt, **fields)


def _png(size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (20, 20, 220)).save(out, format="PNG")
    return out.getvalue()


def _bomb_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG that claims `width` x `height` pixels (what a decompression bomb looks like)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _finished(job_spec: JobSpec, /, **changes) -> dict[bytes, bytes]:
    """A finished event as a worker writes it, with some of its data fields changed (a value of ... drops it)."""
    result = Result(job_spec, _png(), 64, 48, job_spec.steps, (("a lighthouse", 0.25),), 1.5, unsafe=0.01)
    fields = encode(Finished(result))
    data = json.loads(fields[b"data"])
    data.update(changes)
    fields[b"data"] = json.dumps({k: v for k, v in data.items() if v is not ...}).encode()
    return fields


class Recorder(RecordingPresenter):
    """Also records each posted result with the moderation the job service decided for it, and every preview."""

    def __init__(self):
        super().__init__()
        self.posted: list[tuple[int, str | None]] = []
        self.previews: list[int] = []

    async def job_progress(self, job, progress):
        self.log.append(("progress", job.id, progress.step))
        if progress.preview is not None:
            self.previews.append(job.id)

    async def job_finished(self, job, result, image_bytes):
        self.posted.append((job.id, job.moderation))
        return await super().job_finished(job, result, image_bytes)


async def _service(tmp_path, url, presenter):
    store = await Store.open(tmp_path / "db.sqlite")
    backend = CeleryBackend(url, lost_after=2.0, steer_timeout=10.0)
    return store, backend, JobService(store, backend, presenter, tmp_path / "data", snapshot_every=0)


async def _close(store, backend, service):
    await service.close()
    await backend.close()
    await store.close()


# -- the wire: every field of an event is checked ------------------------------------------------------------
def _progress_fields(**changes) -> dict[bytes, bytes]:
    fields = encode(Progress(3, 8, 0.5, (0.5,), 1.0, _png(), 64, 48, (0.2,), "a lighthouse"))
    data = json.loads(fields[b"data"])
    data.update(changes)
    fields[b"data"] = json.dumps(data).encode()
    return fields


MALFORMED = {
    "no type": {b"data": b"{}"},
    "unknown type": {b"type": b"exploded", b"data": b"{}"},
    "data not JSON": {b"type": b"progress", b"data": b"{not json"},
    "data not an object": {b"type": b"progress", b"data": b"[1, 2]"},
    "data nested too deep": {b"type": b"progress", b"data": b"[" * 100_000 + b"]" * 100_000},
    "a step in words": _progress_fields(step="three"),
    "a step of true": _progress_fields(step=True),
    "a negative step": _progress_fields(step=-1),
    "a number of 5000 digits": {b"type": b"progress", b"data": b'{"step": 1' + b"0" * 5000 + b"}"},
    "a preview unsafe score of NaN": _progress_fields(unsafe=math.nan),
    "a preview unsafe score above 1": _progress_fields(unsafe=7.5),
    "an unknown field": _progress_fields(colour="red"),
    "an extra part": {**_progress_fields(), b"script": b"rm -rf /"},
    "a preview that is text": {**_progress_fields(), b"blob": b"not a picture"},
    "a snapshot without its state": {b"type": b"snapshot", b"data": b'{"step": 4}'},
    "a snapshot at step -4": {b"type": b"snapshot", b"data": b'{"step": -4}', b"blob": b"state"},
    "a failure whose message is a list": {b"type": b"failed", b"data": b'{"kind": "OutOfMemory", "message": [1]}'},
    "a failure of a page": {b"type": b"failed", b"data": json.dumps({"kind": "X", "message": "x" * 10_000}).encode()},
    "a steer answer without its nonce": {b"type": b"steered", b"data": b'{"spec": "{}"}'},
}


def _finished_cases() -> dict[str, dict[bytes, bytes]]:
    spec = _spec(moderation="withhold")
    return {
        "an unsafe score of NaN": _finished(spec, unsafe=math.nan),
        "an elapsed time of Infinity": _finished(spec, elapsed=math.inf),
        "an unsafe score in words": _finished(spec, unsafe="none at all"),
        "a negative unsafe score": _finished(spec, unsafe=-0.5),
        "a width in words": _finished(spec, width="64"),
        "scores that are not pairs": _finished(spec, scores=[["a lighthouse"]]),
        "a score of NaN": _finished(spec, scores=[["a lighthouse", "nan"]]),
        "cancelled as a string": _finished(spec, cancelled="no"),
        "a spec that is not one": _finished(spec, spec='{"prompt": 5}'),
        "no steps_done": _finished(spec, steps_done=...),
        "no image": {k: v for k, v in _finished(spec).items() if k != b"blob"},
        "an image that is not a PNG": {**_finished(spec), b"blob": b"GIF89a" + b"\0" * 64},
        "a PNG far larger than it says": {**_finished(spec), b"blob": _bomb_header(100_000, 100_000)},
    }


@pytest.mark.parametrize(
    "fields", [*MALFORMED.values(), *_finished_cases().values()], ids=[*MALFORMED, *_finished_cases()]
)
def test_a_malformed_event_is_refused_with_a_sentence(fields):
    with pytest.raises(MalformedEvent) as caught:
        check_pictures(decode(fields))  # what the bot does with each entry
    assert str(caught.value).endswith(".") and caught.value.detail  # a sentence for the member, a detail for the log


def test_every_event_a_worker_writes_still_reads_back():
    spec = _spec(moderation="strict")
    result = Result(spec, _png(), 64, 48, 8, (("a lighthouse", 0.25),), 1.5, unsafe=0.75, unsafe_label="gore")
    progress = Progress(3, 8, 0.5, (0.25, 0.25), 1.0, _png(), 64, 48, (0.2, 0.3), "a lighthouse", unsafe=0.125)
    events = [
        progress,
        Progress(1, 8, math.nan, (math.nan,), 0.2),  # a run that diverges says so at its end, in its own words
        Snapshotted(4, b"\x80state", b"RIFF....WEBP"),
        Snapshotted(4, b"\x80state"),
        Finished(result),
        Finished(Result(spec.replace(moderation="off"), _png(), 64, 48, 8, (), 0.0, cancelled=True)),
        Failed(InvalidSpec("That prompt is too long.")),
        Steered(uuid.uuid4().hex, spec.to_json()),
        Progress(40, 80, 0.5, (0.5,), 2.0, _png(), 64, 48, frame=3, frames=8),  # an animation's fourth frame
        Finished(dataclasses.replace(result, video=MP4, preview_animation=b"RIFF\0\0\0\0WEBPVP8X", frames_done=8)),
    ]
    for event in events:
        back = check_pictures(decode(encode(event)))
        if isinstance(event, Progress) and math.isnan(event.loss):
            assert math.isnan(back.loss) and back.step == 1
        elif isinstance(event, Failed):
            assert type(back.error) is InvalidSpec and str(back.error) == "That prompt is too long."
        else:
            assert back == event


MP4 = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41"


def test_an_animation_whose_video_or_preview_is_something_else_is_refused():
    result = Result(_spec(), _png(), 64, 48, 8, (), 1.0, video=MP4, preview_animation=b"GIF89a", frames_done=2)
    assert check_pictures(decode(encode(Finished(result)))).result.frames_done == 2
    for forged in ({"video": b"\x89PNG\r\n\x1a\n" * 4}, {"preview_animation": b"<svg onload=alert(1)>"}):
        with pytest.raises(MalformedEvent) as refused:
            check_pictures(decode(encode(Finished(dataclasses.replace(result, **forged)))))
        assert "is not an MP4" in refused.value.detail or "preview is not" in refused.value.detail
    fields = encode(Finished(result))
    fields[b"video"] = b"x" * (64 * 2**20 + 1)
    with pytest.raises(MalformedEvent):
        decode(fields)


# -- the bot: forged heartbeats ------------------------------------------------------------------------------
async def test_forged_heartbeats_never_stop_the_count_of_workers(redis_server):
    client = redis_server.client()
    forged = {"words": b"lots", "negative": b"-3", "nan": b"nan", "huge": b"1e309", "digits": b"9" * 30, "empty": b"",
              "bytes": b"\xff\xfe", "many": b"100000"}  # fmt: skip
    for name, slots in forged.items():
        client.hset(worker_key(name), mapping={"slots": slots, "busy": 0})
    client.hset(b"imagine:workers:\xff\xfe", mapping={"slots": 1, "busy": 0})  # a name that is not UTF-8
    client.set(worker_key("not-a-hash"), b"1")
    client.hset(worker_key("honest"), mapping={"slots": 2, "busy": 0})
    backend = CeleryBackend(redis_server.url)
    try:
        backend.need_capacity(lambda: True)
        await until(lambda: backend.capacity >= 2 or backend._monitor.done(), timeout=10, what="the count")
        assert not backend._monitor.done(), backend._monitor.exception()
        assert backend.capacity == 3  # the honest worker and the one whose name is not UTF-8; no forged count
        client.hset(worker_key("joined"), mapping={"slots": 4, "busy": 0})
        await until(lambda: backend.capacity == 7, timeout=10, what="the count to see a new worker")
    finally:
        await backend.close()


# -- the worker: forged steering requests and tasks ----------------------------------------------------------
async def test_steering_requests_that_are_not_json_fail_no_job(redis_server, start_worker):
    """Before each step the worker reads the job's steering requests; unreadable ones are skipped with a warning,
    and the job, a steer after them and the next job all run to their end."""
    worker = start_worker()
    client = redis_server.client()
    wait_for_workers(client, 1)
    backend = CeleryBackend(redis_server.url, steer_timeout=30.0)
    try:
        handle = backend.submit(1, _spec("a boat", steps=80), None, 0)
        events = handle.events()
        first = await asyncio.wait_for(anext(events), 120)
        assert isinstance(first, Progress)
        for forged in (b"not json", b"[1, 2]", b'{"nonce": 5, "text": null}', b'{"nonce": "x"}', b"\xff\xfe",
                       json.dumps({"nonce": "y", "text": "z" * 100_000}).encode()):  # fmt: skip
            client.rpush(key(1, "steer"), forged)
        steering = asyncio.ensure_future(handle.steer("a lighthouse in a storm"))
        rest = [event async for event in _within(events, 60)]
        assert isinstance(rest[-1], Finished) and rest[-1].result.steps_done == 80
        spec = JobSpec.from_json(await steering)
        assert spec.prompt_schedule[-1][1] == "a lighthouse in a storm"
        again = [event async for event in _within(backend.submit(2, _spec("a tree", steps=4), None, 0).events(), 60)]
        assert isinstance(again[-1], Finished)
    finally:
        await backend.close()
    assert "steering request" in worker.text() and "Traceback" not in worker.text()


async def test_a_job_key_of_another_type_holds_up_no_other_job(redis_server, start_worker):
    """A job's stream (or steering list) replaced by a key of another type: Redis refuses the worker's writes to it
    and that job's reads fail; the worker drops what Redis refuses, and its next job runs to its end."""
    worker = start_worker()
    client = redis_server.client()
    wait_for_workers(client, 1)
    backend = CeleryBackend(redis_server.url)
    try:
        events = backend.submit(3, _spec("a boat", steps=30), None, 0).events()
        assert isinstance(await asyncio.wait_for(anext(events), 120), Progress)
        client.delete(key(3, "events"), key(3, "steer"))
        client.set(key(3, "events"), b"not a stream")
        client.set(key(3, "steer"), b"not a list")
        with pytest.raises(redis.ResponseError):
            async for _ in _within(events, 60):
                pass
        after = [event async for event in _within(backend.submit(4, _spec("a tree", steps=4), None, 0).events(), 60)]
        assert isinstance(after[-1], Finished)
    finally:
        await backend.close()
    assert "refused" in worker.text()


async def _within(events, seconds: float):
    """The events of an async iterator, failing if the next one takes longer than `seconds` (a hung job)."""
    while True:
        try:
            yield await asyncio.wait_for(anext(events), seconds)
        except StopAsyncIteration:
            return


async def test_forged_tasks_fail_their_job_or_are_dropped(redis_server, start_worker):
    """A task whose spec, pictures or numbers cannot be used fails its job with a sentence the bot reads; one that
    names no job is dropped. The worker goes on with the next real job."""
    worker = start_worker()
    client = redis_server.client()
    wait_for_workers(client, 1)
    app = make_app(redis_server.url)
    forged = {
        11: ("{not json", 0, {}),
        12: (_spec().to_json(), "often", {}),
        13: (_spec().to_json(), 0, {"../../etc/cron.d/x": "imagine:config"}),
        14: (_spec().to_json(), 0, ["not", "a", "mapping"]),
    }
    for job_id, (spec_json, every, files) in forged.items():
        attempt = uuid.uuid4().hex
        client.set(key(job_id, "attempt"), attempt)
        app.send_task(TASK, args=[job_id, attempt, spec_json, every, files], queue=QUEUE)
    app.send_task(TASK, args=["1; DROP", "x", "{}", 0, {}], queue=QUEUE)
    app.send_task(TASK, args=[15], queue=QUEUE)
    backend = CeleryBackend(redis_server.url)
    try:
        for job_id in forged:
            await until(lambda j=job_id: client.xlen(key(j, "events")), timeout=60, what=f"job {job_id}'s answer")
            [(_, fields)] = client.xrange(key(job_id, "events"))
            event = decode(fields)
            assert isinstance(event, Failed) and isinstance(event.error, InvalidSpec), event
            assert "/etc" not in str(event.error)
        events = [event async for event in _within(backend.submit(2, _spec("a tree", steps=4), None, 0).events(), 60)]
        assert isinstance(events[-1], Finished)
    finally:
        await backend.close()
    assert "Traceback" not in worker.text()


# -- the bot: forged events ----------------------------------------------------------------------------------
async def _forge(client, job_id: int, *entries: dict[bytes, bytes]) -> None:
    """Once the bot has sent the job (its attempt key is set), write `entries` to its stream as a worker would."""
    await until(lambda: client.exists(key(job_id, "attempt")), timeout=30, what=f"job {job_id} to be sent")
    for fields in entries:
        client.xadd(key(job_id, "events"), fields)


async def test_malformed_events_fail_one_job_each_with_a_sentence(redis_server, tmp_path):
    client = redis_server.client()
    client.hset(worker_key("forged"), mapping={"slots": 8, "busy": 0})  # room for every job; nobody runs them
    presenter = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, presenter)
    cases = {**_finished_cases(), **{k: MALFORMED[k] for k in ("unknown type", "data not JSON", "a step in words")}}
    try:
        jobs = {}
        for name in cases:
            spec = _spec(name[:40], moderation="withhold")
            jobs[name] = (await service.submit(Origin(None, 1, len(jobs) + 10), spec)).job
        service.pump()
        for name, fields in cases.items():
            await _forge(client, jobs[name].id, fields)
        ids = {job.id for job in jobs.values()}
        await until(lambda: {e[1] for e in presenter.log if e[0] == "failed"} >= ids, timeout=60, what="failures")
        for name, job in jobs.items():
            stored = await store.get_job(job.id)
            assert stored.state == JobState.FAILED, name
            assert stored.error == MalformedEvent.SENTENCE, (name, stored.error)
            assert client.get(key(job.id, "cancel")) == b"1"  # whoever runs it is told to stop
        assert presenter.posted == []
    finally:
        await _close(store, backend, service)


async def test_a_forged_finished_event_is_never_posted_unchecked(redis_server, tmp_path):
    """A finished event written by someone else, for a job whose server withholds flagged images: without an
    unsafe score (or with NaN), nothing of its image is shown. A forged preview without a score is not shown at
    the strict level either."""
    client = redis_server.client()
    client.hset(worker_key("forged"), mapping={"slots": 8, "busy": 0})
    presenter = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, presenter)
    try:
        spec = _spec("a lighthouse", moderation="withhold")
        unscored = (await service.submit(Origin(None, 1, 10), spec)).job
        nan = (await service.submit(Origin(None, 1, 11), spec)).job
        strict = (await service.submit(Origin(None, 1, 12), spec.replace(moderation="strict"))).job
        service.pump()
        await _forge(client, unscored.id, _finished(spec, unsafe=None, unsafe_label=None))
        await _forge(client, nan.id, _finished(spec, unsafe=math.nan))
        await _forge(client, strict.id, _progress_fields(), _finished(spec.replace(moderation="strict"), unsafe=None))
        ended = {unscored.id, nan.id, strict.id}
        await until(lambda: all(service._tasks.get(j) is None for j in ended), timeout=60, what="the three jobs")
        for job_id in ended:
            stored = await store.get_job(job_id)
            assert stored.state == JobState.FAILED or stored.moderation == "withhold", (job_id, stored)
        assert all(moderation == "withhold" for _, moderation in presenter.posted), presenter.posted
        assert strict.id not in presenter.previews
    finally:
        await _close(store, backend, service)


async def test_a_forged_steer_answer_never_changes_the_jobs_moderation(redis_server, tmp_path):
    """The answer to a steering request carries the new spec; a forged one that also turns the output check off
    is refused, and the job keeps its level."""
    client = redis_server.client()
    client.hset(worker_key("forged"), mapping={"slots": 8, "busy": 0})
    presenter = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, presenter)
    try:
        spec = _spec("a lighthouse", moderation="withhold")
        job = (await service.submit(Origin(None, 1, 10), spec)).job
        service.pump()
        await _forge(client, job.id)
        steering = asyncio.ensure_future(service.steer(job.id, "a castle"))
        await until(lambda: client.llen(key(job.id, "steer")), timeout=10, what="the steering request")
        nonce = json.loads(client.lpop(key(job.id, "steer")))["nonce"]
        loose = spec.replace(moderation="off", prompt_schedule=((2, "a castle"),))
        client.xadd(key(job.id, "events"), encode(Steered(nonce, loose.to_json())))
        assert await asyncio.wait_for(steering, 20) is None
        stored = await store.get_job(job.id)
        assert stored.spec.moderation == "withhold" and stored.spec.prompt_schedule == ()
    finally:
        await _close(store, backend, service)
