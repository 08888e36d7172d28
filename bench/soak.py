"""`python -m bench.soak`: the real bot process over many jobs, to find leaks.

The bot runs as `python -m bot` (through tests/bot/launch.py: embedded backend, tiny models, small pictures) against
the loopback Discord stand-in (tests/bot/loopback/), which runs in this process's event loop. Members send /imagine
at a pace that keeps the engine busy and the waiting line short (each member within the bot's cooldown and caps); a
few jobs are cancelled (Cancel), steered (Steer, then the form) and continued (Continue on a finished image), and a
few times the bot is killed with SIGKILL in the middle of a job and started again.

Every `--sample-every` jobs ended it samples the bot process's vitals (RSS, and its anonymous and file-backed parts, the
bytes the C allocator has handed out, open files, threads, asyncio tasks, the last minute's loop lag, from the
launcher's vitals file) and the disk (the database and its WAL, the data directory and each of its folders). Before each
sample it lets the line drain (no new job until every job has ended) and reads vitals written a second later: the memory
the process keeps between jobs, not a job's passing buffers, which made the busy figure wander by 10 MB
(`--busy-samples` samples at once, the engine busy). After a warm-up (the first 20 % of the samples) it prints each
figure's least-squares slope per 1,000 jobs; the process's figures are fitted over the last process only (a restart
starts them again). The bot's retention runs every `--maintenance-every` seconds (its daily pass, compressed) under
`--disk-budget-mb`. Threads are archived `--archive-after` seconds after they open (by default the same compressed day):
Discord archives a thread after its auto-archive duration, a day for the bot's, and discord.py keeps a thread object for
each active one. At the end it checks that every job the database says is done has exactly one final image posted, and
none is lost.

With `--trim` the bot hands the C heap's free memory back (glibc's malloc_trim) before each sample of its vitals: a
slope that vanishes then was memory freed but kept by the allocator, not memory in use. With `--collect` it runs a full
garbage collection first (every second: slow): a slope that vanishes then was garbage in reference cycles waiting for
the collector's rare full pass. `--text-cache N` keeps N prompt embeddings in the engine instead of 4,096: every soak
job has a prompt of its own, so that cache fills for its first thousands of jobs. Each soak prompt also has a word of
its own by default, which fills every cache keyed by words (the word filter's, the tokenizer's: 16,384 words each) as no
server would; with `--vocabulary N` prompts are 4 to 8 words out of N, and words repeat as members' do.

With `--allocations` the bot traces its Python allocations from the end of the warm-up on (tracemalloc: slower, and
its RSS is then not comparable), and the report lists the allocation sites whose live memory grew most per 1,000
jobs. A bounded cache filling up grows too until it has turned over once: a leak keeps growing to the end. The bot
dumps its whole trace on SIGUSR2 (tests/bot/launch.py): two dumps compared give every line's net growth between them.
On SIGUSR2 the bot also writes a census of its objects by type to census.json.N in the soak's folder: those alive and,
apart, the garbage in reference cycles that a full collection frees (what waits for the collector's next full pass).

    python -m bench.soak --jobs 1000 --json soak.json
    python -m bench.soak --jobs 900 --kills 0 --warmup 0.34 --allocations
    python -m bench.soak --jobs 900 --kills 0 --warmup 0.34 --trim --vocabulary 300 --text-cache 64
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from tests.bot.launch import environment

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
COOLDOWN = (2, 10.5)  # the bot's /imagine cooldown (2 per 10 s per member), with a margin
FOLDERS = ("images", "snapshots", "timelapses", "frames", "inputs")
ENDED = ("done", "failed", "cancelled")
QUEUED = re.compile(r"Queued #(\d+)")
RETENTION = re.compile(r"retention: pruned (\d+) item\(s\), freed ([\d.]+) MB; .* now take ([\d.]+) MB")


# -- the bot process ----------------------------------------------------------------------------------------------


class BotProcess:
    """`python -m tests.bot.launch` (the real `python -m bot`) in a folder of its own, started, killed and started
    again; its output goes to bot.log there."""

    def __init__(self, stand_in, folder: Path, env: dict[str, str], launcher: list[str]) -> None:
        self.stand_in, self.folder, self.env, self.launcher = stand_in, folder, env, launcher
        self.log = folder / "bot.log"
        self.vitals = folder / "vitals.json"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts: list[float] = []  # seconds each start took

    async def start(self, timeout: float = 180.0) -> None:
        """Start the bot and wait until it is connected (it identifies after setup_hook synced its commands)."""
        began = time.monotonic()
        self.stand_in.identified.clear()
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.bot.launch",
                self.stand_in.api_base,
                self.stand_in.gateway_url,
                "--vitals",
                str(self.vitals),
                *self.launcher,
                cwd=self.folder,
                env=self.env,
                stdout=out,
                stderr=out,
            )
        while not self.stand_in.identified.is_set():
            if self.proc.returncode is not None or time.monotonic() - began > timeout:
                raise RuntimeError(f"the bot did not start:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # READY and GUILD_CREATE reach its cache
        self.starts.append(time.monotonic() - began)

    async def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        """Stop it as Ctrl-C would (SIGKILL after 30 s)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            await self.kill()

    def read_vitals(self) -> dict | None:
        """The launcher's latest vitals snapshot of the bot process (None if there is none of this process yet)."""
        try:
            data = json.loads(self.vitals.read_text())
        except (OSError, ValueError):
            return None
        return data if self.proc is not None and data.get("pid") == self.proc.pid else None


