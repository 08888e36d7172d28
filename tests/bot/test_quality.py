"""Quality presets through real discord.py on the tiny models: a `best` job (an ensemble of three tiny CLIP models
with scheduled cutouts and image losses) runs end to end and says whose score it shows; a server caps the quality
and counts a costlier step for more; a tournament compares its seeds at draft and goes on at the quality asked for;
a preset whose CLIP models are not installed is refused with the operator's command."""

from __future__ import annotations

import discord
import pytest

from engine import quality
from storage import JobState

pytestmark = [pytest.mark.usefixtures("small_squares"), pytest.mark.simcord(settle_timeout=240)]

TINY_BEST = quality.Preset(
    "best",
    "three tiny CLIP models",
    (("tiny-clip", 1.0), ("tiny-clip-48", 0.5), ("tiny-rn", 0.5)),
    steps=8,
    cut_overview="[16]*4+[8]*4",
    cut_inner="[8]*4+[16]*4",
    cut_pow=1.2,
    cut_gray=0.25,
    tv_scale=0.05,
    range_scale=0.03,
    sat_scale=0.01,
)


@pytest.fixture(autouse=True)
def tiny_presets(monkeypatch):
    """`best` guides with the tiny CLIP models (the real preset's need downloads)."""
    monkeypatch.setitem(quality.PRESETS, "best", TINY_BEST)
    monkeypatch.setitem(quality.PRESETS, "normal", quality.Preset("normal", "two", TINY_BEST.perceptors[:2], steps=8))
    monkeypatch.setitem(quality.PRESETS, "draft", quality.Preset("draft", "one", TINY_BEST.perceptors[:1], steps=8))


@pytest.fixture
def world(simcord_env):
    guild = simcord_env.create_guild()
    channel = guild.create_text_channel("art")
    admins = guild.create_role("Admins", permissions=discord.Permissions(manage_guild=True))
    alice = guild.add_member(simcord_env.create_user("alice"))
    admin = guild.add_member(simcord_env.create_user("admin"), roles=[admins])
    return guild, channel, alice, admin


def _final(thread, job_id):
    return next(m for m in thread.history() if m.attachments and m.embeds and m.embeds[0].title == f"#{job_id}")


async def test_a_best_job_runs_end_to_end_and_names_the_model_of_its_score(simcord_env, world):
    guild, channel, alice, admin = world
    await alice.slash(channel, "imagine", prompt="a lighthouse", size="square-small", quality="best", seed=3)
    job = await simcord_env.bot.store.get_job(1)
    assert job.state == JobState.DONE, job
    spec = job.spec
    assert spec.quality == "best" and spec.perceptors == TINY_BEST.perceptors and spec.steps == 8
    assert (spec.cut_overview, spec.cut_inner, spec.tv_scale) == ("[16]*4+[8]*4", "[8]*4+[16]*4", 0.05)
    fields = {f.name: f.value for f in _final(channel.threads[0], 1).embeds[0].fields}
    assert fields["Quality"] == "best" and fields["Model"].endswith("tiny-clip + tiny-clip-48 + tiny-rn")
    assert "CLIP score (tiny-clip)" in fields  # the first model's score, as the board ranks it


async def test_a_server_caps_the_quality_and_counts_costlier_steps_for_more(simcord_env, world):
    guild, channel, alice, admin = world
    await admin.slash(channel, "settings limits", max_quality="normal")
    refused = await alice.slash(channel, "imagine", prompt="a harbour", quality="best")
    assert refused.ephemeral and "quality up to normal" in refused.response.content
    await simcord_env.advance_time(10)
    await admin.slash(channel, "settings limits", max_quality="best", max_steps=20)
    spec = simcord_env.bot.catalog.spec(
        await simcord_env.bot.community.settings(guild.id), "a harbour", default_steps=10, quality="best", steps=20
    )
    cost = quality.relative_cost(spec)
    assert cost > 1.0  # three models, each with its cutouts
    refused = await alice.slash(channel, "imagine", prompt="a harbour", quality="best", steps=20)
    assert refused.ephemeral and f"counts as {cost:.1f}" in refused.response.content
    assert await simcord_env.bot.store.get_job(1) is None


async def test_a_tournament_compares_its_seeds_at_draft_and_goes_on_at_the_quality_asked_for(simcord_env, world):
    guild, channel, alice, admin = world
    await alice.slash(channel, "imagine", prompt="a windmill", size="square-small", quality="best", candidates=2)
    for job_id in (1, 2):
        candidate = (await simcord_env.bot.store.get_job(job_id)).spec
        assert candidate.perceptors == () and candidate.clip_model == "tiny-clip"
        assert candidate.cut_overview is None and candidate.tv_scale == 0.0
    [tournament] = [t for t in [await simcord_env.bot.store.get_tournament(1)] if t is not None]
    assert tournament.spec.quality == "best"
    await simcord_env.bot.tournaments.decide(tournament.id, 1)
    winner = await simcord_env.bot.store.get_job(3)
    assert winner.spec.perceptors == TINY_BEST.perceptors and winner.spec.quality == "best"


async def test_a_quality_whose_clip_models_are_missing_names_the_operators_command(simcord_env, world, monkeypatch):
    guild, channel, alice, admin = world
    monkeypatch.setitem(quality.PRESETS, "best", quality.PRESETS["best"].__class__(**{**TINY_BEST.__dict__,
        "perceptors": (("tiny-clip", 1.0), ("RN50x4", 1.0))}))  # fmt: skip
    refused = await alice.slash(channel, "imagine", prompt="a moon", quality="best")
    assert refused.ephemeral and "python -m engine.models download --clip RN50x4" in refused.response.content
