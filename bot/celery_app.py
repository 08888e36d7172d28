"""What the bot and its GPU workers share: the Celery app's settings, the task's name, the Redis keys.

No torch here: the bot imports it to send tasks; `bot.worker` runs them.
"""

from __future__ import annotations

from celery import Celery

TASK = "imagine.run"
QUEUE = "imagine"
HEARTBEAT = 2.0  # seconds between a worker's heartbeats
ALIVE_TTL = 10  # a worker (and its jobs) count as gone this many seconds after the last heartbeat
KEEP = 24 * 3600  # job keys live this long after their last write
VISIBILITY_TIMEOUT = 6 * 3600  # longer than the longest job: the broker never redelivers a running task itself


def key(job_id: int, part: str) -> str:
    """The Redis key of one part of a job: `imagine:job:<id>:<part>`."""
    return f"imagine:job:{job_id}:{part}"


def worker_key(worker_id: str) -> str:
    """The Redis key of a worker's heartbeat (a hash of its slots, expiring): `imagine:workers:<id>`."""
    return f"imagine:workers:{worker_id}"


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
    app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True)(_run_task)
    return app


def _run_task(task, job_id: int, attempt: str, spec_json: str, snapshot_every: int, files: dict | None = None) -> None:
    from bot.worker import Runner  # the worker process's engine (the bot only sends tasks)

    Runner.instance().run(job_id, attempt, spec_json, snapshot_every, files or {})
