"""An aiohttp application served on a host and port beside the bot (the web gallery, the operations port)."""

from __future__ import annotations

from aiohttp import web


class WebServer:
    """`await start(host, port)` (port 0 picks a free one, see `.port`), `await stop()`. `runner_class` and
    `runner_options` say how the application is run (the gallery's runner adds its own headers)."""

    runner_class: type[web.AppRunner] = web.AppRunner
    runner_options: dict = {}

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.host: str | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on `host`:`port`; returns once the socket is bound (OSError if it cannot be)."""
        runner = self.runner_class(self.app, handle_signals=False, **self.runner_options)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host, self.port = host, runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listening socket and the open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """The address it listens on (for logs and tests)."""
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"
