"""`python -m bench.cluster`: the distributed backend on this machine: jobs per hour with 1 and 2 worker
processes, dispatch latency (a job handed to the workers -> its first step), and how long a killed worker's job
takes to resume on another worker. A real redis-server and real `python -m bot.backends.celery.worker` processes
(one thread each) on the tiny models; the bot's job service and Celery backend in this process.

    python -m bench.cluster --workers 1 2 --jobs 8 --steps 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bot.backends.celery.backend import CeleryBackend
from bot.jobs import JobService, Origin
from engine.models.tiny import write_tiny_models
from engine.spec import JobSpec
from storage import Store
from tests.bot.cluster import RedisServer, Worker, until, wait_for_workers


class Timings:
    """A presenter (`bot.presenter.Presenter`) that posts nothing and records when each job's steps and result
    arrive."""

    def __init__(self) -> None:
        self.first: dict[int, tuple[float, float]] = {}  # job -> (received at, the worker's elapsed at that step)
        self.steps: dict[int, list[tuple[int, float]]] = {}
        self.done: dict[int, float] = {}

    async def job_started(self, job):
        return None  # no status message

    async def job_progress(self, job, progress):
        now = time.monotonic()
        self.first.setdefault(job.id, (now, progress.elapsed))
        self.steps.setdefault(job.id, []).append((progress.step, now))

    async def job_finished(self, job, result, image_bytes):
        self.done[job.id] = time.monotonic()
        return None  # nothing posted

    async def find_result(self, job):
        return None

    async def job_timelapse(self, job, frames, final_png):
        return None

    async def job_by_dm(self, job, image_bytes):
        pass

    async def job_deleted(self, job):
        pass

    async def job_failed(self, job, message):
        raise RuntimeError(message)

    async def job_cancelled(self, job, result):
        pass


def _spec(i: int, steps: int) -> JobSpec:
    return JobSpec(
        f"job {i}", width=64, height=48, steps=steps, seed=i, cutn=8, model="tiny_f16", clip_model="tiny-clip",
        progress_every=1,
    )  # fmt: skip


WAIT, POLL = 600.0, 0.005  # a benchmark that stops making progress ends with a sentence, not a hang


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def _throughput(url: str, work: Path, jobs: int, steps: int, samples: int) -> dict:
    timings = Timings()
    store = await Store.open(work / "db.sqlite")
    backend = CeleryBackend(url)
    service = JobService(store, backend, timings, work / "data", max_queued_per_user=jobs, snapshot_every=0)
    try:
        # the latency of one job on an idle cluster, a few times
        latencies = []
        for i in range(samples):
            submitted = time.monotonic()
            job = (await service.submit(Origin(None, 1, 1000 + i), _spec(i, 1))).job
            service.pump()
            await until(lambda done=job.id: done in timings.done, WAIT, f"job {job.id}", POLL)
            received, elapsed = timings.first[job.id]
            step_time = elapsed  # the worker's time from the run's start to its first report
            latencies.append(received - submitted - step_time)
        await asyncio.gather(*list(service._tasks.values()))
        started = time.monotonic()
        ids = []
        for i in range(jobs):
            job = (await service.submit(Origin(None, 1, i), _spec(100 + i, steps))).job
            ids.append(job.id)
        service.pump()
        await until(lambda: all(i in timings.done for i in ids), WAIT, f"{jobs} jobs", POLL)
        took = time.monotonic() - started
        return {"jobs": jobs, "seconds": took, "jobs_per_hour": jobs * 3600 / took, "latency_s": latencies}
    finally:
        await service.close()
        await backend.close()
        await store.close()


async def _resume_after_kill(url: str, work: Path, workers: list[Worker], client, steps: int) -> dict:
    timings = Timings()
    store = await Store.open(work / "db.sqlite")
    backend = CeleryBackend(url)
    service = JobService(store, backend, timings, work / "data", snapshot_every=5)
    try:
        job = (await service.submit(Origin(None, 1, 1), _spec(7, steps))).job
        service.pump()
        await until(lambda: len(timings.steps.get(job.id, [])) >= 12, WAIT, "12 steps", POLL)
        owner = client.get(f"imagine:job:{job.id}:worker").decode()
        victim = next(w for w in workers if f"-{w.process.pid}-" in owner)
        victim.kill()
        killed, seen = time.monotonic(), len(timings.steps[job.id])
        await until(lambda: len(timings.steps[job.id]) > seen, WAIT, "the resumed job's next step", POLL)
        step, at = timings.steps[job.id][seen]
        await until(lambda: job.id in timings.done, WAIT, "the resumed job's end", POLL)
        return {"resumed_after_s": at - killed, "killed_after_step": seen, "resumed_at_step": step}
    finally:
        await service.close()
        await backend.close()
        await store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker process")
    p.add_argument("--samples", type=int, default=20, help="one-step jobs for the dispatch latency")
    p.add_argument("--no-kill", action="store_true", help="skip the killed-worker measurement")
    p.add_argument("--json", default="bench-cluster.json")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="imagine-cluster-"))
    models = write_tiny_models(work / "models")
    rows = []
    for count in args.workers:
        redis = RedisServer(work / f"redis-{count}")
        redis.start()
        workers = [Worker(redis.url, models, work / f"worker-{count}-{i}.log", 1, args.threads) for i in range(count)]
        try:
            wait_for_workers(redis.client(), count)
            row = asyncio.run(_throughput(redis.url, work / f"run-{count}", args.jobs, args.steps, args.samples))
            row["workers"] = count
            rows.append(row)
            print(
                f"{count} worker(s): {row['jobs_per_hour']:.0f} jobs/hour ({row['jobs']} jobs of {args.steps} steps "
                f"in {row['seconds']:.1f} s); dispatch latency p50 {statistics.median(row['latency_s']) * 1000:.0f} "
                f"ms, p95 {_p95(row['latency_s']) * 1000:.0f} ms",
                flush=True,
            )
            if count >= 2 and not args.no_kill:
                redis.client().flushdb()  # a new database below: its job ids start again at 1
                kill = asyncio.run(_resume_after_kill(redis.url, work / "kill", workers, redis.client(), 60))
                row["kill"] = kill
                print(
                    f"killed worker: its job resumed on another after {kill['resumed_after_s']:.1f} s "
                    f"(killed after step {kill['killed_after_step']}, went on at step {kill['resumed_at_step']})",
                    flush=True,
                )
        finally:
            for worker in workers:
                worker.stop()
            redis.stop()
    if len(rows) >= 2:
        base = rows[0]["jobs_per_hour"]
        for row in rows[1:]:
            print(f"{row['workers']} workers vs {rows[0]['workers']}: {row['jobs_per_hour'] / base:.2f}x")
    Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
