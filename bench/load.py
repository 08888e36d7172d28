"""`python -m bench.load`: a busy server, measured. The real bot process (`python -m bot` on the tiny models) runs
against the loopback Discord stand-in (`tests/bot/loopback.py`: its real websocket and REST, Discord's rate limits
and the 3 s interaction deadline enforced) in real time, while simulated members send /imagine, click Reroll,
Continue, Cancel and Steer, vote, and call /queue, /top, /history and /describe at a set rate, and the engine is
kept busy. It prints:

- the time from each interaction to its answer: p50, p95, p99, max, and how many missed Discord's 3 s;
- the bot's event-loop lag (its own `bot.vitals` monitor): p99 and max;
- the gateway: heartbeats late, reconnects;
- requests answered 429, per route;
- posts lost or duplicated: every job the database says is done has exactly one final image in the stand-in.

    python -m bench.load                                   # 50 members, 5 interactions/s, 5 minutes, embedded
    python -m bench.load --backend celery --workers 2      # the same with two GPU-worker processes (redis-server)
    python -m bench.load --members 10 --rate 2 --duration 30 --json load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.machine import cpu_name
from tests.bot.launch import environment

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 3.0  # Discord refuses an interaction answered later than this
START_TIMEOUT = 180.0
WORDS = [
    "lighthouse",
    "forest",
    "castle",
    "nebula",
    "harbour",
    "desert",
    "cathedral",
    "glacier",
    "orchard",
    "volcano",
    "city",
    "river",
]
STYLES = ["oil painting", "watercolor", "trending on artstation", "matte painting", "pixel art"]
# What members do, and how often (weights): interactions are answered and timed; reactions are gateway events.
ACTIONS = {
    "imagine": 3.0,
    "queue": 2.0,
    "top": 1.0,
    "history": 1.0,
    "reroll": 1.5,
    "continue": 1.0,
    "cancel": 0.5,
    "steer": 0.5,
    "describe": 0.3,
    "vote": 2.0,
}


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0-1) of `values` by the nearest rank; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Members:
    """The simulated members: each tick one of them does one thing, on the messages the bot has posted so far."""

    def __init__(self, stand_in, members: int, rng: random.Random) -> None:
        self.stand_in, self.members, self.rng = stand_in, members, rng
        self.counts: Counter[str] = Counter()

    def _buttons(self, action: str) -> list[tuple[int, str]]:
        """(message id, custom_id) of every button of this action the bot has posted."""
        found = []
        for mid in list(self.stand_in.messages):
            if not isinstance(mid, int):
                continue
            for custom_id in self.stand_in.custom_ids(mid):
                if custom_id.startswith(f"imagine:{action}:"):
                    found.append((mid, custom_id))
        return found

    def _images(self) -> list[int]:
        """Ids of the messages holding a final image."""
        return [
            mid
            for mid, message in list(self.stand_in.messages.items())
            if isinstance(mid, int)
            and any(a["filename"].startswith("imagine-") for a in message.get("attachments", []))
        ]

    async def act(self) -> None:
        """One member does one thing (a button or image that does not exist yet falls back to /queue)."""
        action = self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
        user = self.rng.randrange(self.members)
        s = self.stand_in
        if action in ("reroll", "continue", "cancel", "steer"):
            buttons = self._buttons(action)
            if buttons:
                message_id, custom_id = self.rng.choice(buttons[-20:])
                token = await s.click(message_id, custom_id, user=user)
                if action == "steer":
                    asyncio.get_running_loop().create_task(self._steer(token, user, message_id))
                self.counts[action] += 1
                return
            action = "queue"
        if action in ("describe", "vote"):
            images = self._images()
            if images:
                message_id = self.rng.choice(images[-20:])
                if action == "vote":
                    await s.react(message_id, self.rng.choice(["👍", "👎"]), user=user)
                else:
                    await s.context_menu("Describe image", message_id, user=user)
                self.counts[action] += 1
                return
            action = "queue"
        if action == "imagine":
            prompt = f"a {self.rng.choice(WORDS)} at dusk | {self.rng.choice(STYLES)}"
            await s.slash("imagine", {"prompt": prompt, "size": "square-small", "steps": 10}, user=user)
        else:
            await s.slash(action, {}, user=user)
        self.counts[action] += 1

    async def _steer(self, token: str, user: int, message_id: int) -> None:
        """Answer the Steer button's form once the bot has opened it."""
        for _ in range(60):
            modal = self.stand_in.modals.get(token)
            if modal is not None:
                await self.stand_in.submit_modal(
                    modal["custom_id"],
                    {"prompt": f"a {self.rng.choice(WORDS)} at dawn"},
                    user=user,
                    message_id=message_id,
                )
                self.counts["steer_submit"] += 1
                return
            await asyncio.sleep(0.1)


