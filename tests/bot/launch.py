"""`python -m tests.bot.launch API_BASE GATEWAY_URL [args]`: `python -m bot` pointed at a loopback Discord."""

import sys

import discord
import yarl

if __name__ == "__main__":
    discord.http.Route.BASE = sys.argv[1]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2])
    from bot.__main__ import main

    sys.exit(main(sys.argv[3:]))
