"""/queue's ETAs come from one pass over the waiting line, without a database read per job."""

from __future__ import annotations

from bot.jobs import JobService, Origin
from engine.spec import JobSpec
from storage import Store
from tests.bot.conftest import GatedBackend
from tests.bot.test_concurrency import RecordingPresenter


async def test_etas_add_up_the_steps_ahead_without_reading_the_database(tmp_path, monkeypatch):
    store = await Store.open(tmp_path / "db.sqlite")
    service = JobService(store, GatedBackend(), RecordingPresenter(), tmp_path, max_concurrent=1)
    try:
        steps = [10, 30, 20]
        jobs = []
        for i, n in enumerate(steps):
            spec = JobSpec(f"job {i}", steps=n, upscales=(5,) if i == 2 else ())
            job = await service.admit(Origin(None, 1, i), spec)  # recorded and waiting: nothing is started
            service.enqueue(job)
            jobs.append(job)
        service.seconds_per_step = 2.0

        async def no_reads(*args, **kwargs):
            raise AssertionError("the ETA read the database")

        monkeypatch.setattr(store, "get_job", no_reads)
        etas = service.etas()
        assert [etas[j.id] for j in jobs] == [20.0, 80.0, 130.0]  # 10, +30, +20+5 (its upscale) steps at 2 s
        assert await service.eta(jobs[1].id) == 80.0
    finally:
        monkeypatch.undo()
        await store.close()
