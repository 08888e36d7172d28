"""Every door that makes or shows a picture holds the rules of `/imagine`: the server's steps, sizes and channels,
the member's cooldown and caps, the word filter, and the output check. Through simcord, with the gated backend."""

from __future__ import annotations

import math

import discord
import pytest

from storage import JobState


@pytest.fixture
def simcord_bot(make_gated_bot, gated):
    return make_gated_bot()


@pytest.fixture
def world(simcord_env, gated):
    gated.env = simcord_env
    guild = simcord_env.create_guild()
    channel = guild.create_text_channel("art")
    studio = guild.create_text_channel("studio")
    admins = guild.create_role("Admins", permissions=discord.Permissions(manage_guild=True))
    users = {name: guild.add_member(simcord_env.create_user(name)) for name in ("alice", "bob")}
    users["admin"] = guild.add_member(simcord_env.create_user("admin"), roles=[admins])
    return guild, channel, studio, users


def _components(message) -> str:
    return " ".join(getattr(c, "custom_id", "") or "" for row in message.components for c in row.children)


def _result(channel, job_id: int):
    return next(m for t in channel.threads for m in t.history() if f"imagine:reroll:{job_id}:" in _components(m))


def _status(channel, job_id: int):
    return next(
        m for t in channel.threads for m in t.history() if m.embeds and m.embeds[0].title.startswith(f"#{job_id} ·")
    )


async def _made(env, member, channel, **options) -> None:
    await member.slash(channel, "imagine", **options)
    await env.advance_time(10)  # past the cooldown


# -- limits ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", ["Continue", "Reroll"])
async def test_buttons_meet_the_servers_step_limit(simcord_env, world, label):
    guild, channel, studio, u = world
    await _made(simcord_env, u["alice"], channel, prompt="a castle", steps=25)  # before the server's limit
    await u["admin"].slash(channel, "settings limits", max_steps=20)
    refused = await u["bob"].click(_result(channel, 1), label=label)
    assert refused.ephemeral and "at most 20 steps" in refused.response.content
    assert await simcord_env.bot.jobs.get(2) is None


async def test_continue_cannot_grow_past_the_limit_step_by_step(simcord_env, world):
    guild, channel, studio, u = world
    await u["admin"].slash(channel, "settings limits", max_steps=20)
    await _made(simcord_env, u["alice"], channel, prompt="a castle", steps=15)
    # continue_steps is 5: 15 -> 20 is within the limit, 20 -> 25 is not
    await u["bob"].click(_result(channel, 1), label="Continue")
    await simcord_env.advance_time(10)
    assert (await simcord_env.bot.jobs.get(2)).spec.total_steps == 20
    refused = await u["bob"].click(_result(channel, 2), label="Continue")
    assert refused.ephemeral and "at most 20 steps" in refused.response.content
    assert await simcord_env.bot.jobs.get(3) is None


async def test_upscale_meets_the_allowed_sizes(simcord_env, world):
    guild, channel, studio, u = world
    await u["admin"].slash(channel, "settings sizes", allowed="square-small")
    await _made(simcord_env, u["alice"], channel, prompt="a castle")
    assert (await simcord_env.bot.jobs.get(1)).spec.width == 256
    refused = await u["alice"].click(_result(channel, 1), label="Upscale")
    assert refused.ephemeral and "square-small" in refused.response.content
    assert await simcord_env.bot.jobs.get(2) is None


async def test_buttons_and_forms_follow_the_channel_rule(simcord_env, world):
    guild, channel, studio, u = world
    await _made(simcord_env, u["alice"], channel, prompt="a castle")
    await u["admin"].slash(channel, "settings channels", action="add", channel=studio)
    result = _result(channel, 1)
    for label in ("Reroll", "Continue"):
        refused = await u["bob"].click(result, label=label)
        await simcord_env.advance_time(10)
        assert refused.ephemeral and f"<#{studio.id}>" in refused.response.content, label
    menu = await u["bob"].click(result, label="Branch")
    shown = await u["bob"].select(menu.response, ["1"])
    branched = await u["bob"].submit_modal(shown, {"prompt": "a castle in the snow"})
    assert f"<#{studio.id}>" in branched.response.content
    assert await simcord_env.bot.jobs.get(2) is None


