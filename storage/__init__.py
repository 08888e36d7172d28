"""Persistence: the only package that speaks SQL (aiosqlite, numbered migrations, dataclasses out)."""

from storage.models import (
    GuildSettings,
    Job,
    JobKind,
    JobState,
    StorageError,
    TopEntry,
    Tournament,
    TournamentState,
)
from storage.store import Store

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
