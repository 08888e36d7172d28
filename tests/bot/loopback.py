"""A small Discord API stand-in on loopback: gateway websocket (HELLO, heartbeat, READY, GUILD_CREATE,
INTERACTION_CREATE) and the REST routes the bot uses, so discord.py's real `login()` and `connect()` run over
real sockets. Everything it receives is recorded for the test to inspect."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

APP_ID = 900_000_000_000_000_001
BOT_ID = APP_ID
GUILD_ID = 900_000_000_000_000_010
CHANNEL_ID = 900_000_000_000_000_020
USER_ID = 900_000_000_000_000_030
ALL_PERMISSIONS = str((1 << 50) - 1)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _user(uid: int, name: str, bot: bool = False) -> dict[str, Any]:
    return {"id": str(uid), "username": name, "discriminator": "0", "avatar": None, "global_name": name, "bot": bot}


@dataclass
class Request:
    method: str
    path: str
    json: Any = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    status: int = 200


class LoopbackDiscord:
    """Start with `await stand_in.start()`; point discord.py at `stand_in.api_base`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.commands: list[dict[str, Any]] = []
        self.rate_limit_once: set[str] = set()  # "METHOD /path regex": answer the first match with a 429
        # the final image's upload (a file named imagine-<job>.<ext>) can be held `upload_delay` s to widen the
        # window in which a test stops the bot. With probability `made_first` the message is made at once (Discord
        # has it, the reply is lost with the bot); otherwise only at the end, if the bot is still there to hear it
        self.upload_delay = 0.0
        self.made_first = 1.0
        self.rng = random.Random(0)
        self.uploads_started: list[int] = []  # job ids, in the order their final uploads arrived
        self.upload_arrived = asyncio.Event()
        self._ids = itertools.count(900_000_000_000_100_000)
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self.identified = asyncio.Event()
        self.heartbeats = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

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
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- gateway --------------------------------------------------------------------------------------------
    async def _send(self, op: int, d: Any, t: str | None = None) -> None:
        payload: dict[str, Any] = {"op": op, "d": d}
        if op == 0:
            self._seq += 1
            payload.update(s=self._seq, t=t)
        await self._ws.send_str(json.dumps(payload))

    async def _gateway_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await self._send(10, {"heartbeat_interval": 41250})
        async for msg in ws:
            data = json.loads(msg.data)
            if data["op"] == 1:
                self.heartbeats += 1
                await ws.send_str(json.dumps({"op": 11}))
            elif data["op"] == 2:
                await self._ready()
                self.identified.set()
        return ws

    async def _ready(self) -> None:
        await self._send(
            0,
            {
                "v": 10,
                "user": _user(BOT_ID, "imagine", bot=True),
                "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                "session_id": "loopback-session",
                "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                "application": {"id": str(APP_ID), "flags": 0},
            },
            "READY",
        )
        everyone = {
            "id": str(GUILD_ID),
            "name": "@everyone",
            "permissions": ALL_PERMISSIONS,
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        channel = {
            "id": str(CHANNEL_ID),
            "type": 0,
            "name": "art",
            "position": 0,
            "guild_id": str(GUILD_ID),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "rate_limit_per_user": 0,
        }
        await self._send(
            0,
            {
                "id": str(GUILD_ID),
                "name": "Loopback",
                "owner_id": str(USER_ID),
                "roles": [everyone],
                "channels": [channel],
                "threads": [],
                "emojis": [],
                "stickers": [],
                "features": [],
                "members": [
                    {
                        "user": _user(BOT_ID, "imagine", True),
                        "roles": [],
                        "joined_at": _now(),
                        "deaf": False,
                        "mute": False,
                        "flags": 0,
                    }
                ],
                "member_count": 2,
                "large": False,
                "unavailable": False,
                "voice_states": [],
                "presences": [],
                "premium_tier": 0,
                "system_channel_flags": 0,
                "verification_level": 0,
                "default_message_notifications": 0,
                "explicit_content_filter": 0,
                "mfa_level": 0,
                "nsfw_level": 0,
                "preferred_locale": "en-US",
                "joined_at": _now(),
            },
            "GUILD_CREATE",
        )

    async def slash(self, name: str, options: dict[str, Any]) -> str:
        """Dispatch an INTERACTION_CREATE for `/name options`; returns the interaction token."""
        command = next(c for c in self.commands if c["name"] == name)
        types = {o["name"]: o["type"] for o in command.get("options", [])}
        token = f"token-{next(self._ids)}"
        member = {
            "user": _user(USER_ID, "alice"),
            "roles": [],
            "joined_at": _now(),
            "permissions": ALL_PERMISSIONS,
            "deaf": False,
            "mute": False,
            "flags": 0,
        }
        await self._send(
            0,
            {
                "id": str(next(self._ids)),
                "application_id": str(APP_ID),
                "type": 2,
                "token": token,
                "version": 1,
                "guild_id": str(GUILD_ID),
                "channel_id": str(CHANNEL_ID),
                "channel": {
                    "id": str(CHANNEL_ID),
                    "type": 0,
                    "name": "art",
                    "guild_id": str(GUILD_ID),
                    "permissions": ALL_PERMISSIONS,
                },
                "member": member,
                "app_permissions": ALL_PERMISSIONS,
                "locale": "en-US",
                "guild_locale": "en-US",
                "entitlements": [],
                "authorizing_integration_owners": {"0": str(GUILD_ID)},
                "context": 0,
                "attachment_size_limit": 10 * 1024 * 1024,
                "data": {
                    "id": command["id"],
                    "name": name,
                    "type": 1,
                    "options": [{"name": k, "type": types[k], "value": v} for k, v in options.items()],
                },
            },
            "INTERACTION_CREATE",
        )
        return token

    # -- REST -----------------------------------------------------------------------------------------------
    def _message(self, channel_id: int, body: dict[str, Any], files: list[tuple[str, bytes]]) -> dict[str, Any]:
        mid = next(self._ids)
        message = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": _user(BOT_ID, "imagine", True),
            "content": body.get("content") or "",
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "attachments": self._attachments(files),
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "type": 0,
            "flags": body.get("flags", 0) or 0,
        }
        self.messages[mid] = message
        return message

    def _attachments(self, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        return [
            {
                "id": str(next(self._ids)),
                "filename": name,
                "size": len(data),
                "url": f"http://127.0.0.1/{name}",
                "proxy_url": f"http://127.0.0.1/{name}",
                "content_type": "image/png",
            }
            for name, data in files
        ]

    async def _read(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        if request.content_type.startswith("multipart/"):
            payload, files = None, []
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()
                if part.name == "payload_json":
                    payload = json.loads(data)
                else:
                    files.append((part.filename, bytes(data)))
            return payload, files
        if request.can_read_body:
            text = await request.text()
            return (json.loads(text) if text else None), []
        return None, []

    def _reply(self, data: Any, status: int = 200) -> web.Response:
        if data is None:
            return web.Response(status=204)
        # discord.py only parses JSON when the Content-Type is exactly application/json (no charset)
        return web.Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"})

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body, files = await self._read(request)
        record = Request(request.method, path, body, files)
        self.requests.append(record)
        key = f"{request.method} {path}"
        for pattern in list(self.rate_limit_once):
            if re.fullmatch(pattern, key):
                self.rate_limit_once.discard(pattern)
                record.status = 429
                body = {"message": "You are being rate limited.", "retry_after": 0.3, "global": False}
                return web.Response(
                    status=429,
                    body=json.dumps(body).encode(),
                    # without Via, discord.py takes a 429 for a Cloudflare ban
                    headers={
                        "Content-Type": "application/json",
                        "Retry-After": "0.3",
                        "X-RateLimit-Scope": "user",
                        "Via": "1.1 google",
                    },
                )
        upload = re.fullmatch(r"/channels/(\d+)/messages", path) if request.method == "POST" and files else None
        final = upload and re.fullmatch(r"imagine-(\d+)\.(png|webp)", files[0][0] or "")
        if final:
            return await self._held_upload(request, int(upload[1]), body or {}, files, int(final[1]))
        if request.method == "GET" and (g := re.fullmatch(r"/channels/(\d+)/messages", path)):
            limit = int(request.query.get("limit", 50))
            before = int(request.query.get("before", 1 << 63))
            return self._reply([m for m in self.history(int(g[1])) if int(m["id"]) < before][:limit])
        return self._reply(*self._route(request.method, path, body or {}, files))

    async def _held_upload(self, request, channel_id: int, body: dict, files, job_id: int) -> web.Response:
        first = self.rng.random() < self.made_first
        message = self._message(channel_id, body, files) if first else None
        self.uploads_started.append(job_id)
        self.upload_arrived.set()
        await asyncio.sleep(self.upload_delay)
        if message is None:
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the bot went away before the upload completed: no message
            message = self._message(channel_id, body, files)
        return self._reply(message)

    def history(self, channel_id: int) -> list[dict[str, Any]]:
        """The messages of a channel (or thread), newest first."""
        found = [m for k, m in self.messages.items() if isinstance(k, int) and m["channel_id"] == str(channel_id)]
        return sorted(found, key=lambda m: int(m["id"]), reverse=True)

    def _route(self, method: str, path: str, body: dict, files) -> tuple[Any, int] | tuple[Any]:
        m = re.fullmatch
        if method == "GET" and path == "/users/@me":
            return (_user(BOT_ID, "imagine", True),)
        if method == "GET" and path == "/oauth2/applications/@me":
            return (
                {
                    "id": str(APP_ID),
                    "name": "imagine",
                    "icon": None,
                    "description": "",
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": _user(USER_ID, "alice"),
                    "verify_key": "0" * 64,
                    "flags": 0,
                    "team": None,
                    "summary": "",
                },
            )
        if method == "GET" and path == "/gateway/bot":
            return (
                {
                    "url": f"ws://127.0.0.1:{self.port}/gateway",
                    "shards": 1,
                    "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1},
                },
            )
        if method == "PUT" and m(rf"/applications/{APP_ID}/commands", path):
            # Discord answers every command with a description and a type; a context menu's description is "".
            self.commands = [
                {
                    "description": "",
                    "type": 1,
                    **c,
                    "id": str(next(self._ids)),
                    "application_id": str(APP_ID),
                    "version": "1",
                }
                for c in body
            ]
            return (self.commands,)
        if method == "POST" and (g := m(r"/interactions/(\d+)/([^/]+)/callback", path)):
            data = body.get("data") or {}
            message = self._message(CHANNEL_ID, data, files)
            self.messages[("original", g[2])] = message
            return (
                {
                    "interaction": {
                        "id": g[1],
                        "type": 2,
                        "response_message_id": message["id"],
                        "response_message_loading": False,
                        "response_message_ephemeral": bool((data.get("flags") or 0) & 64),
                    },
                    "resource": {"type": body.get("type", 4), "message": message},
                },
            )
        if method == "GET" and (g := m(rf"/webhooks/{APP_ID}/([^/]+)/messages/@original", path)):
            return (self.messages[("original", g[1])],)
        if method == "POST" and (g := m(r"/channels/(\d+)/messages/(\d+)/threads", path)):
            tid = int(g[2])
            return (
                {
                    "id": str(tid),
                    "type": 11,
                    "name": body.get("name", "t"),
                    "guild_id": str(GUILD_ID),
                    "parent_id": g[1],
                    "owner_id": str(BOT_ID),
                    "thread_metadata": {
                        "archived": False,
                        "auto_archive_duration": 1440,
                        "archive_timestamp": _now(),
                        "locked": False,
                    },
                    "message_count": 0,
                    "member_count": 1,
                    "rate_limit_per_user": 0,
                },
            )
        if method == "POST" and (g := m(r"/channels/(\d+)/messages", path)):
            return (self._message(int(g[1]), body, files),)
        if method == "PATCH" and (g := m(r"/channels/(\d+)/messages/(\d+)", path)):
            message = self.messages.get(int(g[2])) or self._message(int(g[1]), {}, [])
            message.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
            if files or "attachments" in body:
                message["attachments"] = self._attachments(files)
            message["edited_timestamp"] = _now()
            return (message,)
        if method == "PUT" and m(r"/channels/\d+/messages/\d+/reactions/[^/]+/@me", path):
            return (None,)
        if method == "GET" and (g := m(r"/channels/(\d+)", path)):
            return (
                {
                    "id": g[1],
                    "type": 11,
                    "name": "thread",
                    "guild_id": str(GUILD_ID),
                    "parent_id": str(CHANNEL_ID),
                    "owner_id": str(BOT_ID),
                    "message_count": 0,
                    "member_count": 1,
                    "rate_limit_per_user": 0,
                    "thread_metadata": {
                        "archived": False,
                        "auto_archive_duration": 1440,
                        "archive_timestamp": _now(),
                        "locked": False,
                    },
                },
            )
        return ({"message": f"loopback: no route for {method} {path}", "code": 0}, 404)
