"""The gallery in a real browser: headless Chromium driven over the Chrome DevTools Protocol (aiohttp's websocket
client, no Selenium or Playwright), and a demo server of generated pictures. The browser test uses both; the
README's picture is drawn with

    python -m bot.gallery.screenshot docs/gallery.png
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image, ImageDraw, ImageOps

from bot.gallery import Gallery
from engine.spec import JobSpec
from storage import JobState, Store

log = logging.getLogger(__name__)

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEMO_GUILD = 424242
DEMO_NAME = "Pixel Club"


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary on PATH, or None."""
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(Exception):
    """Chromium could not be started or did not answer."""


@dataclass(frozen=True)
class PageLoad:
    """What a page looked like once loaded."""

    images: list[tuple[bool, int]]  # (complete, naturalWidth) of each <img>
    text: str  # document.body.innerText
    background: str  # the body's computed background colour: the stylesheet was applied
    errors: list[str]  # the console's errors (a blocked resource, a CSP violation)
    screenshot: bytes  # PNG


class Chromium:
    """One headless Chromium with one page: `async with Chromium() as browser: await browser.load(url)`."""

    def __init__(self, binary: str | None = None, *, size: tuple[int, int] = (1280, 900), timeout: float = 20.0):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise BrowserError(f"No Chromium found on PATH (looked for {', '.join(BINARIES)}).")
        self.size, self.timeout = size, timeout
        self._profile: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None
        self._next_id = 0
        self._replies: dict[int, asyncio.Future] = {}
        self._waiters: dict[str, asyncio.Future] = {}
        self._errors: list[str] = []

    async def __aenter__(self) -> Chromium:
        try:
            await asyncio.wait_for(self._start(), self.timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _start(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="imagine-chromium-")
        args = [
            "--headless=new",
            "--no-sandbox",  # containers and CI run as root, where the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            f"--user-data-dir={self._profile}",
            f"--window-size={self.size[0]},{self.size[1]}",
            "about:blank",
        ]
        self._process = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group: Debian's wrapper script runs the browser as a child
        )
        port = await self._devtools_port()
        self._session = aiohttp.ClientSession()
        page = None
        while page is None:  # the first tab can appear a moment after the port file
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json(content_type=None)
            page = next((t for t in targets if t.get("type") == "page"), None)
            if page is None:
                await asyncio.sleep(0.05)
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            await self.send(method)
        width, height = self.size
        await self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
        )

    async def _devtools_port(self) -> int:
        path = Path(self._profile) / "DevToolsActivePort"
        while True:
            if self._process.returncode is not None:
                raise BrowserError(f"{self.binary} exited with status {self._process.returncode} on start.")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                return int(path.read_text().splitlines()[0])
            await asyncio.sleep(0.05)

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._replies.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                self._errors.append(params["entry"].get("text", ""))
            elif method == "Runtime.exceptionThrown":
                self._errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            waiter = self._waiters.pop(method, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(params)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(BrowserError("Chromium closed the DevTools connection."))

    async def send(self, method: str, **params: Any) -> dict:
        """Call one DevTools method and return its result."""
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        self._replies[self._next_id] = future
        await self._ws.send_json({"id": self._next_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, self.timeout)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def load(self, url: str) -> PageLoad:
        """Open `url`, wait for it and its images, and describe it (with a screenshot of the viewport)."""
        self._errors.clear()
        loaded = asyncio.get_running_loop().create_future()
        self._waiters["Page.loadEventFired"] = loaded
        navigated = await self.send("Page.navigate", url=url)
        if navigated.get("errorText"):
            raise BrowserError(f"{url}: {navigated['errorText']}")
        await asyncio.wait_for(loaded, self.timeout)
        for _ in range(50):  # lazy images start after the load event
            if await self.evaluate("Array.from(document.images).every(i => i.complete)"):
                break
            await asyncio.sleep(0.1)
        images = [
            tuple(pair)
            for pair in await self.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        ]
        text = await self.evaluate("document.body.innerText")
        background = await self.evaluate("getComputedStyle(document.body).backgroundColor")
        shot = await self.send("Page.captureScreenshot", format="png")
        return PageLoad(images, text, background, list(self._errors), base64.b64decode(shot["data"]))

    async def close(self) -> None:
        """Stop the browser (its whole process group) and remove its profile."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            await _end_group(self._process)
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
        self._ws = self._reader = self._session = self._process = self._profile = None


async def _end_group(process: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """End the process group we started for Chromium (the wrapper and the browser's own processes): SIGTERM, then
    SIGKILL for whatever is left after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline:
        if process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.05)
            continue
        try:
            os.killpg(process.pid, 0)  # any member of the group still alive?
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


# -- a demo server -------------------------------------------------------------------------------------------
DEMO_PROMPTS = (
    "a cityscape at night | trending on artstation",
    "a lighthouse in a storm, oil painting",
    "sunset over the mountains | matte painting",
    "an underwater temple | unreal engine",
    "a field of lavender under a pink sky",
    "the moon over a quiet harbour",
    "a neon jungle | synthwave",
    "autumn forest in the morning fog",
    "a desert caravan at dawn | 4k",
    "crystal caves | concept art",
)
_PALETTES = (
    ("#0b1026", "#5b2a86", "#ffd166"),
    ("#1d3557", "#457b9d", "#f1faee"),
    ("#ff7b00", "#6a0572", "#3c096c"),
    ("#003049", "#0a9396", "#94d2bd"),
    ("#b5838d", "#e5989b", "#6d597a"),
    ("#03045e", "#0077b6", "#e0e1dd"),
    ("#06d6a0", "#118ab2", "#ef476f"),
    ("#bc6c25", "#dda15e", "#606c38"),
    ("#f4a261", "#e76f51", "#264653"),
    ("#7400b8", "#48bfe3", "#80ffdb"),
)


def demo_picture(n: int, size: int = 256) -> Image.Image:
    """A colourful picture: a sky gradient, a sun or moon, and a skyline or hills (the same for the same n)."""
    top, bottom, light = _PALETTES[n % len(_PALETTES)]
    sky = ImageOps.colorize(Image.linear_gradient("L").resize((size, size)), black=top, white=bottom)
    draw = ImageDraw.Draw(sky)
    cx, cy, r = size * (0.25 + 0.5 * ((n * 37) % 10) / 10), size * 0.3, size * 0.12
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=light)
    if n % 2 == 0:  # a skyline
        x = 0
        while x < size:
            w, h = 14 + (x * 7 + n * 13) % 30, size * (0.2 + ((x * 11 + n * 5) % 40) / 100)
            draw.rectangle((x, size - h, x + w, size), fill=top)
            for wy in range(int(size - h) + 6, size - 6, 12):
                draw.rectangle((x + 4, wy, x + 7, wy + 4), fill=light)
            x += w + 2
    else:  # hills
        for layer, shade in enumerate((bottom, top)):
            points = [(0, size)]
            for x in range(0, size + 16, 16):
                y = size * (0.6 + 0.15 * layer) + 20 * math.sin((x + n * 40 + layer * 90) / 35)
                points.append((x, y))
            points.append((size, size))
            draw.polygon(points, fill=shade)
    return sky


async def build_demo(folder: Path, count: int = len(DEMO_PROMPTS)) -> tuple[Store, Path, list[int]]:
    """A store and data folder under `folder` with one server (gallery on) of `count` finished pictures, some
    votes, and a timelapse for the first. Returns (store, data_dir, job ids best first)."""
    store = await Store.open(folder / "db" / "imagine.sqlite")
    data_dir = folder / "data"
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    (data_dir / "timelapses").mkdir(exist_ok=True)
    await store.update_guild_settings(DEMO_GUILD, gallery=True)
    ids = []
    for n in range(count):
        prompt = DEMO_PROMPTS[n % len(DEMO_PROMPTS)]
        spec = JobSpec(prompt, width=256, height=256, steps=300, seed=1000 + n)
        job = await store.create_job(guild_id=DEMO_GUILD, channel_id=1, author_id=2, spec_json=spec.to_json())
        path = data_dir / "images" / f"{job.id}.png"
        demo_picture(n).save(path)
        score = round(0.42 - n * 0.013, 4)
        await store.set_state(
            job.id, JobState.DONE, image_path=str(path), score=score, width=256, height=256, audience="everyone"
        )
        for voter in range(count - n):
            await store.set_vote(job.id, 100 + voter, 1, True)
        ids.append(job.id)
    frames = [demo_picture(0).point(lambda v, k=k: v * k // 8) for k in range(1, 9)]
    frames[0].save(data_dir / "timelapses" / f"{ids[0]}.gif", save_all=True, append_images=frames[1:], duration=120)
    return store, data_dir, ids


async def screenshot(out: Path, page: str = "server") -> None:
    """Write a screenshot of the demo server's page (or of its best image's page) to `out`."""
    with tempfile.TemporaryDirectory(prefix="imagine-demo-") as tmp:
        store, data_dir, ids = await build_demo(Path(tmp))
        gallery = Gallery(store, data_dir, guild_name={DEMO_GUILD: DEMO_NAME}.get)
        try:
            await gallery.start("127.0.0.1", 0)
            path = f"/g/{DEMO_GUILD}" if page == "server" else f"/i/{ids[0]}"
            async with Chromium() as browser:
                loaded = await browser.load(gallery.url + path)
        finally:
            await gallery.stop()
            await store.close()
    image = Image.open(io.BytesIO(loaded.screenshot))
    image.save(out, format="PNG", optimize=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.gallery.screenshot OUT.png [server|image]`: write the demo screenshot; 0, or 1 when the browser
    fails, 2 for bad arguments."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") or len(argv) > 2 or argv[1:] not in ([], ["server"], ["image"]):
        print("usage: python -m bot.gallery.screenshot OUT.png [server|image]", file=sys.stderr)
        return 2
    try:
        asyncio.run(screenshot(Path(argv[0]), *argv[1:]))
    except BrowserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
