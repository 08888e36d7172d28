"""The real transport: discord.py logs in and connects over sockets to a loopback Discord stand-in."""

from __future__ import annotations

import asyncio

import discord
import pytest
import yarl

from tests.bot.loopback import CHANNEL_ID, LoopbackDiscord


@pytest.fixture
async def stand_in(monkeypatch):
    server = LoopbackDiscord()
    await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url))
    yield server
    await server.stop()


async def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_login_connect_slash_command_with_upload_and_a_429(stand_in, settings, gated):
    from bot.client import ImagineBot

    bot = ImagineBot(settings, backend_factory=lambda s: gated)
    # the final image's message first meets a rate limit, which discord.py must ride out
    stand_in.rate_limit_once.add(r"POST /channels/\d+/messages")
    task = asyncio.create_task(bot.start("loopback-token"))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        assert stand_in.identified.is_set()
        assert {c["name"] for c in stand_in.commands} >= {"imagine", "queue", "history", "top"}
        assert bot.get_channel(CHANNEL_ID) is not None

        await stand_in.slash("imagine", {"prompt": "a loopback lighthouse", "size": "square-small", "seed": 5})

        def finished():
            return any(r.files and r.files[0][0] == "imagine-1.png" and r.status == 200 for r in stand_in.requests)

        await _wait_for(finished)
        calls = [(r.method, r.path.split("/")[1], r.status) for r in stand_in.requests]
        assert ("POST", "interactions", 200) in calls
        assert any(r.method == "POST" and r.path.endswith("/threads") for r in stand_in.requests)
        limited = [r for r in stand_in.requests if r.status == 429]
        assert len(limited) == 1
        retried = [r for r in stand_in.requests if r.method == limited[0].method and r.path == limited[0].path]
        assert len(retried) >= 2  # the same request again after Retry-After
        upload = next(r for r in stand_in.requests if r.files and r.files[0][0] == "imagine-1.png")
        assert upload.files[0][1].startswith(b"\x89PNG")
        assert upload.json["components"][0]["components"][0]["custom_id"] == f"imagine:reroll:1:{bot.store.install}"
        await _wait_for(lambda: any("/reactions/" in r.path for r in stand_in.requests))
        # the vote reactions share a bucket of 1 per 0.25 s with Discord's limits enforced: the second one waits
        deadline = asyncio.get_running_loop().time() + 30
        while (await bot.store.get_job(1)).state.value != "done":
            assert asyncio.get_running_loop().time() < deadline, (await bot.store.get_job(1)).state
            await asyncio.sleep(0.05)
    finally:
        await bot.close()
        await asyncio.wait_for(task, 30)
