"""The distributed backend: the bot sends each job to GPU workers on other hosts through Celery (Redis broker), and
reads the job's events back from a Redis Stream.

    protocol.py   what both sides agree on: the Celery app's settings, the task's name and queue, the Redis keys
    wire.py       the events on a job's stream as fields of bytes, checked as they are read (standard library only)
    backend.py    the bot's side: CeleryBackend and its CeleryHandle (no torch)
    worker.py     the GPU worker's side: `python -m bot.backends.celery.worker` (the engine, loaded lazily)
"""
