"""The process's settings and logs, for the command lines: `.env` read once, third-party chatter kept quiet.

Standard library and python-dotenv only, so the bot can use it without torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path


def load_env(path: str | Path | None = None) -> dict[str, str]:
    """Read `.env` (or `path`) into the environment without overriding what is already set; returns a copy."""
    from dotenv import load_dotenv

    load_dotenv(path or ".env", override=False)
    return dict(os.environ)


class _QuietLibraries(logging.Filter):
    """Drops open_clip's per-load INFO lines and "initialised randomly" notes, which it logs through the root
    logger, and taming's prints-as-logs; warnings from our own code and errors from anyone pass."""

    NOISY = ("open_clip", "taming", "huggingface_hub", "timm")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name == "root" and any(f"{os.sep}{n}{os.sep}" in record.pathname for n in self.NOISY):
            return False
        return not record.name.startswith(self.NOISY)


def quiet_libraries() -> None:
    """Install the filter on the root logger (records logged with `logging.info(...)` are created there) and on
    its handlers (records that propagate from named library loggers). Idempotent."""
    root = logging.getLogger()
    for target in (root, *root.handlers):
        if not any(isinstance(f, _QuietLibraries) for f in target.filters):
            target.addFilter(_QuietLibraries())
    for name in ("PIL", "httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
