"""`python -m bot`: read settings, check everything once (the models really load), then log in and run.

`python -m bot --check` runs the same check and exits: 0 when the bot could start, 2 with a sentence per problem.
`python -m bot prune [--dry-run]` applies the retention policy (old snapshots and uploads) and exits.
Exit status: 2 a setting or file to fix, 1 Discord could not be reached, 3 the database failed.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time

import discord

from bot.config import ConfigError, Settings
from storage import StorageError

log = logging.getLogger("bot")

NETWORK_ERRORS = (OSError, discord.GatewayNotFound, discord.HTTPException, discord.ConnectionClosed)


def _configure_logging(level: str, secrets: tuple[str, ...], form: str = "text") -> None:
    from bot.logs import JsonLines, install
    from engine.env import quiet_libraries

    formatter = JsonLines(*secrets) if form == "json" else discord.utils.MISSING  # MISSING: discord.py's own lines
    discord.utils.setup_logging(level=getattr(logging, level, logging.INFO), formatter=formatter)
    install(*secrets)  # the token and the Redis password never reach a log line, at any level
    quiet_libraries()
    # Voice is not used: no warnings about its optional libraries.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


def _say_problems(problems: list[str]) -> int:
    print("The bot cannot start yet:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return 2


def freeze_startup_objects() -> int:
    """Move every object alive now (the imported libraries, the loaded models: over 400,000 of them) out of the
    garbage collector's reach; returns how many. A full collection scanned them all, about 0.2 s on the event loop
    each time (the soak's worst loop lag went from about 195 to 98 ms). Python runs a full pass only once the objects
    that reached its oldest generation since the last one number a quarter of what that pass left there: the second
    collection, after the freeze, takes that count again without the frozen objects. Counted, they held off full passes
    for over 100,000 objects, and cyclic garbage (the messages discord.py drops from its cache with their reactions)
    piled up: none came in the soak's 900 jobs. Frozen objects live as long as the process anyway."""
    gc.collect()
    gc.freeze()
    gc.collect()
    return gc.get_freeze_count()


def main(argv: list[str] | None = None) -> int:
    """Run the bot, or `--check`, or `prune`; returns the exit status (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prune"]:
        from bot.prune import main as prune

        return prune(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="The imagine Discord bot. `python -m bot prune` applies the retention policy."
    )
    parser.add_argument("--check", action="store_true", help="check settings, models, data and database, then exit")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc} (see .env.example)", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level, settings.secrets(), settings.log_format)

    from bot.preflight import check

    started = time.monotonic()
    checked = check(settings)
    if checked.problems:
        return _say_problems(checked.problems)
    took = ", ".join(f"{k} {v:.1f} s" for k, v in checked.seconds.items())
    if args.check:
        what = "Redis answers" if settings.backend == "celery" else f"models loaded ({took})"
        print(f"ok: {what}, data directory writable, database opens.")
        return 0
    log.info("start-up check passed in %.1f s (%s); starting with %r", time.monotonic() - started, took, settings)

    from bot.client import ImagineBot, backend_for

    bot = ImagineBot(settings, backend_for(settings, checked.pool))
    log.info("froze %d start-up objects out of the garbage collector's way", freeze_startup_objects())
    try:
        bot.run(settings.token, log_handler=None)
    except discord.LoginFailure:
        print(
            "error: Discord refused the token in DISCORD_TOKEN; copy it again from the developer portal.",
            file=sys.stderr,
        )
        return 2
    except discord.PrivilegedIntentsRequired:
        print("error: Discord refused an intent the bot asked for; see the README's set-up.", file=sys.stderr)
        return 2
    except StorageError as exc:  # the database cannot be used (at start), or failed or vanished while running
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except NETWORK_ERRORS as exc:
        print(
            f"error: Discord could not be reached ({type(exc).__name__}: {str(exc)[:160] or 'no answer'}); "
            "check this machine's network and start the bot again.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
