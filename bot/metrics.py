"""The bot's Prometheus metrics, written by `prometheus_client` (never by hand): one `CollectorRegistry` per bot, so
several bots can live in one process (the tests make many), the counters and histograms its parts move, and the
gauges read afresh at each scrape.

    metrics = Metrics()
    store.on_job_state = metrics.job_state          # every transition of every job, as the store records it
    jobs.execution.on_event = metrics.job_event     # every event of every run: steps, running time, pace
    ImagineBot(..., http_trace=metrics.http_trace())  # Discord's answers, the 429s among them
    metrics.watch(jobs=..., backend=..., gateway=bot) # the live figures: queue, running, backend, loop, gateway
    text = await metrics.scrape()                   # refresh the live figures, then the exposition

Label values are bounded: job kinds and states, the registry's generator names, size names (a size no member can
pick is a size class), moderation actions, HTTP status classes and rate-limit scopes. No prompt, member, channel or
job id is ever a label (the JSON logs carry job ids).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

import aiohttp
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from bot import vitals
from bot.catalog import SIZES
from engine import __version__
from engine.events import Finished, Progress
from engine.generators import REGISTRY
from storage import Job, JobKind, JobState

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: a wait in the queue goes from nothing to an hour; a run from seconds (tiny jobs) to an hour (large ones).
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200)
RATE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
MODERATION_ACTIONS = ("post", "spoiler", "withhold", "blocked_words")
RATE_LIMIT_SCOPES = ("user", "global", "shared")
MEMORY_KINDS = ("allocated", "reserved", "peak", "total")
# The sizes a member can end with: the named ones, upscaled 0 to 3 times. Any other is named by its pixel count.
KNOWN_SIZES = {(w << k, h << k) for w, h in SIZES.values() for k in range(4)}
SIZE_CLASSES = ((65_536, "other<=64k"), (262_144, "other<=256k"), (1_048_576, "other<=1M"), (4_194_304, "other<=4M"))


def size_label(width: int, height: int) -> str:
    """`WxH` for a size a member can pick (or its upscales), else a class of pixel counts: a bounded label."""
    if (width, height) in KNOWN_SIZES:
        return f"{width}x{height}"
    return next((name for most, name in SIZE_CLASSES if width * height <= most), "other>4M")


def generator_label(name: str) -> str:
    """The generator's registry name, or `other` for a name the registry does not know."""
    return name if name in REGISTRY else "other"


def _kind(job: Job) -> str:
    return job.kind if job.kind in JobKind.__members__.values() else "other"


