"""A server's own rules: its settings, its blocked words, and members' preferences (the cogs' door to them).

Text members type is screened here (prompts, Steer and Branch texts, the names of uploaded pictures) against the
server's blocked words and, unless the server turned them off, the built-in list; the refusal never repeats
the word. Settings that are limits are checked here too, so every refusal names the server's limit."""

from __future__ import annotations

import logging

from bot.config import Settings
from bot.wordfilter import WordFilter, normalise, refusal
from engine.errors import InvalidSpec
from engine.moderation import check_level
from storage import GuildSettings, Store

log = logging.getLogger(__name__)

MAX_WORDS = 200  # blocked words per server
MAX_WORD_LENGTH = 60
MAX_CHANNELS = 25


class Community:
    """Per-server settings and word lists, cached (they are read on every submission, changed rarely)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store, self.bot_settings = store, settings
        self._filters: dict[int, WordFilter] = {}
        self._default_filter = WordFilter.default()

    # -- settings -------------------------------------------------------------------------------------------
    async def settings(self, guild_id: int | None) -> GuildSettings:
        """A server's settings (the defaults for DMs)."""
        return await self.store.guild_settings(guild_id)

    async def update(self, guild_id: int, **changes) -> GuildSettings:
        """Change a server's settings after checking them (InvalidSpec, a sentence, for a bad value)."""
        bot = self.bot_settings
        for key in ("default_steps", "max_steps"):
            value = changes.get(key)
            if value is not None and not 10 <= value <= bot.max_steps:
                raise InvalidSpec(f"{key.replace('_', ' ').capitalize()} must be between 10 and {bot.max_steps}.")
        for key in ("max_queued_per_user", "max_queued_total"):
            value = changes.get(key)
            if value is not None and not 1 <= value <= bot.max_queue:
                raise InvalidSpec(f"Queue caps must be between 1 and {bot.max_queue} (the bot's whole queue).")
        if changes.get("moderation") is not None:
            changes["moderation"] = check_level(changes["moderation"])
        if len(changes.get("channels", ())) > MAX_CHANNELS:
            raise InvalidSpec(f"At most {MAX_CHANNELS} channels can be listed.")
        current = await self.store.guild_settings(guild_id)
        default = changes.get("default_steps", current.default_steps)
        most = changes.get("max_steps", current.max_steps)
        if default is not None and most is not None and default > most:
            raise InvalidSpec(f"The default steps ({default}) cannot be above the maximum ({most}).")
        updated = await self.store.update_guild_settings(guild_id, **changes)
        self._filters.pop(guild_id, None)
        log.info("guild %d changed its settings: %s", guild_id, ", ".join(sorted(changes)))
        return updated

    def max_steps(self, settings: GuildSettings) -> int:
        """The most steps a member may ask for here (never above the bot's own limit)."""
        return min(self.bot_settings.max_steps, settings.max_steps or self.bot_settings.max_steps)

    def default_steps(self, settings: GuildSettings) -> int:
        """Steps a member gets without asking: the server's default, else the bot's, never above `max_steps`."""
        return min(settings.default_steps or self.bot_settings.default_steps, self.max_steps(settings))

    def moderation(self, settings: GuildSettings) -> str:
        """The output check here: the server's level, else the bot's default."""
        return settings.moderation or self.bot_settings.moderation

    # -- blocked words --------------------------------------------------------------------------------------
    async def words(self, guild_id: int) -> list[str]:
        """The server's own blocked words."""
        return await self.store.blocked_words(guild_id)

    async def block(self, guild_id: int, word: str, by: int) -> bool:
        """Add a word or phrase to the server's list; False if it was there. InvalidSpec for one that cannot be."""
        word = " ".join(word.split())
        if not normalise(word).strip():
            raise InvalidSpec("That word has no letters or digits to match.")
        if len(word) > MAX_WORD_LENGTH:
            raise InvalidSpec(f"Blocked words are at most {MAX_WORD_LENGTH} characters.")
        if len(await self.store.blocked_words(guild_id)) >= MAX_WORDS:
            raise InvalidSpec(f"A server can block at most {MAX_WORDS} words; remove some first.")
        self._filters.pop(guild_id, None)
        return await self.store.add_blocked_word(guild_id, word, by)

    async def unblock(self, guild_id: int, word: str) -> bool:
        """Remove a word or phrase from the server's list; False if it was not there."""
        self._filters.pop(guild_id, None)
        return await self.store.remove_blocked_word(guild_id, " ".join(word.split()))

    async def screen(self, guild_id: int | None, text: str, where: str) -> None:
        """Raise InvalidSpec (a sentence that does not repeat the word) if `text` holds a blocked word here."""
        settings = await self.store.guild_settings(guild_id)
        if settings.builtin_words and self._default_filter.find(text) is not None:
            raise InvalidSpec(refusal(where))
        if guild_id is not None:
            words = self._filters.get(guild_id)
            if words is None:
                words = self._filters[guild_id] = WordFilter(await self.store.blocked_words(guild_id))
            if len(words) and words.find(text) is not None:
                raise InvalidSpec(refusal(where))

    # -- members --------------------------------------------------------------------------------------------
    async def dm_results(self, user_id: int) -> bool:
        """Whether the member wants their finished images by DM as well."""
        return await self.store.dm_results(user_id)

    async def set_dm_results(self, user_id: int, wanted: bool) -> None:
        """Record whether the member wants their finished images by DM as well."""
        await self.store.set_dm_results(user_id, wanted)
