"""`python -m bench.metrics`: what an operator's Prometheus would scrape after N jobs. The real bot (in this process,
the embedded backend on the tiny models, on the CPU) logs in to the loopback Discord stand-in (`tests/bot/loopback`:
real sockets, Discord's rate limits), N members each ask for one /imagine, and once every job is done and its task
has ended, /metrics is fetched from the bot's operations port (`bot.health`) and printed, with /healthz and /readyz.

    python -m bench.metrics                          # 10 jobs, 20 steps each, square-small (256x256)
    python -m bench.metrics --jobs 3 --steps 5 --all # every line of the exposition (buckets, process_*, python_*)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path


async def run(jobs: int, steps: int, size: str, models: Path, data: Path) -> tuple[str, str, str, float]:
    """Run `jobs` jobs through a real bot on the stand-in; (/metrics, /healthz, /readyz as text, seconds taken)."""
    import aiohttp
    import discord
    import yarl

    from bot.client import ImagineBot
    from bot.config import Settings
    from tests.bot.cluster import free_port
    from tests.bot.loopback import LoopbackDiscord

    stand_in = LoopbackDiscord(members=jobs)
    await stand_in.start()
    discord.http.Route.BASE = stand_in.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(stand_in.gateway_url)
    settings = Settings(
        token="loopback-token",
        data_dir=data,
        models_dir=models,
        clip_model="tiny-clip",
        device="cpu",
        default_steps=steps,
        max_steps=max(steps, 50),
        snapshot_every=max(1, steps // 2),
        edit_interval=1.0,
        max_queue=max(jobs, 10),
        moderation="spoiler",
        health_port=free_port(),
    )
    bot = ImagineBot(settings)
    task = asyncio.create_task(bot.start("loopback-token"))
    base = f"http://127.0.0.1:{settings.health_port}"
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 60)
        started = time.monotonic()
        for member in range(jobs):
            await stand_in.slash("imagine", {"prompt": f"a lighthouse, take {member + 1}", "size": size}, user=member)
        while True:
            states = [(await bot.store.get_job(i + 1)) for i in range(jobs)]
            if all(j is not None and j.state.final for j in states) and not bot.jobs.running():
                break
            await asyncio.sleep(0.2)
        took = time.monotonic() - started
        async with aiohttp.ClientSession() as http:
            answers = []
            for path in ("/metrics", "/healthz", "/readyz"):
                async with http.get(base + path) as response:
                    answers.append(
                        f"{response.status} {await response.text()}" if path != "/metrics" else await response.text()
                    )
        return answers[0], answers[1], answers[2], took
    finally:
        await bot.close()
        await asyncio.wait_for(task, 30)
        await stand_in.stop()


def shown(line: str) -> bool:
    """The lines printed by default: the imagine_* samples, without HELP and TYPE, histogram buckets, creation times
    and the job counters still at zero (`--all` prints everything)."""
    if line.startswith("#") or not line.startswith("imagine_") or "_created" in line or "_bucket{" in line:
        return False
    return not (line.startswith("imagine_jobs_total") and line.endswith(" 0.0"))


def main(argv: list[str] | None = None) -> int:
    """Run the jobs and print the scrape."""
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", default="square-small", help="a size name members pick (bot.catalog.SIZES)")
    parser.add_argument("--all", action="store_true", help="every line (default: the imagine_* metrics)")
    args = parser.parse_args(argv)
    from engine.models.tiny import write_tiny_models

    with tempfile.TemporaryDirectory(prefix="imagine-bench-metrics-") as folder:
        work = Path(folder)
        models = write_tiny_models(work / "models")
        scrape, alive, ready, took = asyncio.run(run(args.jobs, args.steps, args.size, models, work / "data"))
    print(f"# {args.jobs} jobs of {args.steps} steps at {args.size}, embedded backend, tiny models, CPU: {took:.1f} s")
    print(f"# GET /healthz -> {alive}")
    print(f"# GET /readyz  -> {ready}")
    print("# GET /metrics:")
    for line in scrape.splitlines():
        if args.all or shown(line):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
