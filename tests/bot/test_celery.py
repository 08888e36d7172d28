"""The distributed backend with real components: a redis-server, Celery worker processes on the tiny models,
the bot's job service. Faults: a worker killed mid-job, Redis restarted mid-run, the bot restarted mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time

import numpy as np
from PIL import Image

from bot.backends.celery.backend import CeleryBackend
from bot.jobs import JobService, Origin
from engine.events import Finished
from engine.spec import JobSpec
from storage import JobState, Store
from tests.bot.cluster import Worker, free_port, wait_for_workers
from tests.bot.cluster import until as _until
from tests.bot.test_concurrency import RecordingPresenter


def _spec(prompt="a lighthouse", steps=8, **kw) -> JobSpec:
    fields = dict(width=64, height=48, steps=steps, seed=3, cutn=4, model="tiny_f16", clip_model="tiny-clip")
    fields.update(progress_every=2)
    fields.update(kw)
    return JobSpec(prompt, **fields)


class Recorder(RecordingPresenter):
    """Also keeps the final results and every progress step in order."""

    def __init__(self):
        super().__init__()
        self.results: dict[int, object] = {}
        self.steps: dict[int, list[int]] = {}
        self.times: dict[int, list[float]] = {}

    async def job_progress(self, job, progress):
        await super().job_progress(job, progress)
        self.steps.setdefault(job.id, []).append(progress.step)
        self.times.setdefault(job.id, []).append(time.monotonic())

    async def job_finished(self, job, result, image_bytes):
        self.results[job.id] = result
        return await super().job_finished(job, result, image_bytes)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


async def _service(tmp_path, url, presenter, **kw):
    store = await Store.open(tmp_path / "db.sqlite")
    backend = CeleryBackend(url, **kw)
    return store, backend, JobService(store, backend, presenter, tmp_path / "data", snapshot_every=4)


async def _finish(service, timeout=240.0):
    await asyncio.wait_for(asyncio.gather(*list(service._tasks.values())), timeout)


async def test_a_job_on_a_worker_is_the_embedded_image(redis_server, start_worker, tmp_path, pool):
    start_worker()
    wait_for_workers(redis_server.client(), 1)
    presenter = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, presenter)
    try:
        spec = _spec(steps=8)
        job = (await service.submit(Origin(None, 1, 10), spec)).job
        service.pump()
        await _until(lambda: job.id in presenter.results, what="the result")
        await _finish(service)
        result = presenter.results[job.id]
        assert presenter.steps[job.id] == [2, 4, 6, 8]
        stored = await store.get_job(job.id)
        assert stored.state == JobState.DONE and stored.steps_done == 8
        # the same pixels as the engine in this process gives for the same spec
        alone = pool.engine_for(spec).generate(spec)
        assert np.array_equal(_pixels(result.image), _pixels(alone.image))
        # snapshots came back as bytes and are kept by the bot
        steps = [int(p.stem) for p in sorted((tmp_path / "data" / "snapshots" / str(job.id)).glob("*.pt"))]
        assert steps == [4, 8]
    finally:
        await service.close()
        await backend.close()
        await store.close()


async def test_cancel_and_steer_reach_a_running_worker(redis_server, start_worker, tmp_path):
    start_worker()
    wait_for_workers(redis_server.client(), 1)
    presenter = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, presenter)
    try:
        steered = (await service.submit(Origin(None, 1, 10), _spec("a boat", steps=40))).job
        service.pump()
        await _until(lambda: presenter.steps.get(steered.id), what="the first progress")
        spec = await service.steer(steered.id, "a lighthouse | storm:0.5")
        assert spec is not None and spec.prompt_schedule and spec.prompt_schedule[0][1] == "a lighthouse | storm:0.5"
        assert (await store.get_job(steered.id)).spec_json == spec.to_json()
        assert await service.cancel(steered.id)
        await _finish(service)
        job = await store.get_job(steered.id)
        assert job.state == JobState.CANCELLED and 0 < job.steps_done < 40
        assert ("cancelled", steered.id) in presenter.log
    finally:
        await service.close()
        await backend.close()
        await store.close()


async def test_a_killed_workers_job_resumes_on_another_from_its_snapshot(redis_server, start_worker, tmp_path, pool):
    workers = [start_worker(), start_worker()]
    client = redis_server.client()
    wait_for_workers(client, 2)
    presenter = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, presenter)
    try:
        spec = _spec("a storm at sea", steps=60, progress_every=1)
        job = (await service.submit(Origin(None, 1, 10), spec)).job
        service.pump()
        await _until(lambda: len(presenter.steps.get(job.id, [])) >= 13, what="13 steps")
        owner = client.get(f"imagine:job:{job.id}:worker").decode()
        victim = next(w for w in workers if f"-{w.process.pid}-" in owner)
        victim.kill()
        killed_at = time.monotonic()
        await _until(lambda: job.id in presenter.results, timeout=240, what="the result")
        await _finish(service)
        steps, times = presenter.steps[job.id], presenter.times[job.id]
        # The second worker's first report comes after the longest pause (the lost worker's detection); counting
        # the reports seen at the kill instead would miss those the victim wrote just before it died.
        back = max(range(1, len(steps)), key=lambda i: times[i] - times[i - 1])
        resumed = steps[back:]
        # the second worker started from a snapshot (every 4 steps), not from step 1, and went on to the end
        assert resumed[-1] == 60 and resumed[0] > 1 and (resumed[0] - 1) % 4 == 0, (steps, back)
        assert steps[:back] == list(range(1, back + 1))
        took = times[back] - killed_at
        print(f"\nkilled worker: resumed elsewhere after {took:.1f} s, from step {resumed[0] - 1}")
        assert took < 60
        result = presenter.results[job.id]
        assert np.array_equal(_pixels(result.image), _pixels(pool.engine_for(spec).generate(spec).image))
        assert [e for e in presenter.log if e[0] == "finished"] == [("finished", job.id, 60)]
    finally:
        await service.close()
        await backend.close()
        await store.close()


async def test_redis_restarted_mid_run_loses_nothing(redis_server, start_worker, tmp_path):
    start_worker()
    wait_for_workers(redis_server.client(), 1)
    presenter = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, presenter)
    try:
        jobs = [(await service.submit(Origin(None, 1, 10 + i), _spec(f"job {i}", steps=30))).job for i in range(2)]
        service.pump()
        await _until(lambda: presenter.steps.get(jobs[0].id), what="the first progress")
        redis_server.stop()
        await asyncio.sleep(3)
        redis_server.start()
        await _until(lambda: all(j.id in presenter.results for j in jobs), timeout=300, what="both results")
        await _finish(service)
        for j in jobs:
            assert (await store.get_job(j.id)).state == JobState.DONE
        assert len([e for e in presenter.log if e[0] == "finished"]) == 2
    finally:
        await service.close()
        await backend.close()
        await store.close()


async def test_a_restarted_bot_reads_on_from_its_cursor(redis_server, start_worker, tmp_path, pool):
    start_worker()
    wait_for_workers(redis_server.client(), 1)
    first = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, first)
    spec = _spec("a slow one", steps=40, progress_every=1)
    job = (await service.submit(Origin(None, 1, 10), spec)).job
    service.pump()
    await _until(lambda: len(first.steps.get(job.id, [])) >= 5, what="5 steps")
    for task in service._tasks.values():  # the bot dies: no goodbye to anyone
        task.cancel()
    await asyncio.gather(*service._tasks.values(), return_exceptions=True)
    await backend.close()
    await store.close()

    second = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, second)
    try:
        assert await service.recover() == 1
        service.pump()
        await _until(lambda: job.id in second.results, what="the result after the restart")
        await _finish(service)
        seen = first.steps[job.id] + second.steps[job.id]
        # every step reported once, in order: nothing re-run, nothing missed (the last one seen may repeat once,
        # when the bot died between reporting it and saving its cursor)
        assert sorted(set(seen)) == list(range(1, 41)) and len(seen) - len(set(seen)) <= 1
        result = second.results[job.id]
        assert np.array_equal(_pixels(result.image), _pixels(pool.engine_for(spec).generate(spec).image))
    finally:
        await service.close()
        await backend.close()
        await store.close()


async def test_two_workers_take_members_in_turn(redis_server, start_worker, tmp_path):
    start_worker()
    start_worker()
    wait_for_workers(redis_server.client(), 2)
    presenter = Recorder()
    store, backend, service = await _service(tmp_path, redis_server.url, presenter)
    try:

        async def wait(author, prompt):  # recorded and waiting, not yet started: all four wait together
            service.enqueue(job := await service.admit(Origin(None, 1, author), _spec(prompt)))
            return job

        alice = [await wait(1, f"a{i}") for i in range(2)]
        bob = [await wait(2, f"b{i}") for i in range(2)]
        service.pump()
        await _until(lambda: len(presenter.results) == 4, timeout=300, what="four results")
        await _finish(service)
        started = [e[1] for e in presenter.log if e[0] == "started"]
        # round robin across members, two at a time
        assert started == [alice[0].id, bob[0].id, alice[1].id, bob[1].id]
    finally:
        await service.close()
        await backend.close()
        await store.close()


async def test_pictures_and_snapshots_travel_as_bytes(redis_server, start_worker, tmp_path, pool):
    """The worker shares no disk with the bot: the spec's pictures name folders that exist nowhere here, and it
    still runs from their bytes, giving the picture the engine gives with the same files on its own disk."""
    from engine.events import Snapshotted
    from engine.images import read_recipe

    start_worker()
    wait_for_workers(redis_server.client(), 1)
    red, blue = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (80, 60), (200, 30, 30)).save(red, format="PNG")
    Image.new("RGB", (40, 40), (20, 40, 220)).save(blue, format="PNG")
    elsewhere = "/bot-host-only/inputs"
    spec = _spec("a red fox", steps=6, init_image=f"{elsewhere}/ab12.png", image_prompts=(f"{elsewhere}/cd34.png:2",))
    backend = CeleryBackend(redis_server.url)
    try:
        handle = backend.submit(1, spec, None, 3)
        handle.files = {f"{elsewhere}/ab12.png": red.getvalue(), f"{elsewhere}/cd34.png": blue.getvalue()}
        events = [event async for event in handle.events()]
        result = events[-1].result
        assert isinstance(events[-1], Finished) and result.steps_done == 6
        snapshot = next(e for e in events if isinstance(e, Snapshotted) and e.step == 3)

        local = tmp_path / "local"
        local.mkdir()
        (local / "ab12.png").write_bytes(red.getvalue())
        (local / "cd34.png").write_bytes(blue.getvalue())
        mine = spec.with_pictures({f"{elsewhere}/ab12.png": str(local / "ab12.png"),
                                   f"{elsewhere}/cd34.png": str(local / "cd34.png")})  # fmt: skip
        assert np.array_equal(_pixels(result.image), _pixels(pool.engine_for(mine).generate(mine).image))
        assert read_recipe(result.image)["spec"]["init_image"] == "ab12.png"  # the recipe names files only

        # a second job resumes from the first one's snapshot, given as bytes
        again = backend.submit(2, spec, snapshot.state, 0)
        again.files = handle.files
        resumed = [event async for event in again.events()][-1].result
        assert np.array_equal(_pixels(resumed.image), _pixels(result.image))
    finally:
        await backend.close()


async def test_a_new_database_never_takes_an_old_databases_keys(redis_server, start_worker, tmp_path, pool):
    """A database deleted or replaced starts its ids at 1 again, while Redis keeps the old job 1's events and
    snapshot for an hour: the new job 1 runs from nothing, with its own prompt."""
    start_worker()
    wait_for_workers(redis_server.client(), 1)
    ids, recorders = [], []
    for folder, prompt in (("old", "a boat"), ("new", "a lighthouse")):
        (tmp_path / folder).mkdir()
        presenter = Recorder()
        store, backend, service = await _service(tmp_path / folder, redis_server.url, presenter)
        try:
            job = (await service.submit(Origin(None, 1, 10), _spec(prompt, steps=8))).job
            service.pump()
            await _until(lambda p=presenter, j=job.id: j in p.results, what=f"the result of {prompt!r}")
            await _finish(service)
        finally:
            await service.close()
            await backend.close()
            await store.close()
        ids.append(job.id)
        recorders.append(presenter)
    assert ids == [1, 1]
    new = recorders[1]
    assert new.steps[1] == [2, 4, 6, 8]  # from the first step, not from the old job's last snapshot
    alone = pool.engine_for(_spec("a lighthouse", steps=8)).generate(_spec("a lighthouse", steps=8))
    assert np.array_equal(_pixels(new.results[1].image), _pixels(alone.image))


async def test_the_backends_sentences_and_warnings_never_show_the_redis_password(caplog):
    """The start-up sentence and the warning while Redis is away name where Redis is, not its password."""
    port = free_port()
    backend = CeleryBackend(f"redis://imagine:Tr0ub4dor%263@127.0.0.1:{port}/0")
    try:
        with caplog.at_level(logging.DEBUG):
            sentence = await backend.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(backend._retry(lambda r: r.ping()), 1.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(backend._send([1, "x", "{}", 0, {}]), 1.5)
    finally:
        await backend.close()
    assert sentence and f"redis://imagine:[redacted]@127.0.0.1:{port}/0 cannot be reached" in sentence
    assert f"Redis at redis://imagine:[redacted]@127.0.0.1:{port}/0 cannot be reached" in caplog.text
    assert "Jobs wait until it answers." in caplog.text
    assert "Tr0ub4dor" not in sentence + caplog.text


async def test_a_job_through_redis_with_a_password_and_tls(secure_redis, tiny_models, tmp_path, pool):
    """The README's set-up for Redis on a network: rediss:// with a password; the worker and the bot both connect,
    the picture is the engine's, and neither side's log shows the password."""
    worker = Worker(secure_redis.url, tiny_models, tmp_path / "worker.log")
    backend = CeleryBackend(secure_redis.url)
    try:
        wait_for_workers(secure_redis.client(), 1)
        spec = _spec("a lighthouse", steps=4)
        events = [event async for event in backend.submit(1, spec, None, 0).events()]
        assert isinstance(events[-1], Finished) and events[-1].result.steps_done == 4
        assert np.array_equal(_pixels(events[-1].result.image), _pixels(pool.engine_for(spec).generate(spec).image))
    finally:
        await backend.close()
        worker.stop()
    log = worker.text()
    assert "Connected to rediss://" in log
    for secret in ("correct", "battery", "staple"):
        assert secret not in log
