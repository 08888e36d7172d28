"""/describe's door: what CLIP sees in a member's picture, under the same rules as every other door (the server's
picture channels, a cooldown, one picture at a time on the engine's thread, nothing the server blocks shown)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.backends import Backend
from bot.jobs._models import Origin
from bot.queue import Cooldown, QueueFull, RateLimiter
from engine.errors import InvalidSpec

DESCRIBE_COOLDOWN = (1, 30.0)  # /describe: once per 30 s per member


class Describing:
    """Describes pictures on the backend's engine, one at a time; `community` (set by the job service) holds the
    servers' rules."""

    def __init__(self, backend: Backend, cache_dir: Path) -> None:
        self.backend, self.cache_dir = backend, cache_dir
        self.cooldown = RateLimiter(*DESCRIBE_COOLDOWN)
        self.lock = asyncio.Lock()  # one /describe at a time: the engine's thread is the jobs' first
        self.community = None  # a bot.community.Community

    @property
    def available(self) -> bool:
        """Whether /describe can run here: it needs the engine in this process (the embedded backend)."""
        return self.backend.can_describe

    async def check(self, origin: Origin) -> None:
        """Whether the member may describe a picture here and now: in the server's picture channels (InvalidSpec),
        once per DESCRIBE_COOLDOWN (Cooldown), and not while another picture is being described (QueueFull):
        /describe shares the engine's thread with the running jobs."""
        if self.community is not None:
            self.community.check_place(await self.community.settings(origin.guild_id), origin.places)
        retry_after = self.cooldown.hit(origin.author_id, asyncio.get_running_loop().time())
        if retry_after:
            raise Cooldown(retry_after)
        if self.lock.locked():
            raise QueueFull("Another picture is being described right now; try again in a few seconds.")

    async def describe(self, origin: Origin, image: bytes, clip_model: str):
        """What CLIP sees in `image` (an `engine.describe.Description`), on the backend's engine; the vocabulary's
        embeddings are kept in `cache_dir`. One picture is described at a time (see `check`, which the caller asks
        first). Terms the server blocks are taken out of what is shown and of the prompt. InvalidSpec where the
        engine runs on workers."""
        if not self.available:
            raise InvalidSpec("/describe needs the engine in the bot's own process; this bot runs it on workers.")
        async with self.lock:
            description = await self.backend.describe(image, clip_model, self.cache_dir)
        if self.community is None:
            return description
        return await self.community.screen_description(origin.guild_id, description)
