"""The real bot as a process of its own (embedded backend, tiny models) against the loopback Discord stand-in, for
tests that stop it with SIGKILL. Exits like `python -m bot` should: 3 with one sentence when storage fails.

    python -m tests.bot.loopback_bot API_BASE GATEWAY_URL DATA_DIR MODELS_DIR
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    api_base, gateway_url, data_dir, models_dir = argv
    from tests.bot.launch import point_at

    point_at(api_base, gateway_url)

    import bot.client
    from bot.catalog import SIZES
    from bot.client import ImagineBot
    from bot.config import Settings
    from storage import StorageError

    SIZES["square-small"] = (64, 64)  # tiny models on a shared CPU: a job takes seconds, not half a minute
    bot.client.STORAGE_CHECK_EVERY = 2.0  # notice a deleted database within seconds

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    settings = Settings(
        token="loopback-token",
        data_dir=Path(data_dir),
        models_dir=Path(models_dir),
        clip_model="tiny-clip",
        device="cpu",
        max_concurrent=1,
        default_steps=10,
        max_steps=50,
        snapshot_every=3,
        edit_interval=1.0,
        max_queued_per_user=20,
        max_queue=50,
    )
    client = ImagineBot(settings)
    try:
        client.run(settings.token, log_handler=None)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
