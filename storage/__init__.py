"""Persistence: the only package that speaks SQL (aiosqlite, numbered migrations, dataclasses out)."""

from storage.store import Job, JobState, StorageError, Store, TopEntry, Tournament

__all__ = ["Job", "JobState", "StorageError", "Store", "TopEntry", "Tournament"]
