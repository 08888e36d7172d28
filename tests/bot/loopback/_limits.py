"""Discord's rate limits as the stand-in enforces them: per-route buckets keyed by route template and major
parameter, one sub-limit, and the global limit per bot token.

Sources. Published (https://discord.com/developers/docs/topics/rate-limits): the headers and the 429 body; buckets
per route and per major parameter (channel_id, guild_id, webhook_id + webhook_token); the global limit of 50 requests
per second per bot; interaction endpoints are not bound by the global limit. Discord does not publish per-route
figures ("do not hard code them"); the ones below are what bot authors report seeing in the headers, except the
thread figure, which is this project's assumption (no published or reported figure was found):

| route                                                  | limit            | source                              |
| ------------------------------------------------------ | ---------------- | ----------------------------------- |
| POST /channels/{channel_id}/messages                   | 5 per 5 s        | observed (X-RateLimit-Limit: 5)     |
| PATCH, DELETE /channels/{channel_id}/messages/{id}     | 5 per 5 s        | observed (docs/DISCORD.md)          |
| PUT, DELETE .../reactions/{emoji}/@me or /{user_id}    | 1 per 0.25 s     | observed (one shared bucket)        |
| POST /channels/{channel_id}[/messages/{id}]/threads    | 10 per 10 s      | assumed                             |
| PATCH /channels/{channel_id} with a name or topic      | 2 per 10 min     | observed sub-limit (renames)        |
| anything else                                          | 50 per 1 s       | a generous default, one per route   |
| global, per bot token, interaction callbacks exempt    | 50 per 1 s       | published                           |

A route bucket is a fixed window, as the headers describe it: it opens at its first request, admits `limit` requests,
and gives them all back at `Reset`. The global limit is a sliding window (at most 50 requests in any second): Discord
does not say how it counts, and the sliding window is the stricter reading."""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """`limit` requests per `per` seconds, in the bucket named `bucket` (routes with one name share a bucket)."""

    bucket: str
    limit: int
    per: float


_REACTIONS = Limit("reactions", 1, 0.25)
_THREADS = Limit("thread-create", 10, 10.0)
ROUTE_LIMITS: dict[str, Limit] = {
    "POST /channels/{channel_id}/messages": Limit("message-create", 5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": Limit("message-edit", 5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": Limit("message-delete", 5, 5.0),
    "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me": _REACTIONS,
    "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me": _REACTIONS,
    "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}": _REACTIONS,
    "POST /channels/{channel_id}/messages/{message_id}/threads": _THREADS,
    "POST /channels/{channel_id}/threads": _THREADS,
}
DEFAULT_RATE, DEFAULT_PER = 50, 1.0  # every other route: a bucket of its own
RENAME_LIMIT = Limit("channel-rename", 2, 600.0)
GLOBAL_LIMIT, GLOBAL_PER = 50, 1.0
GLOBAL_EXEMPT = ("POST /interactions/{interaction_id}/{interaction_token}/callback",)


def limit_of(route: str) -> Limit:
    """The limit of a route template (the table above, or the default in a bucket named for the route)."""
    return ROUTE_LIMITS.get(route) or Limit(route, DEFAULT_RATE, DEFAULT_PER)


def bucket_hash(name: str) -> str:
    """A stable opaque X-RateLimit-Bucket for a bucket name, shaped like Discord's."""
    return hashlib.md5(f"loopback:{name}".encode()).hexdigest()


def _up(seconds: float) -> float:
    """Rounded up to the millisecond: a client that waits what it is told never comes back early."""
    return math.ceil(seconds * 1000) / 1000


class Window:
    """One route bucket for one major parameter: a fixed window opened by its first request."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.used = 0
        self.resets_at = 0.0  # time.monotonic()

    def wait(self, now: float) -> float:
        """Seconds until a request would be admitted (0: now)."""
        if now >= self.resets_at or self.used < self.limit.limit:
            return 0.0
        return self.resets_at - now

    def take(self, now: float) -> None:
        if now >= self.resets_at:
            self.used, self.resets_at = 0, now + self.limit.per
        self.used += 1

    def headers(self, now: float) -> dict[str, str]:
        fresh = now >= self.resets_at
        remaining = self.limit.limit if fresh else self.limit.limit - self.used
        after = _up(self.limit.per if fresh else self.resets_at - now)
        return {
            "X-RateLimit-Limit": str(self.limit.limit),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": f"{time.time() + after:.3f}",
            "X-RateLimit-Reset-After": f"{after:.3f}",
            "X-RateLimit-Bucket": bucket_hash(self.limit.bucket),
        }


@dataclass
class Verdict:
    """What the limits say about one request: the headers to answer with, and if refused, for how long."""

    headers: dict[str, str]
    retry_after: float = 0.0
    is_global: bool = False

    @property
    def refused(self) -> bool:
        return self.retry_after > 0


class RateLimits:
    """Every bucket the stand-in has seen, and the global window per bot token."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], Window] = {}
        self._global: dict[str, deque[float]] = {}

    def _window(self, limit: Limit, major: str) -> Window:
        key = (limit.bucket, major)
        if key not in self._windows:
            self._windows[key] = Window(limit)
        return self._windows[key]

    def admit(self, route: str, major: str, token: str | None, renames: bool = False) -> Verdict:
        """Count a request to `route` (its template, "METHOD /path/{param}") for the major parameter `major`, sent
        with the bot token `token` (None: no bot token, as for interaction webhooks); `renames` when it changes a
        channel's name or topic."""
        now = time.monotonic()
        window = self._window(limit_of(route), major)
        if token is not None and route not in GLOBAL_EXEMPT:
            sent = self._global.setdefault(token, deque())
            while sent and sent[0] <= now - GLOBAL_PER:
                sent.popleft()
            if len(sent) >= GLOBAL_LIMIT:
                return Verdict(window.headers(now), _up(sent[0] + GLOBAL_PER - now), is_global=True)
            sent.append(now)  # every request that reaches a route counts, refused by the route or not
        wait = window.wait(now)
        if not wait and renames:
            rename = self._window(RENAME_LIMIT, major)
            wait = rename.wait(now)  # a sub-limit: refused with the route's headers, Remaining above 0
            if not wait:
                rename.take(now)
        if wait:
            return Verdict(window.headers(now), _up(wait))
        window.take(now)
        return Verdict(window.headers(now))