async def test_buttons_share_the_imagine_cooldown(simcord_env, world):
    guild, channel, studio, u = world
    await u["alice"].slash(channel, "imagine", prompt="a castle")
    await u["alice"].click(_result(channel, 1), label="Reroll")
    refused = await u["alice"].click(_result(channel, 1), label="Reroll")
    assert refused.ephemeral and "Slow down" in refused.response.content
    assert await simcord_env.bot.jobs.get(3) is None
    await simcord_env.advance_time(10)
    await u["alice"].click(_result(channel, 1), label="Reroll")
    assert await simcord_env.bot.jobs.get(3) is not None


async def test_a_tournament_meets_the_sizes_and_channels(simcord_env, world):
    guild, channel, studio, u = world
    await simcord_env.bot.store.update_guild_settings(guild.id, max_queued_per_user=3)
    await u["admin"].slash(channel, "settings channels", action="add", channel=studio)
    refused = await u["alice"].slash(channel, "imagine", prompt="a castle", candidates=2)
    assert refused.ephemeral and f"<#{studio.id}>" in refused.response.content
    assert await simcord_env.bot.tournaments.get(1) is None


async def test_steer_and_branch_text_meet_the_word_filter(simcord_env, world, gated):
    guild, channel, studio, u = world
    await u["admin"].slash(channel, "settings words", action="add", word="ogre")
    await _made(simcord_env, u["alice"], channel, prompt="a castle")
    menu = await u["alice"].click(_result(channel, 1), label="Branch")
    shown = await u["alice"].select(menu.response, ["1"])
    refused = await u["alice"].submit_modal(shown, {"prompt": "an &#111;gre"})
    assert "does not allow" in refused.response.content
    assert await simcord_env.bot.jobs.get(2) is None


# -- the output check ---------------------------------------------------------------------------------------------
async def _flagged(env, world, gated, level="withhold", **options):
    guild, channel, studio, u = world
    await u["admin"].slash(channel, "settings moderation", level=level)
    gated.unsafe = 0.99
    await _made(env, u["alice"], channel, prompt="a castle", **options)
    job = await env.bot.jobs.get(1)
    assert job.moderation == ("withhold" if level != "spoiler" else "spoiler")
    gated.unsafe = 0.01
    return job


@pytest.mark.parametrize("level", ["spoiler", "withhold"])
async def test_the_status_message_keeps_no_preview_of_a_flagged_image(simcord_env, world, gated, level):
    await _flagged(simcord_env, world, gated, level)
    status = _status(world[1], 1)
    assert not status.attachments and not any(e.image.url or e.thumbnail.url for e in status.embeds)


async def test_a_replaced_status_message_keeps_no_preview_of_a_withheld_image(simcord_env, world, gated):
    """A run longer than Discord's hour of edits gets a fresh status message; the old one must not keep a preview."""
    guild, channel, studio, u = world
    await u["admin"].slash(channel, "settings moderation", level="withhold")
    gated.unsafe, gated.hold, gated.late_progress = 0.99, True, True
    await u["alice"].slash(channel, "imagine", prompt="a castle")
    await simcord_env.advance_time(51 * 60)
    gated.release(1)
    await simcord_env.settle()
    assert (await simcord_env.bot.jobs.get(1)).moderation == "withhold"
    [thread] = channel.threads
    statuses = [m for m in thread.history() if m.embeds and m.embeds[0].title.startswith("#1 ·")]
    assert len(statuses) == 2  # the first one was replaced
    assert not any(m.attachments for m in thread.history())


