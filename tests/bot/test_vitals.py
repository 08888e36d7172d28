"""bot.vitals: the event-loop lag monitor sees a blocked loop and warns past its threshold only (at most once per
WARN_EVERY seconds); the process snapshot's counts move with what is opened; the figures stay bounded."""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import tempfile
import threading
import time
import tracemalloc

import pytest

from bot import vitals
from bot.vitals import LagMonitor


class _User:
    """Stands for a bot: vitals keeps its users weakly."""


async def _next_wake(monitor: LagMonitor) -> None:
    """Until the monitor has recorded one more sample (it is then asleep again, due at `monitor.due`)."""
    seen = monitor.summary()["count"]
    deadline = time.monotonic() + 5
    while monitor.summary()["count"] == seen:
        assert time.monotonic() < deadline, "the monitor never woke"
        await asyncio.sleep(0)


async def _block_at_next_wake(monitor: LagMonitor, seconds: float) -> None:
    """Block the loop with time.sleep from the moment the monitor is due, so the whole block is late."""
    await _next_wake(monitor)
    asyncio.get_running_loop().call_at(monitor.due, time.sleep, seconds)
    await _next_wake(monitor)


@pytest.fixture
def monitors():
    started = []

    def make(**kw) -> LagMonitor:
        monitor = LagMonitor(**kw)
        monitor.start()
        started.append(monitor)
        return monitor

    yield make
    for monitor in started:
        monitor.stop()


async def test_a_blocked_loop_shows_in_the_lag_without_a_warning_under_the_threshold(monitors, caplog):
    caplog.set_level(logging.WARNING, logger="bot.vitals")
    monitor = monitors(interval=0.02)
    await _block_at_next_wake(monitor, 0.3)
    summary = monitor.summary()
    assert summary["max_s"] >= 0.3
    assert summary["last_minute"]["max_s"] >= 0.3 and summary["last_minute"]["count"] >= 2
    assert summary["p50_s"] < 0.3  # one laggard among quick wakes
    assert not [r for r in caplog.records if r.name == "bot.vitals"]  # 0.3 s is under the 1 s threshold


async def test_a_block_past_the_threshold_is_one_warning_per_ten_seconds(monitors, caplog):
    caplog.set_level(logging.WARNING, logger="bot.vitals")
    monitor = monitors(interval=0.02, warn_after=0.25)
    await _block_at_next_wake(monitor, 0.3)
    await _block_at_next_wake(monitor, 0.3)  # within 10 s of the first: counted, not logged
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.vitals"]
    assert len(warnings) == 1 and warnings[0].startswith("the event loop was blocked for 0.3 s"), warnings
    assert monitor.summary()["warnings"] == 1


def test_warnings_are_rate_limited_and_count_what_they_left_out(caplog):
    caplog.set_level(logging.WARNING, logger="bot.vitals")
    monitor = LagMonitor()
    monitor.record(2.34, now=100.0)
    monitor.record(0.9, now=101.0)  # under the threshold: nothing
    monitor.record(1.5, now=105.0)  # within 10 s of the last warning
    monitor.record(3.0, now=111.0)
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.vitals"]
    assert len(warnings) == 2
    assert warnings[0].startswith("the event loop was blocked for 2.3 s:")
    assert warnings[1].startswith("the event loop was blocked for 3.0 s (and 1 more time(s) since the last warning)")


def test_the_figures_stay_bounded_over_100k_samples():
    monitor = LagMonitor(interval=0.05)
    tracemalloc.start()
    try:
        now = 0.0
        for i in range(2_000):
            now += 0.05
            monitor.record((i % 100) / 10_000, now)  # 0 to 9.9 ms, evenly
        footprint, before = monitor.footprint(), tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            now += 0.05
            monitor.record((i % 100) / 10_000, now)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert monitor.footprint() == footprint <= vitals.BUCKETS + 2 * (60 / 0.05 + 1)
    assert after - before < 64 * 1024, after - before  # no list that grows with the samples
    summary = monitor.summary(now=now)
    assert summary["count"] == 102_000
    assert 0.0049 <= summary["p50_s"] <= 0.0049 * 1.13  # a bucket's upper edge: at most 12 % high
    assert 0.0098 <= summary["p99_s"] <= 0.0099
    assert summary["max_s"] == 0.0099
    assert 1199 <= summary["last_minute"]["count"] <= 1201  # the last 60 s at one sample per 0.05 s
    assert summary["last_minute"]["p50_s"] == pytest.approx(0.0049, abs=1e-4)


async def test_the_snapshot_counts_tasks_threads_and_open_files():
    owner = _User()
    vitals.start(owner)
    try:
        before = vitals.snapshot()
        assert before["pid"] == os.getpid() and before["rss_bytes"] > 10 * 1024 * 1024 and before["uptime_s"] > 0
        assert before["loop_lag"]["interval_s"] == vitals.INTERVAL
        release, stop = asyncio.Event(), threading.Event()
        tasks = [asyncio.create_task(release.wait()) for _ in range(5)]
        threads = [threading.Thread(target=stop.wait) for _ in range(2)]
        for thread in threads:
            thread.start()
        files = [open(os.devnull) for _ in range(3)]  # noqa: SIM115 - held open on purpose
        try:
            during = vitals.snapshot()
        finally:
            for file in files:
                file.close()
            stop.set()
            for thread in threads:
                thread.join()
            release.set()
            await asyncio.gather(*tasks)
        after = vitals.snapshot()
    finally:
        vitals.stop(owner)
    assert during["tasks"] - before["tasks"] == 5 and after["tasks"] == before["tasks"]
    assert during["threads"] - before["threads"] == 2 and after["threads"] == before["threads"]
    assert during["open_fds"] - before["open_fds"] == 3 and after["open_fds"] == before["open_fds"]
    if before["os_threads"] is not None:  # where /proc says
        assert during["os_threads"] - before["os_threads"] == 2 and after["os_threads"] == before["os_threads"]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="the parts of resident memory come from /proc")
