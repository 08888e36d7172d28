"""`python -m tests.bot.launch API_BASE GATEWAY_URL [args]`: `python -m bot` pointed at a loopback Discord."""

import sys

import discord
import yarl


def point_at(api_base: str, gateway_url: str) -> None:
    """Send this process's discord.py to the loopback stand-in (REST and gateway)."""
    discord.http.Route.BASE = api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


if __name__ == "__main__":
    point_at(sys.argv[1], sys.argv[2])
    from bot.__main__ import main

    sys.exit(main(sys.argv[3:]))
