"""The bot's operations port: `/healthz`, `/readyz` and `/metrics` on a small aiohttp server of their own
(IMAGINE_HEALTH_PORT, default 8081; IMAGINE_HEALTH_HOST, default 127.0.0.1; port 0: none).

Not on the web gallery's server: the gallery is optional, public and strict about what it answers, while these are
for the operator's probes and scraper only (readiness names the database's folder; metrics describe the load).

- `/healthz`, alive: the event loop answers (this answer comes from it; its lag over the last minute, from
  `bot.vitals`, stays under LAG_LIMIT) and the Discord gateway is connected or reconnecting (the client is not closed).
- `/readyz`, able to work: the bot is set up, the database takes a write (`Store.check`: the same file, writable),
  and the backend can run jobs (the embedded one's models are loaded; the celery one's Redis answers and a GPU worker
  is alive).
- `/metrics`: the bot's registry (`bot.metrics`), in Prometheus' text format.

Each answers 200 or 503 with a JSON body naming each check. `python -m bot.probe` asks them (compose's healthcheck).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot import vitals
from bot.metrics import CONTENT_TYPE, Metrics
from bot.webserver import WebServer

log = logging.getLogger(__name__)

LAG_LIMIT = 5.0  # seconds: a loop whose p99 lateness over the last minute is past this is not answering in time
CHECK_TIMEOUT = 5.0  # seconds one readiness check may take before it counts as failed
OK = "ok"

Checks = Callable[[], Awaitable[dict[str, str]]]


def loop_check() -> str:
    """`ok`, or why the event loop is not answering in time (from the vitals monitor's last minute)."""
    monitor = vitals.current()
    if monitor is None or not monitor.running:
        return "the event-loop monitor is not running"
    p99 = monitor.summary()["last_minute"]["p99_s"]
    if p99 > LAG_LIMIT:
        return f"the event loop was {p99:.1f} s late (p99 over the last minute; the limit is {LAG_LIMIT:.0f} s)"
    return OK


def gateway_state(client) -> str:
    """`connected`, `connecting` (logging in, or reconnecting after a drop) or `closed` (it will not come back)."""
    if client.is_closed():
        return "closed"
    return "connected" if client.is_ready() and client.ws is not None else "connecting"


async def _timed(check: Awaitable[str | None]) -> str:
    try:
        problem = await asyncio.wait_for(check, CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer in {CHECK_TIMEOUT:.0f} s"
    except Exception as exc:  # a storage error, a backend's: the sentence is the answer
        return str(exc) or type(exc).__name__
    return OK if problem is None else problem


def bot_checks(bot) -> tuple[Checks, Checks]:
    """The liveness and readiness checks of an `ImagineBot`: each returns {check: "ok" or why not}."""

    async def alive() -> dict[str, str]:
        state = gateway_state(bot)
        return {"event_loop": loop_check(), "gateway": OK if state != "closed" else "the Discord client is closed"}

    async def ready() -> dict[str, str]:
        if bot.store is None or bot.backend is None or bot.jobs is None:
            return {"setup": "the bot is still starting"}
        return {
            "store": await _timed(bot.store.check()),
            "backend": await _timed(bot.backend.readiness()),
        }

    return alive, ready


def make_app(metrics: Metrics, alive: Checks, ready: Checks, details: Callable[[], dict] = dict) -> web.Application:
    """The aiohttp application: /healthz, /readyz (JSON, 200 or 503) and /metrics. `details` adds figures to the
    JSON answers (the gateway's state, ...)."""

    async def answer(checks: Checks) -> web.Response:
        found = await checks()
        healthy = all(v == OK for v in found.values())
        body = {"ok": healthy, "checks": found, **details()}
        return web.Response(
            text=json.dumps(body, default=str),
            status=200 if healthy else 503,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def healthz(request: web.Request) -> web.Response:
        return await answer(alive)

    async def readyz(request: web.Request) -> web.Response:
        return await answer(ready)

    async def scrape(request: web.Request) -> web.Response:
        body = await metrics.scrape()
        response = web.Response(body=body, headers={"Cache-Control": "no-store"})
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", scrape)
    return app


class HealthServer(WebServer):
    """The operations port: `await start(host, port)` (port 0 picks a free one, see `.port`), `await stop()`."""

    runner_options = {"access_log": None}


def watch(bot) -> None:
    """Wire an `ImagineBot`'s metrics to its parts, once they exist: every job state the store records, every event of
    every run, the refusals for blocked words, and the live figures of the job service, the backend and the gateway."""
    metrics: Metrics = bot.metrics
    bot.store.on_job_state = metrics.job_state
    bot.jobs.execution.on_event = metrics.job_event
    bot.community.on_blocked = metrics.blocked_word
    metrics.watch(jobs=bot.jobs, backend=bot.backend, gateway=bot)


async def serve(bot, host: str, port: int) -> HealthServer | None:
    """Start an `ImagineBot`'s operations port; None (with a warning, the bot goes on) if the port cannot be had."""
    alive, ready = bot_checks(bot)
    server = HealthServer(make_app(bot.metrics, alive, ready, lambda: {"gateway": gateway_state(bot)}))
    try:
        await server.start(host, port)
    except OSError as exc:
        log.warning(
            "/healthz, /readyz and /metrics are off: %s:%d cannot be listened on (%s); set IMAGINE_HEALTH_PORT",
            host,
            port,
            exc.strerror or exc,
        )
        return None
    log.info("/healthz, /readyz and /metrics listen on %s", server.url)
    return server
