"""The gallery part of the store: what the public web gallery may show, and nothing else."""

from __future__ import annotations

from storage.base import StorePart
from storage.models import TopEntry, _job
from storage.sql import _COUNT_GALLERY, _SELECT_GALLERY_GUILDS, _SELECT_GALLERY_IMAGE, _SELECT_GALLERY_PAGE


class GalleryStore(StorePart):
    """The web gallery's reads: its servers, a page of a server's images, one image."""

    async def gallery_guilds(self) -> list[int]:
        """The servers that turned the web gallery on and have at least one image it may show."""
        async with self._db.execute(_SELECT_GALLERY_GUILDS) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def gallery_page(
        self, guild_id: int, *, since: float = 0.0, limit: int = 24, offset: int = 0
    ) -> tuple[list[TopEntry], int]:
        """One page of a server's public images finished since `since`, by votes, then CLIP score, then id; and
        how many there are in all. Empty for a server without the gallery."""
        params = dict(guild=guild_id, since=since, limit=limit, offset=offset)
        async with self._db.execute(_SELECT_GALLERY_PAGE, params) as cur:
            rows = await cur.fetchall()
        async with self._db.execute(_COUNT_GALLERY, params) as cur:
            total = (await cur.fetchone())[0]
        return [TopEntry(_job(r), r["total"]) for r in rows], total

    async def gallery_image(self, job_id: int) -> TopEntry | None:
        """One image with its votes, if the gallery may show it (None otherwise, as for a job that does not
        exist)."""
        async with self._db.execute(_SELECT_GALLERY_IMAGE, dict(id=job_id)) as cur:
            row = await cur.fetchone()
        return TopEntry(_job(row), row["total"]) if row else None
