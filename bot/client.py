"""The bot: assembled in `setup_hook` (storage, backend, job service, cogs, persistent buttons, command sync)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import discord
from discord.ext import commands

from bot import health, vitals
from bot.backends import Backend
from bot.backends.embedded import EmbeddedBackend
from bot.catalog import Catalog
from bot.community import Community
from bot.config import Settings
from bot.jobs import JobService
from bot.metrics import Metrics
from bot.stats import Stats
from bot.tournaments import Tournaments
from storage import StorageError, Store

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.errors", "cogs.imagine", "cogs.votes", "cogs.settings", "cogs.describe", "cogs.stats")
STORAGE_CHECK_EVERY = 30.0  # seconds between checks that the database is still there and writable
MAINTENANCE_EVERY = 86400.0  # retention (bot.prune) and posting what could not be posted: on start, then daily


def engine_pool(settings: Settings):
    """The engine's models for these settings (loaded on first use)."""
    from engine.loading import EnginePool

    return EnginePool(settings.model_settings())


def embedded_backend(settings: Settings, pool=None) -> Backend:
    """The default backend: the engine in this process, with the models the start-up check loaded (`pool`), or
    loaded on first use."""
    from engine.loading import device_budget

    pool = pool or engine_pool(settings)
    backend = EmbeddedBackend(pool)
    backend.max_batch = settings.max_concurrent or backend.concurrency()
    backend.budget = device_budget(pool.device, settings.speed, free=False)
    return backend


def celery_backend(settings: Settings) -> Backend:
    """The distributed backend: GPU workers on other hosts, through Celery and Redis."""
    from bot.backends.celery.backend import CeleryBackend

    return CeleryBackend(settings.redis_url)


def backend_for(settings: Settings, pool=None) -> Callable[[Settings], Backend]:
    """The backend factory IMAGINE_BACKEND names (the embedded one gets the models the check loaded)."""
    if settings.backend == "celery":
        return celery_backend
    return lambda s: embedded_backend(s, pool)


