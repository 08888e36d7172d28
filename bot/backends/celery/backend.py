"""The distributed backend: jobs run on GPU workers on other hosts (`python -m bot.backends.celery.worker`), through
Celery with a Redis broker; progress, previews, snapshots and results come back on a Redis Stream per job.

Fairness stays in the bot: the job service hands a job to Celery only when a worker slot is free (`capacity` is
the sum of the live workers' slots, from their heartbeats), so the broker queue stays shallow. Each job is sent
with an attempt token. The bot reads the job's stream from a cursor it keeps in Redis, so after a restart it goes
on where it stopped, without sending the job again while a worker still runs it. A job whose worker stops
heart-beating is sent again with a new token and resumes from its newest snapshot (kept in Redis); the old
token's task, should it ever come back, is dropped. While Redis cannot be reached, jobs wait; they are not failed.

Redis must stay private, yet nothing read from it is trusted: a heartbeat whose slots are not a small number is not
counted (with a warning), and an event that `wire` cannot read, or that does not fit its job (a steer answer
that is not the job's spec with the requested prompt, a result of another moderation level), fails that one job with
a sentence and tells its worker to stop.
The Redis URL's password never reaches a log line or a sentence (`bot.logs.redact`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable

from bot.backends import BackendBase
from bot.backends.celery import protocol
from bot.backends.celery.protocol import QUEUE
from bot.backends.celery.wire import MalformedEvent, Steered, check_pictures, decode
from bot.logs import redact, url_secrets
from engine.errors import InvalidSpec
from engine.events import Event, Failed, Finished
from engine.spec import JobSpec

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks at the workers' heartbeats
READY_TIMEOUT = 2.0  # seconds Redis has to answer each of /readyz's questions
_CURSOR = re.compile(rb"[0-9]{1,20}-[0-9]{1,20}")  # a stream entry id


class RedisUnavailable(Exception):
    """Redis cannot be reached (the sentence says where)."""


class CeleryHandle:
    """One job on the distributed backend."""

    def __init__(self, backend: CeleryBackend, job_id: int, spec: JobSpec, resume, snapshot_every: int) -> None:
        self.backend, self.job_id, self.spec = backend, job_id, spec
        self.resume, self.snapshot_every = resume, snapshot_every
        self._steers: dict[str, tuple[asyncio.Future, str]] = {}  # nonce -> (the answer, the text asked for)
        self._ended = False
        self._attempt: bytes | None = None
        self._sent = 0.0
        self.files: dict[str, bytes] = {}  # the spec's pictures (name -> bytes): workers share no disk with us

    def _key(self, part: str) -> str:
        return protocol.key(self.job_id, part)

    def cancel(self) -> None:
        """Set the job's cancel key in Redis (in the background); its worker stops between steps."""
        self.backend._spawn(self._set_cancel())

    async def _set_cancel(self) -> None:
        await self.backend._retry(lambda r: r.set(self._key("cancel"), b"1", ex=protocol.KEEP))

    async def steer(self, text: str) -> str | None:
        """Ask the job's worker to aim at `text`: the new spec (JSON: the job's spec with the step the worker
        changed it at), or None if the job has ended or no answer comes within `steer_timeout`."""
        if self._ended:
            return None
        nonce = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._steers[nonce] = (future, text)
        request = json.dumps({"nonce": nonce, "text": text})
        await self.backend._retry(lambda r: r.rpush(self._key("steer"), request))
        try:
            return await asyncio.wait_for(future, self.backend.steer_timeout)
        except TimeoutError:
            return None
        finally:
            self._steers.pop(nonce, None)

    async def _dispatch(self, fresh: bool) -> None:
        """Give the job to Celery under a new attempt token. A fresh job starts from `resume` (or from nothing);
        a job sent again keeps the newest snapshot its last worker left in Redis."""
        attempt = uuid.uuid4().hex
        keys = {
            name: protocol.file_key(self.job_id, hashlib.sha256(data).hexdigest()) for name, data in self.files.items()
        }

        async def prepare(r) -> None:
            pipe = r.pipeline()
            for name, data in self.files.items():
                pipe.set(keys[name], data, ex=protocol.KEEP)
            pipe.set(self._key("attempt"), attempt, ex=protocol.KEEP)
            if self.backend.owner:
                pipe.set(self._key("owner"), self.backend.owner, ex=protocol.KEEP)
            pipe.delete(self._key("cancel"))
            if fresh:
                pipe.delete(self._key("snapshot"), self._key("events"), self._key("cursor"), self._key("steer"))
                if self.resume is not None:
                    pipe.set(self._key("resume"), self.resume, ex=protocol.KEEP)
                else:
                    pipe.delete(self._key("resume"))
            await pipe.execute()

        await self.backend._retry(prepare)
        args = [self.job_id, attempt, self.spec.to_json(), self.snapshot_every, keys]
        await self.backend._send(args)
        self._attempt, self._sent = attempt.encode(), time.monotonic()
        log.info("job %d sent to the workers (attempt %s%s)", self.job_id, attempt[:8], "" if fresh else ", again")

    async def events(self) -> AsyncIterator[Event]:
        """Send the job (or, after a restart, read on from the kept cursor) and yield its events up to Finished; a
        Failed raises its error, and a job whose worker is lost is sent again."""
        backend = self.backend
        try:
            alive = await backend._retry(lambda r: r.exists(self._key("worker"), self._key("attempt")))
            started = await backend._retry(lambda r: r.exists(self._key("events")))
            owner = await backend._retry(lambda r: r.get(self._key("owner")))
            if backend.owner and owner is not None and owner.decode(errors="replace") != backend.owner:
                # another database's job of the same number (this one was replaced and its ids began again):
                # its events and snapshot are not this job's, and whoever still runs it is stopped by the new token
                log.warning("job %d: Redis holds another database's job of that number; starting afresh", self.job_id)
                alive, started = 0, 0
            if alive < 2:  # nobody runs it now: send it (again, after a restart, keeping its snapshot)
                await self._dispatch(fresh=not started)
            else:  # a restart of the bot while a worker runs the job: read on from the cursor
                self._attempt, self._sent = await backend._retry(lambda r: r.get(self._key("attempt"))), 0.0
            cursor = await backend._retry(lambda r: r.get(self._key("cursor"))) or b"0-0"
            if not _CURSOR.fullmatch(cursor):
                log.warning("job %d: its cursor in Redis is not a stream position; reading from the start", self.job_id)
                cursor = b"0-0"
            seen = time.monotonic()
            while True:
                entries = await backend.await_workers(
                    backend._retry(
                        lambda r, c=cursor: r.xread({self._key("events"): c}, count=16, block=int(POLL * 1000))
                    )
                )
                for _stream, items in entries or []:
                    for entry_id, fields in items:
                        cursor = entry_id
                        event = await self._read(entry_id, fields)
                        if event is None:
                            continue
                        if isinstance(event, Steered):
                            future, _ = self._steers[event.nonce]
                            if not future.done():
                                future.set_result(event.spec)
                        elif isinstance(event, Failed):
                            self._ended = True
                            await self._close_out()
                            raise event.error
                        else:
                            if isinstance(event, Finished):
                                self._ended = True
                            yield event
                            await backend._retry(lambda r, c=cursor: r.set(self._key("cursor"), c, ex=protocol.KEEP))
                            if isinstance(event, Finished):
                                await self._close_out()
                                return
                if await self._lost(seen):
                    await self._dispatch(fresh=False)
                    seen = time.monotonic()
                elif await backend._retry(lambda r: r.exists(self._key("worker"))):
                    seen = time.monotonic()
        finally:
            for future, _ in self._steers.values():  # no answer will come now
                if not future.done():
                    future.set_result(None)
            if not self._ended:
                log.debug("job %d: stopped reading its events", self.job_id)

    async def _read(self, entry_id: bytes, fields: dict) -> Event | Steered | None:
        """The event of one stream entry, checked against this job; None for one to pass over (a steer answer
        nobody waits for). An entry that cannot be read or does not fit fails the job: its worker is told to stop,
        and MalformedEvent (a sentence for the member) is raised."""
        try:
            event = self._fits(check_pictures(decode(fields)))
        except MalformedEvent as exc:
            log.warning("job %d: entry %s of its stream cannot be read: %s", self.job_id, entry_id, exc.detail)
            self._ended = True
            await self._close_out()
            await self._set_cancel()  # after the close-out, which clears the key: whoever runs it stops
            raise
        if isinstance(event, Steered) and event.nonce not in self._steers:
            return None
        return event  # a preview without the score its level asks for: the job service drops it, for every backend

    def _fits(self, event: Event | Steered) -> Event | Steered:
        """`event` if it belongs to this job, else MalformedEvent. A steer answer becomes this job's spec with the
        worker's new prompt schedule (never the worker's own spec: its pictures are in the worker's folders)."""
        if isinstance(event, Finished) and event.result.spec.moderation != self.spec.moderation:
            raise MalformedEvent(f"a result checked at level {event.result.spec.moderation!r:.20}, not the job's")
        if isinstance(event, Steered) and event.nonce in self._steers:
            try:
                theirs = JobSpec.from_json(event.spec)
            except InvalidSpec as exc:
                raise MalformedEvent(f"a steer answer whose spec cannot be used ({exc})") from None
            schedule, asked = theirs.prompt_schedule, self._steers[event.nonce][1]
            if not schedule or schedule[-1][1] != asked or theirs.moderation != self.spec.moderation:
                raise MalformedEvent("a steer answer that is not the job's spec with the prompt asked for")
            if schedule[:-1] != tuple(entry for entry in self.spec.prompt_schedule if entry[0] < schedule[-1][0]):
                raise MalformedEvent("a steer answer that changes the job's earlier prompts")
            self.spec = self.spec.replace(prompt_schedule=schedule)  # a job sent again runs with it
            return Steered(event.nonce, self.spec.to_json())
        return event

    async def _lost(self, seen: float) -> bool:
        """Whether the job must be sent again: its worker stopped heart-beating (it claimed this attempt, then went
        quiet for `lost_after`), or its task vanished (never claimed, nothing left in the broker's queue)."""
        backend = self.backend
        quiet = time.monotonic() - seen
        if quiet < backend.lost_after:
            return False
        worker, claimed, waiting = await backend._retry(
            lambda r: _pipeline(r, ("exists", self._key("worker")), ("get", self._key("claimed")), ("llen", QUEUE))
        )
        if worker:
            return False
        if claimed is not None and claimed == self._attempt:
            log.warning("job %d: its worker stopped answering; sending it again", self.job_id)
            return True
        if time.monotonic() - self._sent > 2 * backend.lost_after and not waiting:
            log.warning("job %d: its task is nowhere to be found; sending it again", self.job_id)
            return True
        return False

    async def _close_out(self) -> None:
        """The job ended: its token goes (a late copy of its task is then dropped) and its keys expire soon."""

        async def close(r) -> None:
            pipe = r.pipeline()
            pipe.delete(self._key("attempt"), self._key("cancel"), self._key("steer"), self._key("resume"))
            pipe.delete(self._key("claimed"))
            for part in ("events", "snapshot", "cursor", "owner"):
                pipe.expire(self._key(part), self.backend.keep_after_end)
            await pipe.execute()

        await self.backend._retry(close)


