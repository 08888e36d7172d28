"""The engine's exceptions, catchable without importing torch.

    EngineError
     ├── InvalidSpec        a job that cannot run as asked (size, prompt, weight, limits); also a ValueError
     │    └── Diverged      a run whose numbers became infinite or NaN: no image, a sentence on what to lower
     ├── CheckpointError    a model file that is missing, unreadable or of the wrong shape; says the path and the fix
     ├── OutOfMemory        the device ran out of memory; says what to make smaller
     └── Cancelled          the caller asked the run to stop; carries the last result, if any

Every message is a sentence a person can act on; the bot shows members `public_message(error)`, which keeps
the sentence and leaves out every folder of the machine that ran it.
"""

from __future__ import annotations

import re
from typing import Any

# An absolute path of two or more parts (/srv/data/x.png, C:\data\x.png); not a URL's //host/..., not "A / B".
_PATH = re.compile(r"(?<![\w:/\\.~])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"()]+[/\\])+[^\s/\\'\"():;,]*")


class EngineError(Exception):
    """Base class of everything the engine raises on purpose."""


class InvalidSpec(EngineError, ValueError):
    """The job spec cannot be run as written."""


class Diverged(InvalidSpec):
    """The run's loss or latent became infinite or NaN, so it has no image to give (its settings pushed too hard)."""


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


def public_message(error: BaseException) -> str:
    """What a member may read of `error`: the sentence, with paths cut to their file names; a missing model is
    said without its files (the operator reads those in the log)."""
    if isinstance(error, CheckpointError):
        return "That model is not installed on this bot; ask the operator, or pick another model."
    text = str(error) or "Something went wrong while making this image."
    return _PATH.sub(lambda match: re.split(r"[/\\]", match.group())[-1] or "a file", text)
