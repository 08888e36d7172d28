"""`python -m bot --check` and the same check before log-in: a sentence per problem, exit 2, within seconds;
a network failure at log-in is one sentence; with the files `download` writes, the bot gets to log in."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine import realformats

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def download_layout(tmp_path_factory):
    """OpenAI's TorchScript CLIP and taming's Lightning VQGAN, where `download` puts them (tiny widths)."""
    root = tmp_path_factory.mktemp("models")
    realformats.write_openai_torchscript(root / "clip" / "tinyopenai-openai.pt")
    realformats.write_lightning_vqgan(root / "vqgan", "vqgan_imagenet_f16_16384")
    return root


def _env(models: Path, data: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "DISCORD_"))}
    env.update(
        DISCORD_TOKEN="a.test.token",
        IMAGINE_MODELS_DIR=str(models),
        IMAGINE_DATA_DIR=str(data),
        IMAGINE_CLIP_MODEL="tinyopenai",
        IMAGINE_DEVICE="cpu",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def _run(args, env, cwd) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    return proc, time.monotonic() - started


def _problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("  - ")]


def test_check_passes_with_the_download_layout(download_layout, tmp_path):
    proc, _ = _run(["-m", "bot", "--check"], _env(download_layout, tmp_path / "data"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: models loaded")
    assert "INFO root" not in proc.stderr and "voice will NOT be supported" not in proc.stderr


def test_check_says_clip_is_missing(download_layout, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(download_layout / "vqgan", models / "vqgan")
    proc, took = _run(["-m", "bot", "--check"], _env(models, tmp_path / "data"), tmp_path)
    assert proc.returncode == 2
    problems = _problems(proc.stderr)
    assert len(problems) == 1 and "No CLIP checkpoint for tinyopenai" in problems[0]
    assert "Traceback" not in proc.stderr and took < 60


def test_check_says_clip_is_corrupt(download_layout, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(download_layout, models)
    clip = models / "clip" / "tinyopenai-openai.pt"
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # an interrupted copy
    proc, took = _run(["-m", "bot", "--check"], _env(models, tmp_path / "data"), tmp_path)
    assert proc.returncode == 2
    problems = _problems(proc.stderr)
    assert len(problems) == 1 and "could not be loaded as tinyopenai" in problems[0]
    assert "Traceback" not in proc.stderr and took < 60


def test_check_says_the_database_is_garbage(download_layout, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "imagine.sqlite").write_bytes(os.urandom(4096))
    proc, took = _run(["-m", "bot", "--check"], _env(download_layout, data), tmp_path)
    assert proc.returncode == 2
    problems = _problems(proc.stderr)
    assert len(problems) == 1 and "imagine.sqlite is damaged or is not a database" in problems[0]
    assert "Traceback" not in proc.stderr and took < 60


def test_every_problem_at_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "imagine.sqlite").write_bytes(b"not a database" * 100)
    env = _env(tmp_path / "nothing", data)
    del env["DISCORD_TOKEN"]
    proc, _ = _run(["-m", "bot"], env, tmp_path)
    assert proc.returncode == 2
    text = " ".join(_problems(proc.stderr))
    for part in ("DISCORD_TOKEN is not set", "No VQGAN is installed", "No CLIP checkpoint", "is not a database"):
        assert part in text
    assert "Traceback" not in proc.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_network_failure_at_login_is_one_sentence(download_layout, tmp_path):
    port = _closed_port()
    args = ["-m", "tests.bot.launch", f"http://127.0.0.1:{port}/api/v10", f"ws://127.0.0.1:{port}/"]
    proc, _ = _run(args, _env(download_layout, tmp_path / "data"), ROOT)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Discord could not be reached" in errors[0]
    assert "Traceback" not in proc.stderr


async def test_the_bot_logs_in_with_the_download_layout(download_layout, tmp_path):
    from tests.bot.loopback import LoopbackDiscord

    server = LoopbackDiscord()
    await server.start()
    env = _env(download_layout, tmp_path / "data")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bot.launch", server.api_base, server.gateway_url,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.wait_for(server.identified.wait(), 120)
        deadline = time.monotonic() + 60
        while not any(c["name"] == "imagine" for c in server.commands):  # synced after setup_hook
            assert time.monotonic() < deadline, "the commands were never synced"
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        await server.stop()
    assert b"Traceback" not in err, err.decode()[-2000:]


def test_celery_backend_says_when_redis_cannot_be_reached(tmp_path):
    port = _closed_port()
    env = _env(tmp_path / "no-models", tmp_path / "data", IMAGINE_BACKEND="celery")
    env["IMAGINE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    proc, took = _run(["-m", "bot", "--check"], env, tmp_path)
    assert proc.returncode == 2
    problems = _problems(proc.stderr)
    # the models live on the workers: only Redis is asked about
    assert len(problems) == 1 and f"Redis at redis://127.0.0.1:{port}/0 cannot be reached" in problems[0]
    assert "Traceback" not in proc.stderr and took < 60


def test_celery_backend_check_passes_with_redis(tmp_path, redis_server):
    env = _env(tmp_path / "no-models", tmp_path / "data", IMAGINE_BACKEND="celery", IMAGINE_REDIS_URL=redis_server.url)
    proc, _ = _run(["-m", "bot", "--check"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: Redis answers")


def test_the_check_never_shows_the_redis_password(tmp_path):
    port = _closed_port()
    env = _env(tmp_path / "no-models", tmp_path / "data", IMAGINE_BACKEND="celery", IMAGINE_LOG_LEVEL="DEBUG")
    env["IMAGINE_REDIS_URL"] = f"redis://imagine:Tr0ub4dor%263@127.0.0.1:{port}/0"
    proc, _ = _run(["-m", "bot", "--check"], env, tmp_path)
    assert proc.returncode == 2
    text = proc.stdout + proc.stderr
    assert "Tr0ub4dor" not in text
    [problem] = _problems(proc.stderr)
    assert f"Redis at redis://imagine:[redacted]@127.0.0.1:{port}/0 cannot be reached" in problem


def test_the_check_with_a_password_and_tls(tmp_path, secure_redis):
    """rediss:// with the CA in the URL and the password percent-encoded: the check passes; with a wrong password
    it says so in a sentence that shows neither password."""
    env = _env(tmp_path / "no-models", tmp_path / "data", IMAGINE_BACKEND="celery", IMAGINE_REDIS_URL=secure_redis.url)
    proc, _ = _run(["-m", "bot", "--check"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: Redis answers")
    env["IMAGINE_REDIS_URL"] = secure_redis.url.replace("staple", "stable")
    proc, _ = _run(["-m", "bot", "--check"], env, tmp_path)
    assert proc.returncode == 2
    text = proc.stdout + proc.stderr
    assert "battery" not in text and "stable" not in text and "staple" not in text
    [problem] = _problems(proc.stderr)
    assert "Redis at rediss://:[redacted]@127.0.0.1:" in problem and "refused the password" in problem


@pytest.mark.parametrize(
    "url, said",
    [
        ("http://:hunter22@queue:6379/0", "must begin with redis:// or rediss:// (TLS)"),
        ("redis://:hunter22@queue:port/0", "is not a URL that can be used"),
        ("redis://queue:6379/0?password=hunter22", "must carry the password before the host"),
    ],
)
def test_a_redis_url_that_cannot_work_is_one_sentence_without_its_password(tmp_path, url, said):
    env = _env(tmp_path / "no-models", tmp_path / "data", IMAGINE_BACKEND="celery", IMAGINE_REDIS_URL=url)
    for command in (["-m", "bot", "--check"], ["-m", "bot.backends.celery.worker"]):
        proc, _ = _run(command, env, tmp_path)
        assert proc.returncode == 2
        assert said in proc.stderr and "hunter22" not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
