"""The small values the job service takes and gives: who asked (Origin), what the chat side posted (Posted), a queued
job's place (Ticket), the caps of a waiting line (Limits), a running job as /queue shows it (RunningInfo)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from storage import Job


@dataclass(frozen=True)
class RunningInfo:
    """A running job as /queue shows it."""

    job_id: int
    author_id: int
    step: int
    steps: int


@dataclass(frozen=True)
class Origin:
    """Who asked for a job, and where: the channel the job lives in and, for a thread, that thread's parent."""

    guild_id: int | None
    channel_id: int
    author_id: int
    parent_id: int | None = None
    counted: bool = False  # the request was counted against the member's cooldown already (`JobService.enter`)

    @property
    def places(self) -> tuple[int, ...]:
        """The channels the server's channel rule is checked against."""
        return (self.channel_id,) if self.parent_id is None else (self.channel_id, self.parent_id)


@dataclass(frozen=True)
class Ticket:
    """A queued job, its place in the waiting line (1-based; None once it runs) and its likely wait in seconds."""

    job: Job
    position: int | None
    eta: float


@dataclass(frozen=True)
class Posted:
    """What the chat side posted to announce a job: its message and the thread opened for it (if any)."""

    message_id: int | None
    thread_id: int | None = None


Announce = Callable[[Ticket], Awaitable[Posted | None]]


class Limits(NamedTuple):
    """The caps of a waiting line: per member, in all, and per server (None: no cap)."""

    per_member: int | None
    total: int | None
    server: int | None
