"""The job service and what its callers need: `from bot.jobs import JobService, Origin, ...` (the cogs take the store's
types from here too: they never import storage).

    _service.py     JobService: the cogs' one door; the waiting line, the running jobs' tasks, recovery, cancel, steer,
                    delete, /queue's reports; it composes the parts below
    _admission.py   Admission: the gate (cooldown, the server's rules, the memory budget, the caps) and the recording
    _execution.py   Execution: one job's run through the backend, its events recorded
    _posting.py     Posting: a finished run saved, judged and posted (then the DM copy and the timelapse); reposts
    _describing.py  Describing: /describe's door
    _moderation.py  the output check as jobs answer to it: the level now, what may be shown, the verdict
    _pace.py        Pace: the measured seconds per step, the running jobs' steps, the ETAs
    _files.py       JobFiles: where a job's files live under the data directory; uploaded pictures kept
    _models.py      Origin, Ticket, Posted, Limits, RunningInfo
    _specs.py       the specs of Reroll, Continue and Upscale
"""

from bot.jobs._admission import COOLDOWN
from bot.jobs._describing import DESCRIBE_COOLDOWN
from bot.jobs._models import Announce, Limits, Origin, Posted, RunningInfo, Ticket
from bot.jobs._pace import DEFAULT_SECONDS_PER_STEP
from bot.jobs._service import JobService
from bot.jobs._specs import continue_spec, reroll_spec, upscale_spec
from storage import Job, JobKind, JobState, StorageError

__all__ = [
    "COOLDOWN",
    "DEFAULT_SECONDS_PER_STEP",
    "DESCRIBE_COOLDOWN",
    "Announce",
    "Job",
    "JobKind",
    "JobService",
    "JobState",
    "Limits",
    "Origin",
    "Posted",
    "RunningInfo",
    "StorageError",
    "Ticket",
    "continue_spec",
    "reroll_spec",
    "upscale_spec",
]
