"""The gateway websocket: HELLO with the configured heartbeat interval, heartbeats timed and acknowledged,
IDENTIFY answered with READY and GUILD_CREATE, RESUME answered with the missed dispatches and RESUMED, and every
dispatch numbered and kept for a resume.

Late heartbeats. discord.py sends the first heartbeat on HELLO and the next ones from its keep-alive thread: the
thread waits `interval` seconds (`threading.Event.wait`, accurate to milliseconds), then hands the send to the event
loop (`run_coroutine_threadsafe`) and blocks until it is done. So consecutive heartbeats arrive `interval` plus the
time the loop took to run the send: on a healthy loop a few milliseconds. A gap above `interval * 1.1 + 1 s` means
the loop was blocked for more than a tenth of the interval plus a second (about 5 s at Discord's 41.25 s), far
beyond scheduling noise on a loaded machine; that is what `late_heartbeats` counts."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from tests.bot.loopback._payloads import APP_ID, GUILD_ID, bot_user, guild

LATE_FACTOR, LATE_SLACK = 1.1, 1.0
REPLAY = 5000  # dispatches kept for a RESUME; an older sequence number gets INVALID_SESSION


class _Link:
    """One gateway connection, and the writer that sends its frames in order without making the sender wait (a bot
    slow to read holds up its own events, never the REST answers that announce them)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def send(self, text: str) -> None:
        self._queue.put_nowait(text)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def _write(self) -> None:
        while (text := await self._queue.get()) is not None:
            if self.ws.closed:
                return  # what was left is kept for a RESUME
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return


class Gateway:
    """The gateway half of the stand-in (a part of `LoopbackDiscord`)."""

    def _setup_gateway(self, heartbeat_interval: float) -> None:
        self.heartbeat_interval = heartbeat_interval  # seconds; HELLO carries it in milliseconds
        self.identified = asyncio.Event()
        self.heartbeats = 0
        self.heartbeat_times: list[float] = []  # time.monotonic() of each heartbeat's arrival
        self.late_heartbeats = 0
        self.identifies = 0
        self.resumes = 0
        self.invalid_sessions = 0
        self.connections = 0
        self.intents: int | None = None  # from the last IDENTIFY
        self.large_threshold = 50
        self._live: _Link | None = None  # the connection whose session is current
        self._links: set[_Link] = set()
        self._session: str | None = None
        self._seq = 0
        self._kept: deque[tuple[dict[str, Any], str]] = deque(maxlen=REPLAY)  # (payload, its JSON) for a RESUME

    @property
    def reconnects(self) -> int:
        """Gateway connections after the first (each a RESUME or a new IDENTIFY)."""
        return max(0, self.connections - 1)

    def dispatched(self) -> list[dict[str, Any]]:
        """The dispatches of the current session kept for a RESUME (the newest 5000), oldest first."""
        return [payload for payload, _ in self._kept]

    @property
    def late_threshold(self) -> float:
        """The gap between two heartbeats above which the second counts as late (see the module docstring)."""
        return self.heartbeat_interval * LATE_FACTOR + LATE_SLACK

    async def _gateway_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        link = _Link(ws)
        self.connections += 1
        self._links.add(link)
        link.send(json.dumps({"op": 10, "d": {"heartbeat_interval": round(self.heartbeat_interval * 1000)}}))
        last: float | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data["op"] == 1:
                    now = time.monotonic()
                    self.heartbeats += 1
                    self.heartbeat_times.append(now)
                    if last is not None and now - last > self.late_threshold:
                        self.late_heartbeats += 1
                    last = now
                    link.send(json.dumps({"op": 11}))
                elif data["op"] == 2:
                    self._identify(link, data["d"])
                elif data["op"] == 6:
                    self._resume(link, data["d"])
        finally:
            link.close()
            self._links.discard(link)
            if self._live is link:
                self._live = None
        return ws

    def _identify(self, link: _Link, d: dict[str, Any]) -> None:
        self.identifies += 1
        self.intents = d.get("intents")
        self.large_threshold = d.get("large_threshold", 50)
        self._session, self._seq = f"loopback-session-{self.identifies}", 0
        self._kept.clear()
        self._live = link
        ready = {
            "v": 10,
            "user": bot_user(),
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": self._session,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": 0},
        }
        self._emit("READY", ready)
        threads = [t for t in self.threads.values() if not t["thread_metadata"]["archived"]]
        self._emit("GUILD_CREATE", guild(self.members, self.large_threshold, threads))
        self.identified.set()

    def _resume(self, link: _Link, d: dict[str, Any]) -> None:
        seq = d.get("seq") or 0
        oldest = self._kept[0][0]["s"] if self._kept else self._seq + 1
        if self._session is None or d.get("session_id") != self._session or oldest > seq + 1:
            self.invalid_sessions += 1
            link.send(json.dumps({"op": 9, "d": False}))
            return
        self.resumes += 1
        for payload, text in self._kept:
            if payload["s"] > seq:
                link.send(text)
        self._live = link
        self._emit("RESUMED", {})

    def _emit(self, event: str, d: Any) -> None:
        """Number a dispatch (op 0), keep it for a RESUME and queue it on the live connection, if there is one."""
        self._seq += 1
        payload = {"op": 0, "d": d, "s": self._seq, "t": event}
        text = json.dumps(payload)  # the objects as they are now: later edits are later events
        self._kept.append((payload, text))
        if self._live is not None:
            self._live.send(text)

    async def _dispatch(self, event: str, d: Any) -> None:
        """Send a dispatch to the bot (queued on its connection: this never waits for the bot to read)."""
        self._emit(event, d)

    async def ask_reconnect(self) -> None:
        """Send RECONNECT (op 7), as Discord does before it moves a session: discord.py reconnects and RESUMEs."""
        if self._live is not None:
            self._live.send(json.dumps({"op": 7, "d": None}))

    async def drop_connection(self, code: int = 4000) -> None:
        """Close the live connection from Discord's side (4000: unknown error, which a client may resume after)."""
        if self._live is not None:
            await self._live.ws.close(code=code)

    async def _close_gateway(self) -> None:
        for link in list(self._links):
            await link.ws.close()
            link.close()
