"""End-to-end scenarios through real discord.py against simcord's in-memory Discord."""

from __future__ import annotations

import pytest

from storage import JobState
from tests.bot.test_uploads import refusal

# Jobs on the tiny models run for real on this CPU: give them time to settle.
pytestmark = pytest.mark.simcord(settle_timeout=180)


@pytest.fixture(params=["embedded", "celery"])
def simcord_bot(request, settings):
    """Every scenario runs twice: with the engine in the bot's process, and with it in a Celery worker process
    (a real redis-server and `python -m bot.backends.celery.worker`; skipped only where redis-server is not
    installed)."""
    import dataclasses

    from bot.client import ImagineBot, backend_for
    from tests.bot.cluster import wait_for_workers

    if request.param == "embedded":
        return ImagineBot(settings)
    redis_server = request.getfixturevalue("redis_server")
    request.getfixturevalue("start_worker")()
    wait_for_workers(redis_server.client(), 1)
    celery = dataclasses.replace(settings, backend="celery", redis_url=redis_server.url)
    return ImagineBot(celery, backend_for(celery))


def _world(env):
    guild = env.create_guild()
    channel = guild.create_text_channel("art")
    alice = guild.add_member(env.create_user("alice"))
    bob = guild.add_member(env.create_user("bob"))
    return guild, channel, alice, bob


def _buttons(message):
    return [c.label for row in message.components for c in row.children]


async def test_imagine_end_to_end_with_tiny_models(simcord_env):
    """slash -> queued reply -> thread -> status -> final image with buttons -> reroll -> continue -> votes -> /top"""
    guild, channel, alice, bob = _world(simcord_env)
    bot = simcord_env.bot
    result = await alice.slash(channel, "imagine", prompt="a lighthouse in a storm", size="square-small", seed=3)
    # the reply said "Queued" first; by the time the job has run, it links to the result instead
    assert "Queued #1 · a lighthouse in a storm · ETA" in simcord_env.transcript()
    assert result.response.content.startswith("Done #1 · a lighthouse in a storm · https://discord.com/channels/")
    assert not result.ephemeral
    [thread] = channel.threads
    messages = thread.history()
    final = next(m for m in messages if m.attachments and m.embeds and m.embeds[0].title == "#1")
    assert final.attachments[0].filename == "imagine-1.png"
    assert _buttons(final) == ["Reroll", "Continue", "Upscale", "Branch", "Recipe", "Delete"]
    assert {str(r.emoji) for r in final.reactions} == {"👍", "👎"}
    status = next(m for m in messages if m.embeds and m.embeds[0].title.startswith("#1 ·"))
    assert status.embeds[0].title == "#1 · Done" and not status.components  # Cancel gone at the end
    job = await bot.store.get_job(1)
    assert job.state == JobState.DONE and job.thread_id == thread.id and job.steps_done == 10
    assert job.result_message_id == final.id and job.snapshot_path
    timelapse = next(m for m in messages if m.content.startswith("Timelapse of #1"))
    assert timelapse.attachments[0].filename == "imagine-1-timelapse.webp" and "2 frames" in timelapse.content

    # Reroll: same settings, new seed, in the same thread
    await bob.click(final, label="Reroll")
    rerolled = await bot.store.get_job(2)
    assert rerolled.state == JobState.DONE and rerolled.kind == "reroll" and rerolled.thread_id == thread.id
    import json

    first, second = json.loads(job.spec_json), json.loads(rerolled.spec_json)
    assert first["prompt"] == second["prompt"] and first["seed"] != second["seed"]

    # Continue: +5 steps from the saved state
    await alice.click(final, label="Continue")
    continued = await bot.store.get_job(3)
    assert continued.state == JobState.DONE and continued.kind == "continue" and continued.steps_done == 15

    # Votes: bob's count, alice's own vote on her image does not, the bot's seed reactions never do
    await bob.react(final, "👍")
    await alice.react(final, "👍")
    assert await bot.store.vote_total(1) == 1
    top = await bob.slash(channel, "top", period="all time")
    assert "+1" in top.response.embeds[0].description.splitlines()[0]
    assert "a lighthouse in a storm" in top.response.embeds[0].description
    by_score = await bob.slash(channel, "top", period="all time", by="score")
    assert by_score.response.embeds[0].title.endswith("by CLIP score")
    assert by_score.response.embeds[0].description.splitlines()[0].split(" · ")[0].startswith("**1.** CLIP ")


