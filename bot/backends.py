"""Execution backends: the narrow interface between the job service and whatever runs the engine.

    handle = backend.submit(job_id, spec, snapshot_path)    # start a job (nothing runs until events are read)
    async for event in handle.events(): ...                  # Progress, Snapshotted, then Finished
    handle.cancel()                                          # stop between steps; events end with Finished(cancelled)

Errors of the engine (`engine.errors.EngineError`) are raised from `events()`. The embedded backend runs the
engine in this process on one worker thread; a distributed backend (Celery + Redis) implements the same three
verbs with the engine on remote GPU workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
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


class Backend(Protocol):
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
    """One job run by the embedded backend, advanced in chunks up to each progress report."""

    def __init__(self, backend: EmbeddedBackend, job_id: int, spec: JobSpec, snapshot_path, resume) -> None:
        self.backend, self.job_id, self.spec = backend, job_id, spec
        self.snapshot_path, self.resume = snapshot_path, resume
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    async def events(self) -> AsyncIterator[Event]:
        from engine import worker  # the one place the bot side reaches the torch side, on first use

        bridge, spec = self.backend.bridge, self.spec
        engine = await bridge.call(self.backend.pool.engine_for, spec)
        snapshot = await bridge.call(worker.snapshot_from, self.resume) if self.resume else None
        run = await bridge.call(engine.start, spec, snapshot)
        started = time.monotonic()
        every = self.backend.snapshot_every
        while not run.done:
            if self._cancelled:
                break
            progress = await bridge.call(
                worker.advance, engine, run, spec.progress_every, started, lambda: self._cancelled
            )
            yield progress
            if every and self.snapshot_path and run.step_index % every < spec.progress_every and not run.done:
                await bridge.call(worker.snapshot_to, run, self.snapshot_path)
                yield Snapshotted(run.step_index, self.snapshot_path)
        result = await bridge.call(engine.result, run, time.monotonic() - started, self._cancelled)
        if self.snapshot_path:  # the final state, for Continue
            await bridge.call(worker.snapshot_to, run, self.snapshot_path)
            yield Snapshotted(run.step_index, self.snapshot_path)
        yield Finished(result)


class EmbeddedBackend:
    """Runs the engine in this process, on one worker thread, with models loaded once."""

    def __init__(self, pool, snapshot_every: int = 50) -> None:
        self.pool = pool
        self.snapshot_every = snapshot_every
        self.bridge = EngineBridge()

    def submit(self, job_id: int, spec: JobSpec, snapshot_path: Path | None, resume: Path | None) -> EmbeddedHandle:
        return EmbeddedHandle(self, job_id, spec, snapshot_path, resume)

    async def close(self) -> None:
        self.bridge.close()
