"""The /imagine feature: commands, buttons, embeds and the Discord presenter of jobs."""

from cogs.imagine._cog import Imagine
from cogs.imagine._presenter import DiscordPresenter
from cogs.imagine._views import DYNAMIC_ITEMS


async def setup(bot) -> None:
    await bot.add_cog(Imagine(bot))


__all__ = ["DYNAMIC_ITEMS", "DiscordPresenter", "Imagine", "setup"]
