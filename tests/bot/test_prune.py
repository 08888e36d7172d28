"""Retention on real files and a real SQLite database: frames go after the timelapse, snapshots and uploads by
age and by disk budget, and nothing a later step or /top needs is touched."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from bot.prune import DAY, MB, Policy, main, prune
from storage import JobState, Store

NOW = 1_000 * DAY


@pytest.fixture
async def store(tmp_path):
    clock = {"t": NOW}
    s = await Store.open(tmp_path / "data" / "imagine.sqlite", clock=lambda: clock["t"])
    s.test_clock = clock
    yield s
    await s.close()


def _fill(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


async def _job(store, data, *, ended_days_ago, state=JobState.DONE, score=0.1, guild=1, **kw):
    """A job that ended `ended_days_ago` days ago with a final image, two snapshots and frames on disk."""
    store.test_clock["t"] = NOW - ended_days_ago * DAY
    job = await store.create_job(guild_id=guild, channel_id=2, author_id=3, spec_json="{}", **kw)
    image = _fill(data / "images" / f"{job.id}.png", MB // 4)
    snapshot = _fill(data / "snapshots" / str(job.id) / "000010.pt", MB)
    _fill(data / "snapshots" / str(job.id) / "000020.pt", MB)
    _fill(data / "frames" / str(job.id) / "000010.webp", 1000)
    if state != JobState.QUEUED:
        job = await store.set_state(
            job.id, state, image_path=str(image), snapshot_path=str(snapshot), score=score, result_message_id=job.id
        )
    store.test_clock["t"] = NOW
    return job


async def test_age_removes_old_snapshots_frames_and_uploads_and_keeps_what_is_needed(store, tmp_path):
    data = tmp_path / "data"
    old = await _job(store, data, ended_days_ago=40)
    recent = await _job(store, data, ended_days_ago=2)
    parent = await _job(store, data, ended_days_ago=50)
    waiting = await _job(store, data, ended_days_ago=0, state=JobState.QUEUED, kind="continue", parent_id=parent.id)
    posting = await _job(store, data, ended_days_ago=45, state=JobState.POSTING)
    old_upload = _fill(data / "inputs" / "aaa-old.png", 5000)
    used_upload = _fill(data / "inputs" / "bbb-used.png", 5000)
    fresh_upload = _fill(data / "inputs" / "ccc-fresh.png", 5000)
    for path in (old_upload, used_upload):
        os.utime(path, (NOW - 40 * DAY, NOW - 40 * DAY))
    for path in (fresh_upload,):
        os.utime(path, (NOW - DAY, NOW - DAY))
    uses = await store.create_job(
        guild_id=1, channel_id=2, author_id=3, spec_json=json.dumps({"init_image": str(used_upload)})
    )

    report = await prune(store, data, Policy(days=30), now=NOW)

    assert not (data / "snapshots" / str(old.id)).exists() and (await store.get_job(old.id)).snapshot_path is None
    assert (data / "images" / f"{old.id}.png").exists()  # final images are not pruned by age
    assert (data / "snapshots" / str(recent.id)).exists()
    assert (data / "snapshots" / str(parent.id)).exists()  # a waiting Continue starts from it
    assert (data / "snapshots" / str(posting.id)).exists() and (data / "frames" / str(posting.id)).exists()
    assert (data / "frames" / str(waiting.id)).exists()
    for job in (old, recent, parent):
        assert not (data / "frames" / str(job.id)).exists()  # ended: its frames are of no more use
    assert not old_upload.exists() and used_upload.exists() and fresh_upload.exists()
    assert uses.id and report.freed >= 2 * MB and report.left > 0


async def test_every_picture_a_waiting_spec_names_is_kept(store, tmp_path):
    """Init images and image prompts (a weight after the file name) of waiting jobs stay, under age and budget."""
    from engine.spec import JobSpec

    data = tmp_path / "data"
    init, target = _fill(data / "inputs" / "a-init.png", 5000), _fill(data / "inputs" / "b-target.png", 5000)
    for path in (init, target):
        os.utime(path, (NOW - 40 * DAY, NOW - 40 * DAY))
    spec = JobSpec("a castle", init_image=str(init), image_prompts=(f"{target}:0.5",))
    await store.create_job(guild_id=1, channel_id=2, author_id=3, spec_json=spec.to_json())
    await prune(store, data, Policy(days=30, budget_mb=0), now=NOW)
    assert init.exists() and target.exists()


async def test_budget_removes_the_oldest_first_and_keeps_the_images_on_top_and_voted(store, tmp_path):
    data = tmp_path / "data"
    jobs = [await _job(store, data, ended_days_ago=20 - i, score=0.01 * i) for i in range(14)]
    voted = jobs[0]
    await store.set_vote(voted.id, 7, 1, True)
    # 14 jobs: 3.5 MB of images and 28 MB of snapshots; a 2 MB budget takes every snapshot and then images,
    # never the board's: the top ten by votes and by score (here, the best scoring ten and the voted one)
    report = await prune(store, data, Policy(days=0, budget_mb=2), now=NOW)
    assert not list((data / "snapshots").glob("*/*.pt"))
    kept = {int(p.stem) for p in (data / "images").glob("*.png")}
    board = {e.job.id for e in await store.top(1, limit=10)} | {e.job.id for e in await store.top(1, by="score")}
    assert voted.id in board and board <= kept
    assert kept == board  # the others went, oldest first, as the budget was still exceeded
    for job in jobs:
        if job.id not in kept:
            assert (await store.get_job(job.id)).image_path is None
    assert await store.vote_total(voted.id) == 1  # votes untouched
    assert report.left <= 2 * MB + 11 * MB // 4


async def test_a_pass_reads_the_jobs_that_hold_files_not_the_whole_history(store, tmp_path, monkeypatch):
    """A server's history grows for ever (it is /history and /top); a pass must not read it all every day."""
    import storage.jobs

    data = tmp_path / "data"
    for _ in range(300):  # ended long ago, their files already pruned: rows only
        job = await store.create_job(guild_id=1, channel_id=2, author_id=3, spec_json="{}")
        await store.set_state(job.id, JobState.DONE, score=0.0)
    old, new = [await _job(store, data, ended_days_ago=days) for days in (40, 1)]
    rows = []
    real = storage.jobs._job
    monkeypatch.setattr(storage.jobs, "_job", lambda row: rows.append(row["id"]) or real(row))
    report = await prune(store, data, Policy(days=30, budget_mb=1), now=NOW)
    assert len(rows) <= 2, f"the pass read {len(rows)} job rows"
    assert data / "snapshots" / str(old.id) in report.removed  # by age
    assert not (data / "snapshots" / str(new.id)).exists()  # by the budget
    assert (await store.get_job(old.id)).snapshot_path is None


