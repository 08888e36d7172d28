"""The start-up check: everything the bot needs, tried once before it logs in (`python -m bot --check` alone).

Each problem is one sentence for the operator, with every secret redacted (`bot.logs.redact`: the token, the Redis
URL's password). The models are really loaded (not just found), and the loaded pool is handed to the bot, so the
first job does not load them again.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass, field

from bot.config import Settings
from bot.logs import redact
from engine.errors import EngineError
from engine.spec import JobSpec

log = logging.getLogger(__name__)


@dataclass
class Checked:
    """What the check found: problems as sentences, and the loaded models (None when they did not load)."""

    problems: list[str] = field(default_factory=list)
    pool: object | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def _data_dir(settings: Settings) -> str | None:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"The data directory {settings.data_dir} is not writable ({exc.strerror or exc}): set IMAGINE_DATA_DIR."
    return None


def _database(settings: Settings) -> str | None:
    from storage import StorageError, Store

    async def open_and_close() -> None:
        store = await Store.open(settings.db_path)
        await store.close()

    try:
        asyncio.run(open_and_close())
    except StorageError as exc:
        return str(exc)
    except Exception as exc:  # anything else the driver raises for a foreign or damaged file
        return (
            f"The database {settings.db_path} cannot be opened ({exc}). Move it aside to start with an empty one, "
            "or restore it from a backup."
        )
    return None


def _models(settings: Settings, found: Checked) -> None:
    from bot.client import engine_pool

    pool = engine_pool(settings)
    ok = True
    started = time.monotonic()
    try:
        pool.perceptor(settings.clip_model)
    except EngineError as exc:
        found.problems.append(str(exc))
        ok = False
    found.seconds["clip"] = time.monotonic() - started
    started = time.monotonic()
    if not settings.vqgan_installed():
        ok = False  # already said by settings.problems()
    else:
        try:
            pool.vqgan(settings.default_model())
        except EngineError as exc:
            found.problems.append(str(exc))
            ok = False
    found.seconds["vqgan"] = time.monotonic() - started
    if ok:
        pool.engine_for(JobSpec("check", model=settings.default_model(), clip_model=settings.clip_model))
        found.pool = pool


def check(settings: Settings, *, load_models: bool = True) -> Checked:
    """Run every check; a sentence per problem. Settings problems (token, models installed) come first."""
    found = Checked(problems=list(settings.problems()))
    for problem in (_data_dir(settings), _database(settings)):
        if problem:
            found.problems.append(problem)
    if settings.backend == "celery":
        problem = _redis(settings)
        if problem:
            found.problems.append(problem)
    elif load_models:
        _models(settings, found)
    found.problems = [redact(problem, settings.secrets()) for problem in found.problems]
    return found


def _redis(settings: Settings) -> str | None:
    """The celery backend's Redis answers (the models load on the workers, not here)."""
    import redis

    from bot.backends.celery.protocol import unreachable

    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5).ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return unreachable(redact(settings.redis_url), exc)
    return None
