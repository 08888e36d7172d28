"""The bot as a real process against the loopback Discord stand-in, killed with SIGKILL at random moments
(during the final upload among them): no job is lost and none is posted twice. Also: a database that cannot be
used ends the process with one sentence and a non-zero status, never a hang."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from tests.bot.loopback import LoopbackDiscord

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0


@pytest.fixture
async def stand_in():
    server = LoopbackDiscord()
    await server.start()
    yield server
    await server.stop()


async def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _spawn(stand_in, data: Path, models: Path, log: Path):
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bot.loopback_bot",
            stand_in.api_base,
            stand_in.gateway_url,
            str(data),
            str(models),
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )


async def _start(stand_in, data: Path, models: Path, log: Path):
    """Start the bot and wait until it is connected (it identifies after setup_hook has synced its commands)."""
    stand_in.identified.clear()
    proc = await _spawn(stand_in, data, models, log)
    await _wait_for(lambda: stand_in.identified.is_set() or proc.returncode is not None, START_TIMEOUT, "the bot")
    assert proc.returncode is None, log.read_text()[-3000:]
    await asyncio.sleep(0.3)  # READY and GUILD_CREATE reach its cache
    return proc


def _kill(proc) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)


def _jobs(db: Path) -> dict[int, tuple[str, int | None]]:
    """job id -> (state, result message id), read-only."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute("SELECT id, state, result_message_id FROM jobs")}
    except sqlite3.OperationalError:  # not made yet
        return {}
    finally:
        con.close()


def _result_posts(stand_in) -> dict[int, list[int]]:
    """Result message ids per job id: the stand-in's messages whose Reroll button names the job."""
    posts: dict[int, list[int]] = {}
    for key, message in stand_in.messages.items():
        if not isinstance(key, int):
            continue
        for row in message.get("components") or []:
            for item in row.get("components") or []:
                parts = (item.get("custom_id") or "").split(":")
                if parts[:2] == ["imagine", "reroll"]:
                    posts.setdefault(int(parts[2]), []).append(key)
    return posts


async def _kill_trials(stand_in, tmp_path: Path, models: Path, trials: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    stand_in.rng, stand_in.made_first = random.Random(seed + 1), 0.5
    data, log = tmp_path / "data", tmp_path / "bot.log"
    db = data / "imagine.sqlite"
    began = time.monotonic()
    during_upload = 0
    for trial in range(trials):
        proc = await _start(stand_in, data, models, log)
        try:
            await stand_in.slash("imagine", {"prompt": f"kill trial {trial}", "size": "square-small", "seed": trial})
            if trial % 2 == 0:  # stop it while the final image is on its way
                stand_in.upload_delay = 3.0
                seen = len(stand_in.uploads_started)
                await _wait_for(
                    lambda seen=seen, proc=proc: len(stand_in.uploads_started) > seen or proc.returncode is not None,
                    120,
                    "a final upload",
                )
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                during_upload += 1
            else:  # at any moment: starting, running, snapshotting, posting, recovering
                stand_in.upload_delay = rng.choice([0.0, 1.0])
                await asyncio.sleep(rng.uniform(0.0, 8.0))
        finally:
            _kill(proc)
            await proc.wait()
    stand_in.upload_delay = 0.0
    proc = await _start(stand_in, data, models, log)
    try:
        await _wait_for(
            lambda: all(s in ("done", "failed", "cancelled") for s, _ in _jobs(db).values()), 300, "every job to end"
        )
        await asyncio.sleep(1.0)  # late duplicates would show up here
    finally:
        _kill(proc)
        await proc.wait()
    jobs = _jobs(db)
    posts = _result_posts(stand_in)
    figures = {
        "trials": trials,
        "killed during the upload": during_upload,
        "jobs": len(jobs),
        # lost: not done, or no post, or a post the database does not know (its buttons and votes would not work)
        "lost": sum(1 for i, (state, mid) in jobs.items() if state != "done" or mid not in posts.get(i, [])),
        "duplicates": sum(len(ids) - 1 for ids in posts.values()),
        "seconds": round(time.monotonic() - began, 1),
    }
    print("kill test:", json.dumps(figures))
    return figures


async def test_killed_at_random_moments_loses_and_duplicates_nothing(stand_in, tmp_path, tiny_models):
    figures = await _kill_trials(stand_in, tmp_path, tiny_models, trials=6, seed=11)
    assert figures["jobs"] >= 5 and figures["killed during the upload"] >= 3
    assert figures["lost"] == 0 and figures["duplicates"] == 0, figures


@pytest.mark.slow
async def test_killed_at_random_moments_many_times(stand_in, tmp_path, tiny_models):
    figures = await _kill_trials(stand_in, tmp_path, tiny_models, trials=20, seed=int(os.environ.get("KILL_SEED", 5)))
    assert figures["jobs"] >= 18 and figures["killed during the upload"] >= 10
    assert figures["lost"] == 0 and figures["duplicates"] == 0, figures


# -- storage failures end the process -------------------------------------------------------------------------


async def _run_until_exit(stand_in, data: Path, models: Path, log: Path, timeout: float = START_TIMEOUT) -> int:
    proc = await _spawn(stand_in, data, models, log)
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        raise AssertionError(f"the bot hung instead of stopping:\n{log.read_text()[-2000:]}") from None


async def test_a_garbage_database_ends_the_process_with_one_sentence(stand_in, tmp_path, tiny_models):
    data, log = tmp_path / "data", tmp_path / "bot.log"
    data.mkdir()
    (data / "imagine.sqlite").write_bytes(b"\x00garbage" * 512)
    assert await _run_until_exit(stand_in, data, tiny_models, log) == 3
    assert "error: The database" in log.read_text() and "is damaged or is not a database" in log.read_text()


async def test_a_database_deleted_while_running_ends_the_process(stand_in, tmp_path, tiny_models, monkeypatch):
    data, log = tmp_path / "data", tmp_path / "bot.log"
    proc = await _start(stand_in, data, tiny_models, log)
    try:
        for file in data.glob("imagine.sqlite*"):
            file.unlink()
        # the bot checks every STORAGE_CHECK_EVERY seconds (2 in this process)
        assert await asyncio.wait_for(proc.wait(), 30) == 3
    finally:
        _kill(proc)
        await proc.wait()
    assert "was deleted or moved while the bot was running" in log.read_text()
