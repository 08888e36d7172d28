"""Operating the bot: /metrics scraped over HTTP after real jobs and parsed with prometheus_client's own parser,
/healthz and /readyz (a read-only database, a Redis that stops), the JSON logs with the job's id, and the probe that
compose's healthchecks run. The bot is the real one, logged in over sockets to the loopback Discord stand-in."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import aiohttp
import discord
import pytest
import yarl
from prometheus_client.parser import text_string_to_metric_families

from bot.logs import JsonLines
from tests.bot.cluster import free_port
from tests.bot.loopback import USER_ID, LoopbackDiscord

PROMPT = "a loopback lighthouse"


@pytest.fixture
async def stand_in(monkeypatch):
    server = LoopbackDiscord(members=2)
    await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url))
    yield server
    await server.stop()


async def _until(predicate, timeout: float = 30.0, what: str = "the condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Running:
    """A real bot on the loopback stand-in, with its operations port, and an HTTP client for that port."""

    def __init__(self, bot, http: aiohttp.ClientSession) -> None:
        self.bot, self.http = bot, http

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.bot.settings.health_port}"

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path) as response:
            return response.status, await response.text()

    async def samples(self) -> dict[tuple[str, tuple], float]:
        """/metrics, parsed by prometheus_client: (sample name, sorted labels) -> value."""
        status, text = await self.get("/metrics")
        assert status == 200
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
        return found

    async def idle(self) -> bool:
        return not self.bot.jobs.running() and not len(self.bot.jobs.queue)

    async def done(self, job_id: int) -> bool:
        job = await self.bot.store.get_job(job_id)
        return job is not None and job.state.value == "done"


@pytest.fixture
async def running(stand_in, settings, gated):
    """Start a bot (gated fake backend unless the test's `backend` says otherwise) and give the test its handle."""
    from bot.client import ImagineBot

    started = []

    async def start(backend_factory=None, **changes) -> Running:
        chosen = replace(settings, health_port=free_port(), **changes)
        bot = ImagineBot(chosen, backend_factory=backend_factory or (lambda s: gated))
        task = asyncio.create_task(bot.start("loopback-token"))
        started.append((bot, task))
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        return Running(bot, http)

    async with aiohttp.ClientSession() as http:
        yield start
        for bot, task in started:
            await bot.close()
            await asyncio.wait_for(task, 30)


def _delta(after: dict, before: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_after_a_job_moved_by_the_right_amounts(running, stand_in):
    lines = _JsonCapture()
    node = await running(moderation="spoiler")  # the fake backend's score passes: "post"
    before = await node.samples()
    since = len(stand_in.requests)
    stand_in.rate_limit_once.add(r"POST /channels/\d+/messages")  # the job's first message meets a 429
    with lines:
        await stand_in.slash("imagine", {"prompt": PROMPT, "size": "square-small", "seed": 5})
        await _until(lambda: node.done(1), what="job 1 done")
        await _until(node.idle, what="the job's task to end (its timelapse follows its image)")
    after = await node.samples()
    job = await node.bot.store.get_job(1)

    for state in ("queued", "running", "posting", "done"):
        assert _delta(after, before, "imagine_jobs_total", kind="new", state=state) == 1, state
    for state in ("failed", "cancelled"):
        assert _delta(after, before, "imagine_jobs_total", kind="new", state=state) == 0
    assert _delta(after, before, "imagine_queue_wait_seconds_count", kind="new") == 1
    labels = dict(generator="vqgan", size="256x256")
    assert _delta(after, before, "imagine_job_duration_seconds_count", **labels) == 1
    assert _delta(after, before, "imagine_job_duration_seconds_sum", **labels) == 2.0  # the fake run's elapsed
    assert _delta(after, before, "imagine_job_steps_per_second_sum", **labels) == job.spec.steps / 2.0
    assert _delta(after, before, "imagine_steps_total", generator="vqgan") == job.spec.steps == job.steps_done
    assert _delta(after, before, "imagine_moderation_actions_total", action="post") == 1
    previews = [r for r in stand_in.requests if r.files and r.files[0][0] == "preview.png" and r.status == 200]
    assert _delta(after, before, "imagine_preview_edits_total", outcome="sent") == len(previews) == 1
    limited = [r for r in stand_in.requests[since:] if r.status == 429]
    assert len(limited) >= 1
    assert _delta(after, before, "imagine_discord_responses_total", status="429") == len(limited)
    assert sum(_delta(after, before, "imagine_discord_rate_limited_total", scope=s) for s in ("user", "global")) == len(
        limited
    )
    answered = [r for r in stand_in.requests[since:] if 200 <= r.status < 300]
    assert _delta(after, before, "imagine_discord_responses_total", status="2xx") == len(answered) > 0
    # the live figures: nothing waits or runs now; the gateway is connected
    assert after["imagine_queue_depth", ()] == 0 and after["imagine_jobs_running", ()] == 0
    assert after["imagine_capacity", ()] == 1 and after["imagine_gateway_connected", ()] == 1
    assert after["imagine_event_loop_lag_seconds", (("stat", "max"), ("window", "run"))] >= 0
    assert after["process_resident_memory_bytes", ()] > 0
    anonymous = after["imagine_process_memory_bytes", (("kind", "anonymous"),)]
    assert 0 < anonymous < after["process_resident_memory_bytes", ()]
    assert after["imagine_process_memory_bytes", (("kind", "c_heap_in_use"),)] > 0
    # bounded labels: no prompt, member or job id anywhere in the exposition
    text = (await node.get("/metrics"))[1]
    assert "lighthouse" not in text and str(USER_ID) not in text and 'job="' not in text
    # the job's own lines in the JSON logs carry its id; discord.py's 429 inside the job's work among them
    job_lines = [line for line in lines.records() if line.get("job_id") == 1]
    assert any(line["logger"] == "discord.http" and "rate limited" in line["message"] for line in job_lines)


async def test_a_second_job_moves_each_counter_by_one_more(running, stand_in):
    node = await running()
    await stand_in.slash("imagine", {"prompt": PROMPT, "size": "square-small", "seed": 1})
    await _until(lambda: node.done(1), what="job 1 done")
    first = await node.samples()
    await stand_in.slash("imagine", {"prompt": "a second one", "size": "square", "seed": 2}, user=1)
    await _until(lambda: node.done(2), what="job 2 done")
    second = await node.samples()
    assert _delta(second, first, "imagine_jobs_total", kind="new", state="done") == 1
    assert _delta(second, first, "imagine_job_duration_seconds_count", generator="vqgan", size="512x512") == 1
    assert _delta(second, first, "imagine_job_duration_seconds_count", generator="vqgan", size="256x256") == 0
    assert _delta(second, first, "imagine_queue_wait_seconds_count", kind="new") == 1


async def test_healthz_and_readyz_answer_and_readyz_fails_on_a_read_only_database(running):
    node = await running()
    status, body = await node.get("/healthz")
    assert status == 200 and json.loads(body)["gateway"] == "connected"
    status, body = await node.get("/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"] == {"store": "ok", "backend": "ok"}
    path = node.bot.settings.db_path
    _make_read_only(path)
    try:
        status, body = await node.get("/readyz")
        assert status == 503
        answer = json.loads(body)
        assert not answer["ok"] and "is read-only" in answer["checks"]["store"] and answer["checks"]["backend"] == "ok"
        assert (await node.get("/healthz"))[0] == 200  # alive all the same: an operator is needed, not a restart
    finally:
        _undo_read_only(path)
    assert (await node.get("/readyz"))[0] == 200


async def test_readyz_in_celery_mode_needs_a_worker_and_redis(running, redis_server):
    from bot.backends.celery import protocol
    from bot.client import celery_backend

    node = await running(celery_backend, backend="celery", redis_url=redis_server.url)
    status, body = await node.get("/readyz")
    assert status == 503 and "No GPU worker is alive" in json.loads(body)["checks"]["backend"]
    client = redis_server.client()
    client.hset(protocol.worker_key("gpu-0"), mapping={"slots": 2, "busy": 0})  # a worker's heartbeat
    client.expire(protocol.worker_key("gpu-0"), 60)
    status, body = await node.get("/readyz")
    assert status == 200, body
    samples = await node.samples()
    assert samples["imagine_workers", ()] == 1 and samples["imagine_worker_slots", ()] == 2
    redis_server.stop()
    status, body = await node.get("/readyz")
    assert status == 503
    assert "Redis" in json.loads(body)["checks"]["backend"]
    assert (await node.get("/healthz"))[0] == 200
    assert (await node.get("/metrics"))[0] == 200  # a scrape still answers while Redis is away


async def test_the_probe_says_healthy_or_not(running, capsys):
    from bot.probe import main

    node = await running()
    urls = [node.base + "/healthz", node.base + "/readyz"]
    assert await asyncio.to_thread(main, urls) == 0
    _make_read_only(node.bot.settings.db_path)
    try:
        assert await asyncio.to_thread(main, urls) == 1
    finally:
        _undo_read_only(node.bot.settings.db_path)
    assert "FAIL" in capsys.readouterr().err
    assert await asyncio.to_thread(main, [f"http://127.0.0.1:{free_port()}/healthz"]) == 1  # nobody listens


def test_the_probe_reads_the_ports_from_the_settings(monkeypatch, tmp_path):
    from bot.probe import urls_from_settings

    monkeypatch.chdir(tmp_path)  # no .env here
    for key in ("IMAGINE_HEALTH_PORT", "IMAGINE_WORKER_HEALTH_PORT", "IMAGINE_HEALTH_HOST"):
        monkeypatch.delenv(key, raising=False)
    assert urls_from_settings(False) == ["http://127.0.0.1:8081/healthz", "http://127.0.0.1:8081/readyz"]
    monkeypatch.setenv("IMAGINE_HEALTH_HOST", "0.0.0.0")
    monkeypatch.setenv("IMAGINE_WORKER_HEALTH_PORT", "9100")
    assert urls_from_settings(True)[1] == "http://127.0.0.1:9100/readyz"


def test_the_compose_healthchecks_use_the_probe():
    import yaml

    from tests.bot.cluster import ROOT

    single = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    cluster = yaml.safe_load((ROOT / "compose.cluster.yaml").read_text())["services"]
    for service in (single["bot"], cluster["bot"]):
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "bot.probe"]
    assert cluster["worker"]["healthcheck"]["test"] == ["CMD", "python", "-m", "bot.probe", "--worker"]
    assert "redis-cli" in cluster["redis"]["healthcheck"]["test"]
    assert cluster["bot"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert cluster["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_json_logs_name_the_job_and_keep_secrets_out():
    from bot.logs import job_scope, leave_job_scope

    secret = "s3cret-redis-password"
    stream = _JsonCapture(JsonLines(secret))
    log = logging.getLogger("bot.jobs.test")
    with stream:
        log.warning("outside any job")

        async def job_work():
            job_scope(7)
            log.warning("inside job 7 with redis://:%s@queue:6379/0", secret)
            await asyncio.to_thread(log.warning, "from a thread the job started")

        asyncio.run(job_work())
        scope = job_scope(8)
        try:
            log.error("failed", exc_info=RuntimeError(f"token {secret}"))
        finally:
            leave_job_scope(scope)
        log.warning("after the job")
    lines = stream.records()
    assert [line.get("job_id") for line in lines] == [None, 7, 7, 8, None]
    assert secret not in stream.text and "[redacted]" in lines[1]["message"]
    assert "RuntimeError" in lines[3]["exception"] and lines[3]["level"] == "ERROR"


class _JsonCapture:
    """While entered, the root logger also writes JSON lines (WARNING and up) to a string."""

    def __init__(self, formatter: JsonLines | None = None) -> None:
        import io

        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setLevel(logging.WARNING)
        self.handler.setFormatter(formatter or JsonLines())

    def __enter__(self):
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self.handler)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


def _make_read_only(path):
    """Read-only even for root: the immutable attribute where chattr works, else the mode bits."""
    import os
    import subprocess

    os.chmod(path, 0o444)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        os.chmod(path, 0o644)
        pytest.skip("running as root without chattr: a read-only file cannot be made")


def _undo_read_only(path):
    import os
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, 0o644)


def _families() -> set[str]:
    """Every metric family the bot and a GPU worker expose (their registries, as prometheus_client collects them)."""
    from types import SimpleNamespace

    from bot.backends.celery.health import WorkerMetrics
    from bot.metrics import Metrics

    runner = SimpleNamespace(
        slots=1,
        jobs={},
        publisher=SimpleNamespace(_pending=[]),
        last_beat=None,
        pool=SimpleNamespace(memory=lambda: {"allocated": 1}),
    )
    registries = (Metrics().registry, WorkerMetrics(runner).registry)
    return {family.name for registry in registries for family in registry.collect()}


def test_the_dashboard_reads_the_metrics_there_are():
    import re

    from tests.bot.cluster import ROOT

    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    read = {
        re.sub(r"_(bucket|sum|count|total|info)$", "", name)
        for expr in exprs
        for name in re.findall(r"\b((?:imagine|process)_[a-z_]+)", expr)
    }
    exposed = _families()
    assert read <= exposed, f"the dashboard reads metrics nobody exposes: {sorted(read - exposed)}"
    unused = {f for f in exposed if f.startswith("imagine_")} - read
    assert not unused, f"metrics the dashboard does not show: {sorted(unused)}"
    grid = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dashboard["panels"]]
    assert len(grid) == len(set(grid)), "two panels in one place"
