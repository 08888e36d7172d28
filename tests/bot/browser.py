"""The gallery in a real browser, for the browser test and the README's picture: Playwright driving the system's
Chromium (found on PATH and passed as `executable_path`; `playwright install` is never needed), and a demo server
of generated pictures. The README's picture is drawn, from the repository root, with

    python -m tests.bot.browser docs/gallery.png
"""

from __future__ import annotations

import asyncio
import io
import math
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps
from playwright.async_api import ConsoleMessage, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

from bot.gallery import Gallery
from engine.spec import JobSpec
from storage import JobState, Store

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


@dataclass(frozen=True)
class PageLoad:
    """What a page looked like once loaded."""

    status: int  # the HTTP status of the page itself
    images: list[tuple[bool, int]]  # (complete, naturalWidth) of each <img>
    text: str  # document.body.innerText
    background: str  # the body's computed background colour: the stylesheet was applied
    errors: list[str]  # the console's errors (a blocked resource, a CSP violation) and uncaught exceptions
    screenshot: bytes  # PNG of the viewport


@asynccontextmanager
async def open_page(binary: str, *, size: tuple[int, int] = (1280, 900), timeout: float = 20.0) -> AsyncIterator[Page]:
    """One headless Chromium with one page of `size` CSS pixels at scale 1, closed (with its processes) on exit."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=binary,
            timeout=timeout * 1000,
            args=["--disable-dev-shm-usage"],  # containers give /dev/shm 64 MB, too little for the renderer
        )
        try:
            page = await browser.new_page(viewport={"width": size[0], "height": size[1]}, device_scale_factor=1)
            page.set_default_timeout(timeout * 1000)
            yield page
        finally:
            await browser.close()


async def load(page: Page, url: str) -> PageLoad:
    """Open `url`, wait for it and its images, and describe it (with a screenshot of the viewport)."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_page_error(error: PlaywrightError) -> None:
        errors.append(str(error))

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    try:
        response = await page.goto(url, wait_until="load")
        # Lazy images start after the load event. Polled from here: `wait_for_function` evaluates its predicate
        # with the page's eval, which the gallery's Content-Security-Policy forbids. One still loading after 5 s
        # is the caller's to report, so the wait ends quietly and the images are described as they are.
        for _ in range(50):
            if await page.evaluate("Array.from(document.images).every(i => i.complete)"):
                break
            await asyncio.sleep(0.1)
        images = await page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        text = await page.evaluate("document.body.innerText")
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        shot = await page.screenshot(type="png")
    finally:
        page.remove_listener("console", on_console)
        page.remove_listener("pageerror", on_page_error)
    return PageLoad(response.status, [tuple(pair) for pair in images], text, background, errors, shot)


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


async def screenshot(binary: str, out: Path, page: str = "server") -> None:
    """Write a screenshot of the demo server's page (or of its best image's page) to `out`."""
    with tempfile.TemporaryDirectory(prefix="imagine-demo-") as tmp:
        store, data_dir, ids = await build_demo(Path(tmp))
        gallery = Gallery(store, data_dir, guild_name={DEMO_GUILD: DEMO_NAME}.get)
        try:
            await gallery.start("127.0.0.1", 0)
            path = f"/g/{DEMO_GUILD}" if page == "server" else f"/i/{ids[0]}"
            async with open_page(binary) as browser:
                loaded = await load(browser, gallery.url + path)
        finally:
            await gallery.stop()
            await store.close()
    Image.open(io.BytesIO(loaded.screenshot)).save(out, format="PNG", optimize=True)  # smaller for the README


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.bot.browser OUT.png [server|image]`: write the demo screenshot; 0, or 1 when no browser is
    found or it fails, 2 for bad arguments."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") or len(argv) > 2 or argv[1:] not in ([], ["server"], ["image"]):
        print("usage: python -m tests.bot.browser OUT.png [server|image]", file=sys.stderr)
        return 2
    binary = find_chromium()
    if binary is None:
        print(f"error: no Chromium found on PATH (looked for {', '.join(BINARIES)})", file=sys.stderr)
        return 1
    try:
        asyncio.run(screenshot(binary, Path(argv[0]), *argv[1:]))
    except PlaywrightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
