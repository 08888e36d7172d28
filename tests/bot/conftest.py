"""Bot fixtures: real discord.py in simcord, with the embedded backend on tiny models or a gated fake backend."""

from __future__ import annotations

import pytest

from bot.backends.fake import FakeBackend
from bot.config import Settings
from tests.bot.cluster import redis_server, secure_redis, start_worker  # noqa: F401 - fixtures of the distributed backend


class GatedBackend(FakeBackend):
    """The fake backend the bot ships (`bot.backends.fake`), in simcord: once a test's world fixture gives it the env
    (`gated.env = simcord_env`), a held job's wait is declared to simcord as external input (`env.external_wait`), so
    that the bot counts as idle, not stuck, while the test holds the job."""

    def __init__(self) -> None:
        super().__init__(await_release=self._external_wait)
        self.env = None  # the simcord env, set by the test

    async def _external_wait(self, awaitable, *, reason: str):
        if self.env is None:  # not in simcord: just wait
            return await awaitable
        return await self.env.external_wait(awaitable, reason=reason)


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
def small_squares(monkeypatch):
    """ "square-small" is 64x64: jobs on the tiny models stay quick on a CPU (SIREN, upscales, frames, ensembles)."""
    from bot import catalog

    monkeypatch.setitem(catalog.SIZES, "square-small", (64, 64))


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