def test_the_snapshot_parts_resident_memory_into_written_and_file_backed():
    before = vitals.snapshot()
    assert before["rss_anon_bytes"] + before["rss_file_bytes"] <= before["rss_bytes"] + 1024 * 1024
    # a new private anonymous mapping (a shared one counts as shared memory): no freed heap page is reused
    written = mmap.mmap(-1, 64 * 1024 * 1024, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for page in range(0, len(written), mmap.PAGESIZE):
        written[page] = 1  # written, not merely reserved
    with tempfile.TemporaryFile(dir=os.path.dirname(__file__)) as file:  # on disk: a tmpfs's pages count as shared
        file.write(b"\x02" * (32 * 1024 * 1024))
        file.flush()
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            assert sum(mapped[i] for i in range(0, len(mapped), 4096)) == 2 * (len(mapped) // 4096)  # read each page
            during = vitals.snapshot()
    written.close()
    assert during["rss_anon_bytes"] - before["rss_anon_bytes"] >= 60 * 1024 * 1024
    assert during["rss_file_bytes"] - before["rss_file_bytes"] >= 30 * 1024 * 1024


async def test_one_monitor_per_process_until_its_last_user_stops():
    first, second = _User(), _User()
    monitor = vitals.start(first)
    assert vitals.start(second) is monitor and vitals.current() is monitor and monitor.running
    vitals.stop(first)
    vitals.stop(first)  # a second stop by the same user changes nothing
    assert monitor.running
    vitals.stop(second)
    await asyncio.sleep(0)
    assert not monitor.running and vitals.current() is monitor  # its figures stay readable
    assert vitals.snapshot()["loop_lag"]["count"] == monitor.summary()["count"]


def test_the_snapshot_is_read_from_another_thread():
    """The launcher's writer thread reads it while the loop runs."""
    seen = {}

    async def main() -> None:
        owner = _User()
        vitals.start(owner)
        await asyncio.sleep(0.2)
        reader = threading.Thread(target=lambda: seen.update(vitals.snapshot()))
        reader.start()
        while reader.is_alive():
            await asyncio.sleep(0.01)
        vitals.stop(owner)

    asyncio.run(main())
    assert seen["tasks"] >= 2 and seen["loop_lag"]["count"] >= 2  # main() and the monitor


@pytest.mark.skipif(vitals.c_heap() is None, reason="the C heap's account comes from glibc's mallinfo2")
def test_the_c_heap_counts_what_malloc_handed_out_until_it_is_freed():
    before = vitals.c_heap()["in_use"]
    held = bytearray(b"\x01") * (40 * 1024 * 1024)  # a large block: malloc maps it
    during = vitals.c_heap()["in_use"]
    del held
    after = vitals.c_heap()["in_use"]
    assert during - before >= 40 * 1024 * 1024 and after - before < 4 * 1024 * 1024


def test_objects_alive_at_start_up_are_frozen_and_later_cycles_still_collected():
    """`python -m bot` freezes what start-up made (bot.__main__.freeze_startup_objects): those objects no longer count
    towards the collector's thresholds, and garbage in reference cycles made afterwards is still collected."""
    import gc
    import weakref

    from bot.__main__ import freeze_startup_objects

    class Node:
        pass

    kept = Node()
    try:
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 1000  # this process's imports, at least
        assert gc.is_tracked(kept) and not any(o is kept for o in gc.get_objects())  # frozen: out of every generation
        cycle = Node()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


def test_after_the_freeze_full_collections_come_at_the_collectors_own_pace():
    """Python runs a full collection only once the objects that reached its oldest generation since the last one
    number a quarter of those it found there then. Frozen after that count was taken, the start-up's objects (the
    models, the libraries) would still set it: cyclic garbage that outlived a job (the messages discord.py dropped
    with their reactions) piled up, and no full pass came in the soak's 900 jobs. After the freeze the count is of
    what is not frozen."""
    import gc

    from bot.__main__ import freeze_startup_objects

    startup = [[i] for i in range(400_000)]  # what the loaded models and libraries are to the collector
    full = []

    def count(phase, info):
        if phase == "start" and info["generation"] == 2:
            full.append(info)

    gc.callbacks.append(count)
    try:
        freeze_startup_objects()
        full.clear()  # its own passes
        # about 100,000 objects that live on reach the oldest generation: the collector's thresholds (700, 10, 10)
        # make it consider a full pass once, after about 70,000, and with 400,000 frozen objects counted it would
        # wait for 100,000
        survivors = [[i] for i in range(100_000)]
        assert full, "no full collection after 100,000 objects reached the oldest generation"
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()
    del startup, survivors
