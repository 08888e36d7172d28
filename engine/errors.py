"""The engine's exceptions, catchable without importing torch.

    EngineError
     ├── InvalidSpec        a job that cannot run as asked (size, prompt, weight, limits); also a ValueError
     ├── CheckpointError    a model file that is missing, unreadable or of the wrong shape; says the path and the fix
     ├── OutOfMemory        the device ran out of memory; says what to make smaller
     └── Cancelled          the caller asked the run to stop; carries the last result, if any

Every message is a sentence a person can act on: the bot shows them to members as they are.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base class of everything the engine raises on purpose."""


class InvalidSpec(EngineError, ValueError):
    """The job spec cannot be run as written."""


class CheckpointError(EngineError):
    """A model checkpoint or config is missing, corrupt or does not match its architecture."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class OutOfMemory(EngineError):
    """The device ran out of memory for this job."""


class Cancelled(EngineError):
    """The run was stopped on request; `result` holds the image reached so far (or None)."""

    def __init__(self, message: str = "The job was cancelled.", result: Any = None) -> None:
        super().__init__(message)
        self.result = result
