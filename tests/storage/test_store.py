"""The store on real SQLite files in a temp dir."""

import sqlite3

import pytest

from storage import JobState, StorageError, Store


@pytest.fixture
async def store(tmp_path):
    clock = {"t": 1000.0}
    s = await Store.open(tmp_path / "db" / "imagine.sqlite", clock=lambda: clock["t"])
    s.test_clock = clock
    yield s
    await s.close()


async def test_migrations_set_user_version_and_wal(tmp_path):
    path = tmp_path / "a.sqlite"
    s = await Store.open(path)
    assert await s.schema_version() == 6
    assert await s.migrate() == 6  # idempotent
    await s.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "job_events", "votes", "guild_settings", "tournaments"} <= tables


async def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    from storage.store import _migrations

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    number, sql = next(iter(_migrations()))
    con.executescript(f"{sql}\nPRAGMA user_version = {number};")
    con.execute("INSERT INTO jobs (channel_id, author_id, spec_json, created_at) VALUES (1, 2, '{}', 0)")
    con.commit()
    con.close()
    s = await Store.open(path)
    assert await s.schema_version() == 6
    old = await s.get_job(1)
    assert old.tournament_id is None and old.author_id == 2
    await s.close()


async def test_tournaments(store):
    t = await store.create_tournament(guild_id=1, channel_id=2, author_id=3, spec_json="{}", candidates=2)
    assert t.state == "running" and t.candidates == 2
    for n in (2, 1):
        await store.create_job(
            guild_id=1, channel_id=2, author_id=3, spec_json="{}", kind="candidate", tournament_id=t.id, candidate=n
        )
    assert [j.candidate for j in await store.tournament_jobs(t.id)] == [1, 2]
    t = await store.update_tournament(t.id, state="voting", decide_at=99.0)
    assert [x.id for x in await store.tournaments_in_state("voting")] == [t.id]
    done = await store.set_state(1, JobState.DONE, score=0.9)
    assert done.kind == "candidate" and await store.top(1) == []  # first-stage candidates stay off the board


async def test_a_tournament_is_decided_once(store):
    t = await store.create_tournament(guild_id=1, channel_id=2, author_id=3, spec_json="{}", candidates=2)
    assert await store.decide_tournament(t.id, 1, "author") is None  # still running: nothing to decide
    await store.update_tournament(t.id, state="voting")
    decided = await store.decide_tournament(t.id, 2, "author")
    assert (decided.state, decided.chosen, decided.decided_by) == ("decided", 2, "author")
    assert await store.decide_tournament(t.id, 1, "votes") is None  # the later decision changes nothing
    t = await store.get_tournament(t.id)
    assert (t.state, t.chosen, t.decided_by) == ("decided", 2, "author")


async def test_job_lifecycle_records_transitions(store):
    job = await store.create_job(guild_id=1, channel_id=2, author_id=3, spec_json='{"prompt": "x"}')
    assert job.state == JobState.QUEUED and job.post_channel_id == 2
    store.test_clock["t"] = 1005.0
    job = await store.set_state(job.id, JobState.RUNNING)
    assert job.started_at == 1005.0
    job = await store.update_job(job.id, thread_id=99, steps_done=10)
    assert job.post_channel_id == 99 and job.steps_done == 10
    store.test_clock["t"] = 1010.0
    job = await store.set_state(job.id, JobState.DONE, image_path="/x.png", score=0.3, scores_json='{"x": 0.3}')
    assert job.finished_at == 1010.0 and job.scores == {"x": 0.3}
    assert [(s, t) for s, t, _ in await store.events(job.id)] == [
        ("queued", 1000.0),
        ("running", 1005.0),
        ("done", 1010.0),
    ]
    assert [j.id for j in await store.jobs_in_state(JobState.DONE)] == [job.id]
    with pytest.raises(ValueError, match="not updatable"):
        await store.update_job(job.id, state="done")


async def test_votes_and_top(store):
    jobs = []
    for i in range(3):
        j = await store.create_job(guild_id=1, channel_id=2, author_id=10 + i, spec_json="{}")
        jobs.append(await store.set_state(j.id, JobState.DONE, score=0.1 * i, result_message_id=500 + i))
    other = await store.create_job(guild_id=2, channel_id=2, author_id=1, spec_json="{}")
    await store.set_state(other.id, JobState.DONE)
    assert await store.set_vote(jobs[0].id, 7, 1, True) == 1
    assert await store.set_vote(jobs[0].id, 7, 1, True) == 1  # the same reaction twice counts once
    assert await store.set_vote(jobs[1].id, 7, 1, True) == 1
    assert await store.set_vote(jobs[1].id, 8, 1, True) == 2
    assert await store.set_vote(jobs[1].id, 9, -1, True) == 1
    assert await store.set_vote(jobs[1].id, 9, -1, False) == 2
    top = await store.top(1)
    assert [(e.job.id, e.votes) for e in top] == [(jobs[1].id, 2), (jobs[0].id, 1), (jobs[2].id, 0)]
    by_score = await store.top(1, by="score")
    assert [(e.job.id, e.votes) for e in by_score] == [(jobs[2].id, 0), (jobs[1].id, 2), (jobs[0].id, 1)]
    assert (await store.job_for_result_message(501)).id == jobs[1].id
    store.test_clock["t"] = 5000.0
    late = await store.create_job(guild_id=1, channel_id=2, author_id=1, spec_json="{}")
    await store.set_state(late.id, JobState.DONE)
    assert [e.job.id for e in await store.top(1, since=4000.0)] == [late.id]


