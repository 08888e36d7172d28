"""Pacing of message edits so that progress never provokes Discord's rate limits.

Discord allows about 5 message edits per 5 seconds per channel. Each job's status message is edited at most
every `interval` seconds, and all the jobs that share a channel share a budget of `per_channel` edits per
`window` seconds. Updates are coalesced: only the newest preview matters, so a skipped one is simply dropped.
"""

from __future__ import annotations

from collections import defaultdict, deque


class EditPacer:
    """Decides whether an edit may go out now; call `allow` before every progress edit.

    When jobs in one channel compete for the budget, the one whose status is the oldest goes first, so no job's
    preview starves behind the others.
    """

    def __init__(self, interval: float = 5.0, per_channel: int = 4, window: float = 5.0, recent: float = 2.0) -> None:
        self.interval, self.per_channel, self.window, self.recent = interval, per_channel, window, recent
        self._last_edit: dict[int, float] = {}  # message id -> time of its last edit
        self._channel: defaultdict[int, deque[float]] = defaultdict(deque)
        self._asking: defaultdict[int, dict[int, float]] = defaultdict(dict)  # channel -> message -> last ask

    def _due(self, message_id: int, now: float) -> bool:
        last = self._last_edit.get(message_id)
        return last is None or now - last >= self.interval

    def allow(self, channel_id: int, message_id: int, now: float) -> bool:
        """Whether status `message_id` may be edited at `now` (recorded as edited if so): its interval has passed, the
        channel has budget left, and no other status asking recently has waited longer."""
        asking = self._asking[channel_id]
        asking[message_id] = now
        if not self._due(message_id, now):
            return False
        recent = self._channel[channel_id]
        while recent and now - recent[0] >= self.window:
            recent.popleft()
        if len(recent) >= self.per_channel:
            return False
        waiting = [m for m, t in asking.items() if now - t < self.recent and self._due(m, now)]
        oldest = min(waiting, key=lambda m: self._last_edit.get(m, float("-inf")))
        if self._last_edit.get(oldest, float("-inf")) < self._last_edit.get(message_id, float("-inf")):
            return False
        recent.append(now)
        self._last_edit[message_id] = now
        return True

    def forget(self, message_id: int) -> None:
        """Drop what is kept about a status message (its job has ended), and about its channel once no status there
        asks any more (every job has a thread of its own: kept, they would grow with every job)."""
        self._last_edit.pop(message_id, None)
        for channel_id in list(self._asking):
            asking = self._asking[channel_id]
            asking.pop(message_id, None)
            if not asking:
                del self._asking[channel_id]
                self._channel.pop(channel_id, None)