async def test_bad_values_get_clear_ephemeral_answers(simcord_env):
    guild, channel, alice, bob = _world(simcord_env)
    result = await alice.slash(channel, "imagine", prompt="cat:1,5")
    assert result.ephemeral and "is not a number" in result.response.content
    result = await alice.slash(channel, "imagine", prompt="a cat", steps=60)
    assert result.ephemeral and "at most 50 steps" in result.response.content
    result = await alice.slash(channel, "imagine", prompt="a cat", model="nope")
    assert result.ephemeral and "Slow down a little" in result.response.content  # 2 per 10 s per member
    await simcord_env.advance_time(10)
    result = await alice.slash(channel, "imagine", prompt="a cat", model="nope")
    assert result.ephemeral and "not installed" in result.response.content
    assert await simcord_env.bot.store.get_job(1) is None


async def test_recipe_and_history(simcord_env):
    guild, channel, alice, bob = _world(simcord_env)
    await alice.slash(channel, "imagine", prompt="a red fox", size="square-small", seed=11)
    [thread] = channel.threads
    final = next(m for m in thread.history() if m.attachments and m.embeds and m.embeds[0].title == "#1")
    recipe = await bob.click(final, label="Recipe")
    assert recipe.ephemeral and '"seed": 11' in recipe.response.content
    history = await alice.slash(channel, "history")
    assert history.ephemeral and "#1 · done · a red fox" in history.response.content


async def test_attachments_init_image_and_image_prompt(simcord_env):
    import io
    import json
    from pathlib import Path

    from PIL import Image

    guild, channel, alice, bob = _world(simcord_env)
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 30, 30)).save(buf, format="PNG")
    bad = await alice.slash(channel, "imagine", prompt="a fox", init_image=("notes.png", b"not a picture"))
    assert "is not a picture that can be read" in refusal(bad)
    await alice.slash(
        channel,
        "imagine",
        prompt="a red fox",
        size="square-small",
        init_image=("start.png", buf.getvalue()),
        image_prompt=("target.png", buf.getvalue()),
    )
    job = await simcord_env.bot.store.get_job(1)
    spec = json.loads(job.spec_json)
    assert job.state == JobState.DONE
    assert Path(spec["init_image"]).read_bytes() == buf.getvalue()
    assert len(spec["image_prompts"]) == 1 and Path(spec["image_prompts"][0]).is_file()


async def test_panorama_and_juxtaposition_from_discord(simcord_env):
    import json

    guild, channel, alice, bob = _world(simcord_env)
    store = simcord_env.bot.store
    await alice.slash(channel, "imagine", prompt="a sunny clearing / an enchanted garden", size="wide", steps=10)
    pano = await store.get_job(1)
    spec = json.loads(pano.spec_json)
    assert pano.state == JobState.DONE and (pano.width, pano.height) == (640, 320)
    assert (spec["layout"], spec["lr"]) == ("panorama", 0.05)

    await simcord_env.advance_time(10)
    await bob.slash(
        channel,
        "juxtapose",
        left="Entrance to heaven",
        right="Entrance to hell",
        style="matte",
        steps=10,
        size="square-small",
    )
    jux = await store.get_job(2)
    spec = json.loads(jux.spec_json)
    assert jux.state == JobState.DONE
    assert spec["prompt"] == "Entrance to heaven | matte painting / Entrance to hell | matte painting"
    assert (spec["layout"], spec["tone_weight"], spec["semantic_weight"]) == ("mirror", 0.5, 0.1)
    # Reroll keeps the composition and its weights
    final = next(m for t in channel.threads for m in t.history() if m.embeds and m.embeds[0].title == "#2")
    await alice.click(final, label="Reroll")
    rerolled = json.loads((await store.get_job(3)).spec_json)
    assert {k: rerolled[k] for k in ("layout", "tone_weight", "semantic_weight", "prompt", "lr")} == {
        k: spec[k] for k in ("layout", "tone_weight", "semantic_weight", "prompt", "lr")
    }

    await simcord_env.advance_time(10)
    bad = await alice.slash(channel, "imagine", prompt="a / b", layout="panorama", semantic=0.5)
    assert bad.ephemeral and "needs the mirror layout" in bad.response.content
    custom = await alice.slash(
        channel, "imagine", prompt="a / b", layout="mirror", symmetry=2.0, focus=-1.0, steps=10, size="square-small"
    )
    assert not custom.ephemeral
    spec = json.loads((await store.get_job(4)).spec_json)
    assert (spec["layout"], spec["tone_weight"], spec["size_weight"]) == ("mirror", 2.0, -1.0)


