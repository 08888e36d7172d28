"""The gallery's queries on real SQLite files: which images are public, their order, paging and the week."""

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


async def _job(store, guild_id=ON, *, kind="new", state=JobState.DONE, score=0.5, image=True, **fields):
    spec = json.dumps({"prompt": "a lighthouse", "seed": 1})
    job = await store.create_job(guild_id=guild_id, channel_id=5, author_id=7, spec_json=spec, kind=kind)
    extra = {"image_path": f"/data/images/{job.id}.png"} if image else {}
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
