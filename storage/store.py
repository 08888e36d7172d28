"""The store: one aiosqlite connection in WAL mode, migrations by `PRAGMA user_version`, dataclasses out.

`Store` owns the connection (opening, checking, migrating, closing) and turns SQLite's failures into StorageError;
its methods for each concern live in the parts it inherits: jobs, tournaments, votes, settings, gallery, stats."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sqlite3
import time
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from storage.gallery import GalleryStore
from storage.jobs import JobStore
from storage.models import GuildSettings, StorageError
from storage.settings import SettingsStore
from storage.sql import _SCHEMA_VERSION, _SELECT_META, _TOUCH
from storage.stats import StatsStore
from storage.tournaments import TournamentStore
from storage.votes import VoteStore

log = logging.getLogger(__name__)


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, or None when it is missing: a changed value means the file was
    deleted or replaced under the open connection (which would go on writing to the unlinked file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _writable(path: Path) -> bool:
    """Whether this process may write the database file and its folder. In WAL mode SQLite writes to the -wal file
    and would notice a read-only main file only at its next checkpoint; the folder holds the -wal and -shm files."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), entry.read_text()))
    return sorted(found)


def _why(path: Path, exc: BaseException) -> str:
    """One sentence for the operator about a database that cannot be used."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or not path.exists():
        return (
            f"The database {path} was deleted or moved while the bot was running; restore it (or accept a fresh "
            "one) and start the bot again."
        )
    if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        return f"The database {path} is read-only; give the bot write access to the file and its folder."
    if "not a database" in text or "malformed" in text:
        return f"The database {path} is damaged or is not a database ({text}); restore a backup or move it away."
    return f"The database {path} cannot be used: {text}."


def _loud(method):
    """Turn SQLite's operational failures (read-only, I/O, damaged file, no such table) into a StorageError.
    Integrity errors are program errors and stay as they are."""

    @functools.wraps(method)
    async def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StorageError(_why(self.path, exc)) from exc

    return wrapper


def _loud_methods(cls: type) -> type:
    """Apply `_loud` to every public coroutine method of the store, those of the parts it inherits included."""
    names = {name for klass in cls.__mro__ for name in vars(klass)}
    for name in sorted(names):
        # as defined, not as bound: a classmethod such as `open` is not a coroutine function then, and stays as it is
        member = inspect.getattr_static(cls, name)
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _loud(member))
    return cls


@_loud_methods
class Store(JobStore, TournamentStore, VoteStore, SettingsStore, GalleryStore, StatsStore):
    """Async access to the bot's database. Open with `await Store.open(path)`; close with `await store.close()`.

    Failures of the database itself raise StorageError (see `check`)."""

    def __init__(self, db: aiosqlite.Connection, clock=time.time, path: Path | None = None) -> None:
        self._db = db
        self._clock = clock
        self.path = Path(path) if path is not None else Path("?")
        self._identity = _identity(self.path)
        self.install = ""
        self.legacy_buttons = False
        # Servers' settings as last read or written: this store is their only writer, and every submission reads them.
        self._settings: dict[int, GuildSettings] = {}

    @classmethod
    async def open(cls, path: str | Path, clock=time.time) -> Store:
        """Open (creating if needed) and migrate the database, and prove it is writable. Raises StorageError with
        one sentence when it cannot be used; no connection (and no thread) is left behind then."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(_why(path, exc)) from exc
        try:
            db.row_factory = aiosqlite.Row
            for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"):
                async with db.execute(pragma):  # close each cursor: an open one blocks the migrations' COMMIT
                    pass
            store = cls(db, clock, path)
            await store.migrate()
            await store._load_meta()
            await store.check()
        except BaseException as exc:
            await db.close()  # aiosqlite's thread would otherwise keep the process alive
            if isinstance(exc, sqlite3.Error | OSError):
                raise StorageError(_why(path, exc)) from exc
            raise
        return store

    async def close(self) -> None:
        """Close the connection (its worker thread ends with it)."""
        await self._db.close()

    async def check(self) -> None:
        """Raise StorageError unless the database file is still the one opened, may still be written (the file and its
        folder) and takes a write."""
        if _identity(self.path) != self._identity:
            raise StorageError(_why(self.path, FileNotFoundError(self.path)))
        if self._identity is not None and not _writable(self.path):
            raise StorageError(_why(self.path, PermissionError(self.path)))
        await self._db.execute(_TOUCH, (str(self._clock()),))
        await self._db.commit()

    def accepts(self, install: str | None) -> bool:
        """Whether a button carrying `install` (None: a button from before tokens) belongs to this database."""
        return install == self.install if install else self.legacy_buttons

    async def _load_meta(self) -> None:
        async with self._db.execute(_SELECT_META) as cur:
            meta = {r[0]: r[1] for r in await cur.fetchall()}
        self.install = meta["install"]
        self.legacy_buttons = meta.get("legacy_buttons") == "1"

    async def schema_version(self) -> int:
        """The number of the last migration applied."""
        async with self._db.execute(_SCHEMA_VERSION) as cur:
            return (await cur.fetchone())[0]

    async def migrate(self) -> int:
        """Apply the numbered migrations above the current `user_version`, each in its own transaction."""
        current = await self.schema_version()
        for number, sql in _migrations():
            if number <= current:
                continue
            log.info("applying migration %03d", number)
            await self._db.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
            current = number
        return current