async def test_branch_from_a_saved_state(simcord_env):
    import json
    from pathlib import Path

    guild, channel, alice, bob = _world(simcord_env)
    store = simcord_env.bot.store
    await alice.slash(channel, "imagine", prompt="a red fox", size="square-small", seed=5)
    parent = await store.get_job(1)
    [thread] = channel.threads
    final = next(m for m in thread.history() if m.attachments and m.embeds and m.embeds[0].title == "#1")
    menu = await bob.click(final, label="Branch")
    assert menu.ephemeral and "Saved states of #1" in menu.response.content
    assert menu.response.attachments[0].filename == "imagine-1-states.png"
    # every 5 steps: states at 5 and 10
    shown = await bob.select(menu.response, ["5"])
    assert shown.modal is not None
    same = await bob.submit_modal(shown, {"prompt": "a red fox"})
    assert "Branch of #1 from step 5 → Queued #2" in simcord_env.transcript()
    assert same.response.content.startswith("Done #2 · a red fox")  # then it links to the result
    branch = await store.get_job(2)
    assert branch.state == JobState.DONE and branch.kind == "branch" and branch.parent_id == 1
    assert json.loads(branch.spec_json)["prompt_schedule"] == []
    # branching with the same prompt is continuing from that state: the very same picture
    assert Path(branch.image_path).read_bytes() == Path(parent.image_path).read_bytes()

    menu = await alice.click(final, label="Branch")
    shown = await alice.select(menu.response, ["5"])
    await alice.submit_modal(shown, {"prompt": "a blue fox in the snow"})
    other = await store.get_job(3)
    assert other.state == JobState.DONE
    assert json.loads(other.spec_json)["prompt_schedule"] == [[5, "a blue fox in the snow"]]
    assert Path(other.image_path).read_bytes() != Path(parent.image_path).read_bytes()


async def test_seed_tournament_with_real_runs(simcord_env):
    import json

    guild, channel, alice, bob = _world(simcord_env)
    store = simcord_env.bot.store
    simcord_env.bot.tournaments.wait = 3600.0  # the author decides here, not the clock
    await alice.slash(channel, "imagine", prompt="a red fox", size="square-small", candidates=2)
    tournament = await store.get_tournament(1)
    assert tournament.state == "voting"
    candidates = await store.tournament_jobs(1)
    assert [c.steps_done for c in candidates] == [4, 4] and all(c.score is not None for c in candidates)
    [thread] = channel.threads
    grid = next(m for m in thread.history() if m.attachments and m.attachments[0].filename == "tournament-1.png")
    await alice.click(grid, label="1")
    going_on = await store.get_job(3)
    assert going_on.state == JobState.DONE and going_on.steps_done == 10 and going_on.parent_id == candidates[0].id
    assert json.loads(going_on.spec_json)["seed"] == json.loads(candidates[0].spec_json)["seed"]
    assert any(m.embeds and m.embeds[0].title == "#3" for m in thread.history())  # the winner's final post
