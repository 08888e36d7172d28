"""Channels, messages, reactions and threads: the bot-token routes a bot posts and edits through, the gateway
events Discord sends for them, and the ways to look at what the bot posted."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from tests.bot.loopback import _payloads as p
from tests.bot.loopback._rest import UNKNOWN_CHANNEL, UNKNOWN_MESSAGE, Call, error

FINAL_IMAGE = r"imagine-(\d+)\.(png|webp)"  # the name of a job's final image
MAX_REACTIONS = 20  # distinct reactions per message


class Channels:
    """The channels half of the stand-in (a part of `LoopbackDiscord`)."""

    def _setup_channels(self) -> None:
        self.messages: dict[Any, dict[str, Any]] = {}  # id -> message (and ("original", token) -> message)
        self.deleted: dict[int, dict[str, Any]] = {}
        self.threads: dict[int, dict[str, Any]] = {}
        self.closed_dms: set[int] = set()  # member indices whose DMs refuse the bot (50007)
        self.max_active_threads = 1000  # Discord's cap per server (160006)
        self._reactors: dict[int, dict[str, list[int]]] = {}  # message -> emoji -> user ids, in order
        # the final image's upload (a file named imagine-<job>.<ext>) can be held `upload_delay` s to widen the
        # window in which a test stops the bot. With probability `made_first` the message is made at once (Discord
        # has it, the reply is lost with the bot); otherwise only at the end, if the bot is still there to hear it
        self.upload_delay = 0.0
        self.made_first = 1.0
        self.uploads_started: list[int] = []  # job ids, in the order their final uploads arrived
        self.upload_arrived = asyncio.Event()

    # -- messages --------------------------------------------------------------------------------------------
    def _channel_kind(self, channel_id: int) -> str | None:
        if channel_id == p.CHANNEL_ID:
            return "text"
        if channel_id in self.threads:
            return "thread"
        if 0 <= channel_id - p.DM_BASE < self.members:
            return "dm"
        return None

    def _new_message(
        self, channel_id: int, body: dict[str, Any], files: list[tuple[str, bytes]], webhook: bool = False
    ) -> dict[str, Any]:
        attachments = [self._serve(name, data, str(channel_id)) for name, data in files]
        message = p.message(next(self._ids), channel_id, body, attachments)
        if webhook:
            message["webhook_id"] = message["application_id"] = str(p.APP_ID)
        self.messages[int(message["id"])] = message
        return message

    def _visible(self, channel_id: int, message_id: int) -> dict[str, Any] | None:
        """A message the bot token can reach: in that channel, and not ephemeral."""
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != str(channel_id) or message["flags"] & p.EPHEMERAL:
            return None
        return message

    async def _announce(self, event: str, message: dict[str, Any]) -> None:
        """MESSAGE_CREATE / MESSAGE_UPDATE to the gateway, as Discord sends them for the bot's own messages."""
        if message["flags"] & p.EPHEMERAL:
            return
        if self._channel_kind(int(message["channel_id"])) == "dm":
            await self._dispatch(event, message)
        else:
            await self._dispatch(event, {**message, "guild_id": str(p.GUILD_ID), "member": p.member(None, False)})

    def _edit(self, message: dict[str, Any], body: dict[str, Any], files: list[tuple[str, bytes]]) -> None:
        """Apply a message edit: `attachments` in the body lists the attachments kept (by id) and the new files."""
        message.update({k: body[k] for k in ("content", "embeds", "components") if k in body and body[k] is not None})
        if "flags" in body and body["flags"] is not None:
            message["flags"] = (message["flags"] & (p.EPHEMERAL | p.LOADING)) | body["flags"]
        new = [self._serve(name, data, message["channel_id"]) for name, data in files]
        if "attachments" in body:
            kept = {str(a.get("id")) for a in body["attachments"] or []}
            self._forget([a for a in message["attachments"] if a["id"] not in kept])
            message["attachments"] = [a for a in message["attachments"] if a["id"] in kept] + new
        else:
            message["attachments"] += new
        message["edited_timestamp"] = p.now_iso()

    def history(self, channel_id: int) -> list[dict[str, Any]]:
        """The messages of a channel (or thread), newest first."""
        found = [m for k, m in self.messages.items() if isinstance(k, int) and m["channel_id"] == str(channel_id)]
        return sorted(found, key=lambda m: int(m["id"]), reverse=True)

    def custom_ids(self, message_id: int) -> list[str]:
        """Every component custom_id of a message, rows flattened."""
        components = self.messages[message_id].get("components") or []
        return [c["custom_id"] for c in p.walk_components(components) if "custom_id" in c]

    def messages_with_files(self, pattern: str = FINAL_IMAGE) -> list[dict[str, Any]]:
        """The messages with an attachment whose name (without SPOILER_) matches `pattern`, oldest first; by
        default the jobs' final images."""
        found = [
            m
            for k, m in self.messages.items()
            if isinstance(k, int)
            and any(re.fullmatch(pattern, a["filename"].removeprefix("SPOILER_")) for a in m["attachments"])
        ]
        return sorted(found, key=lambda m: int(m["id"]))

    def final_images(self) -> dict[int, list[int]]:
        """Job id -> the ids of the messages that carry its final image (more than one: a duplicate post)."""
        posts: dict[int, list[int]] = {}
        for message in self.messages_with_files():
            for a in message["attachments"]:
                if g := re.fullmatch(FINAL_IMAGE, a["filename"].removeprefix("SPOILER_")):
                    posts.setdefault(int(g[1]), []).append(int(message["id"]))
        return posts

    async def _history(self, call: Call):
        channel_id = int(call.params["channel_id"])
        if self._channel_kind(channel_id) is None:
            return UNKNOWN_CHANNEL
        query = call.request.query
        limit = max(1, min(100, int(query.get("limit", 50))))
        found = [m for m in self.history(channel_id) if not m["flags"] & p.EPHEMERAL]
        if "after" in query:  # the oldest `limit` after it, answered newest first as Discord does
            after = [m for m in reversed(found) if int(m["id"]) > int(query["after"])][:limit]
            return (list(reversed(after)),)
        before = int(query.get("before", 1 << 63))
        return ([m for m in found if int(m["id"]) < before][:limit],)

    async def _create_message(self, call: Call):
        channel_id, body = int(call.params["channel_id"]), call.body or {}
        kind = self._channel_kind(channel_id)
        if kind is None:
            return UNKNOWN_CHANNEL
        if kind == "thread" and self.threads[channel_id]["thread_metadata"]["archived"]:
            return error(400, 50083, "Thread is archived")
        if kind == "dm" and channel_id - p.DM_BASE in self.closed_dms:
            return error(403, 50007, "Cannot send messages to this user")
        if refused := self._too_large(call.files):
            return refused
        if call.files and (final := re.fullmatch(FINAL_IMAGE, call.files[0][0] or "")):
            return await self._held_upload(call, channel_id, int(final[1]))
        message = self._new_message(channel_id, body, call.files)
        await self._announce("MESSAGE_CREATE", message)
        return (message,)

    async def _held_upload(self, call: Call, channel_id: int, job_id: int):
        first = self.rng.random() < self.made_first
        message = self._new_message(channel_id, call.body or {}, call.files) if first else None
        if message is not None:
            await self._announce("MESSAGE_CREATE", message)
        self.uploads_started.append(job_id)
        self.upload_arrived.set()
        await asyncio.sleep(self.upload_delay)
        if message is None:
            transport = call.request.transport
            if transport is None or transport.is_closing():
                return web.Response(status=499)  # the bot went away before the upload completed: no message
            message = self._new_message(channel_id, call.body or {}, call.files)
            await self._announce("MESSAGE_CREATE", message)
        return (message,)

    async def _get_message(self, call: Call):
        message = self._visible(int(call.params["channel_id"]), int(call.params["message_id"]))
        return (message,) if message is not None else UNKNOWN_MESSAGE

    async def _edit_message(self, call: Call):
        message = self._visible(int(call.params["channel_id"]), int(call.params["message_id"]))
        if message is None:
            return UNKNOWN_MESSAGE
        if refused := self._too_large(call.files):
            return refused
        self._edit(message, call.body or {}, call.files)
        await self._announce("MESSAGE_UPDATE", message)
        return (message,)

    async def _delete_message(self, call: Call):
        channel_id, message_id = int(call.params["channel_id"]), int(call.params["message_id"])
        message = self._visible(channel_id, message_id)
        if message is None:
            return UNKNOWN_MESSAGE
        await self._remove(message)
        return (None,)

    async def _remove(self, message: dict[str, Any]) -> None:
        mid = int(message["id"])
        self.deleted[mid] = self.messages.pop(mid)
        self._forget(message["attachments"])
        if not message["flags"] & p.EPHEMERAL:
            gone = {"id": message["id"], "channel_id": message["channel_id"], "guild_id": str(p.GUILD_ID)}
            await self._dispatch("MESSAGE_DELETE", gone)

    # -- reactions -------------------------------------------------------------------------------------------
    def _set_reaction(self, message: dict[str, Any], emoji: str, user_id: int, present: bool) -> bool | None:
        """Add or take away one user's reaction; True if that changed something, None if the message already has
        the most distinct reactions Discord allows."""
        on_message = self._reactors.setdefault(int(message["id"]), {})
        users = on_message.setdefault(emoji, [])
        if present == (user_id in users):
            return False
        if present and not users and len(message["reactions"]) >= MAX_REACTIONS:
            return None
        if present:
            users.append(user_id)
        else:
            users.remove(user_id)
        message["reactions"] = [
            {
                "emoji": {"id": None, "name": e},
                "count": len(who),
                "count_details": {"burst": 0, "normal": len(who)},
                "burst_colors": [],
                "me": p.BOT_ID in who,
                "me_burst": False,
            }
            for e, who in on_message.items()
            if who
        ]
        return True

    def reactions(self, message_id: int, emoji: str) -> list[int]:
        """The user ids that reacted to a message with `emoji`, in order."""
        return list(self._reactors.get(message_id, {}).get(emoji, []))

    async def _reaction_event(self, message: dict[str, Any], emoji: str, index: int | None, present: bool) -> None:
        """MESSAGE_REACTION_ADD / REMOVE as Discord sends them (`index` None: the bot's own reaction)."""
        uid = p.BOT_ID if index is None else p.USER_ID + index
        event = {
            "user_id": str(uid),
            "channel_id": message["channel_id"],
            "message_id": message["id"],
            "guild_id": str(p.GUILD_ID),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if present:
            event.update(member=p.member(index), message_author_id=message["author"]["id"], burst_colors=[])
        await self._dispatch("MESSAGE_REACTION_ADD" if present else "MESSAGE_REACTION_REMOVE", event)

    async def _react(self, call: Call):
        message = self._visible(int(call.params["channel_id"]), int(call.params["message_id"]))
        if message is None:
            return UNKNOWN_MESSAGE
        emoji, present = call.params["emoji"], call.request.method == "PUT"
        index: int | None = None
        if "user_id" in call.params:
            index = int(call.params["user_id"]) - p.USER_ID
            if not 0 <= index < self.members:
                return error(404, 10013, "Unknown User")
        changed = self._set_reaction(message, emoji, p.BOT_ID if index is None else p.USER_ID + index, present)
        if changed is None:
            return error(400, 30010, "Maximum number of reactions reached (20)")
        if changed:
            await self._reaction_event(message, emoji, index, present)
        return (None,)

    # -- channels and threads ----------------------------------------------------------------------------------
    def _channel_payload(self, channel_id: int) -> dict[str, Any] | None:
        kind = self._channel_kind(channel_id)
        if kind == "text":
            return p.text_channel()
        if kind == "thread":
            return self.threads[channel_id]
        if kind == "dm":
            return p.dm_channel(channel_id - p.DM_BASE)
        return None

    async def archive_thread(self, thread_id: int) -> None:
        """Archive a thread, as Discord does after its auto-archive duration, and say so (THREAD_UPDATE); posting
        to it then fails with 50083 until it is unarchived."""
        self.threads[thread_id]["thread_metadata"]["archived"] = True
        await self._dispatch("THREAD_UPDATE", self.threads[thread_id])

    async def _get_channel(self, call: Call):
        channel = self._channel_payload(int(call.params["channel_id"]))
        return (channel,) if channel is not None else UNKNOWN_CHANNEL

    async def _edit_channel(self, call: Call):
        channel_id, body = int(call.params["channel_id"]), call.body or {}
        kind = self._channel_kind(channel_id)
        if kind == "thread":
            thread = self.threads[channel_id]
            meta = thread["thread_metadata"]
            thread.update({k: body[k] for k in ("name", "rate_limit_per_user") if k in body})
            meta.update({k: body[k] for k in ("archived", "locked", "auto_archive_duration") if k in body})
            await self._dispatch("THREAD_UPDATE", thread)
            return (thread,)
        if kind == "text":
            return (p.text_channel(),)  # the one text channel keeps its name: nothing here renames it
        return UNKNOWN_CHANNEL

    async def _create_thread(self, call: Call):
        channel_id, body = int(call.params["channel_id"]), call.body or {}
        if self._channel_kind(channel_id) != "text":
            return error(400, 50024, "Cannot execute action on this channel type")
        active = sum(1 for t in self.threads.values() if not t["thread_metadata"]["archived"])
        if active >= self.max_active_threads:
            return error(400, 160006, "Maximum number of active threads reached")
        if "message_id" in call.params:
            thread_id = int(call.params["message_id"])  # a thread from a message has the message's id
            if self._visible(channel_id, thread_id) is None:
                return UNKNOWN_MESSAGE
            if thread_id in self.threads:
                return error(400, 160004, "A thread has already been created for this message")
        else:
            thread_id = next(self._ids)
        duration = body.get("auto_archive_duration") or 1440
        thread = p.thread(thread_id, channel_id, body.get("name", "thread"), duration=duration)
        self.threads[thread_id] = thread
        await self._dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return (thread,)
