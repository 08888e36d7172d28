"""`python -m bot.backends.celery.worker`: a GPU worker of the distributed backend (Celery 5, Redis broker), one
per GPU.

    IMAGINE_REDIS_URL=redis://queue-host:6379/0 IMAGINE_DEVICE=cuda:0 python -m bot.backends.celery.worker --slots 4

`main` reads the settings, makes the process's one `Runner` (the models load once per process) and runs Celery's
worker (`--pool threads --concurrency <slots>`) with the job task bound to that Runner (`worker_app`). Each Celery
task is one job: it adds its run to the process's one loop (`engine.loop`, continuous batching, as the embedded
backend does) and waits for it to end, while the loop thread publishes the run's events to the job's Redis Stream
(`wire`). Cancel and Steer arrive through Redis keys read between steps; the latest snapshot is kept in Redis, so a
job whose worker died resumes from it on another worker. A task whose attempt token is no longer the job's (the bot
sent the job again after this worker was taken for lost) is dropped at once.

Redis keys, all under `imagine:`: `workers:<id>` (heartbeat: slots, TTL), `job:<id>:attempt`, `:worker` (which
worker runs it, TTL), `:events` (the stream), `:snapshot` (newest state), `:resume` (the state to start from),
`:cancel`, `:steer` (a list of steering requests).

Redis must stay private, yet nothing read from it is trusted: a task's arguments are checked before use (one that
names no job is dropped; one whose spec, pictures or numbers cannot be used fails its job with a sentence), an
unreadable steering request is skipped with a warning, and an error that escapes a round fails the jobs of that
round, never the loop thread. Should the loop thread stop all the same, the heartbeat stops with it, so the bot
sends its jobs to another worker.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import json
import logging
import os
import queue
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bot.backends.celery.protocol import (
    ALIVE_TTL,
    HEARTBEAT,
    KEEP,
    MAX_SLOTS,
    QUEUE,
    TASK,
    is_file_key,
    key,
    make_app,
    worker_key,
)
from bot.backends.celery.wire import Steered, encode
from bot.logs import job_scope, leave_job_scope

log = logging.getLogger(__name__)

PROG = "python -m bot.backends.celery.worker"
LINE = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TASK_ARGS = ("job_id", "attempt", "spec_json", "snapshot_every", "files")
_TOKEN = re.compile(r"[0-9a-f]{32}")  # an attempt token, a steering request's nonce (uuid4().hex)
MAX_STEER_BYTES = 16 * 1024  # a steering request: a nonce and a prompt
MAX_SPEC_CHARS = 2**20
_WRONG_TYPE = re.compile(r"^WRONGTYPE|caused error: WRONGTYPE")  # Redis's answer, alone or in a pipeline's


class Publisher:
    """Writes to Redis without ever raising into the loop: while Redis is away, events wait here in order and are
    sent when it answers again. An event Redis refuses (its job's stream replaced by a key of another type) is
    dropped with a warning, so that it holds up no other job's."""

    def __init__(self, client) -> None:
        self.redis = client
        self._pending: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._refused: set[int] = set()  # jobs whose events Redis refused (each warned of once)

    def publish(self, job_id: int, fields: dict, snapshot: bytes | None = None) -> None:
        """Queue one event (and the snapshot that goes with it) and send everything waiting, in order."""
        with self._lock:
            self._pending.append((job_id, fields, snapshot))
            self._flush_locked()

    def flush(self) -> None:
        """Send whatever waits (called by the heartbeat, so events reach Redis once it is back)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        import redis

        while self._pending:
            job_id, fields, snapshot = self._pending[0]
            try:
                pipe = self.redis.pipeline()
                if snapshot is not None:
                    pipe.set(key(job_id, "snapshot"), snapshot, ex=KEEP)
                pipe.xadd(key(job_id, "events"), fields)
                pipe.expire(key(job_id, "events"), KEEP)
                pipe.execute()
            except redis.ResponseError as exc:
                if not _WRONG_TYPE.search(str(exc)):  # out of memory, read-only, loading: it passes, events wait
                    log.warning("Redis refuses writes (%s); %d events wait", exc, len(self._pending))
                    return
                if job_id not in self._refused:
                    self._refused.add(job_id)
                    log.warning("job %d: Redis refused its events (%s); they are dropped", job_id, exc)
            except redis.RedisError as exc:
                log.warning("Redis is not answering (%s); %d events wait", exc, len(self._pending))
                return
            self._pending.popleft()


@dataclasses.dataclass
class _Job:
    job_id: int
    attempt: str
    spec: object
    state: bytes | None
    snapshot_every: int
    done: threading.Event
    superseded: bool = False


class Runner:
    """The worker process's engine: one loop thread, one heartbeat thread, the models loaded once. `main` makes one
    per process and binds the job task to it (`worker_app`)."""

    metrics = None  # a health.WorkerMetrics (main sets it): every event emitted passes its `saw`
    last_beat: float | None = None  # time.monotonic() of the last heartbeat Redis took

    def __init__(self, redis_url: str, slots: int, models, worker_id: str | None = None) -> None:
        """Connect to `redis_url` and start the loop and heartbeat threads; `models` is the engine's
        `ModelSettings`."""
        import redis

        from engine.loading import EnginePool

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.publisher = Publisher(self.redis)
        self.slots = slots
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.pool = EnginePool(models)
        self.jobs: dict[int, _Job] = {}
        self._commands: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._loop_thread = threading.Thread(target=self._drive, name="imagine-loop", daemon=True)
        self._loop_thread.start()
        threading.Thread(target=self._beat, name="imagine-heartbeat", daemon=True).start()

    # -- a task ---------------------------------------------------------------------------------------------
    def take(self, args: tuple, kwargs: dict) -> None:
        """A task's arguments as the broker delivered them (`TASK_ARGS`, by position or name): run the job, or drop
        a task that names no job (a whole number and a 32-hex-digit attempt token) with a warning."""
        given = dict(zip(TASK_ARGS, args, strict=False))  # fewer than all: the rest by name, or missing
        if len(args) > len(TASK_ARGS) or set(kwargs) - set(TASK_ARGS) or set(kwargs) & set(given):
            log.warning("a task with arguments other than a job's was dropped")
            return
        given.update(kwargs)
        job_id, attempt = given.get("job_id"), given.get("attempt")
        if isinstance(job_id, bool) or not isinstance(job_id, int) or not 0 < job_id < 2**63:
            log.warning("a task that names no job was dropped (job %.40r)", job_id)
            return
        if not isinstance(attempt, str) or not _TOKEN.fullmatch(attempt):
            log.warning("job %d: a task without an attempt token was dropped", job_id)
            return
        scope = job_scope(job_id)  # this thread's log lines name the job until it ends
        try:
            self.run(job_id, attempt, given.get("spec_json"), given.get("snapshot_every", 0), given.get("files") or {})
        finally:
            leave_job_scope(scope)

    def run(self, job_id: int, attempt: str, spec_json: str, snapshot_every: int, files: dict[str, str]) -> None:
        """Run one job to its end (called on a Celery pool thread, which waits here). `files` maps each picture the
        spec names to the Redis key of its bytes: they are written to a folder of this worker's own. A spec, an
        interval or pictures that cannot be used fail the job (a Failed event with the sentence)."""
        from engine.errors import InvalidSpec
        from engine.events import Failed
        from engine.spec import MAX_STEPS, JobSpec

        if self._get(key(job_id, "attempt")) != attempt.encode():
            log.info("job %d: attempt %s is no longer the job's; dropped", job_id, attempt[:8])
            return
        with tempfile.TemporaryDirectory(prefix=f"imagine-job-{job_id}-") as folder:
            try:
                if not isinstance(spec_json, str) or len(spec_json) > MAX_SPEC_CHARS:
                    raise InvalidSpec("The job's spec did not reach the GPU worker as JSON text.")
                if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int):
                    raise InvalidSpec("The job's snapshot interval is not a whole number.")
                if not 0 <= snapshot_every <= MAX_STEPS:
                    raise InvalidSpec(f"The job's snapshot interval must be from 0 to {MAX_STEPS} steps.")
                spec = JobSpec.from_json(spec_json)
                spec = spec.with_pictures(self._fetch_files(job_id, files, Path(folder)))
            except InvalidSpec as exc:
                log.warning("job %d cannot run: %s", job_id, exc)
                self.publisher.publish(job_id, encode(Failed(exc)))
                return
            state = self._get(key(job_id, "snapshot")) or self._get(key(job_id, "resume"))
            job = _Job(job_id, attempt, spec, state, snapshot_every, threading.Event())
            self.jobs[job_id] = job
            self._claim(job_id, attempt)
            self._commands.put(job)
            job.done.wait()
            self.jobs.pop(job_id, None)

    def _fetch_files(self, job_id: int, files: dict[str, str], folder: Path) -> dict[str, str]:
        """Write each picture's bytes (from Redis) into `folder`, under the file name the spec gives it. InvalidSpec
        unless `files` maps picture names to keys of this job's pictures (`protocol.file_key`)."""
        from engine.errors import InvalidSpec

        if not isinstance(files, dict) or not all(
            isinstance(name, str) and len(name) <= 4096 and Path(name).name not in ("", ".", "..")
            and is_file_key(job_id, redis_key)
            for name, redis_key in files.items()
        ):  # fmt: skip
            raise InvalidSpec("The job's pictures did not reach the GPU worker as pictures of this job.")
        local = {}
        for name, redis_key in files.items():
            data = self._get(redis_key)
            if data is None:
                continue  # gone (expired): the engine says which picture is missing
            path = folder / Path(name).name
            path.write_bytes(data)
            local[name] = str(path)
        return local

    def _get(self, name: str) -> bytes | None:
        import redis

        for delay in (0.5, 1, 2, 4, 8):
            try:
                return self.redis.get(name)
            except redis.RedisError:
                time.sleep(delay)
        return self.redis.get(name)

    def _claim(self, job_id: int, attempt: str) -> None:
        import redis

        try:
            pipe = self.redis.pipeline()
            pipe.set(key(job_id, "worker"), self.worker_id, ex=ALIVE_TTL)
            pipe.set(key(job_id, "claimed"), attempt, ex=KEEP)
            pipe.execute()
        except redis.RedisError:
            pass

    # -- the loop thread ------------------------------------------------------------------------------------
    def _drive(self) -> None:
        from engine.loop import Loop

        loop = Loop(self.slots)
        while not self._stopping.is_set():
            try:
                job = self._commands.get(timeout=None if not len(loop) else 0)
            except queue.Empty:
                job = None
            try:
                if job is not None:
                    self._start(loop, job)
                    continue  # take every waiting job before the next round
                self._steer(loop)
                loop.round()
            except Exception as exc:  # noqa: BLE001 - the jobs of this round learn of it; the thread goes on
                log.exception("a round of the loop failed; its jobs fail, the next jobs get a new loop")
                for running in list(self.jobs.values()):
                    if running.job_id in loop:
                        self._end(running, exc)
                loop = Loop(self.slots)

    def _end(self, job: _Job, exc: BaseException) -> None:
        from engine.events import Failed

        try:
            self._emit(job, Failed(exc))
        finally:
            job.done.set()

    def _start(self, loop, job: _Job) -> None:
        from engine.events import Failed
        from engine.run import load_snapshot

        try:
            engine = self.pool.engine_for(job.spec)
            snapshot = load_snapshot(job.state) if job.state is not None else None
            run = engine.start(job.spec, snapshot)
        except Exception as exc:  # noqa: BLE001 - the job learns of it
            if not _is_engine_error(exc):
                log.exception("job %d could not start", job.job_id)
            self._emit(job, Failed(exc))
            job.done.set()
            return
        if self.metrics is not None:
            self.metrics.started(job.job_id, run.step_index)
        loop.add(job.job_id, engine, run, self._callbacks(job))

    def _callbacks(self, job: _Job):
        from engine.events import Failed, Finished, Snapshotted
        from engine.loop import Callbacks

        def on_progress(progress, preview) -> None:
            buffer = io.BytesIO()
            preview.save(buffer, format="PNG", compress_level=1)
            self._emit(job, dataclasses.replace(progress, preview=buffer.getvalue()))

        def on_event(event) -> None:
            self._emit(job, event, snapshot=event.state if isinstance(event, Snapshotted) else None)
            if isinstance(event, Finished | Failed):
                job.done.set()

        return Callbacks(on_progress, on_event, lambda: self._should_stop(job), job.snapshot_every)

    def _emit(self, job: _Job, event, snapshot: bytes | None = None) -> None:
        if self.metrics is not None:
            self.metrics.saw(job.job_id, job.spec, event)
        if not job.superseded:
            self.publisher.publish(job.job_id, encode(event), snapshot)

    def _should_stop(self, job: _Job) -> bool:
        """Cancelled by the bot, or superseded (the bot gave the job to another worker): checked between steps."""
        import redis

        try:
            attempt, cancel = self.redis.mget(key(job.job_id, "attempt"), key(job.job_id, "cancel"))
        except redis.RedisError:
            return False  # Redis away: go on; the events wait in the publisher
        if attempt is not None and attempt != job.attempt.encode():
            job.superseded = True
            job.done.set()
            return True
        return cancel == b"1"

    def _steer(self, loop) -> None:
        import redis

        from engine.errors import EngineError

        for job in list(self.jobs.values()):
            try:
                raw = self.redis.lpop(key(job.job_id, "steer"))
            except redis.ResponseError:  # a key of another type: this job takes no steering, the others do
                continue
            except redis.RedisError:
                return
            if raw is None or job.job_id not in loop:
                continue
            request = _steering_request(raw)
            if request is None:
                log.warning("job %d: a steering request that cannot be read was skipped (%.60r)", job.job_id, raw)
                continue
            nonce, text = request
            try:
                spec = loop.steer(job.job_id, text)
            except EngineError as exc:  # a prompt the engine cannot use: no answer, the bot says it timed out
                log.warning("job %d: a steering request was skipped: %s", job.job_id, exc)
                continue
            if spec is not None:
                self._emit(job, Steered(nonce, spec.to_json()))

    # -- the heartbeat thread -------------------------------------------------------------------------------
    def _beat(self) -> None:
        import redis

        while not self._stopping.wait(HEARTBEAT):
            if not self._loop_thread.is_alive():  # nothing runs the jobs: let the bot take this worker for lost
                log.critical("the loop thread has stopped; this worker stops its heartbeat")
                self._stopping.set()
                return
            try:
                pipe = self.redis.pipeline()
                pipe.hset(worker_key(self.worker_id), mapping={"slots": self.slots, "busy": len(self.jobs)})
                pipe.expire(worker_key(self.worker_id), ALIVE_TTL)
                for job_id in list(self.jobs):
                    pipe.set(key(job_id, "worker"), self.worker_id, ex=ALIVE_TTL)
                pipe.execute()
                self.last_beat = time.monotonic()
            except redis.RedisError as exc:
                log.warning("heartbeat: Redis is not answering (%s)", exc)
                continue
            self.publisher.flush()

    def announce(self) -> None:
        """The first heartbeat, before any task: the bot counts this worker's slots at once."""
        import redis

        try:
            self.redis.hset(worker_key(self.worker_id), mapping={"slots": self.slots, "busy": 0})
            self.redis.expire(worker_key(self.worker_id), ALIVE_TTL)
        except redis.RedisError as exc:
            log.warning("Redis is not answering yet (%s); the heartbeat will keep trying", exc)


def _steering_request(raw: bytes) -> tuple[str, str] | None:
    """(nonce, text) of a steering request as `CeleryHandle.steer` writes it, or None for anything else."""
    if len(raw) > MAX_STEER_BYTES:
        return None
    try:
        request = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        return None
    if not isinstance(request, dict):
        return None
    nonce, text = request.get("nonce"), request.get("text")
    if not isinstance(nonce, str) or not _TOKEN.fullmatch(nonce) or not isinstance(text, str) or not text.strip():
        return None
    return nonce, text


def _is_engine_error(exc: BaseException) -> bool:
    from engine.errors import EngineError

    return isinstance(exc, EngineError)


def worker_app(redis_url: str, runner: Runner):
    """The Celery application of a worker: the shared configuration with the job task registered (`TASK`), each
    task run by `runner`."""

    def run_job(task, *args, **kwargs) -> None:
        """One job: (job_id, attempt, spec_json, snapshot_every, files), as `CeleryHandle` sends it. The arguments
        come from Redis, so the worker checks each before using it (`Runner.take`)."""
        runner.take(args, kwargs)

    app = make_app(redis_url)
    app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True)(run_job)
    return app


