"""/describe and the "Describe image" message command: what CLIP sees in a picture, as a ready prompt with a
button that imagines it."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import Origin
from cogs.errors import View, reply
from engine.errors import InvalidSpec

log = logging.getLogger(__name__)

MAX_PICTURE = 10 * 1024 * 1024
SHOWN = 3  # terms shown per category


def description_embed(description) -> discord.Embed:
    """The prompt, then the best terms of each category with their similarities."""
    embed = discord.Embed(
        title="What CLIP sees", description=f"```{description.prompt}```", color=discord.Color.from_rgb(114, 92, 255)
    )
    for category, ranked in description.ranked.items():
        terms = " · ".join(f"{term} ({score:.2f})" for term, score in ranked[:SHOWN])
        embed.add_field(name=category.capitalize(), value=terms[:1024] or "-", inline=False)
    embed.set_footer(text=f"{description.model} · prompt similarity {description.prompt_similarity:.3f}")
    return embed


class ImagineThis(View):
    """One button: queue the described prompt as an /imagine of the member who clicks (for ten minutes)."""

    def __init__(self, cog: Describe, prompt: str) -> None:
        super().__init__(timeout=600)
        self.cog, self.prompt = cog, prompt

    @discord.ui.button(label="Imagine this", style=discord.ButtonStyle.primary, emoji="🎨")
    async def imagine(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Queue the prompt as the clicking member's /imagine under this server's rules and cooldown; refusals reach
        the error handler (`View.on_error`), which answers the member only."""
        await self.cog.bot.get_cog("Imagine").imagine_prompt(interaction, self.prompt)


class Describe(commands.Cog):
    """Describe pictures with the bot's CLIP model."""

    def __init__(self, bot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Describe image", callback=self.describe_message)
        bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        """Take the Describe image message command off the command tree."""
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="describe", description="What CLIP sees in a picture, as a prompt you can imagine")
    @app_commands.describe(
        image="The picture to describe", share="Show the answer to the channel (default: to you only)"
    )
    async def describe(self, interaction: discord.Interaction, image: discord.Attachment, share: bool = False) -> None:
        """/describe: what CLIP sees in an attached picture, to the member only unless they share it."""
        await self._describe(interaction, image, share)

    async def describe_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The message command: the first picture of a message (the bot's own results included), to the member only."""
        pictures = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
        if pictures and all(a.is_spoiler() for a in pictures):  # flagged, or hidden by its poster: not described
            await reply(interaction, "That picture is behind a spoiler; it is not described.")
            return
        pictures = [a for a in pictures if not a.is_spoiler()]
        if not pictures:
            await reply(interaction, "That message has no picture to describe.")
            return
        await self._describe(interaction, pictures[0], False)

    async def _describe(self, interaction: discord.Interaction, attachment: discord.Attachment, share: bool) -> None:
        if attachment.size > MAX_PICTURE:
            raise InvalidSpec(f"The picture is {attachment.size / 1024 / 1024:.0f} MB; the limit is 10 MB.")
        jobs = self.bot.jobs
        if not jobs.can_describe:  # before the member waits for a download
            raise InvalidSpec("/describe needs the engine in the bot's own process; this bot runs it on workers.")
        parent = getattr(interaction.channel, "parent_id", None)
        origin = Origin(interaction.guild_id, interaction.channel_id, interaction.user.id, parent)
        await jobs.check_describe(origin)  # the cooldown and the one-at-a-time rule, answered before the wait
        await interaction.response.defer(thinking=True, ephemeral=not share)
        description = await jobs.describe(origin, await attachment.read(), self.bot.settings.clip_model)
        await interaction.followup.send(
            embed=description_embed(description),
            view=ImagineThis(self, description.prompt) if description.prompt else discord.utils.MISSING,
            allowed_mentions=discord.AllowedMentions.none(),
            ephemeral=not share,
        )


async def setup(bot) -> None:
    """The extension's entry point: add the Describe cog."""
    await bot.add_cog(Describe(bot))
