"""The web gallery over HTTP: real Store on SQLite, real PNG files, aiohttp's test server and client."""

from __future__ import annotations

import asyncio
import io
import re
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from bot.gallery import SAFE_HEADERS, Gallery, make_app
from engine.spec import JobSpec
from storage import JobState, Store

ON, OFF = 111, 222  # servers with the gallery turned on and off
AUTHOR, VOTER = 987654321012345678, 765432109876543210
CHANNEL, THREAD = 876543210987654321, 654321098765432109
PRIVATE = (AUTHOR, VOTER, CHANNEL, THREAD)


def _png(color, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


class World:
    """A store and a data folder with finished jobs in it."""

    def __init__(self, store: Store, data_dir):
        self.store, self.data_dir = store, data_dir

    async def job(
        self, guild_id=ON, prompt="a lighthouse at dusk", *, kind="new", score=0.5, votes=0, age=0.0, **fields
    ):
        spec = JobSpec(prompt, width=64, height=48, steps=10, seed=42, **fields.pop("spec", {}))
        job = await self.store.create_job(
            guild_id=guild_id, channel_id=CHANNEL, author_id=AUTHOR, spec_json=spec.to_json(), kind=kind
        )
        path = self.data_dir / "images" / f"{job.id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(((job.id * 40) % 256, 90, 160)))
        finished = {"finished_at": time.time() - age} if age else {}
        fields.setdefault("audience", "everyone")  # posted where everyone in the server could see it
        job = await self.store.set_state(
            job.id, JobState.DONE, image_path=str(path), score=score, width=64, height=48, thread_id=THREAD, **fields
        )
        for n in range(votes):
            await self.store.set_vote(job.id, VOTER + n, 1, True)
        if finished:
            job = await self.store.update_job(job.id, **finished)
        return job


@pytest.fixture
async def world(tmp_path):
    store = await Store.open(tmp_path / "db" / "imagine.sqlite")
    await store.update_guild_settings(ON, gallery=True)
    await store.update_guild_settings(OFF, gallery=False)
    yield World(store, tmp_path / "data")
    await store.close()


@pytest.fixture
async def client(world):
    app = make_app(world.store, world.data_dir, guild_name={ON: "Pixel Club"}.get)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _html(client, path, status=200) -> str:
    response = await client.get(path)
    text = await response.text()
    assert response.status == status, (path, text)
    return text


def _cards(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<li class="card">\s*<a href="/i/(\d+)"', html)]


async def test_index_lists_the_servers_with_the_gallery_on(world, client):
    assert "No server has opened its gallery yet" in await _html(client, "/")
    await world.job(ON)
    await world.job(OFF)
    html = await _html(client, "/")
    assert 'href="/g/111"' in html and "Pixel Club" in html
    assert "/g/222" not in html


async def test_server_page_shows_each_image_with_votes_score_and_prompt(world, client):
    best = await world.job(prompt="a cityscape at night | trending on artstation", score=0.31234, votes=2)
    other = await world.job(prompt="a red <b>apple</b>", score=0.9)
    html = await _html(client, "/g/111")
    assert _cards(html) == [best.id, other.id]
    assert f'<img src="/img/{best.id}.png" width="64" height="48" alt="a cityscape at night | trending' in html
    assert "2 votes" in html and "CLIP 0.312" in html and "CLIP 0.900" in html
    assert "a red &lt;b&gt;apple&lt;/b&gt;" in html and "<b>apple" not in html  # autoescaped
    response = await client.get(f"/img/{best.id}.png")
    assert response.status == 200 and response.content_type == "image/png"
    assert "max-age" in response.headers["Cache-Control"]
    assert Image.open(io.BytesIO(await response.read())).size == (64, 48)


async def test_a_server_without_the_gallery_shows_nothing(world, client):
    job = await world.job(OFF)
    for path in ("/g/222", f"/i/{job.id}", f"/img/{job.id}.png", "/g/333", "/g/99999999999999999999"):
        await _html(client, path, 404)
    await world.store.update_guild_settings(ON, gallery=False)
    await _html(client, "/g/111", 404)


async def test_private_deleted_moderated_and_candidate_images_are_never_served(world, client):
    shown = await world.job()
    hidden = [
        await world.job(None),
        await world.job(kind="candidate"),
        await world.job(moderation="withhold"),
        await world.job(moderation="spoiler"),
        await world.job(audience="restricted"),
        await world.job(audience=None),
        await world.job(),
    ]
    await world.store.mark_deleted(hidden[-1].id, by=AUTHOR)
    timelapses = world.data_dir / "timelapses"
    timelapses.mkdir()
    for job in hidden:
        (timelapses / f"{job.id}.webp").write_bytes(b"RIFF....WEBP")
    assert _cards(await _html(client, "/g/111?period=all")) == [shown.id]
    for job in hidden:
        for path in (f"/i/{job.id}", f"/img/{job.id}.png", f"/timelapse/{job.id}.webp"):
            await _html(client, path, 404)


async def test_paging_24_per_page(world, client):
    jobs = [await world.job(prompt=f"picture number {n}", score=n / 100) for n in range(30)]
    best_first = [j.id for j in reversed(jobs)]
    first = await _html(client, "/g/111?period=week")
    second = await _html(client, "/g/111?period=week&page=2")
    assert _cards(first) == best_first[:24] and _cards(second) == best_first[24:]
    assert 'rel="next" href="/g/111?period=week&amp;page=2"' in first and 'rel="prev"' not in first
    assert 'rel="prev" href="/g/111?period=week&amp;page=1"' in second and 'rel="next"' not in second
    assert "Page 2 of 2 · 30 images" in second
    await _html(client, "/g/111?page=3", 404)
    for bad in ("page=0", "page=x", "period=year"):
        await _html(client, f"/g/111?{bad}", 400)


async def test_week_and_all_time(world, client):
    old = await world.job(prompt="an old favourite", votes=3, age=10 * 86400)
    new = await world.job(prompt="fresh paint")
    week = await _html(client, "/g/111")  # the week by default
    assert _cards(week) == [new.id] and '<span class="current">This week</span>' in week
    assert 'href="/g/111?period=all"' in week
    assert _cards(await _html(client, "/g/111?period=all")) == [old.id, new.id]
    await world.store.update_job(new.id, finished_at=time.time() - 8 * 86400)
    assert "No images this week" in await _html(client, "/g/111")


async def test_image_page_has_the_recipe_without_folders_and_the_timelapse(world, client):
    job = await world.job(prompt="a cityscape at night", votes=1, spec={"init_image": "/srv/data/inputs/abc.png"})
    html = await _html(client, f"/i/{job.id}")
    assert f'<img src="/img/{job.id}.png" width="64" height="48" alt="a cityscape at night">' in html
    assert "1 vote<" in html and "CLIP score 0.500" in html and 'href="/g/111"' in html
    assert '<details class="recipe" open>' in html and "<textarea" in html and "readonly" in html
    recipe = re.search(r"<pre>(.*?)</pre>", html, re.S).group(1)
    assert "&#34;init_image&#34;: &#34;abc.png&#34;" in recipe and "&#34;seed&#34;: 42" in recipe
    assert recipe in re.search(r"<textarea[^>]*>(.*?)</textarea>", html, re.S).group(1)
    assert "/srv/data" not in html and "inputs" not in html
    assert "/timelapse/" not in html  # none made

    folder = world.data_dir / "timelapses"
    folder.mkdir()
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (32, 24), c) for c in ("red", "blue")]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    (folder / f"{job.id}.gif").write_bytes(buffer.getvalue())
    html = await _html(client, f"/i/{job.id}")
    assert f'<img src="/timelapse/{job.id}.gif"' in html
    response = await client.get(f"/timelapse/{job.id}.gif")
    assert response.status == 200 and response.content_type == "image/gif"
    await _html(client, f"/timelapse/{job.id}.webp", 404)