class Metrics:
    """The bot's metrics and their registry. The job counters move in `job_state` (the store's listener); the live
    gauges are set by `refresh` from what `watch` was given."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # the store's clock: the times it hands `job_state` are on it
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_open_fds, CPU seconds ...
        PlatformCollector(registry=registry)
        Info("imagine_build", "The version of the bot and its engine", registry=registry).info({"version": __version__})
        self.jobs = Counter(
            "imagine_jobs", "Jobs that entered each state, by kind", ["kind", "state"], registry=registry
        )
        self.queue_wait = Histogram(
            "imagine_queue_wait_seconds",
            "Time from queued to started",
            ["kind"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "imagine_job_duration_seconds",
            "Running time of the runs that finished (queue wait excluded)",
            ["generator", "size"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.rate = Histogram(
            "imagine_job_steps_per_second",
            "Steps per second of each run that ended (finished, cancelled or failed)",
            ["generator", "size"],
            buckets=RATE_BUCKETS,
            registry=registry,
        )
        self.steps = Counter("imagine_steps", "Optimisation steps run", ["generator"], registry=registry)
        self.preview_edits = Counter(
            "imagine_preview_edits", "Status messages edited with a new preview", ["outcome"], registry=registry
        )
        self.discord_responses = Counter(
            "imagine_discord_responses",
            "Answers of Discord's API by status class (1xx: the gateway's websocket upgrades)",
            ["status"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "imagine_discord_rate_limited", "429 answers of Discord's REST API, by scope", ["scope"], registry=registry
        )
        self.moderation = Counter(
            "imagine_moderation_actions",
            "The output check's decisions (post, spoiler, withhold) and refusals for a blocked word",
            ["action"],
            registry=registry,
        )
        for kind in JobKind:  # every known series from the start: a rate over "nothing yet" is 0, not missing
            for state in JobState:
                self.jobs.labels(kind.value, state.value)
        for action in MODERATION_ACTIONS:
            self.moderation.labels(action)
        for outcome in ("sent", "failed"):
            self.preview_edits.labels(outcome)
        for status in ("2xx", "4xx", "429", "5xx"):
            self.discord_responses.labels(status)
        for scope in RATE_LIMIT_SCOPES:
            self.rate_limited.labels(scope)
        self._gauges: dict[str, Gauge] = {}
        gauge = self._gauge
        gauge("imagine_queue_depth", "Jobs waiting")
        gauge("imagine_queue_oldest_wait_seconds", "How long the job that has waited longest has waited")
        gauge("imagine_queue_eta_seconds", "Likely seconds until the last waiting job is finished")
        gauge("imagine_jobs_running", "Jobs running now")
        gauge("imagine_capacity", "Jobs that can run at once (the setting, or the live workers' slots)")
        gauge("imagine_engine_memory_bytes", "The engine's CUDA memory: allocated, reserved, peak, total", ["kind"])
        gauge("imagine_workers", "Live GPU workers (celery backend)")
        gauge("imagine_worker_slots", "Slots of the live GPU workers (celery backend)")
        gauge("imagine_event_loop_lag_seconds", "How late the event loop woke a sleeper", ["window", "stat"])
        gauge("imagine_asyncio_tasks", "asyncio tasks of the bot's loop")
        gauge("imagine_threads", "Threads of the bot's process")
        gauge(
            "imagine_process_memory_bytes",
            "The bot process's memory: resident anonymous (where a leak shows) and file-backed pages, and the C "
            "allocator's bytes in use and held free",
            ["kind"],
        )
        gauge("imagine_gateway_connected", "1 while the Discord gateway is connected, else 0")
        gauge("imagine_gateway_latency_seconds", "The gateway's heartbeat latency (NaN while unknown)")
        self._refreshers: list[Callable[[], Awaitable[None] | None]] = [self._read_vitals]
        self._queued_at: dict[int, float] = {}  # waiting jobs seen entering the queue -> when (store clock)
        self._steps_at: dict[int, int] = {}  # running jobs -> the step last counted

    def _gauge(self, name: str, documentation: str, labels: tuple[str, ...] | list[str] = ()) -> Gauge:
        self._gauges[name] = Gauge(name, documentation, list(labels), registry=self.registry)
        return self._gauges[name]

    def gauge(self, name: str) -> Gauge:
        """The live gauge `name` (see `__init__` for the list)."""
        return self._gauges[name]

    # -- what moves the counters -------------------------------------------------------------------------------
    def job_state(self, job: Job, at: float) -> None:
        """A job entered `job.state` at `at` (the store's clock): count it; at its start, observe how long it waited;
        at a finished image, the output check's decision."""
        kind, state = _kind(job), job.state
        self.jobs.labels(kind, state.value).inc()
        if state == JobState.QUEUED:
            self._queued_at[job.id] = at
            return
        queued_at = self._queued_at.pop(job.id, None)
        if state == JobState.RUNNING:
            since = queued_at if queued_at is not None else job.created_at
            self.queue_wait.labels(kind).observe(max(0.0, at - since))
        elif state in (JobState.FAILED, JobState.CANCELLED):
            self._steps_at.pop(job.id, None)  # a run that raised sent no Finished
        if state == JobState.POSTING and job.moderation in MODERATION_ACTIONS:
            self.moderation.labels(job.moderation).inc()

    def job_event(self, job: Job, start: int, event) -> None:
        """An event of `job`'s run, which started at step `start` (the job service's hook): count the steps as they
        are reported; at the run's end, its running time (on the engine, queue excluded) and its pace. It never
        raises into the run."""
        try:
            self._job_event(job, start, event)
        except Exception:
            log.exception("job %d: its event could not be counted", job.id)

    def _job_event(self, job: Job, start: int, event) -> None:
        if isinstance(event, Progress):
            self.steps.labels(generator_label(job.spec.generator)).inc(
                max(0, event.step - self._steps_at.get(job.id, start))
            )
            self._steps_at[job.id] = event.step
        elif isinstance(event, Finished):
            result, spec = event.result, job.spec
            generator, size = generator_label(spec.generator), size_label(*spec.final_size)
            self.steps.labels(generator).inc(max(0, result.steps_done - self._steps_at.pop(job.id, start)))
            if not result.cancelled:
                self.duration.labels(generator, size).observe(max(0.0, result.elapsed))
            if result.elapsed > 0 and result.steps_done > start:
                self.rate.labels(generator, size).observe((result.steps_done - start) / result.elapsed)

    def blocked_word(self) -> None:
        """A request was refused for a blocked word."""
        self.moderation.labels("blocked_words").inc()

    def preview_edit(self, sent: bool) -> None:
        """A status message was edited with a new preview (`sent`), or the edit failed."""
        self.preview_edits.labels("sent" if sent else "failed").inc()

    def discord_response(self, status: int, scope: str | None = None) -> None:
        """Discord's REST API answered `status` (a 429 with its `X-RateLimit-Scope`)."""
        self.discord_responses.labels("429" if status == 429 else f"{status // 100}xx").inc()
        if status == 429:
            self.rate_limited.labels(scope if scope in RATE_LIMIT_SCOPES else "unknown").inc()

    def http_trace(self) -> aiohttp.TraceConfig:
        """An aiohttp trace for discord.py's HTTP client (`Client(http_trace=...)`): every answer counted by status
        class, every 429 by scope (discord.py rides 429s out on its own; this is how they become visible)."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(session, context, params: aiohttp.TraceRequestEndParams) -> None:
            response = params.response
            self.discord_response(response.status, response.headers.get("X-RateLimit-Scope"))

        trace.on_request_end.append(on_request_end)
        return trace

    # -- the live figures ---------------------------------------------------------------------------------------
    def watch(self, *, jobs=None, backend=None, gateway=None) -> None:
        """Read these at each scrape: the job service (`bot.jobs.JobService`: queue, running, capacity, ETAs), the
        backend (its `observe()`: device memory, workers and slots) and the Discord client (gateway and latency)."""
        if jobs is not None:
            self._refreshers.append(lambda: self._read_jobs(jobs))
        if backend is not None:
            self._refreshers.append(lambda: self._read_backend(backend))
        if gateway is not None:
            self._refreshers.append(lambda: self._read_gateway(gateway))

    async def refresh(self) -> None:
        """Set the live gauges from what is watched (a source that fails is logged and keeps its last figures)."""
        for refresh in self._refreshers:
            try:
                pending = refresh()
                if pending is not None:
                    await pending
            except Exception:
                log.exception("a metrics source failed; its figures are from the last scrape")

    def render(self) -> bytes:
        """The exposition of everything in the registry, as it stands (see `scrape`)."""
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        """Refresh the live figures, then the exposition (what /metrics answers)."""
        await self.refresh()
        return self.render()

    def _read_jobs(self, jobs) -> None:
        waiting = list(jobs.queue.order())
        running = jobs.running()
        self.gauge("imagine_queue_depth").set(len(waiting))
        self.gauge("imagine_jobs_running").set(len(running))
        self.gauge("imagine_capacity").set(jobs.max_concurrent)
        etas = jobs.etas()
        self.gauge("imagine_queue_eta_seconds").set(max(etas.values(), default=0.0))
        queued = [self._queued_at[e.job_id] for e in waiting if e.job_id in self._queued_at]
        self.gauge("imagine_queue_oldest_wait_seconds").set(max(0.0, self.clock() - min(queued)) if queued else 0.0)
        for job_id in [j for j in self._queued_at if j not in jobs.queue]:  # gone without a transition seen here
            if self.clock() - self._queued_at[job_id] > 60:
                del self._queued_at[job_id]

    async def _read_backend(self, backend) -> None:
        figures = await backend.observe()
        memory = self.gauge("imagine_engine_memory_bytes")
        for kind in MEMORY_KINDS:
            if f"engine_memory_{kind}_bytes" in figures:
                memory.labels(kind).set(figures[f"engine_memory_{kind}_bytes"])
        for name in ("workers", "worker_slots"):
            if name in figures:
                self.gauge(f"imagine_{name}").set(figures[name])

    def _read_gateway(self, client) -> None:
        connected = not client.is_closed() and client.is_ready() and client.ws is not None
        self.gauge("imagine_gateway_connected").set(1 if connected else 0)
        latency = client.latency
        self.gauge("imagine_gateway_latency_seconds").set(latency if connected and math.isfinite(latency) else math.nan)

    def _read_vitals(self) -> None:
        found = vitals.snapshot()
        lag = self.gauge("imagine_event_loop_lag_seconds")
        summary = found["loop_lag"]
        if summary is not None:
            for window, figures in (("run", summary), ("minute", summary["last_minute"])):
                for stat in ("p50", "p99", "max"):
                    lag.labels(window, stat).set(figures[f"{stat}_s"])
        if found["tasks"] is not None:
            self.gauge("imagine_asyncio_tasks").set(found["tasks"])
        self.gauge("imagine_threads").set(found["threads"])
        memory = self.gauge("imagine_process_memory_bytes")
        heap = found["c_heap"] or {}
        kinds = {"anonymous": found["rss_anon_bytes"], "file": found["rss_file_bytes"]}
        kinds |= {"c_heap_in_use": heap.get("in_use"), "c_heap_free": heap.get("free")}
        for kind, value in kinds.items():
            if value is not None:  # where the system says
                memory.labels(kind).set(value)
