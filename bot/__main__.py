"""`python -m bot`: read settings, check them, configure logging once, start the bot."""

from __future__ import annotations

import logging
import sys

import discord

from bot.config import Settings


def main() -> int:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc} (see .env.example)", file=sys.stderr)
        return 2
    problems = settings.problems()
    if problems:
        print("The bot cannot start yet:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    discord.utils.setup_logging(level=getattr(logging, settings.log_level, logging.INFO))
    logging.getLogger(__name__).info("starting with %r", settings)

    from bot.client import ImagineBot

    bot = ImagineBot(settings)
    try:
        bot.run(settings.token, log_handler=None)
    except discord.LoginFailure:
        print(
            "error: Discord refused the token in DISCORD_TOKEN; copy it again from the developer portal.",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
