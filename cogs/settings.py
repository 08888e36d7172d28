"""/settings: a server's limits, channels, moderation, blocked words and web gallery (Manage Server), and
`/settings me` (each member's own preferences). Every change applies at once; the refusals members meet name
the server's limits."""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.catalog import SIZES
from bot.community import Community
from cogs.errors import reply
from engine.moderation import load_data

SIZE_NAMES = tuple(SIZES)  # the names /imagine offers
MAX_EXCLUDED = 25  # channels left out of the web gallery (the list is shown in one embed field)
# Where an image can be posted: a channel that has threads or text, or a thread itself.
GalleryChannel = (
    discord.TextChannel | discord.VoiceChannel | discord.StageChannel | discord.ForumChannel | discord.Thread
)


def settings_embed(settings, community: Community, words: list[str], gallery_url: str = "") -> discord.Embed:
    """The server's settings as members of its staff read them."""
    embed = discord.Embed(title="Server settings", color=discord.Color.from_rgb(114, 92, 255))
    channels = ", ".join(f"<#{c}>" for c in settings.channels) or "everywhere"
    per_member = settings.max_queued_per_user or community.bot_settings.max_queued_per_user
    server = settings.max_queued_total or "no server cap"
    level = community.moderation(settings)
    embed.add_field(name="/imagine allowed in", value=channels, inline=False)
    embed.add_field(
        name="Steps",
        value=f"default {community.default_steps(settings)} · at most {community.max_steps(settings)}",
    )
    embed.add_field(name="Sizes", value=", ".join(settings.sizes) or "all")
    embed.add_field(name="Quality", value=f"up to {settings.max_quality}" if settings.max_quality else "any")
    embed.add_field(name="Waiting images", value=f"{per_member} per member · {server}")
    timelapse = community.bot_settings.timelapse if settings.timelapse is None else settings.timelapse
    embed.add_field(name="Timelapse", value="on" if timelapse else "off")
    embed.add_field(name="Moderation", value=f"{level}: {load_data().levels[level].description}", inline=False)
    builtin = "on" if settings.builtin_words else "off"
    embed.add_field(
        name="Blocked words", value=f"{len(words)} of this server's own · built-in list {builtin}", inline=False
    )
    gallery = "on" if settings.gallery else "off"
    if settings.gallery and gallery_url:
        gallery += f" · {gallery_url}"
    if settings.gallery_excluded:
        gallery += "\nLeft out: " + ", ".join(f"<#{c}>" for c in settings.gallery_excluded)
    embed.add_field(name="Web gallery", value=gallery, inline=False)
    return embed


def _sizes(text: str) -> tuple[str, ...]:
    """'all' or a comma list of size names (InvalidSpec-free: unknown names are a ValueError for the caller)."""
    if text.strip().lower() in ("", "all"):
        return ()
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SIZE_NAMES]
    if unknown:
        raise ValueError(", ".join(unknown))
    return names


# Each level explained in its own choice (a name may be 100 characters; one description could not hold all four).
MODERATION_CHOICES = [
    app_commands.Choice(name="off: no check of finished images", value="off"),
    app_commands.Choice(name="spoiler: flagged images are posted behind a spoiler", value="spoiler"),
    app_commands.Choice(name="withhold: flagged images are not posted; the author is told", value="withhold"),
    app_commands.Choice(name="strict: withhold at a lower threshold, and previews are checked too", value="strict"),
]


