"""The settings part of the store: servers' settings (kept in memory once read), blocked words, members' choices."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from storage.base import StorePart
from storage.models import _SETTINGS_COLUMNS, GuildSettings
from storage.sql import (
    _DELETE_WORD,
    _INSERT_WORD,
    _SELECT_DM,
    _SELECT_SETTINGS,
    _SELECT_WORDS,
    _UPSERT_DM,
    _UPSERT_SETTINGS,
)

# How settings that are not plain columns are stored: tuples as JSON lists, booleans as 0 and 1.
_JSON_SETTINGS = {"channels", "sizes", "gallery_excluded"}
_BOOL_SETTINGS = {"use_threads", "timelapse", "builtin_words", "gallery"}


class SettingsStore(StorePart):
    """What servers and members chose: settings, blocked words, delivery by DM."""

    _settings: dict[int, GuildSettings]  # set by Store: servers' settings as last read or written

    # -- guild settings -------------------------------------------------------------------------------------
    async def guild_settings(self, guild_id: int | None) -> GuildSettings:
        """A server's settings (the defaults for a server that changed none, and for DMs); read from the database once,
        then kept (`update_guild_settings` keeps the new ones)."""
        if guild_id is None:
            return GuildSettings()
        if guild_id in self._settings:
            return self._settings[guild_id]
        async with self._db.execute(_SELECT_SETTINGS, (guild_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            self._settings[guild_id] = GuildSettings()
            return self._settings[guild_id]
        values = {}
        for name, value in zip(_SETTINGS_COLUMNS, row, strict=True):
            if name in _JSON_SETTINGS:
                value = tuple(json.loads(value)) if value else ()
            elif name in _BOOL_SETTINGS and value is not None:
                value = bool(value)
            values[name] = value
        self._settings[guild_id] = GuildSettings(**values)
        return self._settings[guild_id]

    async def update_guild_settings(self, guild_id: int, **changes: Any) -> GuildSettings:
        """Change some of a server's settings (the others stay); returns them all."""
        unknown = set(changes) - set(_SETTINGS_COLUMNS)
        if unknown:
            raise ValueError(f"unknown guild settings {sorted(unknown)}")
        current = dataclasses.replace(await self.guild_settings(guild_id), **changes)
        row = []
        for name in _SETTINGS_COLUMNS:
            value = getattr(current, name)
            if name in _JSON_SETTINGS:
                value = json.dumps(list(value)) if value else None
            elif name in _BOOL_SETTINGS and value is not None:
                value = int(value)
            row.append(value)
        await self._db.execute(_UPSERT_SETTINGS, (guild_id, *row))
        await self._db.commit()
        self._settings[guild_id] = current
        return current

    async def blocked_words(self, guild_id: int) -> list[str]:
        """The words a server added to its blocked list (the built-in list is not stored)."""
        async with self._db.execute(_SELECT_WORDS, (guild_id,)) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def add_blocked_word(self, guild_id: int, word: str, added_by: int) -> bool:
        """Block a word on a server; False if it was already blocked."""
        async with self._db.execute(_INSERT_WORD, (guild_id, word, added_by, self._clock())) as cur:
            added = cur.rowcount == 1
        await self._db.commit()
        return added

    async def remove_blocked_word(self, guild_id: int, word: str) -> bool:
        """Unblock a word; False if it was not blocked."""
        async with self._db.execute(_DELETE_WORD, (guild_id, word)) as cur:
            removed = cur.rowcount == 1
        await self._db.commit()
        return removed

    # -- members' preferences -------------------------------------------------------------------------------
    async def dm_results(self, user_id: int) -> bool:
        """Whether the member asked for their finished images by DM as well."""
        async with self._db.execute(_SELECT_DM, (user_id,)) as cur:
            row = await cur.fetchone()
        return bool(row and row[0])

    async def set_dm_results(self, user_id: int, wanted: bool) -> None:
        """Record a member's choice of DM delivery."""
        await self._db.execute(_UPSERT_DM, (user_id, int(wanted)))
        await self._db.commit()
