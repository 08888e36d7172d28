"""The generators a member can choose, and the Upscale button, through real discord.py on the tiny models."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from storage import JobState

# Jobs on the tiny models run for real on this CPU: give them time to settle.
pytestmark = [pytest.mark.usefixtures("small_squares"), pytest.mark.simcord(settle_timeout=180)]


def _world(env):
    guild = env.create_guild()
    channel = guild.create_text_channel("art")
    alice = guild.add_member(env.create_user("alice"))
    bob = guild.add_member(env.create_user("bob"))
    return guild, channel, alice, bob


def _final(thread, job_id):
    return next(m for m in thread.history() if m.attachments and m.embeds and m.embeds[0].title == f"#{job_id}")


async def _png_size(message) -> tuple[int, int]:
    return Image.open(io.BytesIO(await message.attachments[0].read())).size


async def test_model_choices_list_every_generator(simcord_env):
    guild, channel, alice, bob = _world(simcord_env)
    models = simcord_env.bot.catalog.models()
    assert models["tiny-biggan"] == "biggan" and models["tiny-dvae"] == "dalle"
    assert models["fourier"] == "fourier" and models["siren"] == "siren"
    assert {name for name, generator in models.items() if generator == "vqgan"} >= {"tiny_f16"}


@pytest.mark.parametrize(
    ("model", "generator", "size"),
    [("fourier", "fourier", (64, 64)), ("siren", "siren", (64, 64)), ("tiny-dvae", "dalle", (64, 64))],
)
async def test_imagine_with_each_generator(simcord_env, model, generator, size):
    guild, channel, alice, bob = _world(simcord_env)
    await alice.slash(channel, "imagine", prompt="a lighthouse", size="square-small", model=model, seed=1)
    job = await simcord_env.bot.store.get_job(1)
    spec = json.loads(job.spec_json)
    assert job.state == JobState.DONE and spec["generator"] == generator
    [thread] = channel.threads
    final = _final(thread, 1)
    assert final.attachments[0].filename == "imagine-1.png" and await _png_size(final) == size
    if generator == "siren":
        assert spec["lr"] == 1e-4  # the generator's own learning rate


async def test_biggan_makes_its_models_size_and_cannot_be_upscaled(simcord_env):
    guild, channel, alice, bob = _world(simcord_env)
    refused = await alice.slash(channel, "imagine", prompt="a goldfish", size="square", model="tiny-biggan")
    assert refused.ephemeral and "tiny-biggan makes 32x32 images only, not 512x512" in refused.response.content
    await simcord_env.advance_time(10)
    await alice.slash(channel, "imagine", prompt="a goldfish", model="tiny-biggan", seed=2)
    job = await simcord_env.bot.store.get_job(1)
    spec = json.loads(job.spec_json)
    assert job.state == JobState.DONE and spec["generator"] == "biggan" and spec["lr"] == 0.07
    [thread] = channel.threads
    final = _final(thread, 1)
    assert await _png_size(final) == (32, 32)
    answer = await bob.click(final, label="Upscale")
    assert answer.ephemeral and "cannot be upscaled" in answer.response.content
    assert await simcord_env.bot.store.get_job(2) is None


async def test_upscale_then_continue_and_after_a_restart(simcord_env, settings):
    from bot.client import ImagineBot

    guild, channel, alice, bob = _world(simcord_env)
    store = simcord_env.bot.store
    await alice.slash(channel, "imagine", prompt="a red fox", size="square-small", seed=4)
    [thread] = channel.threads
    final = _final(thread, 1)

    await bob.click(final, label="Upscale")
    upscaled = await store.get_job(2)
    assert upscaled.state == JobState.DONE and upscaled.kind == "upscale" and upscaled.parent_id == 1
    assert upscaled.thread_id == thread.id and upscaled.steps_done == 13  # 10, then 3 at twice the size
    bigger = _final(thread, 2)
    assert await _png_size(bigger) == (128, 128)
    recipe = await bob.click(bigger, label="Recipe")
    assert '"upscales": [\n  3\n ]' in recipe.response.content or '"upscales": [3]' in recipe.response.content

    # Continue of an upscaled image: the upscale stays at step 10, the last stage grows
    await alice.click(bigger, label="Continue")
    continued = await store.get_job(3)
    spec = json.loads(continued.spec_json)
    assert continued.state == JobState.DONE and spec["steps"] == 10 and spec["upscales"] == [8]
    assert await _png_size(_final(thread, 3)) == (128, 128)

    # a button posted before a restart still upscales (state in the custom_id and the database)
    await simcord_env.restart_bot(ImagineBot(settings))
    await simcord_env.advance_time(10)
    await alice.click(bigger, label="Upscale")
    again = await simcord_env.bot.store.get_job(4)
    assert again.state == JobState.DONE and again.kind == "upscale" and again.parent_id == 2
    assert json.loads(again.spec_json)["upscales"] == [3, 3]
    assert await _png_size(_final(thread, 4)) == (256, 256)


async def test_upscale_refusals_are_sentences(simcord_env):
    guild, channel, alice, bob = _world(simcord_env)
    store = simcord_env.bot.store
    await alice.slash(channel, "imagine", prompt="a red fox", size="square-small", seed=4)
    [thread] = channel.threads
    final = _final(thread, 1)
    await store.update_job(
        1, spec_json=json.dumps({**json.loads((await store.get_job(1)).spec_json), "upscales": [1, 1, 1]})
    )
    answer = await bob.click(final, label="Upscale")
    assert answer.ephemeral and "at most 3 times" in answer.response.content
    await store.update_job(
        1, spec_json=json.dumps({**json.loads((await store.get_job(1)).spec_json), "upscales": []}), snapshot_path=None
    )
    answer = await bob.click(final, label="Upscale")
    assert answer.ephemeral and "no saved state to upscale from" in answer.response.content
    assert await store.get_job(2) is None


async def test_upscale_that_would_not_fit_in_memory_is_refused(simcord_env):
    from engine.memory import Budget, job_bytes

    guild, channel, alice, bob = _world(simcord_env)
    bot = simcord_env.bot
    await alice.slash(channel, "imagine", prompt="a red fox", size="square-small", seed=4)
    [thread] = channel.threads
    cutn = json.loads((await bot.store.get_job(1)).spec_json)["cutn"]
    bot.jobs.backend.budget = Budget(job_bytes(64, 64, cutn, False), where="this test's device")  # 64x64 only
    answer = await bob.click(_final(thread, 1), label="Upscale")
    assert answer.ephemeral and "A 128x128 image" in answer.response.content
    assert "Choose a smaller size" in answer.response.content and await bot.store.get_job(2) is None
