"""Votes from raw reaction events (cached or not), into the database.

👍 counts +1, 👎 counts -1. Reactions from bots (this one's seed reactions included) never count, and neither
does an author's vote on their own image: the leaderboard ranks what the community likes.
"""

from __future__ import annotations

import discord
from discord.ext import commands

VOTES = {"👍": 1, "👎": -1}


class Votes(commands.Cog):
    """Records 👍 / 👎 reactions on result messages as votes."""

    def __init__(self, bot) -> None:
        self.bot = bot

    async def _record(self, payload: discord.RawReactionActionEvent, present: bool) -> None:
        value = VOTES.get(str(payload.emoji))
        if value is None or payload.user_id == self.bot.user.id or self._is_bot(payload):
            return
        await self.bot.jobs.vote(payload.message_id, payload.user_id, value, present)

    def _is_bot(self, payload: discord.RawReactionActionEvent) -> bool:
        user = payload.member or self.bot.get_user(payload.user_id)  # no member on removals: the user cache
        return bool(user and user.bot)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """Record a vote reaction a member added."""
        await self._record(payload, True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        """Withdraw a vote reaction a member removed."""
        await self._record(payload, False)


async def setup(bot) -> None:
    """The extension's entry point: add the Votes cog."""
    await bot.add_cog(Votes(bot))
