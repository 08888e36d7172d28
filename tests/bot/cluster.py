"""Real components for the distributed backend's tests: a `redis-server` and
`python -m bot.backends.celery.worker` processes.

Both are started by the fixtures and stopped at the end; tests skip (with the reason) only where `redis-server` is
not installed (`apt-get install redis-server`; `.ci/run` installs it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server on a free loopback port, with an append-only file so that a restart keeps its data; with
    `password`, it asks for it (`requirepass`); with `tls`, it speaks TLS only, with a certificate of a CA made here
    (`rediss://...?ssl_ca_certs=<the CA>`)."""

    def __init__(self, directory: Path, password: str | None = None, tls: bool = False) -> None:
        self.directory, self.port = directory, free_port()
        self.password, self.tls = password, tls
        auth = f":{quote(password, safe='')}@" if password else ""
        scheme, query = ("rediss", f"?ssl_ca_certs={directory / 'ca.crt'}") if tls else ("redis", "")
        self.url = f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            if not (self.directory / "server.crt").exists():
                _make_certificates(self.directory)
            d = self.directory
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(d / "server.crt"),
                     "--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.crt"),
                     "--tls-auth-clients", "no"]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client().ping()

    def client(self, wait: float = 20.0):
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + wait
        while True:
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def _make_certificates(directory: Path) -> None:
    """A CA and a certificate for 127.0.0.1 signed by it (openssl), valid for a day."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=imagine test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "san.cnf")  # fmt: skip


class Worker:
    """One `python -m bot.backends.celery.worker` process on the tiny models, on the CPU."""

    def __init__(self, redis_url: str, models: Path, log: Path, slots: int = 1, threads: int | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "DISCORD_"))}
        if os.environ.get("IMAGINE_PRECISION"):  # the suite's fp32 (tests/conftest.py) reaches the workers too
            env["IMAGINE_PRECISION"] = os.environ["IMAGINE_PRECISION"]
        env.update(
            IMAGINE_REDIS_URL=redis_url,
            IMAGINE_MODELS_DIR=str(models),
            IMAGINE_CLIP_MODEL="tiny-clip",
            IMAGINE_DEVICE="cpu",
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.backends.celery.worker", "--slots", str(slots), "--loglevel", "INFO"],
            cwd=log.parent, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no goodbye, no acknowledgement (a crash, an OOM kill, a pulled plug)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


async def until(predicate, timeout: float = 180.0, what: str = "the condition", poll: float = 0.1) -> None:
    """Wait (without blocking the event loop) until `predicate()` holds; past `timeout` seconds, fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({timeout:.0f} s)")
        await asyncio.sleep(poll)


def wait_for_workers(redis_client, count: int, timeout: float = 120.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        names = [k.decode() for k in redis_client.scan_iter(match="imagine:workers:*")]
        if len(names) >= count:
            return names
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} workers did not announce themselves in {timeout} s (saw {names})")
        time.sleep(0.2)


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def secure_redis(tmp_path):
    """A redis-server that asks for a password and speaks TLS only (the README's set-up for Redis on a network)."""
    for tool in ("redis-server", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (.ci/run installs redis-server; openssl comes with Debian)")
    server = RedisServer(tmp_path / "redis-tls", password="correct horse/battery@staple", tls=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_worker(redis_server, tiny_models, tmp_path):
    started: list[Worker] = []

    def start(slots: int = 1, threads: int | None = None) -> Worker:
        worker = Worker(redis_server.url, tiny_models, tmp_path / f"worker-{len(started)}.log", slots, threads)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
