"""The gallery's HTTP server: aiohttp's, except that the answers aiohttp writes itself look like the gallery's.

aiohttp answers a request it cannot parse (a request line or a header over its limits, too many headers, TLS
sent to the HTTP port, ...) from its connection handler, before any application code: no middleware runs and no
`on_response_prepare` signal fires, so such an answer would carry none of the safe headers, aiohttp's name and
version in `Server`, and the parser's message (part of the request, echoed) as its body. Here the connection
handler answers those with the gallery's own error page instead."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bot.gallery._app import error_page

log = logging.getLogger(__name__)


class _Connection(web.RequestHandler):
    """aiohttp's handler of one connection, whose own error answers are the gallery's error page."""

    __slots__ = ("_app",)

    def __init__(self, manager: web.Server, *, app: web.Application, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._app = app

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The error page for `status` (the connection is closed after it); aiohttp's message is only logged."""
        if request.writer.output_size > 0:  # an answer was already begun: only closing the connection is left
            raise ConnectionError("an answer was already being sent when the request failed")
        if status >= 500:
            log.error("gallery request from %s failed", request.remote, exc_info=exc)
        else:
            log.info("gallery refused a request from %s: %s", request.remote, message or exc)
        response = error_page(self._app, status)
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's server, making a `_Connection` for each connection."""

    def __init__(self, handler: Any, *, app: web.Application, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._app = app

    def __call__(self) -> web.RequestHandler:
        return _Connection(self, app=self._app, loop=self._loop, **self._kwargs)


class GalleryRunner(web.AppRunner):
    """An AppRunner for the gallery's application whose server answers protocol errors with the gallery's page."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts and freezes the application, as AppRunner does
        return _Server(
            made.request_handler,
            app=self.app,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **self._kwargs,
        )