def bot_env(folder: Path, models: Path, args) -> dict[str, str]:
    """The bot's settings for the soak (nothing from this shell's IMAGINE_*/DISCORD_* or a .env leaks in)."""
    return environment(
        folder / "data",
        models,
        DISCORD_TOKEN="soak-token",
        IMAGINE_MAX_CONCURRENT="1",
        IMAGINE_DEFAULT_STEPS=str(args.steps),
        IMAGINE_MAX_STEPS="100",
        IMAGINE_CONTINUE_STEPS=str(args.steps),
        IMAGINE_SNAPSHOT_EVERY=str(max(1, args.steps // 2)),
        IMAGINE_SNAPSHOT_BUDGET="2",
        IMAGINE_EDIT_INTERVAL="1",
        IMAGINE_MAX_QUEUED_PER_USER=str(args.per_member),
        IMAGINE_MAX_QUEUE=str(args.max_queue),
        IMAGINE_MODERATION="off",  # the tiny CLIP's verdicts are arbitrary: every image is posted
        IMAGINE_TIMELAPSE="1",
        IMAGINE_RETENTION_DAYS="30",  # the age rule cannot act within a soak; the disk budget does
        IMAGINE_DISK_BUDGET_MB=str(args.disk_budget_mb),
        IMAGINE_LOG_LEVEL="INFO",
        IMAGINE_HEALTH_PORT="0",  # no fixed port: soaks and tests may run side by side
    )


# -- what the database and the disk say ---------------------------------------------------------------------------


@dataclass
class JobRow:
    """One job as the database has it."""

    state: str
    result_message_id: int | None
    kind: str
    snapshot: bool


def read_jobs(db: Path) -> dict[int, JobRow]:
    """job id -> its row, read-only (empty before the database exists)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT id, state, result_message_id, kind, snapshot_path FROM jobs")
        return {r[0]: JobRow(r[1], r[2], r[3], bool(r[4])) for r in rows}
    except sqlite3.OperationalError:  # not made yet, or busy for longer than the timeout
        return {}
    finally:
        con.close()


def folder_bytes(path: Path) -> int:
    """The size of every file under `path`."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x (None for fewer than two distinct x)."""
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


PROCESS_FIGURES = (
    "rss_mb",
    "anon_mb",
    "file_mb",
    "heap_mb",
    "heap_free_mb",
    "py_kblocks",
    "fds",
    "threads",
    "os_threads",
    "tasks",
    "lag_p99_ms",
    "lag_max_ms",
)
DISK_FIGURES = ("db_mb", "wal_mb", "data_mb", *(f"{name}_mb" for name in FOLDERS))


def _word(i: int) -> str:
    """A made-up word, the ith of a vocabulary (letters only: CLIP's tokenizer splits digits one by one)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    word = ""
    while True:
        i, rest = divmod(i, 26)
        word += letters[rest]
        if not i:
            return word + "ish"
        i -= 1


def _mb(count: int | None) -> float | None:
    return None if count is None else round(count / MB, 1)


def slopes(samples: list[dict], warmup: float) -> dict[str, float | None]:
    """Each figure's slope per 1,000 jobs after the warm-up; the process's figures over the last process only."""
    kept = samples[math.ceil(len(samples) * warmup) :] if len(samples) > 2 else samples
    last_pid = kept[-1]["pid"] if kept else None
    found = {}
    for name in (*PROCESS_FIGURES, *DISK_FIGURES):
        over = [s for s in kept if name in DISK_FIGURES or s["pid"] == last_pid]
        points = [(s["jobs"], s[name]) for s in over if s.get(name) is not None]
        fitted = slope(points)
        found[name] = None if fitted is None else round(fitted * 1000, 3)
    return found


# -- the soak -----------------------------------------------------------------------------------------------------


@dataclass
class Tracked:
    """A job this soak asked for, and what it does with it."""

    member: int
    queued_message: int | None = None
    cancel_id: str | None = None
    plan: str | None = None  # "cancel-queued", "cancel-running" or "steer"
    acted: bool = False


@dataclass
class Pending:
    """An interaction sent and not yet answered."""

    member: int
    what: str  # "imagine", "continue", "cancel", "steer-click", "steer"
    job_id: int | None = None
    message_id: int | None = None


@dataclass
class Soak:
    """One soak run: the stand-in, the bot, the members' pacing, the actions, the samples."""

    args: argparse.Namespace
    stand_in: object
    bot: BotProcess
    data: Path
    rng: random.Random
    jobs: dict[int, JobRow] = field(default_factory=dict)
    tracked: dict[int, Tracked] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)  # interaction token -> what it was
    sends: dict[int, deque] = field(default_factory=dict)  # member -> times of their recent requests
    forms: list[tuple[str, Pending]] = field(default_factory=list)  # Steer forms the bot opened, to fill in
    continued: set[int] = field(default_factory=set)
    submitted: int = 0
    samples: list[dict] = field(default_factory=list)
    actions: Counter = field(default_factory=Counter)
    refusals: Counter = field(default_factory=Counter)
    plans: Counter = field(default_factory=Counter)
    kills: list[dict] = field(default_factory=list)
    scanned: int = 0  # stand_in.requests already stripped of their files
    threads_seen: dict[int, float] = field(default_factory=dict)  # thread id -> when this soak first saw it
    archived: int = 0
    began: float = field(default_factory=time.monotonic)
    whole_run_lag: dict = field(default_factory=dict)
    traced_from: int | None = None  # jobs ended when the bot began tracing allocations
    allocations: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (jobs, site -> KiB alive)

    @property
    def ended(self) -> int:
        """Jobs that reached a final state."""
        return sum(1 for row in self.jobs.values() if row.state in ENDED)

    def _state(self, job_id: int) -> str | None:
        row = self.jobs.get(job_id)
        return row.state if row else None

    def refresh(self) -> None:
        """Read the database and settle the interactions the bot answered."""
        self.jobs = read_jobs(self.data / "imagine.sqlite") or self.jobs
        requests = self.stand_in.requests  # the stand-in keeps every upload's bytes: previews would fill this process
        for request in itertools.islice(requests, self.scanned, None):
            if request.files:
                request.files = [(name, b"") for name, _ in request.files]
        self.scanned = len(requests)
        now = time.monotonic()
        for token, pending in list(self.pending.items()):
            record = self.stand_in.interactions[token]
            if record.answered_at is None:
                if now - record.sent_at > 10:  # never answered (the interaction record says so too)
                    del self.pending[token]
                    self.actions[f"{pending.what} unanswered"] += 1
                continue
            del self.pending[token]
            if record.callback_type == 9:
                self.forms.append((self.stand_in.modals[token]["custom_id"], pending))
                continue
            message = self.stand_in.messages.get(record.original_id) if record.original_id else None
            self._answered(pending, message or {})

    def _answered(self, pending: Pending, message: dict) -> None:
        content = message.get("content") or ""
        if pending.what not in ("imagine", "continue"):
            said = re.sub(r"\d+", "N", content)[:48]
            self.actions[f"{pending.what}: {said}"] += 1
            return
        queued = QUEUED.search(content)
        if queued is None:
            self.refusals[content[:70]] += 1
            return
        job_id = int(queued[1])
        tracked = self.tracked[job_id] = Tracked(pending.member, queued_message=int(message["id"]))
        tracked.cancel_id = next((c for c in self.stand_in.custom_ids(tracked.queued_message) if ":cancel:" in c), None)
        if pending.what == "imagine":
            self.submitted += 1
            tracked.plan = self._plan(self.submitted)
        else:
            self.actions["continue: queued"] += 1

    def _plan(self, n: int) -> str | None:
        a = self.args
        if a.cancel_every and n % a.cancel_every == min(2, a.cancel_every - 1):
            self.plans["cancel"] += 1
            return "cancel-queued" if self.plans["cancel"] % 2 else "cancel-running"
        if a.steer_every and n % a.steer_every == min(3, a.steer_every - 1):
            return "steer"
        return None

    def _free(self, member: int, now: float) -> bool:
        """Whether `member` may ask for a picture now: within the bot's cooldown and their waiting line."""
        sends = self.sends.setdefault(member, deque())
        while sends and now - sends[0] > COOLDOWN[1]:
            sends.popleft()
        waiting = sum(1 for i, t in self.tracked.items() if t.member == member and self._state(i) == "queued")
        waiting += sum(1 for p in self.pending.values() if p.member == member and p.what in ("imagine", "continue"))
        return len(sends) < COOLDOWN[0] and waiting < self.args.per_member

    async def _send(self, what: str, member: int, make, job_id: int | None = None, message_id: int | None = None):
        try:
            token = await make()
        except ValueError as exc:  # the button went away meanwhile (the job ended)
            self.actions[f"{what} missed: {str(exc)[:40]}"] += 1
            return
        self.pending[token] = Pending(member, what, job_id, message_id)

    def prompt(self, n: int) -> str:
        """The nth /imagine's prompt: a new word in each (every cache keyed by words or prompts fills for thousands of
        jobs), or with `--vocabulary N`, four to eight words drawn from N (words repeat, as members' do)."""
        if not self.args.vocabulary:
            return f"soak {n} a lighthouse"
        words = random.Random(n).choices(range(self.args.vocabulary), k=random.Random(-n).randint(4, 8))
        return " ".join(_word(i) for i in words)

    async def submit(self) -> None:
        """One more job if the line is short and a member may ask: a Continue when one is due, else an /imagine."""
        asking = sum(1 for p in self.pending.values() if p.what in ("imagine", "continue"))
        if len(self.jobs) + asking >= self.args.jobs:
            return
        if sum(1 for row in self.jobs.values() if row.state == "queued") + asking >= self.args.depth:
            return
        now = time.monotonic()
        order = sorted(range(self.args.members), key=lambda m: len(self.sends.get(m, ())))
        member = next((m for m in order if self._free(m, now)), None)
        if member is None:
            return
        self.sends[member].append(now)
        done = sorted(i for i, row in self.jobs.items() if row.state == "done" and row.result_message_id)
        due = self.args.continue_every and len(done) >= (len(self.continued) + 1) * self.args.continue_every
        parent = next((i for i in reversed(done) if self.jobs[i].snapshot and i not in self.continued), None)
        if due and parent is not None:
            self.continued.add(parent)
            message_id = self.jobs[parent].result_message_id
            wanted = f"imagine:continue:{parent}"
            custom_id = next((c for c in self.stand_in.custom_ids(message_id) if c.startswith(wanted)), wanted)
            await self._send("continue", member, lambda: self.stand_in.click(message_id, custom_id, user=member))
            return
        options = {"prompt": self.prompt(self.submitted + asking), "size": "square-small"}
        await self._send("imagine", member, lambda: self.stand_in.slash("imagine", options, user=member))

    async def act(self) -> None:
        """Fill in the Steer forms the bot opened; cancel and steer the jobs planned for it, at their moment."""
        while self.forms:
            modal_id, opened = self.forms.pop(0)
            text = {"prompt": f"soak steer {opened.job_id}"}
            make = lambda: self.stand_in.submit_modal(modal_id, text, user=opened.member, message_id=opened.message_id)  # noqa: E731, B023
            await self._send("steer", opened.member, make, opened.job_id)
        for job_id, tracked in self.tracked.items():
            if tracked.plan is None or tracked.acted or not tracked.cancel_id:
                continue
            state, member = self._state(job_id), tracked.member
            if state in (*ENDED, "posting"):
                tracked.acted = True
                self.actions[f"{tracked.plan} missed (ended first)"] += 1
            elif tracked.plan == "cancel-queued" or (tracked.plan == "cancel-running" and state == "running"):
                tracked.acted = True
                make = lambda: self.stand_in.click(tracked.queued_message, tracked.cancel_id, user=member)  # noqa: E731, B023
                await self._send("cancel", member, make, job_id)
            elif tracked.plan == "steer" and state == "running":
                steer_id = tracked.cancel_id.replace(":cancel:", ":steer:", 1)
                message_id = self._message_with(steer_id)
                if message_id is not None:
                    tracked.acted = True
                    make = lambda: self.stand_in.click(message_id, steer_id, user=member)  # noqa: E731, B023
                    await self._send("steer-click", member, make, job_id, message_id)

    def _message_with(self, custom_id: str) -> int | None:
        """The newest message with the component `custom_id` (a running job's status message)."""
        for key in reversed(list(self.stand_in.messages)):
            if isinstance(key, int) and custom_id in self.stand_in.custom_ids(key):
                return key
        return None

    async def kill_and_restart(self) -> None:
        """SIGKILL the bot while a job runs (tried for 15 s), then start it again."""
        deadline = time.monotonic() + 15
        running: list[int] = []
        while not running and time.monotonic() < deadline:
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))  # somewhere inside the step loop
            self.refresh()
            running = [i for i, r in self.jobs.items() if r.state == "running"]
        at = self.ended
        await self.bot.kill()
        self.refresh()
        for pending in self.pending.values():  # their answers died with the bot
            self.actions[f"{pending.what} unanswered (bot killed)"] += 1
        self.pending.clear()
        self.forms.clear()
        began = time.monotonic()
        await self.bot.start()
        self.kills.append({"at_jobs": at, "running": running, "restart_s": round(time.monotonic() - began, 1)})

    def sample(self) -> dict:
        """The bot's vitals and the disk now."""
        vitals = self.bot.read_vitals() or {}
        lag = (vitals.get("loop_lag") or {}).get("last_minute") or {}
        heap = vitals.get("c_heap") or {}
        db = self.data / "imagine.sqlite"
        wal = Path(f"{db}-wal")
        row = {
            "jobs": self.ended,
            "unended": sum(1 for row in self.jobs.values() if row.state not in ENDED),  # waiting or running then
            "seconds": round(time.monotonic() - self.began, 1),
            "pid": vitals.get("pid"),
            "rss_mb": _mb(vitals.get("rss_bytes")),
            "anon_mb": _mb(vitals.get("rss_anon_bytes")),
            "file_mb": _mb(vitals.get("rss_file_bytes")),
            "heap_mb": _mb(heap.get("in_use")),
            "heap_free_mb": _mb(heap.get("free")),
            "py_kblocks": round(vitals["python_blocks"] / 1000, 1) if vitals.get("python_blocks") else None,
            "fds": vitals.get("open_fds"),
            "threads": vitals.get("threads"),
            "os_threads": vitals.get("os_threads"),
            "tasks": vitals.get("tasks"),
            "lag_p99_ms": round(lag["p99_s"] * 1000, 1) if "p99_s" in lag else None,
            "lag_max_ms": round(lag["max_s"] * 1000, 1) if "max_s" in lag else None,
            "db_mb": round(sum(p.stat().st_size for p in (db, wal) if p.exists()) / MB, 3),
            "wal_mb": round(wal.stat().st_size / MB, 3) if wal.exists() else 0.0,
            "data_mb": round(folder_bytes(self.data) / MB, 3),
            **{f"{name}_mb": round(folder_bytes(self.data / name) / MB, 3) for name in FOLDERS},
        }
        self.samples.append(row)
        if self.traced_from is not None:
            try:
                sites = json.loads((self.bot.folder / "allocations.json").read_text())["sites"]
                self.allocations.append((row["jobs"], {" | ".join(s["where"][-4:]): s["kib"] for s in sites}))
            except (OSError, ValueError):
                pass  # not written yet
        self.whole_run_lag = (vitals.get("loop_lag") or {}) | {"pid": vitals.get("pid")}
        return row

    async def wait_for_vitals(self, written_after: float | None = None) -> None:
        """Until the launcher has written the vitals of this process's running monitor (within a second or two), and
        with `written_after` (wall-clock time), vitals it wrote after then."""
        for _ in range(100):
            vitals = self.bot.read_vitals()
            if vitals and vitals.get("loop_lag") and (written_after is None or vitals.get("time", 0) >= written_after):
                return
            await asyncio.sleep(0.1)

    async def archive_threads(self) -> None:
        """Archive each thread `--archive-after` seconds after it opened, as Discord does after a thread's
        auto-archive duration (the bot asks for a day, which the soak compresses as it compresses the retention's
        day); discord.py then drops the thread from its cache."""
        if not self.args.archive_after:
            return
        now = time.monotonic()
        for thread_id, thread in list(self.stand_in.threads.items()):
            seen = self.threads_seen.setdefault(thread_id, now)
            if now - seen >= self.args.archive_after and not thread["thread_metadata"]["archived"]:
                await self.stand_in.archive_thread(thread_id)
                self.archived += 1

    def idle(self) -> bool:
        """No job waiting or running, and no /imagine or Continue sent and not yet answered."""
        asking = any(p.what in ("imagine", "continue") for p in self.pending.values())
        return not asking and all(row.state in ENDED for row in self.jobs.values())

    async def run(self) -> None:
        """Submit, act, kill and sample until `--jobs` jobs have ended."""
        a = self.args
        self.began = time.monotonic()
        kill_at = [int(a.jobs * a.warmup * (k + 1) / (a.kills + 1)) for k in range(a.kills)]
        next_sample = a.sample_every
        await self.wait_for_vitals()
        self.sample()
        last_progress, last_ended = time.monotonic(), -1
        while True:
            self.refresh()
            ended = self.ended
            if ended != last_ended:
                last_progress, last_ended = time.monotonic(), ended
            if kill_at and ended >= kill_at[0]:
                kill_at.pop(0)
                await self.kill_and_restart()
                await self.wait_for_vitals()
                continue
            draining = False
            if ended >= next_sample:
                if a.busy_samples or self.idle():
                    if not a.busy_samples:  # vitals written a moment after the last job ended, the engine at rest
                        await self.wait_for_vitals(written_after=time.time() + 1.0)
                    next_sample += a.sample_every
                    self._print_progress(self.sample())
                    if a.allocations and self.traced_from is None and ended >= a.jobs * a.warmup:
                        self.bot.proc.send_signal(signal.SIGUSR1)  # the launcher's allocation baseline
                        self.traced_from = ended
                else:
                    draining = True  # no new job until the line is empty and the sample taken
            if ended >= a.jobs and not self.pending and self.idle():
                break
            if time.monotonic() - last_progress > a.stall:
                raise RuntimeError(f"no job ended for {a.stall:.0f} s; the bot's log: {self.bot.log}")
            await self.act()
            await self.archive_threads()
            if not draining:
                await self.submit()
            await asyncio.sleep(0.1)
        if self.samples[-1]["jobs"] != self.ended:
            self.sample()
        await asyncio.sleep(1.0)  # a late duplicate post would arrive here

    def _print_progress(self, row: dict) -> None:
        if not self.args.quiet:
            print(
                f"  {row['jobs']:>6} jobs {row['seconds']:>7.0f} s  rss {row['rss_mb']} MB (anon {row['anon_mb']}, "
                f"C heap in use {row['heap_mb']})  fds {row['fds']}  "
                f"tasks {row['tasks']}  db {row['db_mb']} MB  data {row['data_mb']} MB",
                flush=True,
            )

    def check(self) -> dict:
        """Every job the database says is done has exactly one final image posted; nothing is left unfinished."""
        self.refresh()
        posts = self.stand_in.final_images()
        done = {i: r for i, r in self.jobs.items() if r.state == "done"}
        records = list(self.stand_in.interactions.values())
        return {
            "jobs": len(self.jobs),
            "states": dict(Counter(r.state for r in self.jobs.values())),
            "done": len(done),
            # lost: done without its final image posted (or posted where the database does not point), or never ended
            "lost": sum(1 for i, r in done.items() if r.result_message_id not in posts.get(i, []))
            + sum(1 for r in self.jobs.values() if r.state not in ENDED),
            "duplicated": sum(len(ids) - 1 for ids in posts.values()),
            "posted_not_done": sum(1 for i in posts if i not in done),
            "interactions": len(records),
            "interactions_not_clean": sum(1 for r in records if not r.clean),
        }


