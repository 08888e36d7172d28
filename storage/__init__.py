"""Persistence: the only package that speaks SQL (aiosqlite, numbered migrations, dataclasses out)."""

from storage.store import (
    GuildSettings,
    Job,
    JobKind,
    JobState,
    StorageError,
    Store,
    TopEntry,
    Tournament,
    TournamentState,
)

__all__ = [
    "GuildSettings",
    "Job",
    "JobKind",
    "JobState",
    "StorageError",
    "Store",
    "TopEntry",
    "Tournament",
    "TournamentState",
]
