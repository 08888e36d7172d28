"""/stats server (members with Manage Server): the server's images today and this week, its members by running time,
the queue now, the average wait and what the GPU did in the last hour; /stats me (everyone): a member's own.

The figures come from `bot.stats.Stats` (the bot's `stats`); the embeds are built by pure functions. Answers are
ephemeral: figures are for whoever asked."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from cogs.errors import reply

COLOR = discord.Color.from_rgb(114, 92, 255)


def span(seconds: float | None) -> str:
    """A duration as people read it: `42 s`, `7 min`, `3 h 05 min`; `-` for none."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def counts_line(counts) -> str:
    """A period's jobs (`bot.stats.Counts`): how many, and what became of them."""
    parts = [f"{counts.finished} finished"]
    for name in ("failed", "cancelled", "waiting", "running"):
        if getattr(counts, name):
            parts.append(f"{getattr(counts, name)} {name}")
    return f"**{counts.total}** asked for · " + " · ".join(parts)


def wait_line(wait) -> str:
    """The average wait (`storage.Wait`) over how many jobs."""
    if wait.mean is None:
        return "no job started this week"
    return f"{span(wait.mean)} on average ({wait.jobs} job{'s' if wait.jobs != 1 else ''} started this week)"


def queue_line(queue, whose: str) -> str:
    """The waiting line now (`bot.stats.Queue`): `whose` jobs, then everybody's."""
    eta = f" · the last is likely done in {span(queue.eta)}" if queue.waiting_all else ""
    return (
        f"{whose}: {queue.waiting} waiting, {queue.running} running\n"
        f"Everyone: {queue.waiting_all} waiting, {queue.running_all} running of {queue.capacity} at once{eta}"
    )


def hour_line(hour) -> str:
    """What the engine did in the last hour (`storage.Activity`)."""
    lines = [
        f"{span(hour.busy_seconds)} of running time ({hour.busy_seconds / 36:.0f}% of the hour for one job at a time)",
        f"{hour.images} image{'s' if hour.images != 1 else ''} finished · {hour.started} run(s) begun",
    ]
    if hour.failed or hour.cancelled:
        lines.append(f"{hour.failed} failed · {hour.cancelled} cancelled")
    return "\n".join(lines)


def server_embed(stats, guild_name: str) -> discord.Embed:
    """/stats server: a server's figures (`bot.stats.ServerStats`)."""
    embed = discord.Embed(title=f"Stats of {guild_name}", color=COLOR)
    embed.add_field(name="Today (UTC)", value=counts_line(stats.today), inline=False)
    embed.add_field(name="This week", value=counts_line(stats.week), inline=False)
    top = "\n".join(
        f"{u.rank}. <@{u.author_id}>: {span(u.seconds)} ({u.jobs} run{'s' if u.jobs != 1 else ''})" for u in stats.top
    )
    embed.add_field(name="Most GPU time this week", value=top or "nobody yet", inline=False)
    embed.add_field(name="Queue now", value=queue_line(stats.queue, "This server"), inline=False)
    embed.add_field(name="Average wait", value=wait_line(stats.wait), inline=False)
    embed.add_field(name="The GPU in the last hour (every server)", value=hour_line(stats.hour), inline=False)
    return embed


def member_embed(stats, name: str) -> discord.Embed:
    """/stats me: a member's figures (`bot.stats.MemberStats`)."""
    embed = discord.Embed(title=f"Stats of {name}", color=COLOR)
    embed.add_field(name="Today (UTC)", value=counts_line(stats.today), inline=False)
    embed.add_field(name="This week", value=counts_line(stats.week), inline=False)
    embed.add_field(name="All time", value=counts_line(stats.all_time), inline=False)
    usage = stats.usage
    rank = f" · #{usage.rank} of this server's members" if usage.rank else ""
    used = f"{span(usage.seconds)} in {usage.jobs} run(s){rank}"
    embed.add_field(name="GPU time this week", value=used, inline=False)
    embed.add_field(name="Your average wait", value=wait_line(stats.wait), inline=False)
    embed.add_field(name="Queue now", value=queue_line(stats.queue, "Yours"), inline=False)
    return embed


class Stats(commands.Cog):
    """/stats server for staff, /stats me for everyone."""

    group = app_commands.Group(name="stats", description="What the bot did: this server's figures (staff), or yours")

    def __init__(self, bot) -> None:
        self.bot = bot

    @group.command(name="server", description="This server's images, GPU time, queue and waits (Manage Server)")
    async def server(self, interaction: discord.Interaction) -> None:
        """/stats server: the server's figures (staff only)."""
        if interaction.guild_id is None:
            await reply(interaction, "Server stats are shown in a server; /stats me works here.")
            return
        if not interaction.permissions.manage_guild:
            await reply(interaction, "Only members with the Manage Server permission can see the server's stats.")
            return
        stats = await self.bot.stats.server(interaction.guild_id)
        name = interaction.guild.name if interaction.guild is not None else "this server"
        await interaction.response.send_message(embed=server_embed(stats, name), ephemeral=True)

    @group.command(name="me", description="Your images, GPU time and waits here")
    async def me(self, interaction: discord.Interaction) -> None:
        """/stats me: the member's own figures here (in DMs: their DM images)."""
        stats = await self.bot.stats.member(interaction.guild_id, interaction.user.id)
        await interaction.response.send_message(
            embed=member_embed(stats, interaction.user.display_name), ephemeral=True
        )


async def setup(bot) -> None:
    """The extension's entry point: add the Stats cog."""
    await bot.add_cog(Stats(bot))
