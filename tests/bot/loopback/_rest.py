"""The REST half: routes matched to their templates, the rate limits applied (see `_limits`), every request
recorded, the files the stand-in serves, and the routes for users, the application and its commands (channels and
messages are `_channels`, interactions `_interactions`)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from tests.bot.loopback import _payloads as p
from tests.bot.loopback._limits import RateLimits, Verdict

UPLOAD_LIMIT = 10 * 1024 * 1024  # per file, without boosts (Discord's default since January 2025)
MAJOR_PARAMETERS = ("channel_id", "guild_id", "webhook_id", "webhook_token", "interaction_id", "interaction_token")

ROUTES: list[tuple[str, str, str]] = [  # method, template, handler; the first match wins
    ("GET", "/users/@me", "_get_me"),
    ("POST", "/users/@me/channels", "_open_dm"),
    ("GET", "/users/{user_id}", "_get_user"),
    ("GET", "/oauth2/applications/@me", "_get_application"),
    ("GET", "/gateway/bot", "_get_gateway"),
    ("PUT", "/applications/{application_id}/commands", "_put_commands"),
    ("GET", "/applications/{application_id}/commands", "_get_commands"),
    ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", "_put_commands"),
    ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", "_get_commands"),
    ("GET", "/guilds/{guild_id}/members/{user_id}", "_get_member"),
    ("POST", "/interactions/{interaction_id}/{interaction_token}/callback", "_callback"),
    ("POST", "/webhooks/{webhook_id}/{webhook_token}", "_followup"),
    ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "_webhook_message"),
    ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "_webhook_message"),
    ("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "_webhook_message"),
    ("GET", "/channels/{channel_id}", "_get_channel"),
    ("PATCH", "/channels/{channel_id}", "_edit_channel"),
    ("GET", "/channels/{channel_id}/messages", "_history"),
    ("POST", "/channels/{channel_id}/messages", "_create_message"),
    ("GET", "/channels/{channel_id}/messages/{message_id}", "_get_message"),
    ("PATCH", "/channels/{channel_id}/messages/{message_id}", "_edit_message"),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}", "_delete_message"),
    ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", "_react"),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", "_react"),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}", "_react"),
    ("POST", "/channels/{channel_id}/messages/{message_id}/threads", "_create_thread"),
    ("POST", "/channels/{channel_id}/threads", "_create_thread"),
]
_COMPILED = [
    (method, template, re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))), handler)
    for method, template, handler in ROUTES
]


@dataclass
class Request:
    """One REST request as the stand-in saw it; `route` is its template ("PATCH /channels/{channel_id}/...")."""

    method: str
    path: str
    json: Any = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    status: int = 200
    at: float = 0.0  # time.monotonic() of its arrival
    route: str = ""
    scope: str | None = None  # on a 429: "user" or "global"


@dataclass
class Call:
    """What a route handler gets."""

    request: web.Request
    params: dict[str, str]
    body: Any
    files: list[tuple[str, bytes]]
    record: Request
    arrived: float


def error(status: int, code: int, message: str) -> tuple[dict[str, Any], int]:
    return {"message": message, "code": code}, status


UNKNOWN_CHANNEL = error(404, 10003, "Unknown Channel")
UNKNOWN_MESSAGE = error(404, 10008, "Unknown Message")


class Rest:
    """The REST half of the stand-in (a part of `LoopbackDiscord`)."""

    def _setup_rest(self, enforce_limits: bool) -> None:
        self.enforce_limits = enforce_limits
        self.limits = RateLimits()
        self.requests: list[Request] = []
        self.rate_limited: Counter[str] = Counter()  # 429s by route template, "METHOD /path/{param}"
        self.invalid_requests = 0  # 401, 403 and 429 answers: Discord bans an IP after 10,000 in 10 minutes
        self.rate_limit_once: set[str] = set()  # "METHOD /path regex": answer the first match with a 429
        self.files: dict[int, tuple[str, bytes]] = {}  # attachment id -> (filename, bytes), served over HTTP
        self.downloads: list[int] = []  # attachment ids, in the order they were fetched
        self.attachment_delay = 0.0  # seconds each download takes: a slow CDN, or a large file on a slow link
        self.upload_limit = UPLOAD_LIMIT
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: list[dict[str, Any]] = []

    # -- the dispatcher ----------------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        path = "/" + request.match_info["tail"]
        method = request.method
        template, handler, params = path, None, {}
        for m, t, pattern, h in _COMPILED:
            if m == method and (g := pattern.fullmatch(path)):
                template, handler, params = t, h, {k: unquote(v) for k, v in g.groupdict().items()}
                break
        body, files = await self._read(request)
        record = Request(method, path, body, files, at=arrived, route=f"{method} {template}")
        self.requests.append(record)
        for pattern in list(self.rate_limit_once):
            if re.fullmatch(pattern, f"{method} {path}"):
                self.rate_limit_once.discard(pattern)
                return self._limited(record, Verdict({}, 0.3))
        headers: dict[str, str] = {}
        if self.enforce_limits:
            auth = request.headers.get("Authorization", "")
            token = auth[4:] if auth.startswith("Bot ") else None
            major = "+".join(params[k] for k in MAJOR_PARAMETERS if k in params)
            renames = record.route == "PATCH /channels/{channel_id}" and bool({"name", "topic"} & set(body or {}))
            verdict = self.limits.admit(record.route, major, token, renames)
            if verdict.refused:
                return self._limited(record, verdict)
            headers = verdict.headers
        if handler is None:
            result: Any = error(404, 0, f"loopback: no route for {method} {path}")
        else:
            result = await getattr(self, handler)(Call(request, params, body, files, record, arrived))
        if isinstance(result, web.StreamResponse):
            response = result
            response.headers.update(headers)
        else:
            response = self._reply(*result, headers=headers)
        record.status = response.status
        if response.status in (401, 403):
            self.invalid_requests += 1
        return response

    def _limited(self, record: Request, verdict: Verdict) -> web.Response:
        retry_after = verdict.retry_after
        record.status, record.scope = 429, "global" if verdict.is_global else "user"
        self.rate_limited[record.route] += 1
        self.invalid_requests += 1
        headers = {
            **verdict.headers,
            "Content-Type": "application/json",
            "Retry-After": str(math.ceil(retry_after)),
            "X-RateLimit-Scope": record.scope,
            "Via": "1.1 google",  # without Via, discord.py takes a 429 for a Cloudflare ban
        }
        if verdict.is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": verdict.is_global}
        return web.Response(status=429, body=json.dumps(body).encode(), headers=headers)

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

    def _reply(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        if data is None:
            return web.Response(status=204, headers=headers)
        # discord.py only parses JSON when the Content-Type is exactly application/json (no charset)
        headers = {**(headers or {}), "Content-Type": "application/json"}
        return web.Response(status=status, body=json.dumps(data).encode(), headers=headers)

    # -- attachments ---------------------------------------------------------------------------------------------
    def _serve(self, filename: str, data: bytes, folder: str, ephemeral: bool = False) -> dict[str, Any]:
        """Keep a file and describe it as an attachment whose URL this stand-in serves."""
        aid = next(self._ids)
        self.files[aid] = (filename, data)
        url = f"http://127.0.0.1:{self.port}/attachments/{folder}/{aid}/{filename}"
        return p.attachment(aid, url, filename, data, ephemeral)

    def _forget(self, attachments: list[dict[str, Any]]) -> None:
        """Drop the bytes of attachments no message shows any more (a long run replaces thousands of previews)."""
        for a in attachments:
            self.files.pop(int(a["id"]), None)

    async def _attachment(self, request: web.Request) -> web.Response:
        aid = int(request.match_info["aid"])
        if aid not in self.files or self.files[aid][0] != request.match_info["filename"]:
            return web.Response(status=404, text="404: Not Found")
        self.downloads.append(aid)
        filename, data = self.files[aid]
        await asyncio.sleep(self.attachment_delay)
        return web.Response(body=data, content_type=p.attachment(aid, "", filename, data)["content_type"])

    def _too_large(self, files: list[tuple[str, bytes]]) -> tuple[dict[str, Any], int] | None:
        if any(len(data) > self.upload_limit for _, data in files):
            return error(413, 40005, "Request entity too large")
        return None

    # -- users, the application, commands ------------------------------------------------------------------------
    def _member_index(self, user_id: str) -> int | None:
        index = int(user_id) - p.USER_ID if user_id.isdigit() else -1
        return index if 0 <= index < self.members else None

    async def _get_me(self, call: Call):
        return (p.bot_user(),)

    async def _get_user(self, call: Call):
        if call.params["user_id"] == str(p.BOT_ID):
            return (p.bot_user(),)
        index = self._member_index(call.params["user_id"])
        return (p.member_user(index),) if index is not None else error(404, 10013, "Unknown User")

    async def _get_member(self, call: Call):
        index = self._member_index(call.params["user_id"])
        return (p.member(index),) if index is not None else error(404, 10007, "Unknown Member")

    async def _open_dm(self, call: Call):
        index = self._member_index(str((call.body or {}).get("recipient_id", "")))
        return (p.dm_channel(index),) if index is not None else error(404, 10013, "Unknown User")

    async def _get_application(self, call: Call):
        application = {
            "id": str(p.APP_ID),
            "name": "imagine",
            "icon": None,
            "description": "",
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": p.member_user(0),
            "verify_key": "0" * 64,
            "flags": 0,
            "team": None,
            "summary": "",
        }
        return (application,)

    async def _get_gateway(self, call: Call):
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return ({"url": self.gateway_url, "shards": 1, "session_start_limit": limit},)

    async def _put_commands(self, call: Call):
        # Discord answers every command with a description and a type; a context menu's description is "".
        extra = {"guild_id": call.params["guild_id"]} if "guild_id" in call.params else {}
        made = [
            {"description": "", "type": 1, **c, **extra, "id": str(next(self._ids)), "application_id": str(p.APP_ID)}
            for c in call.body or []
        ]
        for command in made:
            command["version"] = "1"
        if extra:
            self.guild_commands = made
        else:
            self.commands = made
        return (made,)

    async def _get_commands(self, call: Call):
        return (self.guild_commands if "guild_id" in call.params else self.commands,)
