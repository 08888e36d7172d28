"""`python -m tests.bot.launch API_BASE GATEWAY_URL [options] [args]`: `python -m bot` pointed at a loopback Discord.

Options (read here only; everything else goes to the bot):
    --vitals FILE             write `bot.vitals.snapshot()` as JSON to FILE every second (atomically: a temporary file
                              renamed over it), from a daemon thread, for a benchmark in another process to read
    --vitals-every SECONDS    how often (default 1)
    --maintenance-every S     run the bot's retention pass and reposting every S seconds instead of daily (a soak
                              compresses days into minutes)
    --size NAME=WxH           redefine a size members can pick (tiny models on a shared CPU: a job in seconds)
    --allocations FILE        on SIGUSR1 start tracing allocations (tracemalloc); then write where the memory
                              allocated since and still alive was allocated, to FILE every 10 s (where a leak lives)
    --collect                 a full garbage collection before each write of the vitals
    --census FILE             on SIGUSR2, write the count of tracked objects by type, the live ones and the cyclic
                              garbage apart, to FILE.N (N = 0, 1, ...)
    --trim                    then glibc's malloc_trim: the vitals' RSS counts memory in use, not memory kept free
    --text-cache N            prompt embeddings the engine keeps (engine.engine.TEXT_CACHE)

On SIGUSR2 it prints Python's small-object allocator's statistics (its arenas, pools and blocks by size class,
`sys._debugmallocstats`) to standard error: memory that Python's objects hold, or pin, outside the C heap. While
allocations are traced it also dumps the whole trace beside FILE (see `on_usr2`).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import linecache
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import discord
import yarl


def environment(data_dir: Path, models: Path, **settings: str) -> dict[str, str]:
    """The environment of a bot on the tiny models, on the CPU, launched here: nothing of this shell's IMAGINE_* or
    DISCORD_* leaks in; `settings` add or override keys (e.g. IMAGINE_MAX_QUEUE="50")."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "DISCORD_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        DISCORD_TOKEN="loopback-token",
        IMAGINE_DATA_DIR=str(data_dir),
        IMAGINE_MODELS_DIR=str(models),
        IMAGINE_CLIP_MODEL="tiny-clip",
        IMAGINE_DEVICE="cpu",
    )
    env.update(settings)
    return env


def point_at(api_base: str, gateway_url: str) -> None:
    """Send this process's discord.py to the loopback stand-in (REST and gateway)."""
    discord.http.Route.BASE = api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def write_vitals(path: Path, trim: bool = False, collect: bool = False) -> None:
    """Write this process's vitals to `path` atomically (a reader never sees half a file); with `collect`, first run
    a full garbage collection (objects in reference cycles are freed only by one); with `trim`, then hand the C heap's
    free memory back to the system (glibc's malloc_trim), so that RSS counts only memory in use."""
    from bot import vitals

    if collect:
        gc.collect()
    if trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(vitals.snapshot()))
    os.replace(temporary, path)


def start_vitals_writer(path: Path, every: float = 1.0, trim: bool = False, collect: bool = False) -> threading.Thread:
    """A daemon thread that writes the vitals to `path` now and then every `every` seconds, for as long as the process
    lives (a write that fails is tried again at the next tick)."""

    def run() -> None:
        while True:  # a daemon: it ends with the process
            try:
                write_vitals(path, trim, collect)
            except OSError:
                pass
            time.sleep(every)

    thread = threading.Thread(target=run, name="imagine-vitals-writer", daemon=True)
    thread.start()
    return thread


def start_allocation_tracing(path: Path, every: float = 10.0, top: int = 60) -> threading.Thread:
    """On SIGUSR1, start tracing allocations (tracemalloc); from then on a daemon thread writes the `top` allocation
    sites (by traceback) of what was allocated since and is still alive to `path` every `every` seconds: after a
    warm-up, that is what grows."""
    marked = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: marked.set())

    def run() -> None:
        marked.wait()
        tracemalloc.start(8)
        began = time.monotonic()
        while True:
            time.sleep(every)
            ignored = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, linecache.__file__)]
            alive = tracemalloc.take_snapshot().filter_traces(ignored)  # not this tracer's own (its source lines)
            sites = [
                {"kib": round(s.size / 1024, 1), "blocks": s.count, "where": s.traceback.format()[-8:]}
                for s in alive.statistics("traceback")[:top]
            ]
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"seconds": round(time.monotonic() - began), "sites": sites}))
            os.replace(temporary, path)

    thread = threading.Thread(target=run, name="imagine-allocations", daemon=True)
    thread.start()
    return thread