@pytest.mark.parametrize("level", ["withhold", "strict"])
async def test_branch_shows_no_saved_states_of_a_withheld_image(simcord_env, world, gated, level):
    await _flagged(simcord_env, world, gated, level)
    u = world[3]
    menu = await u["bob"].click(_result(world[1], 1), label="Branch")
    assert menu.ephemeral and not menu.response.attachments
    assert "Saved states of #1" in menu.response.content  # the menu itself still works


async def test_continue_of_a_withheld_image_shows_no_previews(simcord_env, world, gated):
    await _flagged(simcord_env, world, gated)
    u = world[3]
    gated.hold = True
    await u["bob"].click(_result(world[1], 1), label="Continue")
    job = await simcord_env.bot.jobs.get(2)
    assert job.state == JobState.RUNNING and job.parent_id == 1
    await simcord_env.advance_time(5)
    status = _status(world[1], 2)
    assert not status.attachments and not any(e.image.url for e in status.embeds)
    gated.release(2)
    await simcord_env.settle()
    assert not list((simcord_env.bot.settings.data_dir / "frames").glob("2/*"))


async def test_a_tournament_grid_shows_no_withheld_candidate(simcord_env, world, gated):
    guild, channel, studio, u = world
    await simcord_env.bot.store.update_guild_settings(guild.id, max_queued_per_user=3)
    await u["admin"].slash(channel, "settings moderation", level="withhold")
    gated.unsafe = 0.99
    await u["alice"].slash(channel, "imagine", prompt="a castle", candidates=2)
    await simcord_env.settle()
    candidates = await simcord_env.bot.tournaments.candidates(1)
    assert [c.moderation for c in candidates] == ["withhold", "withhold"]
    posted = [m for t in channel.threads for m in t.history() if m.attachments]
    assert not any(a.filename.startswith("tournament-") for m in posted for a in m.attachments)
    said = [m.content for t in channel.threads for m in t.history()]
    assert any("withheld" in text for text in said)


async def test_a_tournament_grid_is_a_spoiler_when_a_candidate_is(simcord_env, world, gated):
    guild, channel, studio, u = world
    await simcord_env.bot.store.update_guild_settings(guild.id, max_queued_per_user=3)
    await u["admin"].slash(channel, "settings moderation", level="spoiler")
    gated.unsafe = 0.99
    await u["alice"].slash(channel, "imagine", prompt="a castle", candidates=2)
    await simcord_env.settle()
    grids = [a for t in channel.threads for m in t.history() for a in m.attachments if "tournament-" in a.filename]
    assert grids and all(a.filename.startswith("SPOILER_") for a in grids)


@pytest.mark.parametrize("unsafe", [None, math.nan, math.inf, -1.0])
async def test_an_unscored_or_broken_result_is_withheld_where_a_check_is_asked(simcord_env, world, gated, unsafe):
    """A result without a usable score (a worker that skipped the check, a forged event, a NaN) fails closed."""
    guild, channel, studio, u = world
    await u["admin"].slash(channel, "settings moderation", level="withhold")
    gated.unsafe = unsafe
    await _made(simcord_env, u["alice"], channel, prompt="a castle")
    job = await simcord_env.bot.jobs.get(1)
    assert job.state == JobState.DONE and job.moderation == "withhold"
    assert not _result(channel, 1).attachments


def test_the_size_choices_are_the_sizes_the_gate_knows():
    """/imagine's and /juxtapose's size choices and /settings' size names are the gate's table of sizes."""
    from bot.catalog import SIZES
    from cogs.imagine._cog import Imagine
    from cogs.settings import SIZE_NAMES

    for command in (Imagine.imagine, Imagine.juxtapose):
        assert [choice.value for choice in command._params["size"].choices] == list(SIZES) == list(SIZE_NAMES)


