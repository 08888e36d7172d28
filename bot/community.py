"""A server's own rules: its settings, its blocked words, and members' preferences (the cogs' door to them).

`admit` is the one gate every job passes on its way in, whichever door it came through (/imagine, /juxtapose, a
tournament, Reroll, Continue, Upscale, Branch, Imagine this): the channel it will live in, its steps and its size
against the server's limits, every text its model will read against the blocked words, and the server's output
check written into its spec. Text members type is screened (prompts, Steer and Branch texts, the names of uploaded
pictures) against the server's blocked words and, unless the server turned them off, the built-in list; the
refusal never repeats the word. Every refusal is a sentence that names the server's limit."""

from __future__ import annotations

import dataclasses
import logging

from bot.catalog import SIZES
from bot.config import Settings
from bot.wordfilter import WordFilter, normalise, refusal
from engine import quality
from engine.errors import InvalidSpec
from engine.moderation import check_level
from engine.spec import JobSpec
from storage import GuildSettings, Store

log = logging.getLogger(__name__)

MAX_WORDS = 200  # blocked words per server
MAX_WORD_LENGTH = 60
MAX_CHANNELS = 25


def spec_texts(spec: JobSpec) -> str:
    """Every text of a spec that a text encoder reads: the prompt, each steered prompt and an animation's prompts by
    frame, one per line."""
    keyed = spec.animation.prompts if spec.animation is not None else ()
    return "\n".join([spec.prompt, *(text for _, text in spec.prompt_schedule), *(text for _, text in keyed)])


class Community:
    """Per-server settings and word lists, cached (they are read on every submission, changed rarely)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store, self.bot_settings = store, settings
        self._filters: dict[int, WordFilter] = {}
        self._default_filter = WordFilter.default()
        self.on_blocked = None  # called for each refusal for a blocked word (the bot counts them)

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

    # -- the gate ---------------------------------------------------------------------------------------------
    async def admit(
        self, guild_id: int | None, places: tuple[int, ...], spec: JobSpec, *, limits: bool = True
    ) -> JobSpec:
        """The spec as this server runs it, or InvalidSpec (a sentence naming the limit): `places` (the channel the
        job lives in, and that channel's parent for a thread) must be where the server allows pictures; the steps it
        runs in all, its final size and its texts must be within the server's rules. The output check is set to the
        server's level, whatever the spec said. `limits=False` checks only the texts."""
        settings = await self.settings(guild_id)
        if limits:
            self.check_place(settings, places)
            self.check_quality(settings, spec)
            most = self.max_steps(settings)
            cost = quality.relative_cost(spec)
            counted = round(spec.total_steps * cost)  # a step of a costlier quality counts for more
            if counted > most:
                shown = f" (this would run {spec.total_steps})" if spec.total_steps != spec.steps else ""
                if cost > 1.005:
                    shown = f" (a {spec.quality or 'guided'} step counts as {cost:.1f}: this would count {counted})"
                raise InvalidSpec(f"This server allows at most {most} steps{shown}.")
            self.check_size(settings, spec)
        await self.screen(guild_id, spec_texts(spec), "prompt")
        return spec.replace(moderation=self.moderation(settings))

    @staticmethod
    def check_place(settings: GuildSettings, places: tuple[int, ...]) -> None:
        """InvalidSpec unless one of `places` is among the server's picture channels (when it lists any)."""
        if settings.channels and not any(place in settings.channels for place in places):
            where = ", ".join(f"<#{c}>" for c in settings.channels)
            raise InvalidSpec(f"This server keeps /imagine to {where}; try there.")

    @staticmethod
    def check_quality(settings: GuildSettings, spec: JobSpec) -> None:
        """InvalidSpec unless the spec costs no more per step than the server's quality cap (when it has one): its
        preset's rank, and for a spec without a preset's name (a recipe's own ensemble) its cost at that size."""
        cap = settings.max_quality
        if cap is None:
            return
        too_costly = quality.rank(spec.quality) > quality.rank(cap) if spec.quality else False
        allowed = quality.relative_cost(spec.replace(**{k: v for k, v in quality.expand(cap).items() if k != "steps"}))
        if too_costly or quality.relative_cost(spec) > allowed * 1.001:
            raise InvalidSpec(f"This server allows quality up to {cap}; ask for {cap} or a lower one.")

    @staticmethod
    def check_size(settings: GuildSettings, spec: JobSpec) -> None:
        """InvalidSpec unless the spec's final size is one the server allows (when it restricts sizes). BigGAN makes
        only its model's own size: it passes when that fits within an allowed size."""
        if not settings.sizes:
            return
        width, height = spec.final_size
        allowed = [SIZES[name] for name in settings.sizes if name in SIZES]
        fits = (width, height) in allowed
        if spec.generator == "biggan" and not spec.upscales:
            fits = any(width <= w and height <= h for w, h in allowed)
        if not fits:
            grown = f" (this would make {width}x{height})" if spec.upscales else ""
            raise InvalidSpec(f"This server allows these sizes: {', '.join(settings.sizes)}{grown}.")

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
        """Raise InvalidSpec (a sentence that does not repeat the word) if `text` holds a blocked word here; the
        refusal is counted (`on_blocked`, the bot's metrics)."""
        if not await self.allows(guild_id, text):
            if self.on_blocked is not None:
                self.on_blocked()
            raise InvalidSpec(refusal(where))

    async def allows(self, guild_id: int | None, text: str) -> bool:
        """Whether `text` holds no word blocked here (the test of `screen`, without the refusal)."""
        settings = await self.store.guild_settings(guild_id)
        if settings.builtin_words and self._default_filter.find(text) is not None:
            return False
        if guild_id is not None:
            words = self._filters.get(guild_id)
            if words is None:
                words = self._filters[guild_id] = WordFilter(await self.store.blocked_words(guild_id))
            if len(words) and words.find(text) is not None:
                return False
        return True

    async def screen_description(self, guild_id: int | None, description):
        """A /describe result (`engine.describe.Description`) without the terms blocked here: blocked terms leave
        the ranked lists, and the parts of the prompt that hold one leave the prompt."""
        ranked = {
            category: tuple([(term, score) for term, score in pairs if await self.allows(guild_id, term)])
            for category, pairs in description.ranked.items()
        }
        parts = [part for part in description.prompt.split(", ") if await self.allows(guild_id, part)]
        prompt = ", ".join(parts)
        if not await self.allows(guild_id, prompt):  # a blocked phrase across two parts: no prompt at all
            parts, prompt = [], ""
        flavors = tuple([flavor for flavor in description.flavors if flavor in parts])
        return dataclasses.replace(description, prompt=prompt, ranked=ranked, flavors=flavors)

    # -- members --------------------------------------------------------------------------------------------
    async def dm_results(self, user_id: int) -> bool:
        """Whether the member wants their finished images by DM as well."""
        return await self.store.dm_results(user_id)

    async def set_dm_results(self, user_id: int, wanted: bool) -> None:
        """Record whether the member wants their finished images by DM as well."""
        await self.store.set_dm_results(user_id, wanted)