async def test_files_outside_the_data_folder_or_from_the_url_are_never_served(world, client, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png("white"))
    job = await world.job()
    await world.store.update_job(job.id, image_path=str(outside))
    await _html(client, f"/img/{job.id}.png", 404)
    link = world.data_dir / "images" / "link.png"
    link.symlink_to(outside)
    await world.store.update_job(job.id, image_path=str(link))
    await _html(client, f"/img/{job.id}.png", 404)
    for path in ("/img/..%2F..%2Fsecret.png", "/img/../secret.png", "/static/../db/imagine.sqlite", "/img/1.jpg"):
        response = await client.get(path)
        assert response.status == 404, path


async def test_safe_headers_and_read_only(world, client):
    job = await world.job()
    paths = (
        "/",
        "/g/111",
        f"/i/{job.id}",
        f"/img/{job.id}.png",
        "/static/gallery.css",
        "/favicon.ico",
        "/nope",
        "/g/222",
    )
    for path in paths:
        response = await client.get(path)
        for name, value in SAFE_HEADERS.items():
            assert response.headers.get(name) == value, (path, name)
    css = await client.get("/static/gallery.css")
    assert css.content_type == "text/css" and ".grid" in await css.text()
    assert (await client.get("/favicon.ico")).content_type == "image/svg+xml"
    assert (await client.get("/static/other.css")).status == 404
    assert (await client.head(f"/img/{job.id}.png")).status == 200
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", f"/i/{job.id}", "/nope"):
            response = await client.request(method, path)
            assert response.status == 405, (method, path)
            assert response.headers["Allow"] == "GET, HEAD"
            assert response.headers["X-Frame-Options"] == "DENY"
            assert "<title>405" in await response.text()


