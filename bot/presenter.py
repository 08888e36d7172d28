"""What the job service needs from the chat side. cogs/ implements it for Discord; tests may implement it too."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from engine.spec import Progress, Result
from storage import Job


class Presenter(Protocol):
    async def job_started(self, job: Job) -> Job:
        """The job begins: make sure its status message exists (returns the job with ids filled in)."""

    async def job_progress(self, job: Job, progress: Progress) -> None:
        """A progress report; the presenter decides whether an edit goes out now (pacing)."""

    async def job_finished(self, job: Job, result: Result, image_bytes: bytes) -> Job:
        """Post the final image with its buttons and record its message id; returns the updated job."""

    async def find_result(self, job: Job) -> int | None:
        """The id of a result message already posted for `job` whose reply never came back (a stop during the
        upload), or None: recovery asks before posting again, so a result is never posted twice."""

    async def job_timelapse(self, job: Job, frames: list[Path], final_png: bytes) -> None:
        """Post an animation of the run made from its saved preview frames (fitting the upload limit)."""

    async def job_failed(self, job: Job, message: str) -> None:
        """Say in the job's thread that it failed and why, in a sentence a member understands."""

    async def job_cancelled(self, job: Job, result: Result | None) -> None:
        """Say that the job was cancelled (with the image reached, when there is one)."""
