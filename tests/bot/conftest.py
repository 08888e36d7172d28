"""Bot fixtures: real discord.py in simcord, with the embedded backend on tiny models or a gated fake backend."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import pytest
from PIL import Image

from bot.backends import BackendBase
from bot.config import Settings
from engine.spec import Finished, Progress, Result, Snapshotted
from tests.bot.cluster import redis_server, secure_redis, start_worker  # noqa: F401 - fixtures of the distributed backend


def _png(color=(200, 40, 40), size=(32, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


class GatedHandle:
    def __init__(self, backend, job_id, spec, resume, snapshot_every):
        self.backend, self.job_id, self.spec = backend, job_id, spec
        self.resume, self.snapshot_every = resume, snapshot_every
        self.cancelled = False

    def cancel(self):
        self.cancelled = True

    async def steer(self, text):
        spec = self.spec
        self.spec = spec.replace(prompt_schedule=(*spec.prompt_schedule, (1, text)))
        self.backend.steered.append((self.job_id, text))
        return self.spec.to_json()

    async def events(self):
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
            await backend.env.external_wait(gate, reason="the test holds this job mid-run")
        if backend.late_progress:  # a report after the hold (a run that went on for long)
            yield Progress(step + 1, self.spec.steps, 0.5, (0.5,), 2.0, _png(), 32, 32, unsafe=unsafe)
        if backend.fail_with is not None:
            raise backend.fail_with
        steps = step if self.cancelled else self.spec.steps
        unsafe = backend.unsafe if self.spec.moderation != "off" else None  # what the engine's check would give
        result = Result(self.spec, _png((20, 20, 220)), 32, 32, steps, (("x", 0.25),), 2.0, self.cancelled)
        yield Finished(dataclasses.replace(result, unsafe=unsafe, unsafe_label="a test label" if unsafe else None))


class GatedBackend(BackendBase):
    """A fake that implements the Backend interface; jobs can be held mid-run until the test releases them."""

    def __init__(self):
        self.env = None
        self.hold = False
        self.fail_with = None
        self.gates: dict[int, asyncio.Future] = {}
        self.started: list[int] = []
        self.resumed: dict[int, object] = {}
        self.steered: list[tuple[int, str]] = []
        self.late_progress = False
        self.preview_unsafe: float | None = 0.01  # the output check's score of every preview (at strict)
        self.unsafe: float | None = 0.01  # the output check's score of every image (when the spec asks for it)

    capacity = 1

    def submit(self, job_id, spec, resume, snapshot_every):
        return GatedHandle(self, job_id, spec, resume, snapshot_every)

    def release(self, job_id):
        self.gates.pop(job_id).set_result(None)

    async def close(self):
        for gate in self.gates.values():
            if not gate.done():
                gate.cancel()


@pytest.fixture
def settings(tmp_path, tiny_models):
    return Settings(
        token="test-token-never-logged",
        data_dir=tmp_path / "data",
        models_dir=tiny_models,
        clip_model="tiny-clip",
        device="cpu",
        default_steps=10,
        max_steps=50,
        snapshot_every=5,
        continue_steps=5,
        upscale_steps=3,
        edit_interval=1.0,
        max_queued_per_user=2,
        max_queue=10,
        tournament_steps=4,
        tournament_wait=60.0,
        moderation="off",  # the tiny CLIP's verdicts are arbitrary; the moderation tests choose their level
    )


@pytest.fixture
def simcord_bot(settings):
    from bot.client import ImagineBot

    return ImagineBot(settings)


@pytest.fixture
def gated():
    return GatedBackend()


@pytest.fixture
def make_gated_bot(settings, gated):
    from bot.client import ImagineBot

    def make():
        return ImagineBot(settings, backend_factory=lambda s: gated)

    return make


@pytest.fixture(autouse=True)
async def _close_the_bots_database(request):
    """At the end of a simcord test, close its bot's database if the bot left it open. simcord detaches the bot
    without closing it; a passing test's connection is collected at once, but a failing test's frames keep it alive
    to the end of the run, and aiosqlite's non-daemon thread would then keep pytest from ever exiting."""
    yield
    env = request.node.funcargs.get("simcord_env") if hasattr(request.node, "funcargs") else None
    store = getattr(getattr(env, "bot", None), "store", None)
    if store is not None:
        await store.close()  # a second close does nothing
