"""A GPU worker's own /healthz, /readyz and /metrics (IMAGINE_WORKER_HEALTH_PORT, default 8082, or `--health-port`;
IMAGINE_HEALTH_HOST, default 127.0.0.1), served from a daemon thread by the standard library's WSGI server, with the
metrics of the worker's own `prometheus_client` registry (the bot has its own; Prometheus scrapes both).

- `/healthz`, alive: the loop thread runs and the heartbeat has not given up.
- `/readyz`, able to work: the models are loaded and Redis answers a ping (the bot counts this worker then).
- `/metrics`: runs by outcome, run time and pace per generator and size, steps, jobs running, slots, events waiting
  for Redis, the last heartbeat's age, the device's memory. Labels are bounded as the bot's (`bot.metrics`).

`WorkerMetrics.saw` is the worker's one hook: every event its runs emit passes it.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily

from bot.metrics import DURATION_BUCKETS, RATE_BUCKETS, generator_label, size_label
from engine.events import Failed, Finished, Progress

log = logging.getLogger(__name__)


class _Memory:
    """The device's memory as the engine pool reports it, read at each scrape."""

    def __init__(self, pool) -> None:
        self.pool = pool

    def collect(self):
        """One gauge family, a sample per kind the pool reports (none on a CPU)."""
        family = GaugeMetricFamily(
            "imagine_worker_engine_memory_bytes", "The engine's CUDA memory: allocated, reserved, peak", labels=["kind"]
        )
        try:
            for kind, value in self.pool.memory().items():
                family.add_metric([kind], float(value))
        except Exception:  # a scrape never fails for a figure
            log.exception("the engine's memory could not be read")
        yield family


class WorkerMetrics:
    """The worker's registry: counters moved by `saw`, gauges read from the runner (`worker.Runner`) at each scrape."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.jobs = Counter("imagine_worker_jobs", "Runs that ended, by outcome", ["outcome"], registry=registry)
        for outcome in ("finished", "cancelled", "failed"):
            self.jobs.labels(outcome)
        self.duration = Histogram(
            "imagine_worker_job_duration_seconds",
            "Running time of the runs that finished here",
            ["generator", "size"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.rate = Histogram(
            "imagine_worker_job_steps_per_second",
            "Steps per second of each run that ended here",
            ["generator", "size"],
            buckets=RATE_BUCKETS,
            registry=registry,
        )
        self.steps = Counter("imagine_worker_steps", "Optimisation steps run here", ["generator"], registry=registry)
        gauge = lambda name, text: Gauge(name, text, registry=registry)  # noqa: E731
        gauge("imagine_worker_slots", "Jobs this worker runs at once").set_function(lambda: runner.slots)
        gauge("imagine_worker_jobs_running", "Jobs running here now").set_function(lambda: len(runner.jobs))
        gauge("imagine_worker_events_waiting", "Events waiting for Redis to answer").set_function(
            lambda: len(runner.publisher._pending)
        )
        gauge("imagine_worker_heartbeat_age_seconds", "Seconds since the last heartbeat Redis took").set_function(
            self.heartbeat_age
        )
        registry.register(_Memory(runner.pool))
        self._runs: dict[int, tuple[int, int]] = {}  # running job -> (the step it started at, the last counted)
        self._lock = threading.Lock()

    def heartbeat_age(self) -> float:
        """Seconds since Redis last took this worker's heartbeat (infinite before the first)."""
        beat = self.runner.last_beat
        return float("inf") if beat is None else time.monotonic() - beat

    def started(self, job_id: int, step: int) -> None:
        """Job `job_id`'s run begins at `step` (0, or the step of the snapshot it resumes from)."""
        with self._lock:
            self._runs[job_id] = (step, step)

    def saw(self, job_id: int, spec, event) -> None:
        """An event of job `job_id` (of `spec`) on its way out: count steps as they advance, and a run's end. Called
        on the loop thread: it never raises into it."""
        try:
            self._count(job_id, spec, event)
        except Exception:
            log.exception("job %d: its event could not be counted", job_id)

    def _count(self, job_id: int, spec, event) -> None:
        with self._lock:
            generator = generator_label(spec.generator)
            start, last = self._runs.get(job_id, (0, 0))
            if isinstance(event, Progress):
                self.steps.labels(generator).inc(max(0, event.step - last))
                self._runs[job_id] = (start, max(last, event.step))
            elif isinstance(event, Failed):
                self._runs.pop(job_id, None)
                self.jobs.labels("failed").inc()
            elif isinstance(event, Finished):
                self._runs.pop(job_id, None)
                result, size = event.result, size_label(*spec.final_size)
                self.jobs.labels("cancelled" if result.cancelled else "finished").inc()
                self.steps.labels(generator).inc(max(0, result.steps_done - last))
                if not result.cancelled:
                    self.duration.labels(generator, size).observe(max(0.0, result.elapsed))
                if result.elapsed > 0 and result.steps_done > start:
                    self.rate.labels(generator, size).observe((result.steps_done - start) / result.elapsed)

    def alive(self) -> dict[str, str]:
        """The liveness checks: {check: "ok" or why not}."""
        runner = self.runner
        loop = "ok" if runner._loop_thread.is_alive() else "the loop thread has stopped"
        beating = "ok" if not runner._stopping.is_set() else "the heartbeat has stopped"
        return {"loop_thread": loop, "heartbeat": beating}

    def ready(self) -> dict[str, str]:
        """The readiness checks: {check: "ok" or why not}."""
        found = self.alive()
        found["models"] = "ok" if getattr(self.runner.pool, "loaded", False) else "the models are not loaded yet"
        try:
            self.runner.redis.ping()
            found["redis"] = "ok"
        except Exception as exc:  # redis raises several kinds for a refused or unresolvable host
            found["redis"] = f"Redis does not answer ({type(exc).__name__})"
        return found

    def app(self):
        """The WSGI application: /healthz, /readyz (JSON, 200 or 503) and /metrics."""
        scrape = make_wsgi_app(self.registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return scrape(environ, start_response)
            checks = {"/healthz": self.alive, "/readyz": self.ready}.get(path)
            if checks is None:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found\n"]
            found = checks()
            healthy = all(v == "ok" for v in found.values())
            body = json.dumps({"ok": healthy, "checks": found, "worker": self.runner.worker_id}).encode()
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [body]

        return app


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # the probes come every few seconds: not worth a line each
        pass


def serve(metrics: WorkerMetrics, host: str, port: int) -> WSGIServer | None:
    """Serve the worker's /healthz, /readyz and /metrics from a daemon thread; None (with a warning, the worker goes
    on) if the port cannot be had, e.g. taken by another worker on this host: give each its own `--health-port`."""
    try:
        server = make_server(host, port, metrics.app(), server_class=_Server, handler_class=_Quiet)
    except OSError as exc:
        log.warning(
            "/healthz, /readyz and /metrics are off: %s:%d cannot be listened on (%s); give this worker its own "
            "--health-port",
            host,
            port,
            exc.strerror or exc,
        )
        return None
    threading.Thread(target=server.serve_forever, name="imagine-health", daemon=True).start()
    log.info("/healthz, /readyz and /metrics listen on http://%s:%d", host, server.server_port)
    return server