def growing_sites(readings: list[tuple[int, dict[str, float]]], top: int = 12) -> list[dict]:
    """The allocation sites whose live memory grew most per 1,000 jobs over the readings (KiB alive per site, as the
    launcher wrote them at each sample), with their readings (jobs, KiB)."""
    sites = {site for _, found in readings for site in found}
    grown = []
    for site in sites:
        points = [(jobs, found[site]) for jobs, found in readings if site in found]
        fitted = slope(points)
        if fitted is not None:
            grown.append({"kib_per_1000_jobs": round(fitted * 1000, 1), "kib": points, "where": site})
    return sorted(grown, key=lambda g: -g["kib_per_1000_jobs"])[:top]


def refused_requests(stand_in) -> dict:
    """The bot's requests the stand-in refused, by route and status; for an unknown message, where it really was."""
    counts = Counter(f"{r.route} {r.status}" for r in stand_in.requests if r.status >= 400)
    unknown = []
    for r in stand_in.requests:
        found = re.fullmatch(r"/channels/(\d+)/messages/(\d+)", r.path)
        if r.status == 404 and found and len(unknown) < 5:
            message = stand_in.messages.get(int(found[2])) or stand_in.deleted.get(int(found[2]))
            where = {k: message.get(k) for k in ("channel_id", "flags", "webhook_id")} if message else None
            unknown.append(
                {"request": f"{r.method} {r.path}", "message": where, "deleted": int(found[2]) in stand_in.deleted}
            )
    return {"counts": dict(counts), "unknown_messages": unknown}