async def test_history_is_per_author_and_newest_first(store):
    ids = [(await store.create_job(guild_id=1, channel_id=2, author_id=3, spec_json="{}")).id for _ in range(3)]
    await store.create_job(guild_id=1, channel_id=2, author_id=4, spec_json="{}")
    assert [j.id for j in await store.history(1, 3, limit=2)] == ids[::-1][:2]


async def test_guild_settings(store):
    from storage import GuildSettings

    assert await store.guild_settings(5) == GuildSettings()
    await store.update_guild_settings(5, max_queued_per_user=2, use_threads=False)
    changed = await store.update_guild_settings(5, channels=(11, 12), sizes=("square",), timelapse=False)
    assert changed == await store.guild_settings(5)
    assert changed.max_queued_per_user == 2 and not changed.use_threads  # kept
    assert changed.channels == (11, 12) and changed.sizes == ("square",) and changed.timelapse is False
    assert (await store.update_guild_settings(5, channels=())).channels == ()
    assert await store.guild_settings(6) == GuildSettings() and await store.guild_settings(None) == GuildSettings()
    with pytest.raises(ValueError):
        await store.update_guild_settings(5, token="x")


async def test_blocked_words_and_dm_preference(store):
    assert await store.add_blocked_word(5, "Ogre", 1) and not await store.add_blocked_word(5, "Ogre", 2)
    await store.add_blocked_word(5, "troll", 1)
    assert await store.blocked_words(5) == ["Ogre", "troll"] and await store.blocked_words(6) == []
    assert await store.remove_blocked_word(5, "Ogre") and not await store.remove_blocked_word(5, "Ogre")
    assert not await store.dm_results(7)
    await store.set_dm_results(7, True)
    assert await store.dm_results(7) and not await store.dm_results(8)
    await store.set_dm_results(7, False)
    assert not await store.dm_results(7)


async def test_data_survives_reopen(tmp_path):
    path = tmp_path / "b.sqlite"
    s = await Store.open(path)
    job = await s.create_job(guild_id=1, channel_id=2, author_id=3, spec_json="{}")
    await s.close()
    s = await Store.open(path)
    assert (await s.get_job(job.id)).state == JobState.QUEUED
    await s.close()


async def test_admission_checks_and_inserts_at_once(store):
    """Twelve submissions at the same moment: the cap holds, because each check is part of its insert."""
    import asyncio

    admitted = await asyncio.gather(
        *(
            store.admit_job(guild_id=1, channel_id=2, author_id=3, spec_json="{}", max_waiting=2, max_total=10)
            for _ in range(12)
        )
    )
    assert sum(job is not None for job in admitted) == 2
    assert await store.waiting(3) == (2, 2)
    assert [s for s, _, _ in await store.events(admitted[0].id)] == ["queued"]
    # running jobs are not waiting; the total counts everyone's
    await store.set_state(admitted[0].id, JobState.RUNNING)
    job = dict(guild_id=1, channel_id=2, spec_json="{}")
    assert await store.admit_job(**job, author_id=3, max_waiting=2, max_total=10)
    assert await store.admit_job(**job, author_id=4, max_waiting=5, max_total=3)
    assert not await store.admit_job(**job, author_id=5, max_waiting=5, max_total=3)
    assert await store.admit_job(**job, author_id=5, max_waiting=None, max_total=None)  # a tournament's winner


async def test_a_tournament_is_admitted_whole_or_not_at_all(store):
    admit = dict(guild_id=1, channel_id=2, author_id=3, spec_json="{}", max_total=20)
    assert await store.admit_tournament(**admit, candidate_specs=["{}"] * 9, max_waiting=3) is None
    assert await store.tournaments_in_state("running") == [] and await store.waiting(3) == (0, 0)
    tournament, jobs = await store.admit_tournament(**admit, candidate_specs=['{"a": 1}', '{"b": 2}'], max_waiting=3)
    assert [(j.candidate, j.kind, j.tournament_id, j.spec_json) for j in jobs] == [
        (1, "candidate", tournament.id, '{"a": 1}'),
        (2, "candidate", tournament.id, '{"b": 2}'),
    ]
    assert await store.waiting(3) == (2, 2)
    assert await store.admit_tournament(**admit, candidate_specs=["{}"] * 2, max_waiting=3) is None


async def test_top_in_dms_shows_only_the_members_own_images(store):
    mine = await store.create_job(guild_id=None, channel_id=2, author_id=3, spec_json="{}")
    theirs = await store.create_job(guild_id=None, channel_id=4, author_id=5, spec_json="{}")
    for job in (mine, theirs):
        await store.set_state(job.id, JobState.DONE)
    assert [e.job.id for e in await store.top(None, author_id=3)] == [mine.id]
    assert await store.top(None) == []