def bot_environment(work: Path, models: Path, args) -> dict[str, str]:
    """The bot's settings, as an operator would give them (environment variables of `python -m bot`)."""
    env = environment(
        work / "data",
        models,
        IMAGINE_DEFAULT_STEPS="10",
        IMAGINE_MAX_STEPS="50",
        IMAGINE_CONTINUE_STEPS="10",
        IMAGINE_SNAPSHOT_EVERY="5",
        IMAGINE_MAX_QUEUED_PER_USER="3",
        IMAGINE_MAX_QUEUE="50",
        IMAGINE_EDIT_INTERVAL="2",
        IMAGINE_BACKEND=args.backend,
    )
    if args.backend == "celery":
        env["IMAGINE_REDIS_URL"] = args.redis_url
    return env


def kind_of(kind: str) -> str:
    """An interaction's kind without ids: "click:imagine:reroll:12" -> "click:reroll", "modal:3f9a..." -> "modal"."""
    parts = kind.split(":")
    if parts[0] == "click" and len(parts) > 2:
        return f"click:{parts[2]}"
    if parts[0] == "modal":
        return "modal"
    return ":".join(parts[:2])


def posted_finals(stand_in, by_message: bool = False) -> Counter[int]:
    """How many final-image messages the stand-in holds per job (files named imagine-<job>.png or .webp), or with
    `by_message` how many final images each message holds."""
    counts: Counter[int] = Counter()
    for mid, message in list(stand_in.messages.items()):
        if not isinstance(mid, int):
            continue
        for attachment in message.get("attachments", []):
            name = attachment["filename"]
            stem = name.split(".")[0]
            if stem.startswith("imagine-") and stem[8:].isdigit() and name.endswith((".png", ".webp")):
                counts[mid if by_message else int(stem[8:])] += 1
    return counts