async def test_dry_run_removes_nothing(store, tmp_path):
    data = tmp_path / "data"
    old = await _job(store, data, ended_days_ago=40)
    report = await prune(store, data, Policy(days=30), now=NOW, dry_run=True)
    assert data / "snapshots" / str(old.id) in report.removed
    assert (data / "snapshots" / str(old.id)).exists() and (await store.get_job(old.id)).snapshot_path


def test_the_prune_command(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"

    async def setup():
        s = await Store.open(data / "imagine.sqlite")
        job = await s.create_job(guild_id=1, channel_id=2, author_id=3, spec_json="{}")
        await s.set_state(job.id, JobState.FAILED, finished_at=1.0)  # ended long ago
        await s.close()
        return job

    job = asyncio.run(setup())
    _fill(data / "snapshots" / str(job.id) / "000001.pt", 1000)
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(data))
    monkeypatch.setenv("IMAGINE_RETENTION_DAYS", "7")
    assert main(["--dry-run"]) == 0
    assert "would remove" in capsys.readouterr().out and (data / "snapshots" / str(job.id)).exists()
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "pruned 1 item(s)" in out and not (data / "snapshots" / str(job.id)).exists()
    (data / "imagine.sqlite").unlink()
    (data / "imagine.sqlite").write_bytes(b"garbage" * 100)
    assert main([]) == 3
    assert "is damaged or is not a database" in capsys.readouterr().err


async def test_the_budget_counts_and_prunes_timelapses_but_keeps_those_on_the_board(store, tmp_path):
    """Timelapses are kept for the gallery, but they grow with every job: the budget counts them, and they go before
    final images, except those of the board's images."""
    data = tmp_path / "data"
    jobs = [await _job(store, data, ended_days_ago=20 - i, score=0.01 * i) for i in range(14)]
    for job in jobs:
        _fill(data / "timelapses" / f"{job.id}.webp", MB)
    board = set(await store.jobs_on_the_board())
    assert 0 < len(board) < len(jobs)
    # 14 x (0.25 MB image + 1 MB timelapse) after the snapshots: 17.5 MB; the 4 timelapses off the board free 4 MB
    report = await prune(store, data, Policy(days=0, budget_mb=14), now=NOW)
    kept = {int(p.stem) for p in (data / "timelapses").glob("*.webp")}
    assert kept == board  # the others went; the board's stayed
    assert {int(p.stem) for p in (data / "images").glob("*.png")} == {job.id for job in jobs}  # before any image
    assert report.left <= 14 * MB