def retention_report(log: Path) -> dict:
    """What the bot's retention passes logged: how many, what they removed and freed, what was left."""
    passes = [RETENTION.search(line) for line in log.read_text(errors="replace").splitlines()]
    passes = [p for p in passes if p]
    return {
        "passes": len(passes),
        "items_removed": sum(int(p[1]) for p in passes),
        "freed_mb": round(sum(float(p[2]) for p in passes), 1),
        "left_mb_after_last": float(passes[-1][3]) if passes else None,
    }


def table(samples: list[dict]) -> str:
    """The samples as a fixed-width table."""
    columns = ("jobs", "seconds", "pid", *PROCESS_FIGURES, *DISK_FIGURES)
    widths = {c: max(len(c), *(len(str(s.get(c))) for s in samples)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(str(s.get(c)).rjust(widths[c]) for c in columns) for s in samples]
    return "\n".join(lines)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)


async def soak(args) -> dict:
    """Run the soak (see the module docstring); returns the report."""
    from tests.bot.loopback import LoopbackDiscord

    folder = Path(args.dir or tempfile.mkdtemp(prefix="imagine-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    models = Path(args.models) if args.models else folder / "models"
    if not args.models:
        from engine.models.tiny import write_tiny_models

        write_tiny_models(models)
    stand_in = LoopbackDiscord(members=args.members, heartbeat_interval=args.heartbeat, enforce_limits=True)
    await stand_in.start()
    launcher = ["--maintenance-every", str(args.maintenance_every), "--size", f"square-small={args.size}"]
    if args.allocations:
        launcher += ["--allocations", str(folder / "allocations.json")]
    if args.trim:
        launcher += ["--trim"]
    if args.collect:
        launcher += ["--collect"]
    launcher += ["--census", str(folder / "census.json")]  # on SIGUSR2 (see tests/bot/launch.py)
    if args.text_cache is not None:
        launcher += ["--text-cache", str(args.text_cache)]
    bot = BotProcess(stand_in, folder, bot_env(folder, models, args), launcher)
    run = Soak(args, stand_in, bot, folder / "data", random.Random(args.seed))
    try:
        await bot.start()
        await run.run()
        check = run.check()
        allocations = growing_sites(run.allocations) if args.allocations else None
    finally:
        await bot.stop()
        await stand_in.stop()
    latencies = [r.latency for r in stand_in.interactions.values() if r.latency is not None]
    return {
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "quiet", "dir", "models")},
        "folder": str(folder),
        "seconds": round(time.monotonic() - run.began, 1),
        "samples": run.samples,
        "slopes_per_1000_jobs": slopes(run.samples, args.warmup),
        "loop_lag_whole_run": run.whole_run_lag,
        "check": check,
        "actions": dict(run.actions),
        "refusals": dict(run.refusals),
        "kills": run.kills,
        "threads_archived": run.archived,
        "bot_starts_s": [round(s, 1) for s in bot.starts],
        "answer_latency_s": {
            "count": len(latencies),
            "p50": _percentile(latencies, 0.5),
            "p99": _percentile(latencies, 0.99),
            "max": _percentile(latencies, 1.0),
        },
        "discord": {
            "rate_limited": dict(stand_in.rate_limited),
            "invalid_requests": stand_in.invalid_requests,
            "late_heartbeats": stand_in.late_heartbeats,
            "reconnects": stand_in.reconnects,
            "requests": len(stand_in.requests),
            "refused": refused_requests(stand_in),
        },
        "retention": retention_report(bot.log),
        "allocations": allocations if args.allocations else None,
    }


