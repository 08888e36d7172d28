"""The gallery's web application: read-only pages of each server's public images, rendered with Jinja2.

Every response carries the safe headers (no scripts, no inline styles, no framing, no referrer); errors are
small HTML pages. Files are found from the job's row, never from a path in the URL."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from pathlib import Path

import jinja2
from aiohttp import web

from engine.errors import InvalidSpec
from storage import Store, TopEntry

log = logging.getLogger(__name__)

PAGE_SIZE = 24
WEEK = 7 * 86400
PERIODS = {"week": "This week", "all": "All time"}
TIMELAPSE_EXTS = ("webp", "gif")
MAX_ID = 2**63 - 1  # SQLite's integers; a longer number in a URL is no row

SAFE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
IMAGE_CACHE = "public, max-age=3600"  # a deleted image leaves shared caches within the hour
PAGE_CACHE = "no-cache"  # votes change; pages are cheap
STATIC_CACHE = "public, max-age=86400"
ALLOWED_METHODS = ("GET", "HEAD")
STATIC_FILES = {"gallery.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}


@dataclass(frozen=True)
class Site:
    """What the handlers need besides the store."""

    data_dir: Path
    guild_name: Callable[[int], str | None]
    title: str
    clock: Callable[[], float]
    templates: jinja2.Environment
    static: dict[str, tuple[bytes, str]]  # name: (content, content type)

    def server_name(self, guild_id: int) -> str:
        """The server's name as the bot knows it, else `Server <id>`."""
        return self.guild_name(guild_id) or f"Server {guild_id}"

    def render(self, template: str, status: int = 200, **context) -> web.Response:
        """`template` rendered with the site's title, as an HTML response that caches must revalidate."""
        html = self.templates.get_template(template).render(title=self.title, **context)
        response = web.Response(text=html, content_type="text/html", charset="utf-8", status=status)
        response.headers["Cache-Control"] = PAGE_CACHE
        return response


_STORE = web.AppKey("store", Store)
_SITE = web.AppKey("site", Site)


@dataclass(frozen=True)
class Card:
    """One image as the pages show it: nothing about who made it or where it was posted."""

    job_id: int
    guild_id: int
    votes: int
    score: str
    prompt: str
    recipe: str
    width: int
    height: int


def _card(entry: TopEntry) -> Card:
    job = entry.job
    try:
        spec = job.spec
    except InvalidSpec:  # a row from an older version that no longer parses: show the image without its recipe
        prompt, recipe, size = "(recipe unavailable)", "", (job.width or 256, job.height or 256)
    else:
        recipe = json.dumps(spec.to_public_dict(), indent=2, sort_keys=True, ensure_ascii=False)
        prompt, size = spec.prompt, (job.width or spec.width, job.height or spec.height)
    score = "–" if job.score is None else f"{job.score:.3f}"
    return Card(job.id, job.guild_id, entry.votes, score, prompt, recipe, *size)


def _id(request: web.Request, name: str) -> int:
    value = int(request.match_info[name])  # the route admits digits only
    if value > MAX_ID:
        raise web.HTTPNotFound()
    return value


def _under(path: Path, folder: Path) -> Path | None:
    """`path` resolved, if it is a file inside `folder`; None otherwise."""
    resolved = path.resolve()
    if resolved.is_relative_to(folder.resolve()) and resolved.is_file():
        return resolved
    return None


def _timelapse(site: Site, job_id: int) -> tuple[Path, str] | None:
    for ext in TIMELAPSE_EXTS:
        path = _under(site.data_dir / "timelapses" / f"{job_id}.{ext}", site.data_dir)
        if path is not None:
            return path, ext
    return None


# -- pages ---------------------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.Response:
    """The front page: the servers whose gallery has something to show."""
    site, store = request.app[_SITE], request.app[_STORE]
    servers = [(guild_id, site.server_name(guild_id)) for guild_id in await store.gallery_guilds()]
    return site.render("index.html", servers=servers)


