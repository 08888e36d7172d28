"""The gate every job passes before it is recorded: the member's cooldown, the server's rules (through
`bot.community.Community`), the backend's memory budget and the waiting line's caps, the caps checked in the same
store statement that records the job."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from bot.backends import Backend
from bot.jobs._models import Limits, Origin
from bot.queue import Cooldown, FairQueue, QueueFull, RateLimiter, member_full, queue_full
from engine.errors import InvalidSpec
from engine.spec import JobSpec
from storage import Job, JobKind, Store

COOLDOWN = (2, 10.0)  # at most 2 requests for pictures per 10 s per member, whichever door they come through


class Admission:
    """Says whether a job may be recorded, in the member's words when it may not, and records it when it may.
    `community` (set by the job service) holds the servers' rules; without it only the caps apply."""

    def __init__(self, store: Store, backend: Backend, queue: FairQueue, cooldown: tuple[int, float] = COOLDOWN):
        self.store, self.backend, self.queue = store, backend, queue
        self.cooldown = RateLimiter(*cooldown)
        self.community = None  # a bot.community.Community

    def enter(self, origin: Origin) -> Origin:
        """Count a member's request for pictures against their cooldown (Cooldown, with the wait, when over it); the
        origin returned is marked counted, so the gate does not count it again. A door with work to do before the
        gate (downloading a picture) enters first; `prepare` enters for the others."""
        retry_after = self.cooldown.hit(origin.author_id, asyncio.get_running_loop().time())
        if retry_after:
            raise Cooldown(retry_after)
        return replace(origin, counted=True)

    async def prepare(self, origin: Origin, spec: JobSpec, *, limits: bool = True) -> JobSpec:
        """The gate: the spec as this server runs it, or a refusal in the member's words. The member's cooldown
        (Cooldown), then the server's channels, steps and sizes and the blocked words (InvalidSpec, see
        `Community.admit`); the output check is set to the server's level. `limits=False` (a tournament's winner,
        asked for by no one) skips the cooldown and the limits, never the words or the output check."""
        if limits and not origin.counted:
            self.enter(origin)
        if self.community is None:
            return spec
        return await self.community.admit(origin.guild_id, origin.places, spec, limits=limits)

    async def admit(
        self,
        origin: Origin,
        spec: JobSpec,
        *,
        kind: JobKind = JobKind.NEW,
        parent_id: int | None = None,
        thread_id: int | None = None,
        check_limits: bool = True,
    ) -> Job:
        """Record a job under the caps (not yet in the waiting line). The caps are checked in the same store
        statement that records the job, so simultaneous submissions cannot overshoot them; `check_limits=False`
        skips them and the server's limits (a tournament's winner, which takes its tournament's place)."""
        if parent_id is not None:  # a job that goes on from another: only from a live image of the same server
            parent = await self.store.get_job(parent_id)
            if parent is None or parent.guild_id != origin.guild_id or parent.deleted_at is not None:
                raise InvalidSpec("That image was deleted or is not of this server; nothing can go on from it.")
        spec = await self.prepare(origin, spec, limits=check_limits)
        budget = self.backend.budget
        if budget is not None:  # refused now, not out of memory later in the thread
            budget.check_spec(spec)  # the last stage is the largest; every CLIP model of an ensemble counted
        limits = await self.limits(origin.guild_id) if check_limits else Limits(None, None, None)
        job = await self.store.admit_job(
            guild_id=origin.guild_id,
            channel_id=origin.channel_id,
            author_id=origin.author_id,
            spec_json=spec.to_json(),
            kind=kind,
            parent_id=parent_id,
            max_waiting=limits.per_member,
            max_total=limits.total,
            max_server=limits.server,
        )
        if job is None:
            raise await self.refusal(origin, limits)
        if thread_id is not None:
            job = await self.store.update_job(job.id, thread_id=thread_id)
        return job

    async def limits(self, guild_id: int | None) -> Limits:
        """The waiting-line caps here: per member (the server's, else the bot's), in all, and the server's own."""
        settings = await self.store.guild_settings(guild_id)
        return Limits(
            settings.max_queued_per_user or self.queue.max_per_user, self.queue.max_total, settings.max_queued_total
        )

    async def refusal(self, origin: Origin, limits: Limits, count: int = 1) -> QueueFull:
        """The error for `count` jobs the store refused: which cap they hit, in the member's words."""
        (cap, total, server), author_id = limits, origin.author_id
        if server is not None and await self.store.server_waiting(origin.guild_id) + count > server:
            return QueueFull(
                f"This server allows {server} image{'s' if server != 1 else ''} waiting at once and that many "
                "are waiting; try again when some have started."
            )
        mine, everyone = await self.store.waiting(author_id)
        if count > 1 and mine + count > cap:
            return QueueFull(
                f"A tournament of {count} seeds needs {count} places in your waiting line; you have "
                f"{max(0, cap - mine)} free (at most {cap} images waiting here). Pick fewer seeds, or wait until "
                "some of your images start."
            )
        return member_full(cap) if mine + count > cap or everyone + count <= total else queue_full(total)