# -- losing things: posting state, install token, loud failures ---------------------------------------------


async def test_a_version_2_database_is_upgraded_in_place_and_keeps_its_old_buttons(tmp_path):
    from storage.store import _migrations

    path = tmp_path / "v2.sqlite"
    con = sqlite3.connect(path)
    for number, sql in _migrations():
        if number <= 2:
            con.executescript(f"{sql}\nPRAGMA user_version = {number};")
    con.execute("INSERT INTO jobs (channel_id, author_id, spec_json, state, created_at) VALUES (1, 2, '{}', 'done', 0)")
    con.commit()
    con.close()
    s = await Store.open(path)
    assert await s.schema_version() == 6
    assert (await s.get_job(1)).state == JobState.DONE
    # buttons posted before they carried a token belong to this database and keep working
    assert s.legacy_buttons and s.accepts(None) and s.accepts(s.install) and not s.accepts("0000000000")
    await s.close()


async def test_a_fresh_database_refuses_buttons_of_another_one(tmp_path):
    first = await Store.open(tmp_path / "a.sqlite")
    await first.close()
    second = await Store.open(tmp_path / "b.sqlite")
    assert len(second.install) == 10 and second.install != first.install
    assert not second.accepts(first.install) and not second.accepts(None)
    reopened = await Store.open(tmp_path / "a.sqlite")
    assert reopened.install == first.install  # the token lives in the database, not in the process
    await second.close()
    await reopened.close()


async def test_posting_is_a_state_of_its_own(store):
    job = await store.create_job(guild_id=1, channel_id=2, author_id=3, spec_json="{}")
    await store.set_state(job.id, JobState.RUNNING)
    posting = await store.set_state(job.id, JobState.POSTING, image_path="/x.png", score=0.5)
    assert not posting.state.active and not posting.state.final
    assert [j.id for j in await store.jobs_in_state(JobState.POSTING)] == [job.id]
    assert await store.top(1) == []  # not on the board before its message exists
    done = await store.set_state(job.id, JobState.DONE, result_message_id=7)
    assert done.state.final and [e.job.id for e in await store.top(1)] == [job.id]


async def test_a_garbage_database_is_refused_with_one_sentence_and_no_thread_left(tmp_path):
    import threading

    path = tmp_path / "imagine.sqlite"
    path.write_bytes(b"this is not a database at all, just bytes " * 100)
    before = set(threading.enumerate())
    with pytest.raises(StorageError, match=r"is damaged or is not a database") as caught:
        await Store.open(path)
    assert str(caught.value).count(". ") <= 1 and str(path) in str(caught.value)
    # aiosqlite's worker thread was told to stop: it ends (its last step may still be running as close() returns);
    # threads other tests left starting meanwhile are not this test's business
    workers = [t for t in set(threading.enumerate()) - before if "_connection_worker_thread" in t.name]
    for thread in workers:
        thread.join(timeout=10)
    assert not [t for t in workers if t.is_alive()]


def _make_read_only(path):
    """Read-only even for root: the immutable attribute where chattr works, else the mode bits."""
    import os
    import subprocess

    os.chmod(path, 0o444)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: a read-only file cannot be made")


def _undo_read_only(path):
    import os
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, 0o644)


async def test_a_read_only_database_is_refused_at_start(tmp_path):
    path = tmp_path / "imagine.sqlite"
    s = await Store.open(path)
    await s.create_job(guild_id=1, channel_id=2, author_id=3, spec_json="{}")
    await s.close()
    for extra in tmp_path.glob("imagine.sqlite-*"):
        extra.unlink()
    _make_read_only(path)
    try:
        with pytest.raises(StorageError, match=r"is read-only; give the bot write access"):
            await Store.open(path)
    finally:
        _undo_read_only(path)


async def test_a_database_deleted_or_replaced_while_open_is_noticed(tmp_path):
    path = tmp_path / "imagine.sqlite"
    s = await Store.open(path)
    await s.check()
    for file in tmp_path.glob("imagine.sqlite*"):
        file.unlink()
    with pytest.raises(StorageError, match=r"was deleted or moved while the bot was running"):
        await s.check()
    await s.close()
    # replaced by another file of the same name: also noticed
    s = await Store.open(path)
    other = await Store.open(tmp_path / "other.sqlite")
    await other.close()
    (tmp_path / "other.sqlite").replace(path)
    with pytest.raises(StorageError):
        await s.check()
    await s.close()


async def test_sqlite_failures_while_running_become_storage_errors(tmp_path):
    path = tmp_path / "imagine.sqlite"
    s = await Store.open(path)
    await s._db.execute("DROP TABLE job_events")  # a damaged database: writes to it fail
    with pytest.raises(StorageError, match="cannot be used: no such table"):
        await s.create_job(guild_id=1, channel_id=2, author_id=3, spec_json="{}")
    await s.close()