def print_report(report: dict) -> None:
    """The samples, the slopes and the checks, for a person."""
    print(table(report["samples"]))
    print("\nslope per 1,000 jobs after the warm-up (the process's figures over its last process):")
    for name, value in report["slopes_per_1000_jobs"].items():
        print(f"  {name:<14} {value}")
    check = report["check"]
    print(
        f"\njobs {check['jobs']} {check['states']}; done {check['done']}: lost {check['lost']}, "
        f"duplicated {check['duplicated']}, posted but not done {check['posted_not_done']}"
    )
    print(f"actions: {report['actions']}")
    if report["refusals"]:
        print(f"refusals: {report['refusals']}")
    print(
        f"kills: {report['kills']}; bot starts (s): {report['bot_starts_s']}; "
        f"threads archived: {report['threads_archived']}"
    )
    print(f"answers (s): {report['answer_latency_s']}; discord: {report['discord']}")
    print(f"loop lag, whole run of the last process: {report['loop_lag_whole_run']}")
    print(f"retention: {report['retention']}")
    if report["allocations"]:
        print("allocation sites whose live memory grew most (KiB per 1,000 jobs; KiB at the first and last reading):")
        for site in report["allocations"]:
            first, last = site["kib"][0], site["kib"][-1]
            print(f"  {site['kib_per_1000_jobs']:>9}  {first} {last}  {site['where'][-230:]}")
    print(f"took {report['seconds']} s; files in {report['folder']}")


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when nothing was lost or posted twice, 1 otherwise."""
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1000, help="jobs to run to the end (Continue's included)")
    p.add_argument("--sample-every", type=int, default=50, help="jobs ended between samples")
    p.add_argument("--members", type=int, default=8, help="members sending /imagine (each within the cooldown)")
    p.add_argument("--depth", type=int, default=3, help="jobs kept waiting")
    p.add_argument("--per-member", type=int, default=2, help="the bot's IMAGINE_MAX_QUEUED_PER_USER")
    p.add_argument("--max-queue", type=int, default=10, help="the bot's IMAGINE_MAX_QUEUE")
    p.add_argument("--steps", type=int, default=10, help="steps per job (10 is /imagine's least)")
    p.add_argument("--size", default="64x64", help="the pictures' size (the launcher redefines square-small)")
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs mid-job, spread over the warm-up")
    p.add_argument("--cancel-every", type=int, default=40, help="cancel every Nth /imagine (0: never)")
    p.add_argument("--steer-every", type=int, default=40, help="steer every Nth /imagine (0: never)")
    p.add_argument("--continue-every", type=int, default=40, help="Continue after every N images (0: never)")
    p.add_argument("--disk-budget-mb", type=int, default=2, help="the bot's IMAGINE_DISK_BUDGET_MB")
    p.add_argument("--maintenance-every", type=float, default=30.0, help="seconds between retention passes")
    p.add_argument(
        "--archive-after",
        type=float,
        help="seconds until a thread is archived, as Discord does after a day (default --maintenance-every, 0 never)",
    )
    p.add_argument("--heartbeat", type=float, default=5.0, help="the gateway's heartbeat interval (seconds)")
    p.add_argument("--warmup", type=float, default=0.2, help="share of the samples left out of the slopes")
    p.add_argument("--stall", type=float, default=120.0, help="give up when no job ends for this long")
    p.add_argument(
        "--busy-samples",
        action="store_true",
        help="sample as jobs end, the engine busy (by default the line drains first: the engine's buffers at rest)",
    )
    p.add_argument("--allocations", action="store_true", help="trace the bot's allocations: where memory grew")
    p.add_argument("--collect", action="store_true", help="a full garbage collection before each sample")
    p.add_argument("--trim", action="store_true", help="malloc_trim before each sample: RSS without the C heap's free")
    p.add_argument("--vocabulary", type=int, default=0, help="prompts of 4-8 words out of N (0: a new word each)")
    p.add_argument("--text-cache", type=int, help="prompt embeddings the engine keeps (engine.engine.TEXT_CACHE: 4096)")
    p.add_argument("--models", help="a models folder with the tiny models (default: written into --dir)")
    p.add_argument("--dir", help="where the bot's data, log and vitals go (default: a new temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the report here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.archive_after is None:
        args.archive_after = args.maintenance_every
    report = asyncio.run(soak(args))
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    check = report["check"]
    return 0 if check["lost"] == 0 and check["duplicated"] == 0 and check["posted_not_done"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
