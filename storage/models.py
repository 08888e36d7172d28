"""What the store hands out: the storage error, the states and kinds, and one frozen dataclass per kind of row."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from enum import StrEnum

import aiosqlite

from engine.spec import JobSpec


class StorageError(Exception):
    """The database cannot be used: it cannot be opened, is not a database, is read-only, or was deleted or
    replaced while the bot ran. The message is one sentence for the operator; the bot stops on it rather than
    fail every job."""


class JobState(StrEnum):
    """Where a job is: waiting, running, or ended in one of three ways (`active` tells the first two apart)."""

    QUEUED = "queued"
    RUNNING = "running"
    POSTING = "posting"  # finished and saved; its result message is not known to exist yet
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Waiting or running: it can still be cancelled or steered."""
        return self in (JobState.QUEUED, JobState.RUNNING)

    @property
    def final(self) -> bool:
        """Nothing more will happen to it (a posting job still has to be shown)."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobKind(StrEnum):
    """How a job came to be."""

    NEW = "new"
    REROLL = "reroll"
    CONTINUE = "continue"
    UPSCALE = "upscale"
    BRANCH = "branch"
    CANDIDATE = "candidate"  # one seed of a tournament
    WINNER = "winner"  # a tournament's chosen seed, run to the end


class TournamentState(StrEnum):
    """Where a seed tournament stands."""

    RUNNING = "running"
    VOTING = "voting"
    DECIDED = "decided"
    FAILED = "failed"


@dataclass(frozen=True)
class GuildSettings:
    """A server's settings (None and empty mean: the bot's own setting, or no limit)."""

    max_queued_per_user: int | None = None
    use_threads: bool = True
    channels: tuple[int, ...] = ()  # where /imagine may be used; empty: everywhere
    default_steps: int | None = None
    max_steps: int | None = None
    sizes: tuple[str, ...] = ()  # the size names members may pick; empty: all
    max_queued_total: int | None = None
    timelapse: bool | None = None
    moderation: str | None = None  # off | spoiler | withhold | strict; None: the bot's default
    builtin_words: bool = True
    gallery: bool = False
    gallery_excluded: tuple[int, ...] = ()  # channels (with their threads) whose images the gallery never shows
    max_quality: str | None = None  # the costliest quality preset members may ask for (engine.quality); None: any


_SETTINGS_COLUMNS = tuple(GuildSettings.__dataclass_fields__)  # the columns of `guild_settings`, in this order


@dataclass(frozen=True)
class Job:
    """One row of `jobs`."""

    id: int
    guild_id: int | None
    channel_id: int
    author_id: int
    spec_json: str
    kind: str
    parent_id: int | None
    state: JobState
    error: str | None
    thread_id: int | None
    queued_message_id: int | None
    status_message_id: int | None
    result_message_id: int | None
    image_path: str | None
    snapshot_path: str | None
    steps_done: int
    width: int | None
    height: int | None
    score: float | None
    scores_json: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    tournament_id: int | None = None
    candidate: int | None = None
    timelapse_message_id: int | None = None
    moderation: str | None = None  # the output check's action (post, spoiler, withhold); None: not checked
    unsafe: float | None = None
    deleted_at: float | None = None
    deleted_by: int | None = None
    audience: str | None = None  # who could see the result when posted: everyone | restricted; None: not recorded
    audience_channel_id: int | None = None  # the channel that decided it: where it was posted, or a thread's parent

    @functools.cached_property
    def spec(self) -> JobSpec:
        """The job's recipe, parsed (the row holds it as JSON)."""
        return JobSpec.from_json(self.spec_json)

    @property
    def scores(self) -> dict[str, float]:
        """The final CLIP score of each prompt, by prompt text (empty before the job finished)."""
        return json.loads(self.scores_json) if self.scores_json else {}

    @property
    def post_channel_id(self) -> int:
        """Where the job's progress and result go: its thread, else its channel."""
        return self.thread_id or self.channel_id


@dataclass(frozen=True)
class Tournament:
    """One row of `tournaments`."""

    id: int
    guild_id: int | None
    channel_id: int
    author_id: int
    spec_json: str
    candidates: int
    state: str
    thread_id: int | None
    grid_message_id: int | None
    chosen: int | None
    decided_by: str | None
    decide_at: float | None
    created_at: float

    @functools.cached_property
    def spec(self) -> JobSpec:
        """The full run the winner goes on to, parsed."""
        return JobSpec.from_json(self.spec_json)


@dataclass(frozen=True)
class TopEntry:
    """One line of a leaderboard: the job and the sum of its votes."""

    job: Job
    votes: int


# From rows to dataclasses (the store's queries select whole rows, `SELECT *` or `jobs.*`).
def _job(row: aiosqlite.Row) -> Job:
    data = {k: row[k] for k in Job.__dataclass_fields__}
    data["state"] = JobState(data["state"])
    return Job(**data)


def _tournament(row: aiosqlite.Row) -> Tournament:
    return Tournament(**{k: row[k] for k in Tournament.__dataclass_fields__})