# -- tried again as a hostile member, after the gate -------------------------------------------------------------
async def _forged_click(member, channel, custom_id: str):
    """A click on a button carrying a crafted custom_id (a bot message made to hold it): the job it names must be
    judged where the click happens, whatever the id says."""
    from simcord.actors import _component_click
    from simcord.results import to_discord_message

    env = member._env
    rows = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "forged", "custom_id": custom_id}]}]
    stored = env.backend.create_message(channel.id, env.bot.user.id, "forged", components=rows)
    return await _component_click(member, to_discord_message(env, stored), label="forged", custom_id=None)


def _said(result) -> str:
    messages = [result.response, *(result.followups or [])]
    return "\n".join(m.content or "" for m in messages if m is not None)


@pytest.mark.parametrize("action", ["reroll", "recipe", "delete", "cancel", "branch"])
async def test_a_button_acts_only_on_jobs_of_its_own_server(simcord_env, world, gated, action):
    guild, channel, studio, u = world
    other = simcord_env.create_guild("elsewhere")
    lobby = other.create_text_channel("lobby")
    boss = other.create_role("Boss", permissions=discord.Permissions(manage_guild=True, manage_messages=True))
    mallory = other.add_member(simcord_env.create_user("mallory"), roles=[boss])
    gated.hold = action == "cancel"
    await u["alice"].slash(channel, "imagine", prompt="my private castle")
    answer = await _forged_click(mallory, lobby, f"imagine:{action}:1:{simcord_env.bot.jobs.install}")
    job = await simcord_env.bot.jobs.get(1)
    assert "private castle" not in _said(answer) and answer.ephemeral
    assert await simcord_env.bot.jobs.get(2) is None and job.deleted_at is None
    if action == "cancel":
        assert job.state == JobState.RUNNING
        gated.release(1)
        await simcord_env.settle()


async def test_a_dm_job_is_for_its_author_only(simcord_env, world):
    guild, channel, studio, u = world
    await u["bob"].slash(channel, "imagine", prompt="a castle")  # a job 1 in the server first
    victim = simcord_env.create_user("victim")
    await victim.slash("imagine", prompt="my secret diary drawing")
    answer = await _forged_click(u["alice"], channel, f"imagine:recipe:2:{simcord_env.bot.jobs.install}")
    assert "secret diary" not in _said(answer)


async def test_a_follow_up_meets_the_channel_rule_where_its_image_lives(simcord_env, world):
    """Clicked in an allowed channel's thread, a Reroll of an image of a closed channel is still refused."""
    guild, channel, studio, u = world
    await _made(simcord_env, u["alice"], channel, prompt="a castle")
    await u["admin"].slash(channel, "settings channels", action="add", channel=studio)
    await _made(simcord_env, u["alice"], studio, prompt="a tower")
    answer = await _forged_click(u["bob"], studio.threads[0], f"imagine:reroll:1:{simcord_env.bot.jobs.install}")
    assert f"<#{studio.id}>" in _said(answer)
    assert await simcord_env.bot.jobs.get(3) is None


async def test_the_recipe_of_a_withheld_image_is_not_shown(simcord_env, world, gated):
    await _flagged(simcord_env, world, gated, seed=1234)
    answer = await world[3]["bob"].click(_result(world[1], 1), label="Recipe")
    assert answer.ephemeral and '"seed": 1234' not in _said(answer) and "withheld" in _said(answer)


async def test_a_deleted_image_cannot_be_branched_and_its_states_go(simcord_env, world):
    guild, channel, studio, u = world
    await _made(simcord_env, u["alice"], channel, prompt="a castle")
    menu = await u["bob"].click(_result(channel, 1), label="Branch")  # opened before the Delete
    await u["alice"].click(_result(channel, 1), label="Delete")
    shown = await u["bob"].select(menu.response, ["1"])
    await u["bob"].submit_modal(shown, {"prompt": "a castle"})
    assert await simcord_env.bot.jobs.get(2) is None and not simcord_env.bot.jobs.snapshots(1)