async def test_no_user_or_channel_ids_and_no_inline_styles_or_scripts(world, client):
    jobs = [await world.job(votes=2), await world.job(prompt="a forest", age=9 * 86400)]
    folder = world.data_dir / "timelapses"
    folder.mkdir()
    (folder / f"{jobs[0].id}.webp").write_bytes(b"x")
    paths = ["/", "/g/111", "/g/111?period=all", "/nope", *(f"/i/{j.id}" for j in jobs)]
    for path in paths:
        html = (await (await client.get(path)).text()).lower()
        for private in PRIVATE:
            assert str(private) not in html, (path, private)
        assert "<script" not in html and "style=" not in html and "<style" not in html, path


async def test_errors_are_small_pages_without_tracebacks(world, client, monkeypatch):
    async def broken():
        raise RuntimeError("secret database detail")

    monkeypatch.setattr(world.store, "gallery_guilds", broken)
    response = await client.get("/")
    text = await response.text()
    assert response.status == 500 and response.content_type == "text/html"
    assert "secret" not in text and "Traceback" not in text and "<title>500" in text
    assert response.headers["Content-Security-Policy"] == SAFE_HEADERS["Content-Security-Policy"]


async def test_gallery_server_on_a_free_port(world):
    job = await world.job()
    gallery = Gallery(world.store, world.data_dir)
    await gallery.start("127.0.0.1", 0)
    try:
        assert gallery.port and gallery.port > 0
        async with aiohttp.ClientSession() as session, session.get(f"{gallery.url}/i/{job.id}") as response:
            assert response.status == 200 and "a lighthouse at dusk" in await response.text()
    finally:
        await gallery.stop()
    assert Gallery.url_for_image(7, "https://art.example.org/") == "https://art.example.org/i/7"


async def _raw_exchange(gallery: Gallery, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send `request` as bytes on a fresh connection and read the whole answer: (status line, headers, body)."""
    reader, writer = await asyncio.open_connection(gallery.host, gallery.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # the server closes the connection after an error
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: gallery\r\n\r\n", id="a 20 kB request line"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: gallery\r\n" + b"".join(b"X-Filler-%d: x\r\n" % n for n in range(500)) + b"\r\n",
            id="500 headers",
        ),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", id="TLS on the HTTP port"),
    ],
)
async def test_protocol_errors_carry_the_safe_headers_and_no_version(world, request_bytes):
    gallery = Gallery(world.store, world.data_dir)
    await gallery.start("127.0.0.1", 0)
    try:
        status, headers, body = await _raw_exchange(gallery, request_bytes)
    finally:
        await gallery.stop()
    assert status.split()[1] == "400", status
    for name, value in SAFE_HEADERS.items():
        assert headers.get(name.lower()) == value, (name, headers)
    assert headers["server"] == "imagine"
    everything = (str(headers) + body.decode("utf-8", "replace")).lower()
    assert "aiohttp" not in everything and "python/" not in everything, everything
    assert headers["content-type"].startswith("text/html") and b"<title>400" in body
    assert b"aaaaaaaa" not in body  # nothing of the request is echoed
