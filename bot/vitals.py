"""The bot process's vitals, cheap enough to run always: how late the event loop wakes a sleeper (a lag monitor), and a
snapshot of the process (asyncio tasks, threads, resident memory, open files, uptime). Standard library only.

    vitals.start(bot)       # the bot's setup_hook; one monitor per process, however many bots start it
    vitals.snapshot()       # from anywhere in the process, any thread (a launcher's writer thread too)
    vitals.stop(bot)        # the bot's close(); the last user's stop ends it, its figures stay readable

The monitor sleeps `interval` seconds at a time and records how late it woke (lateness = woke - due). Nothing slow
may run on the loop (discord.py answers heartbeats and interactions there), so a lateness over `warn_after` (1 s) is
logged as a warning on `bot.vitals`, at most once per WARN_EVERY seconds. The figures are bounded whatever the run's
length: a fixed log-spaced histogram for the whole run and a ring of the last minute's samples.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections import deque

log = logging.getLogger(__name__)

INTERVAL = 0.05  # seconds the monitor sleeps between wakes
WARN_AFTER = 1.0  # a lateness past this many seconds is a warning
WARN_EVERY = 10.0  # at most one warning per this many seconds (the others are counted in the next one)
WINDOW = 60.0  # "recent": the last minute

# The whole run's histogram: bucket 0 holds lateness under LOW, then BUCKETS_PER_DECADE buckets per factor of ten
# up to LOW * 10**DECADES (100 s), the last bucket holding anything longer. Percentiles are read as a bucket's upper
# edge, so they are at most 12 % high (10 ** (1/20)), never below the true value; the maximum is kept exactly.
LOW = 1e-4
BUCKETS_PER_DECADE = 20
DECADES = 6
BUCKETS = 2 + BUCKETS_PER_DECADE * DECADES


def _bucket(lateness: float) -> int:
    if lateness < LOW:
        return 0
    return min(BUCKETS - 1, 1 + int(math.log10(lateness / LOW) * BUCKETS_PER_DECADE))


def _upper_edge(bucket: int) -> float:
    return LOW * 10 ** (bucket / BUCKETS_PER_DECADE)


def _nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class LagMonitor:
    """Samples the event loop's lateness and keeps a bounded summary of it (see the module docstring). `record` is the
    one way in, so a test can feed it samples directly; `summary` may be called from any thread."""

    def __init__(self, interval: float = INTERVAL, warn_after: float = WARN_AFTER, warn_every: float = WARN_EVERY):
        self.interval, self.warn_after, self.warn_every = interval, warn_after, warn_every
        self.loop: asyncio.AbstractEventLoop | None = None
        self.due: float | None = None  # when (loop time) the monitor expects to wake next, while it sleeps
        self._task: asyncio.Task | None = None
        self._lock = threading.Lock()  # record (on the loop) against summary (from any thread)
        self._histogram = [0] * BUCKETS
        self._count = 0
        self._max = 0.0
        # each sample takes at least `interval`, so this many cover the window: the ring never drops one within it
        self._recent: deque[tuple[float, float]] = deque(maxlen=math.ceil(WINDOW / interval) + 1)
        self._warned_at: float | None = None
        self._unwarned = 0  # laggards past the threshold since the last warning, not warned about
        self.warnings = 0

    @property
    def running(self) -> bool:
        """Whether the sampling task is alive on a loop that is still open."""
        return self._task is not None and not self._task.done() and self.loop is not None and not self.loop.is_closed()

    def start(self) -> None:
        """Start sampling on the running loop. The task runs in a context of its own: it is the process's, not the
        caller's work (a harness that follows a bot's work through its context must not wait for a sampler that
        never ends)."""
        self.loop = asyncio.get_running_loop()
        self._task = contextvars.Context().run(self.loop.create_task, self._run(), name="imagine-vitals")

    def stop(self) -> None:
        """Stop sampling (the figures stay readable). Safe from any thread."""
        task, loop = self._task, self.loop
        self._task, self.due = None, None
        if task is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()
        else:
            loop.call_soon_threadsafe(task.cancel)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            now = loop.time()
            self.record(max(0.0, now - self.due), now)

    def record(self, lateness: float, now: float) -> None:
        """Count one wake `lateness` seconds late at `now` (monotonic seconds), and warn if it is past the threshold."""
        with self._lock:
            self._histogram[_bucket(lateness)] += 1
            self._count += 1
            self._max = max(self._max, lateness)
            self._recent.append((now, lateness))
        if lateness > self.warn_after:
            self._warn(lateness, now)

    def _warn(self, lateness: float, now: float) -> None:
        if self._warned_at is not None and now - self._warned_at < self.warn_every:
            self._unwarned += 1
            return
        more = f" (and {self._unwarned} more time(s) since the last warning)" if self._unwarned else ""
        log.warning(
            "the event loop was blocked for %.1f s%s: something slow runs on it (it should run in a thread)",
            lateness,
            more,
        )
        self._warned_at, self._unwarned = now, 0
        self.warnings += 1

    def summary(self, now: float | None = None) -> dict:
        """count, p50, p99 and max lateness (seconds) over the whole run, and the same over the last minute."""
        now = time.monotonic() if now is None else now
        with self._lock:
            histogram, count, top = list(self._histogram), self._count, self._max
            recent = sorted(lateness for at, lateness in self._recent if now - at <= WINDOW)

        def percentile(q: float) -> float:
            if not count:
                return 0.0
            seen = 0
            for bucket, n in enumerate(histogram):
                seen += n
                if seen >= q * count:
                    return min(top, _upper_edge(bucket))
            return top

        last_minute = {
            "count": len(recent),
            "p50_s": _nearest_rank(recent, 0.5) if recent else 0.0,
            "p99_s": _nearest_rank(recent, 0.99) if recent else 0.0,
            "max_s": recent[-1] if recent else 0.0,
        }
        return {
            "interval_s": self.interval,
            "count": count,
            "p50_s": percentile(0.5),
            "p99_s": percentile(0.99),
            "max_s": top,
            "warnings": self.warnings,
            "last_minute": last_minute,
        }

    def footprint(self) -> int:
        """How many numbers the monitor holds (bounded: the histogram's buckets and the last minute's ring)."""
        with self._lock:
            return len(self._histogram) + 2 * len(self._recent)


# -- the process's monitor ----------------------------------------------------------------------------------------

_monitor: LagMonitor | None = None
_users: weakref.WeakSet = weakref.WeakSet()  # who started it and has not stopped it (several bots may share a process)
_imported_at = time.monotonic()


def start(user: object) -> LagMonitor:
    """Start the process's monitor on the running loop for `user` (the bot; kept by a weak reference), or count `user`
    as one more user of the one already running there."""
    global _monitor
    loop = asyncio.get_running_loop()
    if _monitor is None or not _monitor.running or _monitor.loop is not loop:
        if _monitor is not None:  # one left on another loop (a test's, ended or not): not ours to keep
            _monitor.stop()
        _monitor = LagMonitor()
        _users.clear()
        _monitor.start()
    _users.add(user)
    return _monitor


def stop(user: object) -> None:
    """`user` no longer needs the monitor (a second stop changes nothing); when none does, it stops (`current()`
    still returns it, with its figures)."""
    _users.discard(user)
    if not _users and _monitor is not None:
        _monitor.stop()


def current() -> LagMonitor | None:
    """The process's monitor (running, or the last one that ran), or None if none was started."""
    return _monitor


