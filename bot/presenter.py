"""What the job service needs from the chat side. cogs/ implements it for Discord; tests may implement it too.

The presenter does chat I/O only: it returns the ids of what it posted and the service records them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bot.timelapse import Timelapse
from engine.events import Progress, Result
from storage import Job


class Presenter(Protocol):
    """The chat side of the job service: it shows each step of a job's life and returns the ids of what it posts."""

    async def job_started(self, job: Job) -> int | None:
        """The job begins: make sure its status message exists; returns its id (None: no status message)."""

    async def job_progress(self, job: Job, progress: Progress) -> None:
        """A progress report; the presenter decides whether an edit goes out now (pacing). A status message it
        replaces is recorded through `JobService.record_status`."""

    async def job_finished(self, job: Job, result: Result, image_bytes: bytes) -> int | None:
        """Post the final image with its buttons; returns the message id (None: nothing posted, a candidate)."""

    async def find_result(self, job: Job) -> int | None:
        """The id of a result message already posted for `job` whose reply never came back (a stop during the
        upload), or None: recovery asks before posting again, so a result is never posted twice."""

    async def job_timelapse(self, job: Job, frames: list[Path], final_png: bytes) -> tuple[int, Timelapse] | None:
        """Post an animation of the run made from its saved preview frames (fitting the upload limit); returns the
        message id and the animation (the service keeps a copy), or None when none was posted."""

    async def job_by_dm(self, job: Job, image_bytes: bytes) -> None:
        """Send the finished image to its author by DM as well (saying so in the thread if their DMs are closed)."""

    async def job_deleted(self, job: Job) -> None:
        """Remove a deleted job's result and timelapse messages."""

    async def job_failed(self, job: Job, message: str) -> None:
        """Say in the job's thread that it failed and why, in a sentence a member understands."""

    async def job_cancelled(self, job: Job, result: Result | None) -> None:
        """Say that the job was cancelled (with the image reached, when there is one)."""
