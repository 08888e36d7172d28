"""Execution backends: the narrow interface between the job service and whatever runs the engine.

    handle = backend.submit(job_id, spec, snapshot_path)    # start a job (nothing runs until events are read)
    async for event in handle.events(): ...                  # Progress, Snapshotted, then Finished
    handle.cancel()                                          # stop between steps; events end with Finished(cancelled)

Errors of the engine (`engine.errors.EngineError`) are raised from `events()`. The embedded backend runs the
engine in this process on one worker thread, batching concurrent jobs of one size into one step; a distributed
backend (Celery + Redis) implements the same three verbs with the engine on remote GPU workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.spec import JobSpec, Progress, Result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshotted:
    """The job's state was saved to `path` at `step` (crash recovery and Continue start from it)."""

    step: int
    path: Path


@dataclass(frozen=True)
class Finished:
    """The job ended; `result.cancelled` says whether it was stopped early."""

    result: Result


Event = Progress | Snapshotted | Finished


class JobHandle(Protocol):
    def events(self) -> AsyncIterator[Event]: ...

    def cancel(self) -> None: ...

    async def steer(self, text: str) -> str | None:
        """Aim the running job at `text` from its next step; the new spec (JSON), or None if it is not running."""


class Backend(Protocol):
    """`budget` (optional): an `engine.memory.Budget`, the memory one job may use where this backend runs; the job
    service refuses a job that cannot fit it at submit time. None (or absent): not checked."""

    def submit(self, job_id: int, spec: JobSpec, snapshot_path: Path | None, resume: Path | None) -> JobHandle: ...

    async def close(self) -> None: ...


class EngineBridge:
    """One worker thread that owns the engine; coroutines hand it work and await the result.

    The shape of aiosqlite's connection thread: every call is queued to the single thread, so the models are
    only ever touched from there, and results come back to the event loop as futures.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-engine")

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class EmbeddedHandle:
    """One job of the embedded backend: its run joins the backend's batch; reports arrive on a queue."""

    def __init__(self, backend: EmbeddedBackend, job_id: int, spec: JobSpec, snapshot_path, resume) -> None:
        self.backend, self.job_id, self.spec = backend, job_id, spec
        self.snapshot_path, self.resume = snapshot_path, resume
        self._cancelled = False
        self.reports: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        self._cancelled = True

    async def steer(self, text: str) -> str | None:
        batcher = self.backend._batcher
        if batcher is None or self.job_id not in self.backend._handles:
            return None
        return await self.backend.bridge.call(batcher.steer, self.job_id, text)

    async def events(self) -> AsyncIterator[Event]:
        from engine import worker  # the one place the bot side reaches the torch side, on first use

        backend, spec = self.backend, self.spec
        bridge = backend.bridge
        finished = False
        try:
            engine = await bridge.call(backend.pool.engine_for, spec)
            snapshot = await bridge.call(worker.snapshot_from, self.resume) if self.resume else None
            run = await bridge.call(engine.start, spec, snapshot)
            await backend.join(self, engine, run)
            while True:
                report = await self.reports.get()
                if isinstance(report, worker.ProgressReport):
                    png = await report.preview if report.preview is not None else None
                    yield dataclasses.replace(report.progress, preview=png)
                elif isinstance(report, worker.SnapshotReport):
                    yield Snapshotted(report.step, report.path)
                elif isinstance(report, worker.ResultReport):
                    finished = True
                    yield Finished(report.result)
                    return
                elif isinstance(report, worker.ErrorReport):
                    finished = True
                    raise report.error
        finally:
            if not finished:  # the consumer went away: stop the run at its next step
                self._cancelled = True


def _encode_preview(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class EmbeddedBackend:
    """Runs the engine in this process: one engine thread advances every running job, several jobs of the same
    size in one batched step (up to `max_batch`); previews are encoded on another thread meanwhile."""

    def __init__(self, pool, snapshot_every: int = 50, max_batch: int = 1, snapshot_budget: int = 6) -> None:
        self.pool = pool
        self.snapshot_every = snapshot_every
        self.snapshot_budget = snapshot_budget
        self.max_batch = max_batch
        self.bridge = EngineBridge()
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-previews")
        self._handles: dict[int, EmbeddedHandle] = {}
        self._batcher = None
        self._driver: asyncio.Task | None = None
        self.budget = None  # an engine.memory.Budget once known (see bot.client.embedded_backend)

    def submit(self, job_id: int, spec: JobSpec, snapshot_path: Path | None, resume: Path | None) -> EmbeddedHandle:
        return EmbeddedHandle(self, job_id, spec, snapshot_path, resume)

    def concurrency(self) -> int:
        """How many jobs to run at once here: a default from the device's free memory (1 on CPU)."""
        from engine.loading import suggest_concurrency

        return suggest_concurrency(self.pool.device)

    async def join(self, handle: EmbeddedHandle, engine, run) -> None:
        """Add a started run to the batch (between two steps) and make sure the batch is being advanced."""
        from engine import worker

        if self._batcher is None:
            self._batcher = worker.Batcher(self.max_batch)
        self._handles[handle.job_id] = handle
        history = None
        if handle.snapshot_path is not None and self.snapshot_every:
            history = worker.SnapshotHistory(handle.snapshot_path, self.snapshot_every, self.snapshot_budget)
        await self.bridge.call(self._batcher.add, handle.job_id, engine, run, lambda: handle._cancelled, history)
        if self._driver is None:
            self._driver = asyncio.create_task(self._drive(), name="imagine-engine-batch")

    async def _drive(self) -> None:
        """Advance the batch while it has runs; deliver each report to its job (previews encoded meanwhile)."""
        from engine import worker

        loop = asyncio.get_running_loop()
        try:
            while await self.bridge.call(len, self._batcher):
                for report in await self.bridge.call(self._batcher.advance):
                    handle = self._handles.get(report.key)
                    if handle is None:
                        continue
                    if isinstance(report, worker.ProgressReport) and report.preview is not None:
                        preview = loop.run_in_executor(self._encoder, _encode_preview, report.preview)
                        report = dataclasses.replace(report, preview=preview)
                    if isinstance(report, worker.ResultReport | worker.ErrorReport):
                        self._handles.pop(report.key, None)
                    handle.reports.put_nowait(report)
        except Exception as exc:  # the engine thread itself broke (not one job): fail every waiting job
            log.exception("the engine batch stopped")
            for key, handle in list(self._handles.items()):
                handle.reports.put_nowait(worker.ErrorReport(key, exc))
            self._handles.clear()
        finally:
            self._driver = None

    async def close(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
        self.bridge.close()
        self._encoder.shutdown(wait=False, cancel_futures=True)