def main(argv: list[str] | None = None) -> int:
    """Read the settings (the bot's reader, `.env` included; no token needed here), load the models, announce this
    worker and take tasks until stopped."""
    from bot.backends.celery.health import WorkerMetrics, serve
    from bot.config import ConfigError, Settings
    from bot.logs import JsonLines, install, redact
    from engine.env import quiet_libraries

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(redact(f"error: {exc} (see .env.example)"), file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=settings.worker_slots, help="jobs at once (IMAGINE_WORKER_SLOTS)")
    parser.add_argument("--name", help="the Celery node name (default: imagine@<host>-<pid>)")
    parser.add_argument("--loglevel", default=settings.log_level, help="DEBUG, INFO, WARNING (IMAGINE_LOG_LEVEL)")
    parser.add_argument("--health-port", type=int, default=settings.worker_health_port, help="/metrics ...; 0: none")
    args = parser.parse_args(argv)
    lines = logging.StreamHandler()  # IMAGINE_LOG_FORMAT: text, or JSON with the job's id on a job's lines
    lines.setFormatter(JsonLines(*settings.secrets()) if settings.log_format == "json" else logging.Formatter(LINE))
    logging.basicConfig(level=args.loglevel.upper(), handlers=[lines])
    install(*settings.secrets())  # the Redis password never reaches a log line, at any level
    quiet_libraries()
    if not 1 <= args.slots <= MAX_SLOTS:
        print(f"error: --slots must be from 1 to {MAX_SLOTS}, not {args.slots}.", file=sys.stderr)
        return 2
    runner = Runner(settings.redis_url, args.slots, settings.model_settings())
    runner.metrics = WorkerMetrics(runner)
    if args.health_port:  # alive at once; ready once the models are loaded
        serve(runner.metrics, settings.health_host, args.health_port)
    celery = worker_app(settings.redis_url, runner)
    runner.pool.engine_for(_default_spec(settings))  # load the models before taking any task
    runner.announce()
    name = args.name or f"imagine@{runner.worker_id}"
    celery.worker_main(
        ["worker", "--pool", "threads", "--concurrency", str(runner.slots), "-n", name, "-Q", QUEUE,
         "--loglevel", args.loglevel.upper(), "--without-gossip", "--without-mingle", "--without-heartbeat"]
    )  # fmt: skip
    return 0


def _default_spec(settings):
    """The job whose models the worker loads before taking tasks: the default VQGAN and the settings' CLIP."""
    from engine.spec import JobSpec

    return JobSpec("warm up", model=settings.default_model(), clip_model=settings.clip_model)


if __name__ == "__main__":
    sys.exit(main())