def _proc_status(field: str, unit: int = 1024) -> int | None:
    """A figure of /proc/self/status (memory is reported in kB), None where there is no such file or figure."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * unit
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """The process's resident memory now (/proc/self/status VmRSS); where there is no /proc, its peak (resource)."""
    found = _proc_status("VmRSS")
    if found is not None:
        return found
    import resource  # not on Windows

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB elsewhere


def rss_parts() -> dict[str, int | None]:
    """Resident memory by kind (/proc/self/status; None where the system does not say): `anon`, the memory the process
    wrote (its heaps, stacks and allocators' arenas), where a leak shows; `file`, pages of files it maps (its shared
    libraries' code, read in as paths are first run: these grow while new code runs, and the kernel may drop them)."""
    return {"anon": _proc_status("RssAnon"), "file": _proc_status("RssFile")}


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _find_mallinfo2():
    try:
        function = ctypes.CDLL(None).mallinfo2  # glibc 2.33 and later
    except (OSError, AttributeError, TypeError):
        return None
    function.restype, function.argtypes = _MallInfo2, []
    return function


_mallinfo2 = _find_mallinfo2() if sys.platform.startswith("linux") else None


def c_heap() -> dict[str, int] | None:
    """The C allocator's own account (glibc's mallinfo2, over all its arenas; None elsewhere): `in_use`, the bytes
    malloc has handed out and not had back (Python's, torch's, SQLite's alike, mmapped blocks included), and `free`,
    the bytes it holds free inside its heaps. Resident memory that grows while `in_use` stays flat is the allocator's
    fragmentation, not memory anything still holds."""
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free": info.fordblks}


def os_threads() -> int | None:
    """The process's threads as the system counts them: Python's and native ones (torch's and OpenMP's pools)."""
    return _proc_status("Threads", unit=1)


def open_fds() -> int | None:
    """How many file descriptors the process has open (None where the system does not say)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder)) - 1  # listing the folder opens one of its own
        except OSError:
            continue
    return None


def uptime() -> float:
    """Seconds since the process started (from /proc), else since this module was imported."""
    try:
        with open("/proc/self/stat") as stat:
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, after the command's name
        with open("/proc/uptime") as boot:
            since_boot = float(boot.read().split()[0])
        return max(0.0, since_boot - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _imported_at


def snapshot() -> dict:
    """The process's vitals now: loop lag (None if no monitor ran), asyncio tasks of the monitored loop, threads
    (Python's, and the system's count), resident memory (in all, and its anonymous and file-backed parts), open file
    descriptors and uptime. Safe to call from any thread."""
    monitor = _monitor
    loop = monitor.loop if monitor is not None else None
    tasks = None
    if loop is not None and not loop.is_closed():
        tasks = len(asyncio.all_tasks(loop))
    parts = rss_parts()
    return {
        "time": time.time(),
        "pid": os.getpid(),
        "uptime_s": round(uptime(), 3),
        "rss_bytes": rss_bytes(),
        "rss_anon_bytes": parts["anon"],
        "rss_file_bytes": parts["file"],
        "c_heap": c_heap(),
        "python_blocks": sys.getallocatedblocks(),  # Python's small objects alive (its own allocator's blocks)
        "open_fds": open_fds(),
        "threads": threading.active_count(),
        "os_threads": os_threads(),
        "tasks": tasks,
        "loop_lag": monitor.summary() if monitor is not None else None,
    }
