"""/describe through simcord, on the tiny CLIP in the bot's own process: a prompt, and a button that queues it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from storage import JobState

pytestmark = pytest.mark.simcord(settle_timeout=180)


@pytest.fixture
def simcord_bot(settings):
    from bot.client import ImagineBot

    return ImagineBot(settings)


def _picture() -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (96, 64), (30, 60, 200))
    image.paste((240, 200, 40), (20, 10, 60, 40))
    image.save(out, format="PNG")
    return out.getvalue()


async def test_describe_gives_a_prompt_and_its_button_queues_it(simcord_env, settings):
    guild = simcord_env.create_guild()
    channel = guild.create_text_channel("art")
    alice = guild.add_member(simcord_env.create_user("alice"))
    result = await alice.slash(channel, "describe", image=("holiday.png", _picture()))
    answer = (result.followups or [result.response])[0]
    embed = answer.embeds[0]
    prompt = embed.description.strip("`")
    assert embed.title == "What CLIP sees" and 0 < len(prompt) <= 300
    assert {f.name for f in embed.fields} == {"Subjects", "Mediums", "Artists", "Movements", "Flavors"}
    assert list((settings.data_dir / "describe").glob("describe-tiny-clip-*.pt"))  # the embeddings were cached
    queued = await alice.click(answer, label="Imagine this")
    assert not queued.ephemeral, queued.response.content
    job = await simcord_env.bot.jobs.get(1)
    assert job.spec.prompt == prompt and job.state == JobState.DONE
    # the bot's own result can be described too, with the message command
    [thread] = channel.threads
    final = next(m for m in thread.history() if m.attachments and m.attachments[0].filename == "imagine-1.png")
    await simcord_env.advance_time(31)  # past /describe's cooldown
    again = await alice.context_menu(thread, "Describe image", final)
    assert (again.followups or [again.response])[0].embeds[0].title == "What CLIP sees"
