"""Who could see a channel when a result was posted in it: everyone in the server, or fewer.

The web gallery publishes only images that everyone in their server could see where they were posted: a channel
the @everyone role can view (for a thread, its parent channel; a private thread never counts), in neither an
age-restricted channel nor a server Discord marks for adult content. It is decided once, when the result is
posted, from the channel as the bot sees it then; anything the bot cannot tell counts as restricted."""

from __future__ import annotations

from dataclasses import dataclass

import discord

EVERYONE = "everyone"
RESTRICTED = "restricted"
ADULT_SERVERS = (discord.NSFWLevel.explicit, discord.NSFWLevel.age_restricted)


@dataclass(frozen=True)
class Audience:
    """Who could see a post (`EVERYONE` or `RESTRICTED`) and the channel that decided it: the post's channel, or
    the parent channel of the thread it is in (None when unknown)."""

    who: str
    channel_id: int | None


def audience(channel) -> Audience:
    """The audience of a post in `channel` (a discord.py channel or thread), from its permissions and flags now."""
    guild = getattr(channel, "guild", None)
    if guild is None:  # a DM
        return Audience(RESTRICTED, None)
    home = channel
    if isinstance(channel, discord.Thread):
        if channel.is_private():  # members only, whatever its parent allows
            return Audience(RESTRICTED, channel.parent_id)
        home = channel.parent
        if home is None:  # the parent is not known to the bot: nothing to judge by
            return Audience(RESTRICTED, channel.parent_id)
    if not _open_to_everyone(guild, home):
        return Audience(RESTRICTED, home.id)
    return Audience(EVERYONE, home.id)


def _open_to_everyone(guild: discord.Guild, channel) -> bool:
    """Whether the @everyone role can view `channel`, and neither it nor the server is for adults."""
    if guild.nsfw_level in ADULT_SERVERS:
        return False
    is_nsfw = getattr(channel, "is_nsfw", None)
    if is_nsfw is None or is_nsfw():  # a kind of channel without the flag is not judged
        return False
    permissions_for = getattr(channel, "permissions_for", None)
    return permissions_for is not None and permissions_for(guild.default_role).view_channel
