"""The web gallery: each server's top images (this week and all time) with votes, CLIP score and recipe, served
read-only by the bot process itself, for the servers that turned it on in /settings.

`make_app` builds the aiohttp application; `Gallery` runs it on a host and port next to the bot."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from bot.gallery._app import PAGE_SIZE, SAFE_HEADERS, make_app
from bot.gallery._server import GalleryRunner
from bot.webserver import WebServer
from storage import Store

__all__ = ["PAGE_SIZE", "SAFE_HEADERS", "Gallery", "make_app"]

log = logging.getLogger(__name__)


class Gallery(WebServer):
    """The gallery's web server: `await start(host, port)` (port 0 picks a free one, see `.port`), `await stop()`."""

    runner_class = GalleryRunner

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        *,
        guild_name: Callable[[int], str | None] = lambda guild_id: None,
        title: str = "imagine",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(make_app(store, data_dir, guild_name=guild_name, title=title, clock=clock))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on `host`:`port`; returns once the socket is bound."""
        await super().start(host, port)
        log.info("gallery listening on http://%s:%d/", host, self.port)

    @staticmethod
    def url_for_image(job_id: int, base_url: str) -> str:
        """The public address of an image's page, under the gallery's public `base_url`."""
        return f"{base_url.rstrip('/')}/i/{job_id}"
