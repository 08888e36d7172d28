"""A backend that runs no engine, shipped beside the real ones (as httpx ships MockTransport): the job service's
tests run on it, and it implements the same protocol (`bot.backends.Backend`) as the embedded and Celery backends.

    backend = FakeBackend()
    service = JobService(store, backend, presenter, data_dir)
    backend.hold = True             # from now on, jobs stop mid-run ...
    backend.release(job_id)         # ... until they are let go, one by one

Each job reports one step (a progress report with a small PNG preview), a snapshot if it takes snapshots at all, then
finishes with a 32x32 PNG and one score. What it does is set on the backend, before or while jobs run: `hold` (stop
after the first step until `release`), `late_progress` (one more report after the hold), `fail_with` (raise this
error instead of finishing), `unsafe` and `preview_unsafe` (the output check's scores, where the spec asks for them).
What the job service asked of it is recorded: `started`, `resumed`, `steered`.

A held job waits through `await_release(awaitable, reason=...)`: by default it is simply awaited. A harness that
accounts for every wait of the bot can be given instead (simcord's `env.external_wait`, which has that signature), so
that a held job counts as waiting on the test, not as a bot that hangs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from PIL import Image

from bot.backends import BackendBase
from engine.events import Event, Finished, Progress, Result, Snapshotted
from engine.spec import JobSpec

__all__ = ["FakeBackend", "FakeHandle"]


def _png(color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (32, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


async def _just_await(awaitable: Awaitable[Any], *, reason: str) -> Any:
    return await awaitable


class FakeHandle:
    """One job of the fake backend: its scripted events (see the module's docstring)."""

    def __init__(self, backend: FakeBackend, job_id: int, spec: JobSpec, resume, snapshot_every: int) -> None:
        self.backend, self.job_id, self.spec = backend, job_id, spec
        self.resume, self.snapshot_every = resume, snapshot_every
        self.cancelled = False

    def cancel(self) -> None:
        """Finish as cancelled (after the hold, if the job is held)."""
        self.cancelled = True

    async def steer(self, text: str) -> str | None:
        """Add `text` to the spec's prompt schedule at step 1 and record the request in `backend.steered`."""
        spec = self.spec
        self.spec = spec.replace(prompt_schedule=(*spec.prompt_schedule, (1, text)))
        self.backend.steered.append((self.job_id, text))
        return self.spec.to_json()

    async def events(self) -> AsyncIterator[Event]:
        """One progress report, a snapshot if the job takes them, the hold, then Finished (or `fail_with`)."""
        backend = self.backend
        backend.started.append(self.job_id)
        backend.resumed[self.job_id] = self.resume
        step = 1
        unsafe = backend.preview_unsafe if self.spec.moderation == "strict" else None  # strict scores previews
        yield Progress(step, self.spec.steps, 0.5, (0.5,), 1.0, _png(), 32, 32, unsafe=unsafe)
        if self.snapshot_every:
            yield Snapshotted(step, f"snapshot of job {self.job_id} at {step}".encode(), _png(size=(8, 8)))
        if backend.hold:
            gate = asyncio.get_running_loop().create_future()
            backend.gates[self.job_id] = gate
            await backend.await_release(gate, reason="the job is held mid-run until it is released")
        if backend.late_progress:  # a report after the hold (a run that went on for long)
            yield Progress(step + 1, self.spec.steps, 0.5, (0.5,), 2.0, _png(), 32, 32, unsafe=unsafe)
        if backend.fail_with is not None:
            raise backend.fail_with
        steps = step if self.cancelled else self.spec.steps
        unsafe = backend.unsafe if self.spec.moderation != "off" else None  # what the engine's check would give
        result = Result(self.spec, _png((20, 20, 220)), 32, 32, steps, (("x", 0.25),), 2.0, self.cancelled)
        yield Finished(dataclasses.replace(result, unsafe=unsafe, unsafe_label="a test label" if unsafe else None))


class FakeBackend(BackendBase):
    """A backend without an engine: scripted jobs that can be held mid-run until released (see the module's
    docstring); `await_release` is how a held job waits (default: it is simply awaited)."""

    def __init__(self, *, capacity: int = 1, await_release: Callable[..., Awaitable[Any]] | None = None) -> None:
        self.capacity = capacity
        self.await_release = await_release or _just_await
        self.hold = False
        self.late_progress = False
        self.fail_with: BaseException | None = None
        self.preview_unsafe: float | None = 0.01  # the output check's score of every preview (at strict)
        self.unsafe: float | None = 0.01  # the output check's score of every image (when the spec asks for it)
        self.gates: dict[int, asyncio.Future] = {}  # held jobs, by id
        self.started: list[int] = []
        self.resumed: dict[int, bytes | None] = {}  # the snapshot bytes each job was started from
        self.steered: list[tuple[int, str]] = []

    def submit(self, job_id: int, spec: JobSpec, resume: bytes | None, snapshot_every: int = 0) -> FakeHandle:
        """A handle for the job; it runs when its events are read."""
        return FakeHandle(self, job_id, spec, resume, snapshot_every)

    def release(self, job_id: int) -> None:
        """Let a held job go on to its end."""
        self.gates.pop(job_id).set_result(None)

    async def close(self) -> None:
        """Cancel the holds of the jobs still held."""
        for gate in self.gates.values():
            if not gate.done():
                gate.cancel()