def _identity(awaitable):
    return awaitable


async def _pipeline(r, *calls) -> list:
    pipe = r.pipeline()
    for name, *args in calls:
        getattr(pipe, name)(*args)
    return await pipe.execute()


class CeleryBackend(BackendBase):
    """Jobs go to Celery workers on any host; see the module's docstring."""

    remote = True  # its jobs outlive the bot's process: a restart reads on, a shutdown does not cancel them

    def __init__(
        self,
        redis_url: str,
        *,
        lost_after: float = 5.0,
        steer_timeout: float = 30.0,
        keep_after_end: int = 3600,
    ) -> None:
        import redis.asyncio

        self.redis_url = redis_url
        self.where, self.secrets = redact(redis_url), url_secrets(redis_url)  # what logs and sentences may show
        self.redis = redis.asyncio.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.app = protocol.make_app(redis_url)
        self.lost_after, self.steer_timeout, self.keep_after_end = lost_after, steer_timeout, keep_after_end
        self.on_capacity: Callable[[], None] | None = None  # the job service's pump
        # The database's install token (set by the job service): job ids begin again with a new database, and a
        # job's Redis keys carry the token of the database that made them, so none is taken for another's.
        self.owner: str | None = None
        self._capacity = 0
        self._monitor: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._warned = 0.0
        self._miscounted: set[str] = set()  # workers whose heartbeat was not counted (each warned of once)
        # How the bot awaits its workers' next events: the awaitable itself. (A test harness may declare these
        # waits as external input, so that the bot counts as idle while a worker computes.)
        self.await_workers: Callable = _identity

    @property
    def capacity(self) -> int:
        """Slots of the live workers, as last counted (see `need_capacity`)."""
        return self._capacity

    def need_capacity(self, still_needed: Callable[[], bool]) -> None:
        """Jobs wait for room: count the live workers' slots now and every POLL seconds while `still_needed()`,
        and call `on_capacity` whenever the count grows. (No timer runs while nothing waits.)"""
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.get_running_loop().create_task(self._watch(still_needed), name="imagine-workers")

    def submit(self, job_id: int, spec: JobSpec, resume: bytes | None, snapshot_every: int = 0) -> CeleryHandle:
        """A handle for the job; it is sent to the workers when its events are first read."""
        return CeleryHandle(self, job_id, spec, resume, snapshot_every)

    async def check(self) -> str | None:
        """A sentence when Redis cannot be reached (for the start-up check), else None."""
        try:
            await asyncio.wait_for(self.redis.ping(), 10)
        except Exception as exc:  # redis raises several kinds for a refused or unresolvable host
            return redact(protocol.unreachable(self.where, exc), self.secrets)
        return None

    async def readiness(self) -> str | None:
        """Ready while Redis answers and at least one worker is alive (/readyz): a sentence otherwise."""
        try:
            await asyncio.wait_for(self.redis.ping(), READY_TIMEOUT)
            alive = await asyncio.wait_for(self.workers(), READY_TIMEOUT)
        except Exception as exc:  # refused, unresolvable, timed out: redis raises several kinds
            return redact(protocol.unreachable(self.where, exc), self.secrets)
        if not alive:
            return f"No GPU worker is alive (none has sent a heartbeat in the last {protocol.ALIVE_TTL} s)."
        return None

    async def observe(self) -> dict[str, float]:
        """The live workers and their slots (none while Redis does not answer)."""
        try:
            found = await asyncio.wait_for(self.workers(), 5)
        except Exception:  # Redis away: /readyz says so; the figures are left out
            return {}
        return {"workers": float(len(found)), "worker_slots": float(sum(found.values()))}

    async def workers(self) -> dict[str, int]:
        """The live workers and their slots. A heartbeat whose slots are not a number from 1 to MAX_SLOTS is not
        counted (a warning names its worker once)."""
        import redis

        found = {}
        prefix = len(protocol.worker_key(""))
        async for name in self.redis.scan_iter(match=protocol.worker_key("*")):
            worker = name[prefix:].decode(errors="replace")
            try:
                raw = await self.redis.hget(name, "slots")
            except redis.ResponseError:  # a key of another type under the heartbeats' names
                raw = b"(not a heartbeat)"
            slots = protocol.parse_slots(raw)
            if slots is not None:
                found[worker] = slots
            elif raw is not None and worker not in self._miscounted:
                self._miscounted.add(worker)
                log.warning("worker %r: its heartbeat claims %.40r slots; not counted", worker[:80], raw)
        return found

    async def _watch(self, still_needed: Callable[[], bool]) -> None:
        import redis

        while still_needed():
            try:
                capacity = sum((await self.workers()).values())
            except (redis.RedisError, OSError) as exc:
                self._warn(exc)
                capacity = self._capacity  # keep the last count while Redis is away
            except Exception:  # whatever else Redis holds, the count goes on
                if time.monotonic() - self._warned > 30:
                    log.exception("counting the workers failed; the last count stands")
                    self._warned = time.monotonic()
                capacity = self._capacity
            grew = capacity > self._capacity
            self._capacity = capacity
            if grew and self.on_capacity is not None:
                self.on_capacity()
                continue
            await asyncio.sleep(POLL)

    def _warn(self, exc: BaseException) -> None:
        if time.monotonic() - self._warned > 30:
            log.warning("%s Jobs wait until it answers.", redact(protocol.unreachable(self.where, exc), self.secrets))
            self._warned = time.monotonic()

    async def _retry(self, call):
        """Run `call(redis)` until Redis answers (jobs wait rather than fail while it is away)."""
        import redis

        delay = 0.5
        while True:
            try:
                return await call(self.redis)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._warn(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _send(self, args: list) -> None:
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(self.app.send_task, protocol.TASK, args=args, queue=protocol.QUEUE)
                return
            except Exception as exc:  # kombu raises its own kinds for a broker that is away
                self._warn(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop counting workers, cancel the pending background writes and close Redis (the jobs run on)."""
        if self._monitor is not None:
            self._monitor.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.redis.aclose()