class ImagineBot(commands.Bot):
    """commands.Bot plus the store, the job service and the backend."""

    def __init__(self, settings: Settings, backend_factory: Callable[[Settings], Backend] = embedded_backend) -> None:
        intents = discord.Intents.default()  # includes reactions; slash commands need no message content
        self.metrics = Metrics()  # this bot's own registry (bot.metrics); its trace counts Discord's answers
        # Prompts and steer texts are members' words echoed by the bot: they ping nobody. The one exception, the
        # job author's own mention on their result, is allowed per message (see the presenter).
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            http_trace=self.metrics.http_trace(),
            # No message cache: votes come from raw reaction events and a message is fetched when needed. Cached, the
            # last 1,000 messages took memory for nothing, and each result with its vote reactions (a reference
            # cycle) waited for a full garbage collection once dropped from the cache.
            max_messages=None,
        )
        self.settings = settings
        self._backend_factory = backend_factory
        self.store: Store | None = None
        self.backend: Backend | None = None
        self.jobs: JobService | None = None
        self.tournaments: Tournaments | None = None
        self.community: Community | None = None
        self.catalog: Catalog | None = None
        self.stats: Stats | None = None  # what /stats reads (bot.stats)
        self.gallery = None  # bot.gallery.Gallery when IMAGINE_GALLERY_PORT is set
        self.health = None  # bot.health.HealthServer (/healthz, /readyz, /metrics) when IMAGINE_HEALTH_PORT is set
        self.presenter = None  # the Discord presenter, attached by cogs.imagine
        self.storage_error: StorageError | None = None
        self._background: list[asyncio.Task] = []
        self._stopping: asyncio.Task | None = None

    async def start(self, token: str, *, reconnect: bool = True) -> None:
        """As discord.py's, but a failed database ends it with the StorageError (so `run()` raises it and the
        process exits instead of running on without its storage). A database that cannot be opened raises
        from `setup_hook` the same way. The storage watch runs from here, for as long as the bot is connected."""
        self._background.append(asyncio.create_task(self._watch_storage(), name="imagine-storage-watch"))
        await super().start(token, reconnect=reconnect)
        if self.storage_error is not None:
            raise self.storage_error

    def storage_failed(self, exc: StorageError) -> None:
        """The database failed under the running bot: say so once and stop (`start` then raises it)."""
        if self.storage_error is not None:
            return
        self.storage_error = exc
        log.critical("%s The bot stops.", exc)
        self._stopping = asyncio.create_task(self.close(), name="imagine-stop")
        self._background.append(self._stopping)

    async def _maintain(self) -> None:
        """Apply the retention policy and retry results that could not be posted: now, then every day."""
        from bot.prune import Policy, prune

        policy = Policy(self.settings.retention_days, self.settings.disk_budget_mb)
        while True:
            try:
                report = await prune(self.store, self.settings.data_dir, policy)
                log.info("retention: %s", report.line(policy))
                await self.jobs.repost_pending()
            except StorageError as exc:
                self.storage_failed(exc)
                return
            except Exception:
                log.exception("the daily maintenance failed; it runs again tomorrow")
            await asyncio.sleep(MAINTENANCE_EVERY)

    async def check_storage(self) -> bool:
        """One check that the database is still there and writable; stops the bot (and returns False) if not."""
        try:
            await self.store.check()
        except StorageError as exc:
            self.storage_failed(exc)
            await asyncio.shield(self._stopping)  # the close cancels this watch, not the close
            return False
        return True

    async def _watch_storage(self) -> None:
        """Notice a database deleted, replaced or made read-only while nothing else writes to it."""
        while True:
            await asyncio.sleep(STORAGE_CHECK_EVERY)
            if self.store is not None and not await self.check_storage():
                return

    async def setup_hook(self) -> None:
        """Open the store, make the backend, job service, community and tournaments, load the cogs, sync the commands,
        recover the jobs, and start the daily maintenance (and the gallery, if configured)."""
        vitals.start(self)  # the process's event-loop lag monitor (bot.vitals), stopped in close()
        if self.settings.health_port:  # first: a probe hears "alive, still starting" while the rest is set up
            self.health = await health.serve(self, self.settings.health_host, self.settings.health_port)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = await Store.open(self.settings.db_path)  # a StorageError escapes: the bot does not start
        self.backend = self._backend_factory(self.settings)
        self.jobs = JobService(
            self.store,
            self.backend,
            None,  # the chat side: the cog that presents jobs attaches it as it loads
            self.settings.data_dir,
            max_queued_per_user=self.settings.max_queued_per_user,
            max_queue=self.settings.max_queue,
            max_concurrent=self.settings.max_concurrent,
            timelapse=self.settings.timelapse,
            snapshot_every=self.settings.snapshot_every,
            snapshot_budget=self.settings.snapshot_budget,
        )
        self.jobs.on_storage_error = self.storage_failed
        self.community = self.jobs.community = Community(self.store, self.settings)
        self.catalog = Catalog(self.settings)
        self.stats = Stats(self.store, self.jobs)
        health.watch(self)  # the metrics follow the store's job states, the refusals and the live figures
        log.info("running up to %d jobs at once", self.jobs.max_concurrent)
        self.tournaments = Tournaments(self.store, self.jobs, None, wait=self.settings.tournament_wait)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if self.jobs.presenter is None or self.tournaments.presenter is None:
            raise RuntimeError("no extension presents jobs: load cogs.imagine")
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        await self.tree.sync()
        recovered = await self.jobs.recover()
        await self.tournaments.recover()
        if recovered:
            self.jobs.pump()
        self._background.append(asyncio.create_task(self._maintain(), name="imagine-maintenance"))
        if self.settings.gallery_port:
            await self._start_gallery()

    async def _start_gallery(self) -> None:
        """The read-only web gallery of the servers that turned it on (IMAGINE_GALLERY_PORT)."""
        from bot.gallery import Gallery

        def guild_name(guild_id: int) -> str | None:
            guild = self.get_guild(guild_id)
            return guild.name if guild is not None else None

        self.gallery = Gallery(self.store, self.settings.data_dir, guild_name=guild_name)
        await self.gallery.start(self.settings.gallery_host, self.settings.gallery_port)
        log.info("the web gallery listens on %s", self.gallery.url)

    async def close(self) -> None:
        """Cancel the background tasks, stop the gallery, tournaments, job service, backend and store in that order,
        then close discord.py's side."""
        for task in self._background:
            if task is not asyncio.current_task():
                task.cancel()
        if self.gallery is not None:
            await self.gallery.stop()
        if self.health is not None:
            await self.health.stop()
        if self.tournaments is not None:
            await self.tournaments.close()
        if self.jobs is not None:
            await self.jobs.close()
        if self.backend is not None:
            await self.backend.close()
        if self.store is not None:
            try:
                await self.store.close()
            except StorageError as exc:  # closing a failed database: nothing more to save
                log.warning("%s", exc)
        vitals.stop(self)
        await super().close()