async def server(request: web.Request) -> web.Response:
    """A server's page of public images, this week or all time; 404 if its gallery is off or past the last page."""
    site, store = request.app[_SITE], request.app[_STORE]
    guild_id = _id(request, "guild_id")
    if not (await store.guild_settings(guild_id)).gallery:
        raise web.HTTPNotFound()
    period = request.query.get("period", "week")
    if period not in PERIODS:
        raise web.HTTPBadRequest()
    try:
        page = int(request.query.get("page", "1"))
    except ValueError:
        raise web.HTTPBadRequest() from None
    if not 1 <= page <= 10**6:
        raise web.HTTPBadRequest()
    since = site.clock() - WEEK if period == "week" else 0.0
    entries, total = await store.gallery_page(guild_id, since=since, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    if page > pages:
        raise web.HTTPNotFound()
    return site.render(
        "server.html",
        guild_id=guild_id,
        server=site.server_name(guild_id),
        cards=[_card(e) for e in entries],
        period=period,
        periods=PERIODS,
        page=page,
        pages=pages,
        total=total,
    )


async def image(request: web.Request) -> web.Response:
    """One image's page: its card, recipe and (if kept) timelapse; 404 unless the gallery may show it."""
    site, store = request.app[_SITE], request.app[_STORE]
    entry = await store.gallery_image(_id(request, "job_id"))
    if entry is None:
        raise web.HTTPNotFound()
    card = _card(entry)
    timelapse = _timelapse(site, card.job_id)
    return site.render(
        "image.html",
        card=card,
        server=site.server_name(card.guild_id),
        timelapse_ext=timelapse[1] if timelapse else None,
    )


# -- files ---------------------------------------------------------------------------------------------------
async def png(request: web.Request) -> web.StreamResponse:
    """An image's PNG, found from its job's row; 404 unless the gallery may show it and the file is in the data
    directory."""
    site, store = request.app[_SITE], request.app[_STORE]
    job_id = _id(request, "job_id")
    entry = await store.gallery_image(job_id)
    path = _under(Path(entry.job.image_path), site.data_dir) if entry else None
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": "image/png", "Cache-Control": IMAGE_CACHE})


async def timelapse(request: web.Request) -> web.StreamResponse:
    """An image's timelapse (WebP or GIF) if the gallery may show the image and the extension is the one kept."""
    site, store = request.app[_SITE], request.app[_STORE]
    job_id = _id(request, "job_id")
    found = _timelapse(site, job_id) if await store.gallery_image(job_id) else None
    if found is None or found[1] != request.match_info["ext"]:
        raise web.HTTPNotFound()
    path, ext = found
    return web.FileResponse(path, headers={"Content-Type": f"image/{ext}", "Cache-Control": IMAGE_CACHE})


async def static(request: web.Request) -> web.Response:
    """One of the fixed static files read at start (/favicon.ico serves favicon.svg)."""
    name = request.match_info.get("name", "favicon.svg")
    found = request.app[_SITE].static.get(name)
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    response = web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": STATIC_CACHE})
    return response


# -- every response ------------------------------------------------------------------------------------------
_REASONS = {
    400: "The gallery could not read that request: its address, its query or its headers.",
    404: "There is nothing here: the page does not exist, or its server has not opened a gallery.",
    405: "The gallery can only be read.",
}


@web.middleware
async def guard(request: web.Request, handler) -> web.StreamResponse:
    """Read-only, error pages without tracebacks, and the safe headers on every response."""
    site = request.app[_SITE]
    try:
        if request.method not in ALLOWED_METHODS:
            raise web.HTTPMethodNotAllowed(request.method, ALLOWED_METHODS)
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect, say: a plain response that gets the headers too
            response = web.Response(status=exc.status, reason=exc.reason, headers=exc.headers)
        else:
            response = _error(site, exc.status, exc.reason)
        if exc.status == 405:
            response.headers["Allow"] = ", ".join(ALLOWED_METHODS)
    except Exception:
        log.exception("gallery page %s failed", request.path)
        response = _error(site, 500, "Internal Server Error")
    return _dressed(site, response)


def _dressed(site: Site, response: web.StreamResponse) -> web.StreamResponse:
    """`response` with the safe headers, and the site's name where aiohttp would name itself and its version."""
    response.headers.update(SAFE_HEADERS)
    response.headers["Server"] = site.title
    return response


def _error(site: Site, status: int, reason: str) -> web.Response:
    message = _REASONS.get(status, "Something went wrong on our side; try again later.")
    response = site.render("error.html", status, code=status, reason=reason, message=message)
    response.set_status(status, reason)
    return response


def error_page(app: web.Application, status: int) -> web.Response:
    """The gallery's error page for `status`, with the headers of every other answer: for the answers aiohttp
    makes itself, below the application (a malformed request, a request line or headers over the limits)."""
    site = app[_SITE]
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return _dressed(site, _error(site, status, reason))


def make_app(
    store: Store,
    data_dir: Path,
    *,
    guild_name: Callable[[int], str | None] = lambda guild_id: None,
    title: str = "imagine",
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The gallery as an aiohttp application, reading `store` and the image files under `data_dir`."""
    folder = resources.files("bot.gallery")
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("bot.gallery", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    files = {name: (folder / "static" / name).read_bytes() for name in STATIC_FILES}
    site = Site(
        Path(data_dir), guild_name, title, clock, templates, {n: (files[n], t) for n, t in STATIC_FILES.items()}
    )
    app = web.Application(middlewares=[guard])
    app[_STORE] = store
    app[_SITE] = site
    app.router.add_get("/", index)
    app.router.add_get(r"/g/{guild_id:\d{1,20}}", server)
    app.router.add_get(r"/i/{job_id:\d{1,20}}", image)
    app.router.add_get(r"/img/{job_id:\d{1,20}}.png", png)
    app.router.add_get(r"/timelapse/{job_id:\d{1,20}}.{ext:webp|gif}", timelapse)
    app.router.add_get("/static/{name}", static)  # a fixed set of files, read once
    app.router.add_get("/favicon.ico", static)  # browsers ask for it whatever the page says
    return app
