"""The /imagine feature: commands, buttons, embeds and the Discord presenter of jobs."""

from cogs.imagine._cog import Imagine
from cogs.imagine._presenter import DiscordPresenter
from cogs.imagine._views import DYNAMIC_ITEMS


async def setup(bot) -> None:
    """Add the commands, the persistent buttons, and the presenter the job and tournament services report to."""
    presenter = DiscordPresenter(bot, interval=bot.settings.edit_interval)
    bot.jobs.presenter = bot.tournaments.presenter = presenter
    bot.presenter = presenter
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await bot.add_cog(Imagine(bot))


__all__ = ["DYNAMIC_ITEMS", "DiscordPresenter", "Imagine", "setup"]