class ServerSettings(commands.Cog):
    """/settings for staff, /settings me for everyone."""

    group = app_commands.Group(name="settings", description="This server's limits and moderation; your preferences")

    def __init__(self, bot) -> None:
        self.bot = bot

    @property
    def community(self) -> Community:
        """The bot's server settings and word lists."""
        return self.bot.community

    async def _staff(self, interaction: discord.Interaction) -> bool:
        """Server settings are for members with Manage Server, in a server."""
        if interaction.guild_id is None:
            await reply(interaction, "Server settings are changed in a server, not in DMs.")
            return False
        if not interaction.permissions.manage_guild:
            await reply(interaction, "Only members with the Manage Server permission can change the server settings.")
            return False
        return True

    async def _show(self, interaction: discord.Interaction, note: str = "") -> None:
        settings = await self.community.settings(interaction.guild_id)
        words = await self.community.words(interaction.guild_id)
        url = f"{self.bot.settings.gallery_url}/g/{interaction.guild_id}" if self.bot.settings.gallery_url else ""
        await interaction.response.send_message(
            note, embed=settings_embed(settings, self.community, words, url), ephemeral=True
        )

    @group.command(name="show", description="Show this server's settings")
    async def show(self, interaction: discord.Interaction) -> None:
        """/settings show: the server's settings (staff only)."""
        if await self._staff(interaction):
            await self._show(interaction)

    @group.command(name="limits", description="Steps and waiting-line caps of this server")
    @app_commands.describe(
        default_steps="Steps when a member does not say",
        max_steps="The most steps a member may ask for",
        per_member="Images one member may have waiting",
        server_queue="Images this server may have waiting, together",
        max_quality="The costliest quality members may ask for (best guides with three CLIP models: ~3x a draft)",
    )
    async def limits(
        self,
        interaction: discord.Interaction,
        default_steps: app_commands.Range[int, 10, 2000] | None = None,
        max_steps: app_commands.Range[int, 10, 2000] | None = None,
        per_member: app_commands.Range[int, 1, 100] | None = None,
        server_queue: app_commands.Range[int, 1, 1000] | None = None,
        max_quality: Literal["draft", "normal", "best"] | None = None,
    ) -> None:
        """/settings limits: change the steps, the waiting-line caps and the quality cap given (staff only)."""
        if not await self._staff(interaction):
            return
        changes = {
            "default_steps": default_steps,
            "max_steps": max_steps,
            "max_queued_per_user": per_member,
            "max_queued_total": server_queue,
            "max_quality": max_quality,
        }
        await self.community.update(interaction.guild_id, **{k: v for k, v in changes.items() if v is not None})
        await self._show(interaction, "Limits changed.")

    @group.command(name="channels", description="Where /imagine may be used (empty list: everywhere)")
    @app_commands.describe(action="Add or remove a channel, or allow every channel again", channel="The channel")
    async def channels(
        self,
        interaction: discord.Interaction,
        action: Literal["add", "remove", "everywhere"],
        channel: discord.TextChannel | None = None,
    ) -> None:
        """/settings channels: add or remove a channel for /imagine, or allow every channel (staff only)."""
        if not await self._staff(interaction):
            return
        current = (await self.community.settings(interaction.guild_id)).channels
        if action == "everywhere":
            chosen: tuple[int, ...] = ()
        elif channel is None:
            await reply(interaction, "Name the channel to add or remove.")
            return
        elif action == "add":
            chosen = tuple(dict.fromkeys((*current, channel.id)))
        else:
            chosen = tuple(c for c in current if c != channel.id)
        await self.community.update(interaction.guild_id, channels=chosen)
        await self._show(interaction, "Channels changed.")

    @group.command(name="sizes", description="The sizes members may pick")
    @app_commands.describe(allowed=f"'all', or names separated by commas: {', '.join(SIZE_NAMES)}")
    async def sizes(self, interaction: discord.Interaction, allowed: app_commands.Range[str, 1, 200]) -> None:
        """/settings sizes: the sizes members may pick, 'all' or a comma list (staff only)."""
        if not await self._staff(interaction):
            return
        try:
            names = _sizes(allowed)
        except ValueError as exc:
            await reply(interaction, f"Unknown size names: {exc}. The sizes are {', '.join(SIZE_NAMES)}.")
            return
        await self.community.update(interaction.guild_id, sizes=names)
        await self._show(interaction, "Sizes changed.")

    @group.command(name="timelapse", description="Post a timelapse of each finished image")
    async def timelapse(self, interaction: discord.Interaction, on: bool) -> None:
        """/settings timelapse: post timelapses of finished images, or not (staff only)."""
        if await self._staff(interaction):
            await self.community.update(interaction.guild_id, timelapse=on)
            await self._show(interaction, f"Timelapses are {'on' if on else 'off'}.")

    @group.command(name="moderation", description="How finished images are checked, and the built-in word list")
    @app_commands.describe(
        level="How strictly finished images (and, at strict, previews) are checked",
        builtin_words="Use the built-in list of blocked words as well as this server's own",
    )
    @app_commands.choices(level=MODERATION_CHOICES)
    async def moderation(
        self,
        interaction: discord.Interaction,
        level: app_commands.Choice[str] | None = None,
        builtin_words: bool | None = None,
    ) -> None:
        """/settings moderation: the output check's level and the built-in word list (staff only)."""
        if not await self._staff(interaction):
            return
        changes = {"moderation": level.value if level else None, "builtin_words": builtin_words}
        await self.community.update(interaction.guild_id, **{k: v for k, v in changes.items() if v is not None})
        await self._show(interaction, "Moderation changed.")

    @group.command(name="words", description="This server's blocked words: add, remove or list them")
    @app_commands.describe(word="A word or a short phrase (matched whole, also when disguised)")
    async def words(
        self,
        interaction: discord.Interaction,
        action: Literal["add", "remove", "list"],
        word: app_commands.Range[str, 1, 60] | None = None,
    ) -> None:
        """/settings words: add, remove or list (as spoilers) the server's blocked words (staff only)."""
        if not await self._staff(interaction):
            return
        if action == "list":
            words = await self.community.words(interaction.guild_id)
            text = ", ".join(f"||{w}||" for w in words) if words else "This server has not blocked any words."
            await reply(interaction, text[:1900])
            return
        if word is None:
            await reply(interaction, f"Give the word to {action}.")
            return
        if action == "add":
            done = await self.community.block(interaction.guild_id, word, interaction.user.id)
            await reply(interaction, "Blocked." if done else "That word was already blocked.")
        else:
            done = await self.community.unblock(interaction.guild_id, word)
            await reply(interaction, "Unblocked." if done else "That word was not on this server's list.")

    @group.command(name="gallery", description="Show this server's best images in the bot's web gallery")
    @app_commands.describe(
        on="Show the images posted where everyone in this server can see them",
        exclude="Leave a channel (and its threads) out of the gallery",
        include="Show a left-out channel in the gallery again",
    )
    async def gallery(
        self,
        interaction: discord.Interaction,
        on: bool | None = None,
        exclude: GalleryChannel | None = None,
        include: GalleryChannel | None = None,
    ) -> None:
        """/settings gallery: show the server's images in the web gallery or not, and leave channels out of it or
        show them again (staff only)."""
        if not await self._staff(interaction):
            return
        if on is None and exclude is None and include is None:
            await reply(interaction, "Say `on:True` or `on:False`, or name a channel to exclude or include.")
            return
        excluded = list((await self.community.settings(interaction.guild_id)).gallery_excluded)
        notes = []
        if on is not None:
            notes.append(f"The web gallery is {'on' if on else 'off'} for this server.")
            if on:
                notes.append(
                    "It shows only images posted where everyone here can see them: never from private or "
                    "age-restricted channels or private threads."
                )
                if not self.bot.settings.gallery_port:
                    notes.append("(The bot's operator has not started the gallery yet: it appears once they do.)")
        if exclude is not None and exclude.id not in excluded:
            if len(excluded) >= MAX_EXCLUDED:
                await reply(interaction, f"At most {MAX_EXCLUDED} channels can be left out; include one again first.")
                return
            excluded.append(exclude.id)
        if exclude is not None:
            notes.append(f"{exclude.mention} and its threads are left out of the gallery.")
        if include is not None:
            left_out = include.id in excluded
            excluded = [c for c in excluded if c != include.id]
            notes.append(
                f"{include.mention} is in the gallery again." if left_out else f"{include.mention} was not left out."
            )
        changes = {"gallery_excluded": tuple(excluded)}
        if on is not None:
            changes["gallery"] = on
        await self.community.update(interaction.guild_id, **changes)
        await self._show(interaction, " ".join(notes))

    @group.command(name="me", description="Your own preferences: get your finished images by DM as well")
    @app_commands.describe(dm="Send me my finished images by DM as well")
    async def me(self, interaction: discord.Interaction, dm: bool) -> None:
        """/settings me: whether the member gets their finished images by DM as well (anyone, anywhere)."""
        await self.community.set_dm_results(interaction.user.id, dm)
        text = (
            "Your finished images will also come by DM (if your DMs are open to this server's members)."
            if dm
            else "Your finished images will no longer come by DM."
        )
        await reply(interaction, text)


async def setup(bot) -> None:
    """The extension's entry point: add the ServerSettings cog."""
    await bot.add_cog(ServerSettings(bot))