def stored_jobs(db: Path) -> dict[int, str]:
    """job id -> state, read-only from the bot's database."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT id, state FROM jobs"))
    finally:
        con.close()


async def run_load(args, work: Path, models: Path) -> dict:
    """One measured run: start the stand-in and the bot, drive the members, wait for the queue, collect."""
    from tests.bot.loopback import LoopbackDiscord

    stand_in = LoopbackDiscord(members=args.members, heartbeat_interval=args.heartbeat)
    await stand_in.start()
    log = work / "bot.log"
    env = bot_environment(work, models, args)
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.bot.launch", stand_in.api_base, stand_in.gateway_url,
            "--vitals", str(work / "vitals.json"),
            cwd=ROOT, env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (stand_in.identified.is_set() and stand_in.commands) and proc.returncode is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bot did not connect in {START_TIMEOUT:.0f} s; see {log}")
            await asyncio.sleep(0.1)
        if proc.returncode is not None:
            raise RuntimeError(f"the bot exited with {proc.returncode}: {log.read_text()[-2000:]}")
        await asyncio.sleep(1.0)
        members = Members(stand_in, args.members, random.Random(args.seed))
        started = time.monotonic()
        pending: set[asyncio.Task] = set()
        ticks = 0
        while time.monotonic() - started < args.duration:
            task = asyncio.create_task(members.act())
            pending.add(task)
            task.add_done_callback(pending.discard)
            ticks += 1
            await asyncio.sleep(members.rng.expovariate(args.rate))  # Poisson arrivals at `rate` per second
        await asyncio.gather(*pending, return_exceptions=True)
        drive_seconds = time.monotonic() - started
        # let the queue drain so every job ends (done, failed or cancelled) before the books are checked
        db = work / "data" / "imagine.sqlite"
        drain_deadline = time.monotonic() + args.drain
        while time.monotonic() < drain_deadline:
            states = stored_jobs(db)
            if all(state in ("done", "failed", "cancelled") for state in states.values()):
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(2.0)  # the last posts' replies
        return collect(stand_in, work, db, members, drive_seconds, ticks)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
        await stand_in.stop()


def collect(stand_in, work: Path, db: Path, members: Members, seconds: float, ticks: int) -> dict:
    """The figures of a run, from the stand-in's records, the bot's vitals and its database."""
    records = list(stand_in.interactions.values())
    answered = [r.answered_at - r.sent_at for r in records if r.answered_at is not None]
    by_kind: dict[str, list[float]] = {}
    for r in records:
        if r.answered_at is not None:
            by_kind.setdefault(kind_of(r.kind), []).append(r.answered_at - r.sent_at)
    unanswered = [kind_of(r.kind) for r in records if r.answered_at is None]
    late = [kind_of(r.kind) for r in records if r.answered_at is not None and r.answered_at - r.sent_at > DEADLINE]
    refused = Counter(r.error_code for r in records if r.error_code)
    try:
        vitals = json.loads((work / "vitals.json").read_text())
    except (OSError, ValueError):
        vitals = {}
    states = stored_jobs(db)
    finals = posted_finals(stand_in)
    done = [job for job, state in states.items() if state == "done"]
    return {
        "seconds": round(seconds, 1),
        "actions": dict(members.counts),
        "ticks": ticks,
        "interactions": len(records),
        "answer_ms": {
            "p50": percentile(answered, 0.5) * 1000,
            "p95": percentile(answered, 0.95) * 1000,
            "p99": percentile(answered, 0.99) * 1000,
            "max": max(answered, default=0.0) * 1000,
        },
        "answer_ms_by_kind": {k: {"n": len(v), "p99": percentile(v, 0.99) * 1000} for k, v in sorted(by_kind.items())},
        "missed_3s": len(late) + len(unanswered),
        "late": Counter(late),
        "unanswered": Counter(unanswered),
        "refused": {str(k): v for k, v in refused.items()},
        "loop_lag_ms": {
            "p99": (vitals.get("loop_lag") or {}).get("p99_s", 0.0) * 1000,
            "max": (vitals.get("loop_lag") or {}).get("max_s", 0.0) * 1000,
        },
        "vitals": vitals,
        "gateway": {
            "heartbeats": len(getattr(stand_in, "heartbeat_times", [])),
            "late_heartbeats": getattr(stand_in, "late_heartbeats", 0),
            "identifies": getattr(stand_in, "identifies", 1),
            "resumes": getattr(stand_in, "resumes", 0),
        },
        "rate_limited": dict(stand_in.rate_limited),
        "jobs": dict(Counter(states.values())),
        "posts": {
            "done": len(done),
            "lost": sorted(job for job in done if finals[job] == 0),
            "duplicated": sorted(job for job, n in finals.items() if n > 1),
            "posted_not_done": sorted(job for job in finals if states.get(job) != "done"),
        },
    }


def report(row: dict, label: str) -> None:
    """Print one run's figures."""
    a, lag, g, posts = row["answer_ms"], row["loop_lag_ms"], row["gateway"], row["posts"]
    print(f"\n{label}: {row['interactions']} interactions in {row['seconds']:.0f} s ({row['actions']})")
    print(
        f"  answer time: p50 {a['p50']:.0f} ms, p95 {a['p95']:.0f} ms, p99 {a['p99']:.0f} ms, max {a['max']:.0f} ms; "
        f"missed 3 s: {row['missed_3s']} (late {dict(row['late'])}, unanswered {dict(row['unanswered'])})"
    )
    for kind, figures in row["answer_ms_by_kind"].items():
        print(f"    {kind:28} n={figures['n']:4}  p99 {figures['p99']:7.0f} ms")
    print(f"  event loop lag: p99 {lag['p99']:.0f} ms, max {lag['max']:.0f} ms")
    print(
        f"  gateway: {g['heartbeats']} heartbeats, {g['late_heartbeats']} late; "
        f"{g['identifies']} identify, {g['resumes']} resume"
    )
    print(f"  429s: {row['rate_limited'] or 'none'}; refused interactions: {row['refused'] or 'none'}")
    print(
        f"  jobs: {row['jobs']}; posts: {posts['done']} done, lost {posts['lost'] or 0}, "
        f"duplicated {posts['duplicated'] or 0}, posted but not done {posts['posted_not_done'] or 0}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=50)
    p.add_argument("--rate", type=float, default=5.0, help="interactions per second (default 5)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    p.add_argument("--drain", type=float, default=300.0, help="seconds to let the queue drain afterwards")
    p.add_argument("--backend", choices=["embedded", "celery"], default="embedded")
    p.add_argument("--workers", type=int, default=2, help="GPU-worker processes in celery mode (default 2)")
    p.add_argument("--heartbeat", type=float, default=41.25, help="the gateway's heartbeat interval in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="imagine-load-"))
    from engine.models.tiny import write_tiny_models

    models = write_tiny_models(work / "models")
    print(f"CPU: {cpu_name()}; work in {work}", flush=True)
    workers, redis = [], None
    if args.backend == "celery":
        from tests.bot.cluster import RedisServer, Worker, wait_for_workers

        redis = RedisServer(work / "redis")
        redis.start()
        args.redis_url = redis.url
        workers = [Worker(redis.url, models, work / f"worker-{i}.log", 1, 1) for i in range(args.workers)]
        wait_for_workers(redis.client(), args.workers)
    try:
        row = asyncio.run(run_load(args, work, models))
    finally:
        for worker in workers:
            worker.stop()
        if redis is not None:
            redis.stop()
    row.update(backend=args.backend, workers=len(workers), members=args.members, rate=args.rate, cpu=cpu_name())
    label = f"{args.backend}" + (f" ({len(workers)} workers)" if workers else "")
    report(row, label)
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
