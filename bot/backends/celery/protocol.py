"""What the bot and its GPU workers agree on: the Celery app's settings, the task's name and queue, the heartbeat's
timing, and the names of the Redis keys (the events on a job's stream are `bot.backends.celery.wire`'s).

No torch here: the bot imports it to send tasks (`bot.backends.celery.backend`); the worker runs them
(`bot.backends.celery.worker`).
"""

from __future__ import annotations

import re

from celery import Celery

from bot.config import MAX_WORKER_SLOTS as MAX_SLOTS  # a heartbeat that claims more is not counted

TASK = "imagine.run"
QUEUE = "imagine"
HEARTBEAT = 2.0  # seconds between a worker's heartbeats
ALIVE_TTL = 10  # a worker (and its jobs) count as gone this many seconds after the last heartbeat
KEEP = 24 * 3600  # job keys live this long after their last write
VISIBILITY_TIMEOUT = 6 * 3600  # longer than the longest job: the broker never redelivers a running task itself

_SLOTS = re.compile(rb"[0-9]{1,3}")


def key(job_id: int, part: str) -> str:
    """The Redis key of one part of a job: `imagine:job:<id>:<part>`."""
    return f"imagine:job:{job_id}:{part}"


def worker_key(worker_id: str) -> str:
    """The Redis key of a worker's heartbeat (a hash of its slots, expiring): `imagine:workers:<id>`."""
    return f"imagine:workers:{worker_id}"


def file_key(job_id: int, digest: str) -> str:
    """The Redis key of one picture of a job, by the SHA-256 of its bytes: `imagine:job:<id>:file:<sha256>`."""
    return key(job_id, f"file:{digest}")


def is_file_key(job_id: int, name: object) -> bool:
    """Whether `name` is a key `file_key` makes for this job (a task names no other key to read pictures from)."""
    return isinstance(name, str) and re.fullmatch(re.escape(key(job_id, "file:")) + "[0-9a-f]{64}", name) is not None


def parse_slots(raw: object) -> int | None:
    """A heartbeat's slots (bytes from Redis) as a number from 1 to MAX_SLOTS, or None for anything else."""
    if not isinstance(raw, bytes) or not _SLOTS.fullmatch(raw):
        return None
    slots = int(raw)
    return slots if 1 <= slots <= MAX_SLOTS else None


def unreachable(where: str, exc: BaseException) -> str:
    """The sentence for a Redis that does not answer at `where` (a URL with its password redacted), or that
    refuses the password; the caller redacts the exception's text too."""
    from redis import AuthenticationError

    if isinstance(exc, AuthenticationError):
        return (
            f"Redis at {where} refused the password ({exc}): put the one Redis asks for (its requirepass, or an ACL "
            "user's) in IMAGINE_REDIS_URL, percent-encoded (see .env.example)."
        )
    return f"Redis at {where} cannot be reached ({exc}): start it, or set IMAGINE_REDIS_URL."


def make_app(redis_url: str) -> Celery:
    """The Celery app both sides share: the bot sends tasks with it, workers run them."""
    app = Celery("imagine", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # a task is acknowledged when its job ended, not when it started
        task_reject_on_worker_lost=True,  # a worker killed mid-job puts the task back
        worker_prefetch_multiplier=1,  # a worker takes only what it has slots for: fairness stays in the bot
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app  # the task is registered by the worker (`worker.worker_app`); the bot sends it by name
