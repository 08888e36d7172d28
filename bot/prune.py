"""Retention: what the bot keeps on disk, and for how long. `python -m bot.prune [--dry-run]` applies it once; the
bot applies it on start and then daily.

The policy, in the order it is applied:
    frames       a job's timelapse frames go once it has ended (normally right after its timelapse is posted)
    age          snapshots of jobs that ended more than IMAGINE_RETENTION_DAYS ago, and uploads (init images)
                 older than that, are deleted (0 days: no age limit)
    budget       while images, snapshots, uploads and timelapses together exceed IMAGINE_DISK_BUDGET_MB (0: no
                 budget): snapshots of the jobs that ended longest ago go first, then the oldest uploads, then the
                 timelapses, the animations' videos and then the final images of old jobs that /top cannot show
Never touched: anything of a job still waiting, running or being posted, the job it continues or branches from,
the candidates of an undecided tournament, every picture an unfinished job names (init image and image prompts),
and the final image of any job on /top (each guild's top ten by votes and by score, all time and this week) or
with a positive vote total. Votes and /top read only the database, which pruning never shrinks; it clears
`snapshot_path` (Continue then says there is no saved state; Reroll still works) and `image_path` of what it
deletes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InvalidSpec
from engine.spec import JobSpec
from storage import StorageError, Store

log = logging.getLogger(__name__)

DAY = 86400.0
MB = 1024 * 1024


@dataclass(frozen=True)
class Policy:
    """How long and how much: `days` of age (0: forever) and a disk budget in MB (0: none)."""

    days: float = 30.0
    budget_mb: int = 0


@dataclass
class Report:
    """What a pruning pass removed (or would remove, in a dry run) and what is left."""

    removed: list[Path] = field(default_factory=list)
    freed: int = 0
    left: int = 0

    def line(self, policy: Policy) -> str:
        """One line for the log: what was removed and freed, and what is left (with the budget, if any)."""
        budget = f" (budget {policy.budget_mb} MB)" if policy.budget_mb else ""
        return (
            f"pruned {len(self.removed)} item(s), freed {self.freed / MB:.1f} MB; "
            f"images, snapshots and uploads now take {self.left / MB:.1f} MB{budget}"
        )


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def _job_id(path: Path) -> int | None:
    stem = path.name.split(".")[0]
    return int(stem) if stem.isdigit() else None


class _Pass:
    """One pruning pass over a data directory."""

    def __init__(self, store: Store, data_dir: Path, dry_run: bool) -> None:
        self.store, self.data_dir, self.dry_run = store, Path(data_dir), dry_run
        self.report = Report()

    async def remove(self, path: Path, job_id: int | None = None, column: str | None = None) -> int:
        size = await asyncio.to_thread(_size, path)
        if not size and not path.exists():
            return 0
        if not self.dry_run:
            if path.is_dir():
                await asyncio.to_thread(shutil.rmtree, path, True)
            else:
                path.unlink(missing_ok=True)
            if job_id is not None and column is not None:
                await self.store.update_job(job_id, **{column: None})
        self.report.removed.append(path)
        self.report.freed += size
        return size


def _by_job(folder: Path) -> dict[int, list[Path]]:
    """The files of `folder` named by job id (`<id>.<ext>`), by job."""
    found: dict[int, list[Path]] = {}
    for path in sorted(folder.glob("*")):
        if _job_id(path) is not None:
            found.setdefault(_job_id(path), []).append(path)
    return found


def _pictures(spec_json: str) -> set[str]:
    """Every picture file a recorded spec names (init image and image prompts); from an unreadable spec, what it
    plainly names, so that doubt keeps a file rather than deleting it."""
    try:
        return set(JobSpec.from_json(spec_json).pictures())
    except InvalidSpec:
        try:
            data = json.loads(spec_json)
        except ValueError:
            return set()
        if not isinstance(data, dict):
            return set()
        named = [data.get("init_image"), *(data.get("image_prompts") or [])]
        return {name for name in named if isinstance(name, str)} | {
            n.rsplit(":", 1)[0] for n in named if isinstance(n, str)
        }


async def prune(store: Store, data_dir: Path, policy: Policy, *, now: float | None = None, dry_run: bool = False):
    """Apply `policy` to `data_dir` (see the module docstring); returns a Report."""
    now = time.time() if now is None else now
    work = _Pass(store, data_dir, dry_run)
    data_dir = Path(data_dir)
    in_use = await store.jobs_in_use()
    inputs_in_use = {name for spec in await store.specs_in_use() for name in _pictures(spec)}
    # What is on disk, by job: the pass reads the rows of those jobs only, not the whole history.
    frames = {path: _job_id(path) for path in sorted((data_dir / "frames").glob("*"))}
    snapshots = {_job_id(p): p for p in (data_dir / "snapshots").glob("*") if _job_id(p) is not None}
    timelapses, videos = _by_job(data_dir / "timelapses"), _by_job(data_dir / "videos")
    on_disk = {i for i in frames.values() if i is not None} | set(snapshots) | set(timelapses) | set(videos)
    ended_at = await store.ended_among(on_disk)
    by_age = lambda ids: sorted((i for i in ids if i in ended_at), key=lambda i: (ended_at[i], i))  # noqa: E731

    # frames: only a job still running (or still to be posted) needs them
    for directory, job_id in frames.items():
        if job_id is None or job_id in ended_at or await store.get_job(job_id) is None:
            await work.remove(directory)

    uploads = sorted((data_dir / "inputs").glob("*"), key=lambda p: p.stat().st_mtime)
    uploads = [p for p in uploads if p.is_file() and str(p) not in inputs_in_use]

    # age
    if policy.days > 0:
        cutoff = now - policy.days * DAY
        for job_id in by_age(snapshots):
            if job_id not in in_use and ended_at[job_id] < cutoff:
                await work.remove(snapshots[job_id], job_id, "snapshot_path")
        for path in list(uploads):
            if path.stat().st_mtime < cutoff:
                await work.remove(path)
                uploads.remove(path)

    # budget
    kept = [data_dir / d for d in ("images", "snapshots", "inputs", "frames", "timelapses", "videos")]
    total = sum([await asyncio.to_thread(_size, p) for p in kept]) - (work.report.freed if dry_run else 0)
    if policy.budget_mb:
        budget = policy.budget_mb * MB
        on_board = await store.jobs_on_the_board()
        candidates: list[tuple[Path, int | None, str | None]] = []
        candidates += [(snapshots[i], i, "snapshot_path") for i in by_age(snapshots) if i not in in_use]
        candidates += [(p, None, None) for p in uploads]
        for animations in (timelapses, videos):  # an animation job's video goes before any final image
            candidates += [
                (path, None, None)
                for i in by_age(animations)
                if i not in in_use and i not in on_board
                for path in animations[i]
            ]
        candidates += [
            (Path(path), i, "image_path")
            for i, _ended, path in await store.ended_images()
            if i not in in_use and i not in on_board
        ]
        for path, job_id, column in candidates:
            if total <= budget:
                break
            if path in work.report.removed:
                continue
            total -= await work.remove(path, job_id, column)
    work.report.left = max(0, total)
    return work.report


async def run(settings, policy: Policy | None = None, *, dry_run: bool = False) -> Report:
    """Open the bot's database, prune its data directory once, close."""
    policy = policy or Policy(settings.retention_days, settings.disk_budget_mb)
    store = await Store.open(settings.db_path)
    try:
        return await prune(store, settings.data_dir, policy, dry_run=dry_run)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.prune [--dry-run]`: apply the retention policy of the settings in the environment once."""
    from bot.config import Settings

    parser = argparse.ArgumentParser(prog="python -m bot.prune", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc} (see .env.example)", file=sys.stderr)
        return 2
    policy = Policy(settings.retention_days, settings.disk_budget_mb)
    try:
        report = asyncio.run(run(settings, policy, dry_run=args.dry_run))
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    for path in report.removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {path}")
    print(("dry run: " if args.dry_run else "") + report.line(policy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
