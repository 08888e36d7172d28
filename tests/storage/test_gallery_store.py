"""The gallery's queries on real SQLite files: which images are public (who could see them, the channels staff
left out), their order, paging and the week."""

import json

import pytest

from storage import JobState, Store

ON, OFF, UNSET = 10, 20, 30  # servers: gallery turned on, turned off, never configured


@pytest.fixture
async def store(tmp_path):
    clock = {"t": 1000.0}
    s = await Store.open(tmp_path / "db" / "imagine.sqlite", clock=lambda: clock["t"])
    s.test_clock = clock
    await s.update_guild_settings(ON, gallery=True)
    await s.update_guild_settings(OFF, gallery=False, use_threads=False)
    yield s
    await s.close()


async def _job(store, guild_id=ON, *, kind="new", state=JobState.DONE, score=0.5, image=True, channel_id=5, **fields):
    spec = json.dumps({"prompt": "a lighthouse", "seed": 1})
    job = await store.create_job(guild_id=guild_id, channel_id=channel_id, author_id=7, spec_json=spec, kind=kind)
    extra = {"image_path": f"/data/images/{job.id}.png"} if image else {}
    fields.setdefault("audience", "everyone")  # posted where everyone in the server could see it
    job = await store.set_state(job.id, state, score=score, **extra, **fields)
    return job


async def _ids(store, guild_id=ON, since=0.0):
    entries, total = await store.gallery_page(guild_id, since=since, limit=100, offset=0)
    assert total == len(entries)
    return [e.job.id for e in entries]


async def test_only_visible_images_are_listed(store):
    shown = await _job(store)
    hidden = {
        "dm": await _job(store, guild_id=None),
        "gallery off": await _job(store, guild_id=OFF),
        "never configured": await _job(store, guild_id=UNSET),
        "candidate": await _job(store, kind="candidate"),
        "failed": await _job(store, state=JobState.FAILED),
        "cancelled": await _job(store, state=JobState.CANCELLED),
        "posting": await _job(store, state=JobState.POSTING),
        "spoilered": await _job(store, moderation="spoiler"),
        "withheld": await _job(store, moderation="withhold"),
        "no image": await _job(store, image=False),
        "deleted": await _job(store),
    }
    checked = await _job(store, moderation="post")
    await store.mark_deleted(hidden["deleted"].id, by=7)

    assert await _ids(store) == [shown.id, checked.id]
    for guild_id in (OFF, UNSET):
        assert await _ids(store, guild_id) == []
    for why, job in hidden.items():
        assert await store.gallery_image(job.id) is None, why
    assert (await store.gallery_image(shown.id)).job.id == shown.id
    assert await store.gallery_image(9999) is None
    assert await store.gallery_guilds() == [ON]


async def test_a_server_is_listed_only_with_the_gallery_on_and_an_image_to_show(store):
    assert await store.gallery_guilds() == []  # on, but nothing to show yet
    await _job(store, guild_id=OFF)
    await _job(store, guild_id=ON, moderation="withhold")
    assert await store.gallery_guilds() == []
    await _job(store, guild_id=ON)
    await store.update_guild_settings(UNSET, gallery=True)
    await _job(store, guild_id=UNSET)
    assert await store.gallery_guilds() == [ON, UNSET]
    await store.update_guild_settings(ON, gallery=False)  # turning it off hides the server at once
    assert await store.gallery_guilds() == [UNSET]
    assert await _ids(store, ON) == []


async def test_order_is_votes_then_score_then_id(store):
    low = await _job(store, score=0.1)
    high = await _job(store, score=0.9)
    tie_a = await _job(store, score=0.5)
    tie_b = await _job(store, score=0.5)
    voted = await _job(store, score=0.0)
    for user in (1, 2):
        await store.set_vote(voted.id, user, 1, True)
    await store.set_vote(high.id, 3, -1, True)
    assert await _ids(store) == [voted.id, tie_a.id, tie_b.id, low.id, high.id]
    entry = await store.gallery_image(voted.id)
    assert entry.votes == 2 and (await store.gallery_image(high.id)).votes == -1


