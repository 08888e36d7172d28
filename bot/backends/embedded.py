"""The embedded backend: the engine runs in the bot's own process.

One engine thread (`EngineBridge`, the shape of aiosqlite's connection thread) owns the models and advances every
running job in `engine.loop`, several jobs of the same size in one batched step; previews are encoded to PNG on a
second thread. The engine's torch side is imported inside the functions that need it, when the first job runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bot.backends import BackendBase
from engine.events import Event, Failed, Finished, Progress
from engine.spec import JobSpec

log = logging.getLogger(__name__)


class EngineBridge:
    """One worker thread that owns the engine; coroutines hand it work and await the result.

    The shape of aiosqlite's connection thread: every call is queued to the single thread, so the models are
    only ever touched from there, and results come back to the event loop as futures.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-engine")

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the engine thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        """Shut the engine thread down without waiting; calls still queued are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class EmbeddedHandle:
    """One job of the embedded backend: its run joins the backend's loop; its events arrive on a queue."""

    def __init__(self, backend: EmbeddedBackend, job_id: int, spec: JobSpec, resume, snapshot_every: int) -> None:
        self.backend, self.job_id, self.spec = backend, job_id, spec
        self.resume, self.snapshot_every = resume, snapshot_every
        self._cancelled = False
        self.queue: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        """Stop the run at its next step (it finishes as cancelled)."""
        self._cancelled = True

    async def steer(self, text: str) -> str | None:
        """Aim the run at `text` from its next step, on the engine thread; the new spec as JSON, or None if it is not
        running."""
        loop = self.backend._loop
        if loop is None:
            return None
        spec = await self.backend.bridge.call(loop.steer, self.job_id, text)
        return None if spec is None else spec.to_json()

    async def events(self) -> AsyncIterator[Event]:
        """Join the backend's loop, then yield the run's events up to Finished (a Failed raises its error); a consumer
        that stops reading early cancels the run."""
        finished = False
        try:
            await self.backend.join(self)
            while True:
                event = await self.queue.get()
                if isinstance(event, asyncio.Future):  # a progress report whose preview is being encoded
                    event = await event
                if isinstance(event, Failed):
                    finished = True
                    raise event.error
                yield event
                if isinstance(event, Finished):
                    finished = True
                    return
        finally:
            self.backend._handles.pop(self.job_id, None)
            if not finished:  # the consumer went away: stop the run at its next step
                self._cancelled = True


def _encode_preview(progress: Progress, image) -> Progress:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return dataclasses.replace(progress, preview=buffer.getvalue())


class EmbeddedBackend(BackendBase):
    """Runs the engine in this process: one engine thread advances every running job in `engine.loop` (several
    jobs of the same size in one batched step, up to `max_batch`); previews are encoded on another thread."""

    can_describe = True

    def __init__(self, pool, max_batch: int = 1) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self.bridge = EngineBridge()
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-previews")
        self._loop = None  # the engine's Loop, made on the engine thread's first job
        self._handles: dict[int, EmbeddedHandle] = {}
        self._driver: asyncio.Task | None = None
        self.budget = None  # an engine.memory.Budget once known (see bot.client.embedded_backend)

    @property
    def capacity(self) -> int:
        """Jobs run at once: `max_batch`."""
        return self.max_batch

    def submit(self, job_id: int, spec: JobSpec, resume: bytes | None, snapshot_every: int = 0) -> EmbeddedHandle:
        """A handle for the job; the run joins the loop when its events are first read."""
        return EmbeddedHandle(self, job_id, spec, resume, snapshot_every)

    async def describe(self, image: bytes, clip_model: str, cache_dir: Path):
        """What CLIP sees in `image` (an `engine.describe.Description`), on the engine's thread: the vocabulary's
        embeddings are made once per CLIP model and kept in `cache_dir`."""

        def run():
            from engine.describe import Describer

            describers = self.__dict__.setdefault("_describers", {})
            if clip_model not in describers:
                describers[clip_model] = Describer(self.pool.perceptor(clip_model), cache_dir)
            return describers[clip_model].describe(image)

        return await self.bridge.call(run)

    async def readiness(self) -> str | None:
        """Ready once the models are loaded (the start-up check loads the default ones before the bot logs in)."""
        if not getattr(self.pool, "loaded", True):
            return "The models are not loaded yet."
        return None

    async def observe(self) -> dict[str, float]:
        """The engine's device memory (CUDA), once a model is loaded; nothing on a CPU (the process's own memory is
        the engine's there)."""
        memory = getattr(self.pool, "memory", None)
        return {f"engine_memory_{kind}_bytes": float(n) for kind, n in memory().items()} if memory else {}

    def concurrency(self) -> int:
        """How many jobs to run at once here: a default from the device's free memory (1 on CPU)."""
        from engine.loading import suggest_concurrency

        return suggest_concurrency(self.pool.device)

    def _callbacks(self, handle: EmbeddedHandle):
        """The run's callbacks: called on the engine thread, they hand each event to the job's queue."""
        from engine.loop import Callbacks

        aloop = asyncio.get_running_loop()

        def progress(report: Progress, preview) -> None:
            def deliver() -> None:
                handle.queue.put_nowait(aloop.run_in_executor(self._encoder, _encode_preview, report, preview))

            aloop.call_soon_threadsafe(deliver)

        def event(e: Event) -> None:
            aloop.call_soon_threadsafe(handle.queue.put_nowait, e)

        return Callbacks(progress, event, lambda: handle._cancelled, handle.snapshot_every)

    async def join(self, handle: EmbeddedHandle) -> None:
        """Load the models if needed, start the run (from the snapshot's bytes, if any) and add it to the loop
        between two steps; make sure the loop is being driven."""
        from engine.loop import Loop
        from engine.run import load_snapshot

        def start() -> None:
            if self._loop is None:
                self._loop = Loop(self.max_batch)
            engine = self.pool.engine_for(handle.spec)
            snapshot = load_snapshot(handle.resume) if handle.resume is not None else None
            self._loop.add(handle.job_id, engine, engine.start(handle.spec, snapshot), callbacks)

        callbacks = self._callbacks(handle)
        await self.bridge.call(start)
        self._handles[handle.job_id] = handle
        if self._driver is None:
            self._driver = asyncio.create_task(self._drive(), name="imagine-engine-loop")

    async def _drive(self) -> None:
        """Advance the loop, one round per call to the engine thread, while it has runs."""
        try:
            while await self.bridge.call(self._loop.round):
                pass
        except Exception as exc:  # the loop itself broke (not one job's step): fail every job still in it
            log.exception("the engine loop stopped")
            for key, handle in list(self._handles.items()):
                if key in self._loop:
                    handle.queue.put_nowait(Failed(exc))
            self._loop = None
        finally:
            self._driver = None

    async def close(self) -> None:
        """Stop driving the loop and shut the engine and preview threads down without waiting."""
        if self._driver is not None:
            self._driver.cancel()
        self.bridge.close()
        self._encoder.shutdown(wait=False, cancel_futures=True)
