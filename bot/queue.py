"""Fair queueing: round-robin across members, a per-member cap and a global size. Pure logic, no I/O."""

from __future__ import annotations

from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass


class QueueFull(Exception):
    """A limit was hit; the message is what the member reads."""


class Cooldown(QueueFull):
    """A member asked for pictures faster than the bot allows; `retry_after` is the wait in seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"Slow down a little: try again in {max(1, round(retry_after))} s.")
        self.retry_after = retry_after


class RateLimiter:
    """At most `rate` actions per `per` seconds per key (a sliding window); `hit` returns the wait, or 0."""

    def __init__(self, rate: int, per: float) -> None:
        self.rate, self.per = rate, per
        self._hits: defaultdict[int, deque[float]] = defaultdict(deque)

    def hit(self, key: int, now: float) -> float:
        """Count an action of `key` at `now` and return 0; over the rate, return the seconds to wait instead (a refused
        action is not counted)."""
        hits = self._hits[key]
        while hits and now - hits[0] >= self.per:
            hits.popleft()
        if len(hits) >= self.rate:
            return self.per - (now - hits[0])
        hits.append(now)
        return 0.0


def member_full(cap: int) -> QueueFull:
    """The refusal of a member who already has `cap` jobs waiting."""
    return QueueFull(
        f"You already have {cap} image{'s' if cap != 1 else ''} waiting; "
        "wait until one starts, or cancel one, then try again."
    )


def queue_full(total: int) -> QueueFull:
    """The refusal when the whole queue holds `total` jobs."""
    return QueueFull(f"The queue is full ({total} images waiting). Please try again in a few minutes.")


@dataclass(frozen=True)
class Entry:
    """A waiting job and the member it belongs to."""

    job_id: int
    user_id: int


class FairQueue:
    """Waiting jobs, served one member at a time in turn: a member with ten jobs does not block one with one."""

    def __init__(self, max_per_user: int = 3, max_total: int = 50) -> None:
        self.max_per_user, self.max_total = max_per_user, max_total
        self._by_user: OrderedDict[int, deque[int]] = OrderedDict()  # rotation order = key order

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_user.values())

    def __contains__(self, job_id: int) -> bool:
        return any(job_id in q for q in self._by_user.values())

    def waiting_for(self, user_id: int) -> int:
        """How many jobs `user_id` has waiting."""
        return len(self._by_user.get(user_id, ()))

    def check(self, user_id: int, max_per_user: int | None = None) -> None:
        """Raise QueueFull with the documented message if `user_id` may not queue another job now."""
        cap = max_per_user or self.max_per_user
        if self.waiting_for(user_id) >= cap:
            raise member_full(cap)
        if len(self) >= self.max_total:
            raise queue_full(self.max_total)

    def push(self, entry: Entry, max_per_user: int | None = None, force: bool = False) -> None:
        """Queue a job at the back of its member's line (`force` skips the limits: recovery after a restart)."""
        if not force:
            self.check(entry.user_id, max_per_user)
        self._by_user.setdefault(entry.user_id, deque()).append(entry.job_id)

    def pop(self) -> Entry | None:
        """The next job: the first member in the rotation gives one job and moves to the back."""
        for user_id, jobs in self._by_user.items():
            job_id = jobs.popleft()
            del self._by_user[user_id]
            if jobs:
                self._by_user[user_id] = jobs
            return Entry(job_id, user_id)
        return None

    def remove(self, job_id: int) -> bool:
        """Take a job out of the waiting line; False if it was not in it."""
        for user_id, jobs in list(self._by_user.items()):
            if job_id in jobs:
                jobs.remove(job_id)
                if not jobs:
                    del self._by_user[user_id]
                return True
        return False

    def order(self) -> list[Entry]:
        """The order in which the waiting jobs would start, without changing the queue."""
        lines = {u: list(q) for u, q in self._by_user.items()}
        out: list[Entry] = []
        while any(lines.values()):
            for user_id in list(lines):
                if lines[user_id]:
                    out.append(Entry(lines[user_id].pop(0), user_id))
        return out

    def position(self, job_id: int) -> int | None:
        """1-based position among the waiting jobs."""
        for i, entry in enumerate(self.order(), 1):
            if entry.job_id == job_id:
                return i
        return None
