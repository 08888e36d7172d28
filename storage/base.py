"""What every part of the store shares: the connection, the clock, and the one checked way to update a row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiosqlite

from storage.sql import _UPDATE_ROW


class StorePart:
    """One concern's share of the Store's methods (jobs, tournaments, votes, ...). `Store` inherits every part and
    sets what they share when it opens: the connection `_db` and the clock `_clock`."""

    _db: aiosqlite.Connection
    _clock: Callable[[], float]

    async def _update_row(self, table: str, allowed: set[str], row_id: int, fields: dict[str, Any]) -> None:
        """Set `fields` (only column names from `allowed`) of one row of `table` and commit."""
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        if fields:
            columns = ", ".join(f"{k} = ?" for k in fields)
            await self._db.execute(_UPDATE_ROW.format(table=table, columns=columns), (*fields.values(), row_id))
            await self._db.commit()
