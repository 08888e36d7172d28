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
from storage.stats import Activity, Usage, Wait
from storage.store import Store

__all__ = [
    "Activity",
    "GuildSettings",
    "Job",
    "JobKind",
    "JobState",
    "StorageError",
    "Store",
    "TopEntry",
    "Tournament",
    "TournamentState",
    "Usage",
    "Wait",
]
