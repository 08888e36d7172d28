"""What every part of the store shares: the connection, the clock, and the one checked way to update a row."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiosqlite

from storage.sql import _UPDATE_ROW

log = logging.getLogger(__name__)


class StorePart:
    """One concern's share of the Store's methods (jobs, tournaments, votes, ...). `Store` inherits every part and
    sets what they share when it opens: the connection `_db` and the clock `_clock`."""

    _db: aiosqlite.Connection
    _clock: Callable[[], float]
    # Told of every job that entered a state (queued, running, ... done), with the time the store recorded: the bot's
    # metrics count transitions here, where every one of them is written. None: nobody listens.
    on_job_state: Callable[[Any, float], None] | None = None

    def _job_entered(self, at: float, *jobs: Any) -> None:
        """Tell `on_job_state` of `jobs` (rows as they are now) entering their state at `at`; a listener's failure is
        logged, never raised into the write that was made."""
        if self.on_job_state is None:
            return
        for job in jobs:
            try:
                self.on_job_state(job, at)
            except Exception:
                log.exception("a listener of job states failed on job %s", getattr(job, "id", "?"))

    async def _update_row(self, table: str, allowed: set[str], row_id: int, fields: dict[str, Any]) -> None:
        """Set `fields` (only column names from `allowed`) of one row of `table` and commit."""
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        if fields:
            columns = ", ".join(f"{k} = ?" for k in fields)
            await self._db.execute(_UPDATE_ROW.format(table=table, columns=columns), (*fields.values(), row_id))
            await self._db.commit()
