"""Several jobs at once through the real embedded backend on tiny models: they share batched steps, a new job
starts while a long one runs, and each ends with its own image."""

from __future__ import annotations

import asyncio

from bot.backends.embedded import EmbeddedBackend
from bot.jobs import JobService, Origin
from engine.spec import JobSpec
from storage import JobState, Store


class RecordingPresenter:
    """The job service's chat side, recording what it was told in order."""

    def __init__(self):
        self.log: list[tuple] = []

    async def job_started(self, job):
        self.log.append(("started", job.id))
        return None  # no status message

    async def job_progress(self, job, progress):
        assert progress.preview and progress.preview.startswith(b"\x89PNG")
        self.log.append(("progress", job.id, progress.step))

    async def job_finished(self, job, result, image_bytes):
        self.log.append(("finished", job.id, result.steps_done))
        return 9000 + job.id  # the result "message"

    async def job_timelapse(self, job, frames, final_png):
        self.log.append(("timelapse", job.id, len(frames)))

    async def job_failed(self, job, message):
        self.log.append(("failed", job.id, message))

    async def job_cancelled(self, job, result):
        self.log.append(("cancelled", job.id))


def _spec(prompt, steps, **kw):
    return JobSpec(
        prompt,
        width=64,
        height=48,
        steps=steps,
        seed=1,
        cutn=4,
        model="tiny_f16",
        clip_model="tiny-clip",
        progress_every=2,
        **kw,
    )


async def test_jobs_run_together_in_batched_steps(tmp_path, pool, monkeypatch):
    store = await Store.open(tmp_path / "db.sqlite")
    backend = EmbeddedBackend(pool, max_batch=2)
    presenter = RecordingPresenter()
    service = JobService(store, backend, presenter, tmp_path, max_concurrent=2, snapshot_every=4)
    engine = pool.engine_for(_spec("x", 1))
    batch_sizes = []
    real_step = engine.step
    monkeypatch.setattr(engine, "step", lambda runs: (batch_sizes.append(len(runs)), real_step(runs))[1])
    try:
        long_job = (await service.submit(Origin(None, 1, 10), _spec("a long one", 12))).job
        service.pump()
        for _ in range(200):  # let the long job get going before the short one arrives
            await asyncio.sleep(0.05)
            if any(e[0] == "progress" for e in presenter.log):
                break
        short_job = (await service.submit(Origin(None, 1, 11), _spec("a short one", 4))).job
        service.pump()
        await asyncio.wait_for(asyncio.gather(*list(service._tasks.values())), 120)

        finished = [e for e in presenter.log if e[0] == "finished"]
        assert [e[1] for e in finished] == [short_job.id, long_job.id]  # the short one did not wait
        assert (await store.get_job(long_job.id)).state == JobState.DONE
        assert (await store.get_job(short_job.id)).steps_done == 4
        assert 2 in batch_sizes  # both advanced in one step while they overlapped
        assert sum(batch_sizes) == 12 + 4
    finally:
        await service.close()
        await backend.close()
        await store.close()


async def test_cancelling_one_job_leaves_the_other_running(tmp_path, pool):
    store = await Store.open(tmp_path / "db.sqlite")
    backend = EmbeddedBackend(pool, max_batch=2)
    presenter = RecordingPresenter()
    service = JobService(store, backend, presenter, tmp_path, max_concurrent=2, snapshot_every=0)
    try:
        first = (await service.submit(Origin(None, 1, 10), _spec("first", 30))).job
        second = (await service.submit(Origin(None, 1, 11), _spec("second", 8))).job
        service.pump()
        for _ in range(400):
            await asyncio.sleep(0.05)
            if ("progress", first.id, 2) in presenter.log:
                break
        assert await service.cancel(first.id)
        await asyncio.wait_for(asyncio.gather(*list(service._tasks.values())), 120)
        assert (await store.get_job(first.id)).state == JobState.CANCELLED
        assert (await store.get_job(second.id)).state == JobState.DONE
        assert (await store.get_job(second.id)).steps_done == 8
    finally:
        await service.close()
        await backend.close()
        await store.close()


async def test_a_job_cancelled_while_waiting_leaves_nothing_behind(tmp_path, pool):
    """The waiting line's step counts (for ETAs) drop a job cancelled before it started, as they drop one that starts:
    kept, they would grow with every such job for as long as the bot runs."""
    store = await Store.open(tmp_path / "db.sqlite")
    backend = EmbeddedBackend(pool, max_batch=1)
    service = JobService(store, backend, RecordingPresenter(), tmp_path, max_concurrent=1, snapshot_every=0)
    try:
        running = (await service.submit(Origin(None, 1, 10), _spec("running", 30))).job
        waiting = (await service.submit(Origin(None, 1, 11), _spec("waiting", 8))).job
        assert set(service.pace.waiting_steps) == {waiting.id}
        assert await service.cancel(waiting.id)
        assert (await store.get_job(waiting.id)).state == JobState.CANCELLED
        assert service.pace.waiting_steps == {}
        assert await service.cancel(running.id)
        await asyncio.wait_for(asyncio.gather(*list(service._tasks.values())), 120)
    finally:
        await service.close()
        await backend.close()
        await store.close()