async def test_strict_flagged_previews_reach_no_timelapse_and_no_branch_menu(simcord_env, world, gated):
    guild, channel, studio, u = world
    await u["admin"].slash(channel, "settings moderation", level="strict")
    gated.preview_unsafe, gated.unsafe, gated.late_progress = 0.99, 0.01, True
    await _made(simcord_env, u["alice"], channel, prompt="a castle")
    assert (await simcord_env.bot.jobs.get(1)).moderation == "post"
    said = [m for t in channel.threads for m in t.history()]
    assert not any("Timelapse" in (m.content or "") for m in said)
    menu = await u["bob"].click(_result(channel, 1), label="Branch")
    assert not menu.response.attachments


async def test_top_shows_nothing_posted_where_not_everyone_could_see(simcord_env, world):
    guild, channel, studio, u = world
    everyone = guild.roles["@everyone"]
    staff = guild.create_text_channel(
        "staff",
        overwrites={
            everyone: discord.PermissionOverwrite(view_channel=False),
            u["admin"]: discord.PermissionOverwrite(view_channel=True),
            guild.roles["TestBot"]: discord.PermissionOverwrite(view_channel=True),
        },
    )
    await _made(simcord_env, u["admin"], staff, prompt="the secret staff plan")
    await _made(simcord_env, u["alice"], channel, prompt="a public castle")
    top = await u["bob"].slash(channel, "top", period="all time")
    shown = top.response.embeds[0].description
    assert "public castle" in shown and "secret staff plan" not in shown


async def test_a_level_raised_while_a_job_waits_applies_to_it(simcord_env, world, gated):
    guild, channel, studio, u = world
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="runs first")
    await u["bob"].slash(channel, "imagine", prompt="waits")
    await u["admin"].slash(channel, "settings moderation", level="withhold")
    gated.unsafe, gated.hold = 0.99, False
    gated.release(1)
    await simcord_env.settle()
    job = await simcord_env.bot.jobs.get(2)
    assert job.spec.moderation == "withhold" and job.moderation == "withhold"


async def test_queue_lists_only_this_servers_jobs(simcord_env, world, gated):
    guild, channel, studio, u = world
    other = simcord_env.create_guild("elsewhere")
    lobby = other.create_text_channel("lobby")
    mallory = other.add_member(simcord_env.create_user("mallory"))
    gated.hold = True
    await u["alice"].slash(channel, "imagine", prompt="runs")
    await u["bob"].slash(channel, "imagine", prompt="waits")
    theirs = await mallory.slash(lobby, "queue")
    assert "#1" not in theirs.response.content and "#2" not in theirs.response.content
    ours = await u["bob"].slash(channel, "queue")
    assert "▶️ #1" in ours.response.content and "#2" in ours.response.content
    gated.hold = False
    gated.release(1)
    await simcord_env.settle()


async def test_an_imagine_reads_the_servers_settings_once_at_most(simcord_env, world, monkeypatch):
    """Every door reads the server's settings several times on its way in (gate, caps, thread, timelapse); the store
    keeps them, so the database is asked once per server, and a change through /settings is seen at once."""
    from storage import sql as store_module

    guild, channel, studio, u = world
    db, reads = simcord_env.bot.store._db, []
    execute = db.execute

    def counting(sql, *args, **kwargs):
        if sql == store_module._SELECT_SETTINGS:
            reads.append(sql)
        return execute(sql, *args, **kwargs)

    monkeypatch.setattr(db, "execute", counting)
    await _made(simcord_env, u["alice"], channel, prompt="a castle")
    await _made(simcord_env, u["alice"], channel, prompt="a tower")
    assert len(reads) <= 1
    await u["admin"].slash(channel, "settings limits", max_steps=20)
    refused = await u["alice"].slash(channel, "imagine", prompt="a bridge", steps=30)
    assert "at most 20 steps" in refused.response.content and len(reads) <= 1