async def test_paging_and_total(store):
    jobs = [await _job(store, score=i / 100) for i in range(30)]
    best_first = [j.id for j in reversed(jobs)]
    first, total = await store.gallery_page(ON, since=0.0, limit=24, offset=0)
    second, total2 = await store.gallery_page(ON, since=0.0, limit=24, offset=24)
    assert total == total2 == 30
    assert [e.job.id for e in first] == best_first[:24]
    assert [e.job.id for e in second] == best_first[24:]
    assert await store.gallery_page(ON, since=0.0, limit=24, offset=48) == ([], 30)


async def test_since_keeps_the_recent_images(store):
    old = await _job(store, score=0.9)
    store.test_clock["t"] = 1000.0 + 10 * 86400
    new = await _job(store, score=0.1)
    week = store.test_clock["t"] - 7 * 86400
    assert await _ids(store, since=week) == [new.id]
    assert await _ids(store, since=0.0) == [old.id, new.id]


async def test_only_images_everyone_could_see_are_listed(store):
    public = await _job(store)
    hidden = {
        "restricted": await _job(store, audience="restricted"),
        "posted before audiences were recorded": await _job(store, audience=None),
        "unknown value": await _job(store, audience="members"),
    }
    assert await _ids(store) == [public.id]
    for why, job in hidden.items():
        assert await store.gallery_image(job.id) is None, why
    await store.update_job(public.id, audience="restricted")
    assert await _ids(store) == [] and await store.gallery_guilds() == []


async def test_excluded_channels_are_left_out_with_their_threads(store):
    art, lounge, thread, member_thread = (876543210987654321 + n for n in range(4))  # snowflake-sized ids
    in_channel = await _job(store, channel_id=art, audience_channel_id=art)
    in_its_thread = await _job(store, channel_id=art, thread_id=thread, audience_channel_id=art)
    in_a_members_thread = await _job(store, channel_id=member_thread, audience_channel_id=art)
    elsewhere = await _job(store, channel_id=lounge, audience_channel_id=lounge)
    other_server = await _job(store, guild_id=UNSET, channel_id=art, audience_channel_id=art)
    await store.update_guild_settings(UNSET, gallery=True)
    assert set(await _ids(store)) == {in_channel.id, in_its_thread.id, in_a_members_thread.id, elsewhere.id}

    settings = await store.update_guild_settings(ON, gallery_excluded=(art,))
    assert settings.gallery_excluded == (art,) and (await store.guild_settings(ON)).gallery_excluded == (art,)
    assert await _ids(store) == [elsewhere.id]
    for job in (in_channel, in_its_thread, in_a_members_thread):
        assert await store.gallery_image(job.id) is None
    assert await _ids(store, UNSET) == [other_server.id]  # another server's list is its own

    await store.update_guild_settings(ON, gallery_excluded=(lounge, thread))
    assert set(await _ids(store)) == {in_channel.id, in_a_members_thread.id}  # a thread can be left out alone
    await store.update_guild_settings(ON, gallery_excluded=(lounge,))
    await store.update_guild_settings(UNSET, gallery_excluded=(art,))
    assert await store.gallery_guilds() == [ON]
    await store.update_guild_settings(ON, gallery_excluded=())  # included again: shown again
    assert len(await _ids(store)) == 4 and (await store.guild_settings(ON)).gallery_excluded == ()


async def test_older_images_are_not_public_after_the_upgrade(tmp_path):
    import sqlite3

    from storage.store import _migrations

    path = tmp_path / "v4.sqlite"
    con = sqlite3.connect(path)
    for number, sql in _migrations():
        if number <= 4:
            con.executescript(f"{sql}\nPRAGMA user_version = {number};")
    con.execute("INSERT INTO guild_settings (guild_id, gallery) VALUES (?, 1)", (ON,))
    con.execute(
        "INSERT INTO jobs (guild_id, channel_id, author_id, spec_json, state, image_path, created_at, finished_at) "
        "VALUES (?, 5, 7, '{}', 'done', '/data/images/1.png', 0, 0)",
        (ON,),
    )
    con.commit()
    con.close()
    store = await Store.open(path)
    try:
        job = await store.get_job(1)
        assert job.audience is None and job.audience_channel_id is None
        assert await _ids(store) == [] and await store.gallery_image(1) is None
        assert (await store.guild_settings(ON)).gallery_excluded == ()
    finally:
        await store.close()
