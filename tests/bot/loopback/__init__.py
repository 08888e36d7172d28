"""A Discord API stand-in on loopback that the real discord.py connects to: the gateway websocket and the REST
routes the bot uses, with Discord's rate limits, headers and interaction deadline, and any number of simulated
members who run commands, click, submit modals and react. Everything it receives is recorded for the test.

    stand_in = LoopbackDiscord(members=20)
    await stand_in.start()                      # then point discord.py at stand_in.api_base / .gateway_url
    token = await stand_in.slash("imagine", {"prompt": "a lighthouse"}, user=3)
    stand_in.interactions[token].latency        # seconds to the bot's first answer

The parts: `_gateway` (HELLO, heartbeats, IDENTIFY, RESUME, dispatches), `_rest` (routes, limits applied, files,
users, commands), `_channels` (messages, reactions, threads), `_interactions` (what members do, the callback
deadline, the token's webhook routes), `_limits` (the rate limits, with their sources), `_payloads`
(Discord's objects)."""

from __future__ import annotations

import random

from aiohttp import web

from tests.bot.loopback._channels import FINAL_IMAGE, Channels
from tests.bot.loopback._gateway import Gateway
from tests.bot.loopback._interactions import DEADLINE, InteractionRecord, Interactions
from tests.bot.loopback._limits import ROUTE_LIMITS, Limit
from tests.bot.loopback._payloads import (
    ALL_PERMISSIONS,
    APP_ID,
    BOT_ID,
    CHANNEL_ID,
    GUILD_ID,
    USER_ID,
    Snowflakes,
    member_name,
)
from tests.bot.loopback._rest import Request, Rest

__all__ = [
    "ALL_PERMISSIONS",
    "APP_ID",
    "BOT_ID",
    "CHANNEL_ID",
    "DEADLINE",
    "FINAL_IMAGE",
    "GUILD_ID",
    "ROUTE_LIMITS",
    "USER_ID",
    "InteractionRecord",
    "Limit",
    "LoopbackDiscord",
    "Request",
    "member_name",
]


class LoopbackDiscord(Gateway, Rest, Channels, Interactions):
    """Start with `await stand_in.start()`; point discord.py at `stand_in.api_base` and `stand_in.gateway_url`.

    `members`: the simulated members (member i: user id USER_ID + i, named member-i; member 0 is "alice", who owns
    the guild). `heartbeat_interval`: seconds, sent in HELLO. `enforce_limits`: Discord's rate limits and their
    headers (False: no buckets and no headers, the old behaviour)."""

    def __init__(self, members: int = 1, heartbeat_interval: float = 41.25, enforce_limits: bool = True) -> None:
        if members < 1:
            raise ValueError("the guild needs at least one member")
        self.members = members
        self.rng = random.Random(0)
        self._ids = Snowflakes()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._setup_gateway(heartbeat_interval)
        self._setup_rest(enforce_limits)
        self._setup_channels()
        self._setup_interactions()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway_ws)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{folder}/{aid:\\d+}/{filename}", self._attachment)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self._close_gateway()
        if self._runner is not None:
            await self._runner.cleanup()
