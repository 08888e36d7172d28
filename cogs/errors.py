"""One error handler for the command tree, the buttons, the menus and the forms: a sentence for the member, the
traceback for the log. Commands reach it as the tree's `on_error`; views and modals by deriving from `View` and
`Modal` here; the persistent buttons (`discord.ui.DynamicItem`, whose errors discord.py only logs) through
`handle`, which their base class calls.

Order of the mapping (first match wins):
    InvalidSpec, QueueFull, OutOfMemory -> their own message (written for members)
    CheckpointError               -> "this model is not installed" (details in the log)
    StorageError                  -> "the bot's storage failed; it is stopping" (and the bot stops)
    CommandOnCooldown             -> "slow down, try again in N s"
    MissingPermissions/CheckFailure -> "you cannot use this here"
    TransformerError              -> "that value is not valid for <option>"
    anything else                 -> "something went wrong; it was logged"
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import StorageError
from bot.queue import QueueFull
from engine.errors import CheckpointError, InvalidSpec, OutOfMemory, public_message

log = logging.getLogger(__name__)


def _original(error: Exception) -> BaseException:
    """The error behind discord.py's wrappers (CommandInvokeError and the like)."""
    return getattr(error, "original", None) or error.__cause__ or error


def message_for(error: Exception) -> str:
    """The sentence a member reads for `error` (the mapping is in the module docstring)."""
    original = _original(error)
    if isinstance(original, InvalidSpec | QueueFull | OutOfMemory | CheckpointError):
        return public_message(original)  # the sentence, without any folder of this machine
    if isinstance(original, StorageError):
        return "The bot's storage has failed, so it is stopping; the operator has been told."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down a little: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.MissingPermissions | app_commands.CheckFailure):
        return "You cannot use this command here."
    if isinstance(error, app_commands.TransformerError):
        return f"{error.value!r} is not a valid value for this option."
    return "Something went wrong on our side; the error was logged. Please try again."


async def reply(interaction: discord.Interaction, text: str) -> None:
    """Tell the member `text` (to them only), as a follow-up if the interaction was answered; a failure is logged."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the member about an error: %s", text)


async def handle(interaction: discord.Interaction, error: Exception, what: str) -> None:
    """Answer `error` raised while serving `interaction` (by `what`: a command, button or form): reply with the
    member's sentence, log errors other than refusals and cooldowns, and stop the bot on a StorageError."""
    original = _original(error)
    if isinstance(original, StorageError) and hasattr(interaction.client, "storage_failed"):
        interaction.client.storage_failed(original)
    if not isinstance(original, InvalidSpec | QueueFull | OutOfMemory) and not isinstance(
        error, app_commands.CommandOnCooldown
    ):
        log.error("%s failed", what, exc_info=original)
    await reply(interaction, message_for(error))


class View(discord.ui.View):
    """A view whose callbacks' errors reach `handle` (discord.py's default only logs them)."""

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        """Hand the error to `handle`, naming the item."""
        await handle(interaction, error, f"{type(item).__name__} of {type(self).__name__}")


class Modal(discord.ui.Modal):
    """A form whose submit errors reach `handle` (discord.py's default only logs them)."""

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        """Hand the error to `handle`, naming the form."""
        await handle(interaction, error, type(self).__name__)


class Errors(commands.Cog):
    """Installs itself as the command tree's error handler."""

    def __init__(self, bot) -> None:
        self.bot = bot
        bot.tree.on_error = self.on_app_command_error

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError):
        """Hand the error to `handle`, naming the command."""
        await handle(interaction, error, f"command {getattr(interaction.command, 'name', '?')}")


async def setup(bot) -> None:
    """The extension's entry point: add the Errors cog."""
    await bot.add_cog(Errors(bot))
