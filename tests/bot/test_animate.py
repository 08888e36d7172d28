"""/animate through real discord.py on the tiny models: the video is posted (its frames, rate and size read back
from the MP4 itself), the frames' prompts pass the server's word filter, bad keyframes are answered with a sentence,
and a default animation fits the server's step limit."""

from __future__ import annotations

import pytest

from engine.video import probe
from storage import JobState

pytestmark = [pytest.mark.usefixtures("small_squares"), pytest.mark.simcord(settle_timeout=240)]


def _world(env):
    guild = env.create_guild()
    channel = guild.create_text_channel("art")
    alice = guild.add_member(env.create_user("alice"))
    return guild, channel, alice


def _final(thread, job_id):
    return next(m for m in thread.history() if m.attachments and m.embeds and m.embeds[0].title == f"#{job_id}")


async def test_animate_posts_an_mp4_with_the_frames_it_asked_for(simcord_env):
    guild, channel, alice = _world(simcord_env)
    await alice.slash(
        channel, "animate", prompt="a tunnel of light", motion="zoom-in", frames=4, fps=4, steps=10, frame_steps=3,
        seed=1, frame_prompts="0: a tunnel of light; 2: a field of stars",
    )  # fmt: skip
    job = await simcord_env.bot.store.get_job(1)
    assert job.state == JobState.DONE, job
    assert job.spec.animation.frames == 4 and job.spec.total_steps == 10 + 3 * 3 == job.steps_done
    [thread] = channel.threads
    final = _final(thread, 1)
    names = [a.filename for a in final.attachments]
    assert names[:2] == ["imagine-1.png", "imagine-1.mp4"], names
    assert "animation (4 frames) is ready" in final.content
    info = probe(await final.attachments[1].read())
    assert (info.frames, info.fps, info.width, info.height) == (4, 4.0, 64, 64)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    # the status while it ran (its last edit, once done, shows the steps only)
    from cogs.imagine._embeds import status_embed
    from engine.events import Progress

    running = status_embed(job, job.spec, Progress(12, 19, 0.5, (0.5,), 1.0, b"", 64, 64, frame=1, frames=4))
    assert {f.name: f.value for f in running.fields}["Frame"] == "2 of 4"


async def test_an_animations_frame_prompts_meet_the_word_filter(simcord_env):
    guild, channel, alice = _world(simcord_env)
    await simcord_env.bot.community.block(guild.id, "volcano", by=0)
    refused = await alice.slash(
        channel, "animate", prompt="a quiet lake", frames=3, frame_prompts="0: a quiet lake; 2: an erupting volcano"
    )
    assert refused.ephemeral and "volcano" not in refused.response.content
    assert await simcord_env.bot.store.get_job(1) is None


async def test_bad_keyframes_are_answered_with_a_sentence(simcord_env):
    guild, channel, alice = _world(simcord_env)
    refused = await alice.slash(channel, "animate", prompt="a spiral", frames=3, zoom="0: fast, 10: faster")
    assert refused.ephemeral and "zoom" in refused.response.content
    assert "0: (1.0), 30: (1.04)" in refused.response.content or "for example" in refused.response.content.lower()
    assert await simcord_env.bot.store.get_job(1) is None


async def test_a_default_animation_fits_the_servers_step_limit(simcord_env):
    guild, channel, alice = _world(simcord_env)
    most = simcord_env.bot.community.max_steps(await simcord_env.bot.community.settings(guild.id))
    steps, frame_steps = simcord_env.bot.catalog.animation_steps(24, None, None, default=300, most=most)
    assert steps + 23 * frame_steps <= most and frame_steps >= 1 and steps >= 1
    too_many = simcord_env.bot.catalog.animation_steps(24, most, 50, default=300, most=most)
    assert too_many == (most, 50)  # a member's own numbers stay theirs: the gate refuses them with the limit
    refused = await alice.slash(channel, "animate", prompt="a river", frames=24, steps=most, frame_steps=50)
    assert refused.ephemeral and f"at most {most} steps" in refused.response.content
