"""`python -m bot.firstrun`: what `make run` does before starting the bot, each step skipped when already done.

1. `.env`: created from `.env.example` when missing; the token is asked for (and saved) when none is set and
   someone is at the terminal, else one sentence says where to put it.
2. Models: the default VQGAN and CLIP are downloaded (with progress, resumable, checksummed) when missing.
Exit 0 when the bot can be started, 2 for a missing token, 1 when a download failed.
"""

from __future__ import annotations

import getpass
import os
import shutil
import sys
from pathlib import Path

from engine.env import load_env
from engine.models import registry

TOKEN_HELP = (
    "DISCORD_TOKEN is not set: put the bot's token in .env (DISCORD_TOKEN=...); it is on the Bot page of your "
    "application in the Discord developer portal. Then run `make run` again."
)


def ensure_env(path: Path, example: Path, interactive: bool) -> int:
    """Create `.env` from the example if needed, and ask for the token when it is missing."""
    if not path.exists() and example.exists():
        shutil.copyfile(example, path)
        print(f"Created {path} from {example}; every setting is explained there.")
    load_env(path)
    if os.environ.get("DISCORD_TOKEN", "").strip():
        return 0
    if not interactive:
        print(f"error: {TOKEN_HELP}", file=sys.stderr)
        return 2
    token = getpass.getpass("Paste the bot's token (Discord developer portal > your application > Bot): ").strip()
    if not token:
        print(f"error: {TOKEN_HELP}", file=sys.stderr)
        return 2
    from dotenv import set_key

    set_key(str(path), "DISCORD_TOKEN", token, quote_mode="never")
    os.environ["DISCORD_TOKEN"] = token
    print(f"Saved the token in {path}.")
    return 0


def missing_models(settings) -> tuple[list[str], list[str]]:
    """The default VQGAN and CLIP when neither the models directory nor an explicit setting provides them."""
    vqgans = [] if settings.vqgan_installed() else [registry.DEFAULT_VQGAN]
    has_clip = settings.clip_checkpoint or registry.find_clip_checkpoint(settings.clip_model, settings.models_dir)
    return vqgans, [] if has_clip else [settings.clip_model]


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.firstrun` (`make run` calls it): a `.env` with a token, and the default models downloaded."""
    from bot.config import ConfigError, Settings

    code = ensure_env(Path(".env"), Path(".env.example"), sys.stdin.isatty())
    if code:
        return code
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc} (see .env.example)", file=sys.stderr)
        return 2
    vqgans, clips = missing_models(settings)
    if settings.backend == "celery" or (not vqgans and not clips):
        return 0  # with the celery backend the models live on the workers
    print(f"Downloading {', '.join(vqgans + clips)} into {settings.models_dir} (about 1.3 GB, resumable)...")
    from engine.errors import CheckpointError
    from engine.models.__main__ import download

    try:
        download(vqgans, clips, settings.models_dir, settings.hf_endpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
