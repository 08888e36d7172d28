"""The objects Discord sends (users, members, roles, channels, threads, the guild, messages, attachments), as plain
dicts in the shapes of the API reference, and the ids of the loopback world."""

from __future__ import annotations

import mimetypes
import struct
import time
from datetime import UTC, datetime
from typing import Any

APP_ID = 900_000_000_000_000_001
BOT_ID = APP_ID
GUILD_ID = 900_000_000_000_000_010
CHANNEL_ID = 900_000_000_000_000_020
USER_ID = 900_000_000_000_000_030  # member i is USER_ID + i; member 0 ("alice") owns the guild
BOT_ROLE_ID = 900_000_000_000_000_040
DM_BASE = 900_000_000_000_050_000  # the DM channel with member i is DM_BASE + i
DISCORD_EPOCH_MS = 1_420_070_400_000

ALL_PERMISSIONS = str((1 << 50) - 1)
# what a server gives @everyone by default, roughly: view, send, embed, attach, history, react, external emoji,
# voice, nickname, application commands, public threads and posting in threads; no moderation (manage_messages)
_DEFAULT_BITS = (0, 6, 10, 11, 14, 15, 16, 18, 20, 21, 26, 31, 35, 38)
MEMBER_PERMISSIONS = str(sum(1 << bit for bit in _DEFAULT_BITS))

EPHEMERAL, LOADING = 1 << 6, 1 << 7  # message flags


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Snowflakes:
    """Ids as Discord makes them (milliseconds since 2015 << 22), strictly increasing."""

    def __init__(self) -> None:
        self._last = 0

    def __next__(self) -> int:
        made = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(made, self._last + 1)
        return self._last


def member_name(index: int) -> str:
    return "alice" if index == 0 else f"member-{index}"


def user(uid: int, name: str, bot: bool = False) -> dict[str, Any]:
    return {"id": str(uid), "username": name, "discriminator": "0", "avatar": None, "global_name": name, "bot": bot}


def member_user(index: int) -> dict[str, Any]:
    return user(USER_ID + index, member_name(index))


def bot_user() -> dict[str, Any]:
    return user(BOT_ID, "imagine", bot=True)


def member(index: int | None, with_user: bool = True) -> dict[str, Any]:
    """A guild member object (`index` None: the bot); interactions add the member's computed permissions."""
    body = {
        "roles": [str(BOT_ROLE_ID)] if index is None else [],
        "joined_at": now_iso(),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "nick": None,
        "avatar": None,
        "pending": False,
    }
    if with_user:
        body["user"] = bot_user() if index is None else member_user(index)
    return body


def interaction_member(index: int) -> dict[str, Any]:
    return {**member(index), "permissions": ALL_PERMISSIONS if index == 0 else MEMBER_PERMISSIONS}


def _role(role_id: int, name: str, permissions: str, managed: bool = False) -> dict[str, Any]:
    role = {
        "id": str(role_id),
        "name": name,
        "permissions": permissions,
        "position": 0 if role_id == GUILD_ID else 1,
        "color": 0,
        "hoist": False,
        "managed": managed,
        "mentionable": False,
        "flags": 0,
    }
    if managed:
        role["tags"] = {"bot_id": str(BOT_ID)}
    return role


def text_channel() -> dict[str, Any]:
    return {
        "id": str(CHANNEL_ID),
        "type": 0,
        "name": "art",
        "position": 0,
        "guild_id": str(GUILD_ID),
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
    }


def thread(thread_id: int, parent_id: int, name: str, archived: bool = False, duration: int = 1440) -> dict[str, Any]:
    return {
        "id": str(thread_id),
        "type": 11,
        "name": name,
        "guild_id": str(GUILD_ID),
        "parent_id": str(parent_id),
        "owner_id": str(BOT_ID),
        "last_message_id": None,
        "thread_metadata": {
            "archived": archived,
            "auto_archive_duration": duration,
            "archive_timestamp": now_iso(),
            "locked": False,
        },
        "message_count": 0,
        "member_count": 1,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def dm_channel(index: int) -> dict[str, Any]:
    return {"id": str(DM_BASE + index), "type": 1, "recipients": [member_user(index)], "last_message_id": None}


def guild(members: int, large_threshold: int, threads: list[dict[str, Any]]) -> dict[str, Any]:
    """GUILD_CREATE's guild. Discord leaves offline members out of a large guild (more members than the IDENTIFY's
    `large_threshold`): then only the bot is listed, as it is for a bot without the members intent."""
    count = members + 1
    large = count > large_threshold
    listed = [member(None)] + ([] if large else [member(i) for i in range(members)])
    return {
        "id": str(GUILD_ID),
        "name": "Loopback",
        "owner_id": str(USER_ID),
        "roles": [
            _role(GUILD_ID, "@everyone", MEMBER_PERMISSIONS),
            _role(BOT_ROLE_ID, "imagine", ALL_PERMISSIONS, managed=True),
        ],
        "channels": [text_channel()],
        "threads": threads,
        "emojis": [],
        "stickers": [],
        "features": [],
        "members": listed,
        "member_count": count,
        "large": large,
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
        "joined_at": now_iso(),
    }


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG (from its IHDR chunk); None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def attachment(aid: int, url: str, filename: str, data: bytes, ephemeral: bool = False) -> dict[str, Any]:
    body = {
        "id": str(aid),
        "filename": filename,
        "size": len(data),
        "url": url,
        "proxy_url": url,
        "content_type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
    }
    if (size := image_size(data)) is not None:
        body["width"], body["height"] = size
    if ephemeral:
        body["ephemeral"] = True
    return body


def message(mid: int, channel_id: int, body: dict[str, Any], attachments: list[dict[str, Any]]) -> dict[str, Any]:
    """A message the bot made, from the JSON it sent (content, embeds, components, flags)."""
    return {
        "id": str(mid),
        "channel_id": str(channel_id),
        "author": bot_user(),
        "content": body.get("content") or "",
        "embeds": body.get("embeds") or [],
        "components": body.get("components") or [],
        "attachments": attachments,
        "reactions": [],
        "timestamp": now_iso(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "pinned": False,
        "type": 0,
        "flags": body.get("flags", 0) or 0,
    }


def walk_components(components: list[dict[str, Any]]):
    """Every component of a message or a modal, rows (and labels, containers, sections) flattened."""
    for item in components or []:
        yield item
        yield from walk_components(item.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(item.get(key), dict):
                yield from walk_components([item[key]])
