"""The gallery in a real browser: headless Chromium (the system's, driven by Playwright) loads a demo server's page
and an image's page from the gallery on 127.0.0.1, under the real Content-Security-Policy. Skipped where no Chromium
is installed, unless IMAGINE_REQUIRE_BROWSER=1 (CI sets it), which makes a missing browser a failure."""

from __future__ import annotations

import asyncio
import io
import os

import pytest
from PIL import Image

from bot.gallery import Gallery
from tests.bot.browser import DEMO_GUILD, DEMO_NAME, DEMO_PROMPTS, build_demo, find_chromium, load, open_page

BACKGROUND = "rgb(20, 21, 26)"  # --bg in gallery.css: the stylesheet loaded and was allowed


@pytest.fixture
def chromium():
    binary = find_chromium()
    if binary is None:
        if os.environ.get("IMAGINE_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "IMAGINE_REQUIRE_BROWSER=1 but no Chromium is installed: install the `chromium` package "
                "(apt-get install chromium), or unset the variable to skip the browser test."
            )
        pytest.skip("no chromium binary on PATH")
    return binary


@pytest.fixture
async def gallery(tmp_path):
    store, data_dir, ids = await build_demo(tmp_path, count=5)
    server = Gallery(store, data_dir, guild_name={DEMO_GUILD: DEMO_NAME}.get)
    await server.start("127.0.0.1", 0)
    server.job_ids = ids
    yield server
    await server.stop()
    await store.close()


def _assert_drawn(png: bytes, size: tuple[int, int]) -> None:
    shot = Image.open(io.BytesIO(png))
    shot.load()
    assert shot.size == size
    colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, "the screenshot is (almost) one colour"


async def test_pages_render_with_their_images_and_recipe(chromium, gallery):
    async def visit():
        async with open_page(chromium, size=(1024, 768)) as page:
            server = await load(page, f"{gallery.url}/g/{DEMO_GUILD}")
            image = await load(page, f"{gallery.url}/i/{gallery.job_ids[0]}")
        return server, image

    server, image = await asyncio.wait_for(visit(), 30)

    assert server.status == 200 and len(server.images) == 5
    assert all(complete and width > 0 for complete, width in server.images), server.images
    assert DEMO_NAME in server.text and DEMO_PROMPTS[0] in server.text and "5 votes" in server.text
    assert server.background == BACKGROUND and server.errors == []
    _assert_drawn(server.screenshot, (1024, 768))

    assert image.status == 200 and len(image.images) == 2  # the picture and its timelapse
    assert all(complete and width > 0 for complete, width in image.images), image.images
    assert DEMO_PROMPTS[0] in image.text and '"seed": 1000' in image.text and "Timelapse" in image.text
    assert image.background == BACKGROUND and image.errors == []
    _assert_drawn(image.screenshot, (1024, 768))


def test_the_screenshot_command_writes_a_picture(chromium, tmp_path):
    from tests.bot.browser import main

    assert main([]) == 2
    out = tmp_path / "gallery.png"
    assert main([str(out)]) == 0
    _assert_drawn(out.read_bytes(), (1280, 900))
