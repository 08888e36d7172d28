"""A GPU worker's own /healthz, /readyz and /metrics: a real `python -m bot.backends.celery.worker` process on the tiny
models, a real redis-server, one job sent through the celery backend; the scrape is parsed by prometheus_client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bot.backends.celery.backend import CeleryBackend
from engine.events import Finished
from engine.spec import JobSpec
from tests.bot.cluster import ROOT, free_port, until


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_worker_answers_its_probes_and_counts_its_runs(redis_server, tiny_models, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "DISCORD_"))}
    env.update(
        IMAGINE_REDIS_URL=redis_server.url,
        IMAGINE_MODELS_DIR=str(tiny_models),
        IMAGINE_CLIP_MODEL="tiny-clip",
        IMAGINE_DEVICE="cpu",
        IMAGINE_LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
    )
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "bot.backends.celery.worker", "--slots", "2", "--health-port", str(port)]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    backend = CeleryBackend(redis_server.url)
    try:
        await until(lambda: _get(base + "/healthz")[0] == 200, timeout=120, what="the worker's /healthz")
        await until(lambda: _get(base + "/readyz")[0] == 200, timeout=120, what="the worker's /readyz")
        status, body = _get(base + "/readyz")
        assert json.loads(body)["checks"] == {"loop_thread": "ok", "heartbeat": "ok", "models": "ok", "redis": "ok"}
        before = _samples(_get(base + "/metrics")[1])
        assert before["imagine_worker_slots", ()] == 2 and before["imagine_worker_jobs_running", ()] == 0

        fields = dict(width=64, height=48, steps=6, seed=3, cutn=4, progress_every=2)
        spec = JobSpec("a worker's lighthouse", model="tiny_f16", clip_model="tiny-clip", **fields)
        handle = backend.submit(41, spec, None, 0)
        events = [event async for event in handle.events()]
        assert isinstance(events[-1], Finished) and events[-1].result.steps_done == 6
        after = _samples(_get(base + "/metrics")[1])
        assert after["imagine_worker_jobs_total", (("outcome", "finished"),)] == 1
        assert after["imagine_worker_jobs_total", (("outcome", "failed"),)] == 0
        assert after["imagine_worker_steps_total", (("generator", "vqgan"),)] == 6
        key = (("generator", "vqgan"), ("size", "other<=64k"))
        assert after["imagine_worker_job_duration_seconds_count", key] == 1
        assert after["imagine_worker_job_steps_per_second_count", key] == 1
        assert after["imagine_worker_heartbeat_age_seconds", ()] < 10
        assert "lighthouse" not in _get(base + "/metrics")[1]

        redis_server.stop()  # readiness follows Redis; liveness does not
        await until(lambda: _get(base + "/readyz")[0] == 503, timeout=30, what="/readyz to fail without Redis")
        assert "Redis does not answer" in json.loads(_get(base + "/readyz")[1])["checks"]["redis"]
        assert _get(base + "/healthz")[0] == 200
        job_lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert job_lines and all("message" in line for line in job_lines)
    finally:
        await backend.close()
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
