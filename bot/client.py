"""The bot: assembled in `setup_hook` (storage, backend, job service, cogs, persistent buttons, command sync)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import discord
from discord.ext import commands

from bot.backends import Backend, EmbeddedBackend
from bot.config import Settings
from bot.jobs import JobService
from bot.tournaments import Tournaments
from storage import Store

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.errors", "cogs.imagine", "cogs.votes")


def embedded_backend(settings: Settings) -> Backend:
    """The default backend: the engine in this process, models loaded on first use; jobs that cannot fit the
    device's memory are refused when they are submitted."""
    from engine.loading import EnginePool, ModelSettings, device_budget

    pool = EnginePool(
        ModelSettings(
            models_dir=settings.models_dir,
            vqgan_config=settings.vqgan_config,
            vqgan_checkpoint=settings.vqgan_checkpoint,
            clip_checkpoint=settings.clip_checkpoint,
            device=settings.device,
            speed=settings.speed,
        )
    )
    backend = EmbeddedBackend(pool, snapshot_every=settings.snapshot_every, snapshot_budget=settings.snapshot_budget)
    backend.max_batch = settings.max_concurrent or backend.concurrency()
    backend.budget = device_budget(pool.device, settings.speed, free=False)
    return backend


class ImagineBot(commands.Bot):
    """commands.Bot plus the store, the job service and the backend."""

    def __init__(self, settings: Settings, backend_factory: Callable[[Settings], Backend] = embedded_backend) -> None:
        intents = discord.Intents.default()  # includes reactions; slash commands need no message content
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None)
        self.settings = settings
        self._backend_factory = backend_factory
        self.store: Store | None = None
        self.backend: Backend | None = None
        self.jobs: JobService | None = None
        self.tournaments: Tournaments | None = None

    async def setup_hook(self) -> None:
        from cogs.imagine import DYNAMIC_ITEMS, DiscordPresenter

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = await Store.open(self.settings.db_path)
        self.backend = self._backend_factory(self.settings)
        self.presenter = DiscordPresenter(self, interval=self.settings.edit_interval)
        self.jobs = JobService(
            self.store,
            self.backend,
            self.presenter,
            self.settings.data_dir,
            max_queued_per_user=self.settings.max_queued_per_user,
            max_queue=self.settings.max_queue,
            max_concurrent=self.settings.max_concurrent or getattr(self.backend, "max_batch", 1),
            timelapse=self.settings.timelapse,
        )
        log.info("running up to %d jobs at once", self.jobs.max_concurrent)
        self.tournaments = Tournaments(self.store, self.jobs, self.presenter, wait=self.settings.tournament_wait)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        await self.tree.sync()
        recovered = await self.jobs.recover()
        await self.tournaments.recover()
        if recovered:
            self.jobs.pump()

    async def close(self) -> None:
        if self.tournaments is not None:
            await self.tournaments.close()
        if self.jobs is not None:
            await self.jobs.close()
        if self.backend is not None:
            await self.backend.close()
        if self.store is not None:
            await self.store.close()
        await super().close()