def _kind(o) -> str:
    return f"{type(o).__module__}.{type(o).__qualname__}"


def census_of_objects() -> dict[str, list]:
    """The objects the garbage collector tracks, by type: `garbage`, those in reference cycles that a full collection
    frees now (what waits for the collector's next full pass), and `live`, those left (frozen start-up objects
    aside)."""
    gc.set_debug(gc.DEBUG_SAVEALL)  # the collection keeps what it would free in gc.garbage, to be counted
    try:
        gc.collect()
        garbage = Counter(_kind(o) for o in gc.garbage)
        gc.garbage.clear()
    finally:
        gc.set_debug(0)
    gc.collect()  # now freed
    return {"garbage": garbage.most_common(), "live": Counter(_kind(o) for o in gc.get_objects()).most_common()}


def on_usr2(allocations: Path | None, census: Path | None) -> None:
    """Print pymalloc's statistics; with `census`, write `census_of_objects()` to it (census.json.N); while
    allocations are traced, also dump the whole trace beside their file (FILE.N.snapshot): two of them, compared
    (`tracemalloc.Snapshot.load(b).compare_to(load(a), "lineno")`), give every line's net growth between them, where
    the file lists only the largest sites."""
    sys._debugmallocstats()
    if census is not None:
        written = sorted(census.parent.glob(f"{census.name}.*"))
        census.with_name(f"{census.name}.{len(written)}").write_text(json.dumps(census_of_objects()))
    if allocations is not None and tracemalloc.is_tracing():
        dumps = sorted(allocations.parent.glob(f"{allocations.name}.*.snapshot"))
        tracemalloc.take_snapshot().dump(str(allocations.with_name(f"{allocations.name}.{len(dumps)}.snapshot")))


def _size(text: str) -> tuple[str, tuple[int, int]]:
    name, _, dims = text.partition("=")
    width, _, height = dims.partition("x")
    return name, (int(width), int(height))


def main(argv: list[str]) -> int:
    """Point discord.py at the stand-in, apply the launcher's options, then run `python -m bot` with the rest."""
    parser = argparse.ArgumentParser(prog="python -m tests.bot.launch", allow_abbrev=False, add_help=False)
    parser.add_argument("api_base")
    parser.add_argument("gateway_url")
    parser.add_argument("--vitals", type=Path)
    parser.add_argument("--vitals-every", type=float, default=1.0)
    parser.add_argument("--maintenance-every", type=float)
    parser.add_argument("--size", type=_size, action="append", default=[])
    parser.add_argument("--allocations", type=Path)
    parser.add_argument("--trim", action="store_true")
    parser.add_argument("--collect", action="store_true")
    parser.add_argument("--census", type=Path)
    parser.add_argument("--text-cache", type=int)
    args, rest = parser.parse_known_args(argv)
    point_at(args.api_base, args.gateway_url)
    signal.signal(signal.SIGUSR2, lambda *_: on_usr2(args.allocations, args.census))
    if args.maintenance_every is not None:
        import bot.client

        bot.client.MAINTENANCE_EVERY = args.maintenance_every
    if args.text_cache is not None:  # the engine's prompt embeddings kept (engine.engine.TEXT_CACHE)
        import engine.engine

        engine.engine.TEXT_CACHE = args.text_cache
    if args.size:
        from bot.catalog import SIZES

        SIZES.update(args.size)
    if args.vitals is not None:
        start_vitals_writer(args.vitals, args.vitals_every, args.trim, args.collect)
    if args.allocations is not None:
        start_allocation_tracing(args.allocations)
    from bot.__main__ import main as bot_main

    return bot_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
