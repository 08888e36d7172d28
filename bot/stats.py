"""What /stats and /stats me show: a server's jobs today and this week, its members' running time, its queue now and
its average wait, and what the engine did in the last hour; or one member's own. Read from the store's statistics
part and the job service's waiting line (the cogs reach neither themselves).

"Today" begins at midnight UTC; "this week" is the last seven days (as /top's week). Running time is a run's time on
the GPU or a worker, from its start to its end; runs batched together each count their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from storage import Activity, JobState, Store, Usage, Wait

DAY = 86400.0
WEEK = 7 * DAY
HOUR = 3600.0
TOP = 5  # members listed by running time


@dataclass(frozen=True)
class Counts:
    """Jobs asked for in a period, by what became of them."""

    finished: int = 0  # done, or finished and being posted
    failed: int = 0
    cancelled: int = 0
    waiting: int = 0
    running: int = 0

    @property
    def total(self) -> int:
        """Every job asked for in the period."""
        return self.finished + self.failed + self.cancelled + self.waiting + self.running

    @classmethod
    def of(cls, by_state: dict[str, int]) -> Counts:
        """From the store's counts by state."""
        get = lambda *states: sum(by_state.get(s, 0) for s in states)  # noqa: E731
        return cls(
            finished=get(JobState.DONE, JobState.POSTING),
            failed=get(JobState.FAILED),
            cancelled=get(JobState.CANCELLED),
            waiting=get(JobState.QUEUED),
            running=get(JobState.RUNNING),
        )


@dataclass(frozen=True)
class Queue:
    """The waiting line now: this server's (or member's) jobs waiting and running, and everybody's."""

    waiting: int
    running: int
    waiting_all: int
    running_all: int
    capacity: int  # jobs run at once
    eta: float  # seconds until the last waiting job is likely finished


@dataclass(frozen=True)
class ServerStats:
    """/stats: a server's figures."""

    today: Counts
    week: Counts
    top: list[Usage]  # this week, the most running time first
    queue: Queue
    wait: Wait  # jobs that started this week
    hour: Activity  # the engine's last hour, every server together


@dataclass(frozen=True)
class MemberStats:
    """/stats me: one member's figures, in one server (or in DMs)."""

    today: Counts
    week: Counts
    all_time: Counts
    usage: Usage  # this week, with their rank
    wait: Wait  # their jobs that started this week
    queue: Queue


class Stats:
    """Answers /stats and /stats me from the store and the job service (`bot.jobs.JobService`)."""

    def __init__(self, store: Store, jobs, clock: Callable[[], float] = time.time) -> None:
        self.store, self.jobs, self.clock = store, jobs, clock

    async def server(self, guild_id: int) -> ServerStats:
        """A server's figures now."""
        now = self.clock()
        week = now - WEEK
        return ServerStats(
            today=Counts.of(await self.store.state_counts(guild_id, _midnight(now))),
            week=Counts.of(await self.store.state_counts(guild_id, week)),
            top=await self.store.usage(guild_id, week, limit=TOP),
            queue=self._queue(lambda job_id, author_id: self.jobs.shows_in(job_id, guild_id, author_id, author_id)),
            wait=await self.store.average_wait(guild_id, week),
            hour=await self.store.activity(now - HOUR, now),
        )

    async def member(self, guild_id: int | None, user_id: int) -> MemberStats:
        """One member's figures now, in `guild_id` (None: their DM jobs)."""
        now = self.clock()
        week = now - WEEK
        counts = self.store.state_counts
        return MemberStats(
            today=Counts.of(await counts(guild_id, _midnight(now), user_id)),
            week=Counts.of(await counts(guild_id, week, user_id)),
            all_time=Counts.of(await counts(guild_id, 0.0, user_id)),
            usage=await self.store.member_usage(guild_id, user_id, week),
            wait=await self.store.average_wait(guild_id, week, user_id),
            queue=self._queue(
                lambda job_id, author_id: (
                    author_id == user_id and self.jobs.shows_in(job_id, guild_id, user_id, author_id)
                )
            ),
        )

    def _queue(self, counts: Callable[[int, int], bool]) -> Queue:
        """The waiting line now: the jobs `counts(job_id, author_id)` picks, and everybody's."""
        waiting, running = self.jobs.queue.order(), self.jobs.running()
        etas = self.jobs.etas()
        return Queue(
            waiting=sum(1 for e in waiting if counts(e.job_id, e.author_id)),
            running=sum(1 for r in running if counts(r.job_id, r.author_id)),
            waiting_all=len(waiting),
            running_all=len(running),
            capacity=self.jobs.max_concurrent,
            eta=max(etas.values(), default=0.0),
        )


def _midnight(now: float) -> float:
    """The start of `now`'s day, UTC."""
    return now - now % DAY
