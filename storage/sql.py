"""The store's SQL, kept as named constants, grouped by the part of the store that runs it. Only storage/ speaks SQL."""

from storage.models import _SETTINGS_COLUMNS

# -- the database itself -----------------------------------------------------------------------------------------------
_SCHEMA_VERSION = "PRAGMA user_version"
_SELECT_META = "SELECT key, value FROM meta"
_TOUCH = "INSERT INTO meta (key, value) VALUES ('checked_at', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
_UPDATE_ROW = "UPDATE {table} SET {columns} WHERE id = ?"  # table and columns only from the parts' allow-lists

# -- jobs --------------------------------------------------------------------------------------------------------------
_INSERT_JOB = """
INSERT INTO jobs (guild_id, channel_id, author_id, spec_json, kind, parent_id, state, created_at, tournament_id,
                  candidate)
VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)
"""
# The waiting-line caps, checked in the same statement that inserts, so that no two submissions both see room:
# at most `:cap` waiting jobs per member and `:total` in all, counting the `:count` being added (every candidate
# of a tournament is a waiting job). NULL means no cap (a tournament's winner takes its candidates' place).
_MEMBER_WAITING = "(SELECT count(*) FROM jobs WHERE author_id = :author AND state = 'queued')"
_ALL_WAITING = "(SELECT count(*) FROM jobs WHERE state = 'queued')"
_SERVER_WAITING = "(SELECT count(*) FROM jobs WHERE guild_id = :guild AND state = 'queued')"
_ROOM = (
    f"(:cap IS NULL OR {_MEMBER_WAITING} + :count <= :cap) AND (:total IS NULL OR {_ALL_WAITING} + :count <= :total)"
    f" AND (:server IS NULL OR {_SERVER_WAITING} + :count <= :server)"
)
_INSERT_JOB_CAPPED = f"""
INSERT INTO jobs (guild_id, channel_id, author_id, spec_json, kind, parent_id, state, created_at)
SELECT :guild, :channel, :author, :spec, :kind, :parent, 'queued', :now
WHERE {_ROOM}
"""
_INSERT_CANDIDATES_CAPPED = f"""
WITH candidates AS (SELECT key + 1 AS number, value AS spec FROM json_each(:specs))
INSERT INTO jobs (guild_id, channel_id, author_id, spec_json, kind, state, created_at, tournament_id, candidate)
SELECT :guild, :channel, :author, candidates.spec, 'candidate', 'queued', :now, :tournament, candidates.number
FROM candidates
WHERE {_ROOM}
ORDER BY candidates.number
RETURNING id
"""
_SELECT_WAITING = f"SELECT {_MEMBER_WAITING}, {_ALL_WAITING}"
_SELECT_SERVER_WAITING = f"SELECT {_SERVER_WAITING}"
_INSERT_EVENT = "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)"
_SELECT_JOB = "SELECT * FROM jobs WHERE id = ?"
_SELECT_BY_STATE = "SELECT * FROM jobs WHERE state = ? ORDER BY id"
_SELECT_BY_RESULT_MESSAGE = "SELECT * FROM jobs WHERE result_message_id = ?"
_SELECT_HISTORY = "SELECT * FROM jobs WHERE guild_id IS ? AND author_id = ? ORDER BY id DESC LIMIT ?"
_SELECT_EVENTS = "SELECT state, at, detail FROM job_events WHERE job_id = ? ORDER BY id"
_DELETE_JOB = "UPDATE jobs SET deleted_at = ?, deleted_by = ? WHERE id = ? AND deleted_at IS NULL"

# -- retention: what must be kept --------------------------------------------------------------------------------------
# Retention reads only the jobs that still hold files (a snapshot, a timelapse, a final image): its work follows what
# is on disk, which the budget bounds, not the whole history that /history and /top keep.
_ENDED = "state IN ('done', 'failed', 'cancelled')"
_SELECT_ENDED_AMONG = f"SELECT id, finished_at FROM jobs WHERE {_ENDED} AND id IN ({{marks}})"
_SELECT_ENDED_IMAGES = (
    f"SELECT id, finished_at, image_path FROM jobs WHERE {_ENDED} AND image_path IS NOT NULL ORDER BY finished_at, id"
)
# Jobs whose files a later step still needs: the unfinished ones (including those still to be posted), the
# parents they continue or branch from, and the candidates of a tournament not yet decided.
_SELECT_IN_USE = """
SELECT id FROM jobs WHERE state IN ('queued', 'running', 'posting')
UNION SELECT parent_id FROM jobs WHERE state IN ('queued', 'running', 'posting') AND parent_id IS NOT NULL
UNION SELECT jobs.id FROM jobs JOIN tournaments ON tournaments.id = jobs.tournament_id
      WHERE tournaments.state IN ('running', 'voting')
"""
_SELECT_SPECS_IN_USE = "SELECT spec_json FROM jobs WHERE state IN ('queued', 'running', 'posting')"

# -- votes and the board -----------------------------------------------------------------------------------------------
_INSERT_VOTE = "INSERT OR IGNORE INTO votes (job_id, user_id, value, at) VALUES (?, ?, ?, ?)"
_DELETE_VOTE = "DELETE FROM votes WHERE job_id = ? AND user_id = ? AND value = ?"
_SUM_VOTES = "SELECT COALESCE(SUM(value), 0) FROM votes WHERE job_id = ?"
# A server's /top answers in public: nothing posted where not everyone in it could see it (see migration 005).
_SELECT_TOP = """
SELECT jobs.*, COALESCE(SUM(votes.value), 0) AS total
FROM jobs LEFT JOIN votes ON votes.job_id = jobs.id
WHERE jobs.guild_id IS :guild AND (jobs.guild_id IS NOT NULL OR jobs.author_id = :author)
  AND jobs.state = 'done' AND jobs.finished_at >= :since AND jobs.kind != 'candidate'
  AND jobs.deleted_at IS NULL AND jobs.moderation IS NOT 'withhold'
  AND (jobs.guild_id IS NULL OR jobs.audience IS NOT 'restricted')
GROUP BY jobs.id
ORDER BY total DESC, jobs.score DESC, jobs.id
LIMIT :limit
"""
_SELECT_TOP_BY_SCORE = _SELECT_TOP.replace(
    "ORDER BY total DESC, jobs.score DESC", "ORDER BY jobs.score DESC, total DESC"
)
_SELECT_GUILDS = "SELECT DISTINCT guild_id FROM jobs WHERE state = 'done'"
_SELECT_VOTED = "SELECT job_id FROM votes GROUP BY job_id HAVING SUM(value) > 0"

# -- tournaments -------------------------------------------------------------------------------------------------------
_INSERT_TOURNAMENT = """
INSERT INTO tournaments (guild_id, channel_id, author_id, spec_json, candidates, created_at)
VALUES (?, ?, ?, ?, ?, ?)
"""
_SELECT_TOURNAMENT = "SELECT * FROM tournaments WHERE id = ?"
_SELECT_TOURNAMENTS_IN_STATE = "SELECT * FROM tournaments WHERE state = ? ORDER BY id"
_DELETE_TOURNAMENT = "DELETE FROM tournaments WHERE id = ?"
_DECIDE_TOURNAMENT = """
UPDATE tournaments SET state = 'decided', chosen = ?, decided_by = ? WHERE id = ? AND state = 'voting'
"""
_SELECT_CANDIDATES = "SELECT * FROM jobs WHERE tournament_id = ? AND kind = 'candidate' ORDER BY candidate"

# -- servers' settings and members' preferences ------------------------------------------------------------------------
_SELECT_SETTINGS = f"SELECT {', '.join(_SETTINGS_COLUMNS)} FROM guild_settings WHERE guild_id = ?"
_UPSERT_SETTINGS = f"""
INSERT INTO guild_settings (guild_id, {", ".join(_SETTINGS_COLUMNS)}) VALUES (?{", ?" * len(_SETTINGS_COLUMNS)})
ON CONFLICT(guild_id) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in _SETTINGS_COLUMNS)}
"""
_SELECT_WORDS = "SELECT word FROM blocked_words WHERE guild_id = ? ORDER BY word"
_INSERT_WORD = "INSERT OR IGNORE INTO blocked_words (guild_id, word, added_by, added_at) VALUES (?, ?, ?, ?)"
_DELETE_WORD = "DELETE FROM blocked_words WHERE guild_id = ? AND word = ?"
_SELECT_DM = "SELECT dm_results FROM member_settings WHERE user_id = ?"
_UPSERT_DM = """
INSERT INTO member_settings (user_id, dm_results) VALUES (?, ?)
ON CONFLICT(user_id) DO UPDATE SET dm_results = excluded.dm_results
"""

# -- the web gallery ---------------------------------------------------------------------------------------------------
# The web gallery shows a job only when it is public and meant to be seen: posted on a server that turned the
# gallery on, where everyone in that server could see it (recorded when it was posted; a row from before that
# was recorded is not shown), not in a channel or thread the server's staff left out of the gallery, not a
# tournament's candidate, not deleted, and not spoilered or withheld by the output check.
_GALLERY_EXCLUDED = """
EXISTS (SELECT 1 FROM guild_settings AS s, json_each(s.gallery_excluded) AS excluded
        WHERE s.guild_id = jobs.guild_id
          AND excluded.value IN (jobs.channel_id, jobs.thread_id, jobs.audience_channel_id))
"""
_GALLERY_VISIBLE = f"""
jobs.state = 'done' AND jobs.guild_id IS NOT NULL AND jobs.image_path IS NOT NULL
  AND jobs.kind != 'candidate' AND jobs.deleted_at IS NULL
  AND (jobs.moderation IS NULL OR jobs.moderation = 'post')
  AND jobs.audience = 'everyone' AND NOT {_GALLERY_EXCLUDED}
  AND jobs.guild_id IN (SELECT guild_id FROM guild_settings WHERE gallery = 1)
"""
_SELECT_GALLERY_GUILDS = f"SELECT DISTINCT jobs.guild_id FROM jobs WHERE {_GALLERY_VISIBLE} ORDER BY jobs.guild_id"
_SELECT_GALLERY_PAGE = f"""
SELECT jobs.*, COALESCE(SUM(votes.value), 0) AS total
FROM jobs LEFT JOIN votes ON votes.job_id = jobs.id
WHERE {_GALLERY_VISIBLE} AND jobs.guild_id = :guild AND jobs.finished_at >= :since
GROUP BY jobs.id
ORDER BY total DESC, jobs.score DESC, jobs.id
LIMIT :limit OFFSET :offset
"""
_COUNT_GALLERY = (
    f"SELECT count(*) FROM jobs WHERE {_GALLERY_VISIBLE} AND jobs.guild_id = :guild AND jobs.finished_at >= :since"
)
_SELECT_GALLERY_IMAGE = f"""
SELECT jobs.*, COALESCE(SUM(votes.value), 0) AS total
FROM jobs LEFT JOIN votes ON votes.job_id = jobs.id
WHERE {_GALLERY_VISIBLE} AND jobs.id = :id
GROUP BY jobs.id
"""

# -- statistics (/stats and /stats me) ---------------------------------------------------------------------------------
# A server's (or, with :author, one member's) jobs asked for since :since, by state. `guild_id IS :guild` also matches
# DMs (NULL) when :guild is NULL.
_SELECT_STATE_COUNTS = """
SELECT state, count(*) FROM jobs
WHERE guild_id IS :guild AND created_at >= :since AND (:author IS NULL OR author_id = :author)
GROUP BY state
"""
# Running time (on the GPU, or on a worker) of the runs that ended since :since, per member, the longest first.
_RUN_SECONDS = "MAX(0, finished_at - started_at)"
_ENDED_RUNS = """
guild_id IS :guild AND started_at IS NOT NULL AND finished_at >= :since
  AND state IN ('posting', 'done', 'failed', 'cancelled')
"""
_SELECT_USAGE = f"""
SELECT author_id, SUM({_RUN_SECONDS}) AS seconds, count(*) AS jobs FROM jobs
WHERE {_ENDED_RUNS}
GROUP BY author_id ORDER BY seconds DESC, author_id LIMIT :limit
"""
_SELECT_MEMBER_USAGE = f"""
WITH usage AS (SELECT author_id, SUM({_RUN_SECONDS}) AS seconds, count(*) AS jobs FROM jobs
               WHERE {_ENDED_RUNS} GROUP BY author_id)
SELECT mine.seconds, mine.jobs, (SELECT count(*) FROM usage WHERE usage.seconds > mine.seconds) + 1
FROM usage AS mine WHERE mine.author_id = :author
"""
# How long jobs that started since :since had waited (from being asked for to their start).
_SELECT_AVERAGE_WAIT = """
SELECT AVG(MAX(0, started_at - created_at)), count(*) FROM jobs
WHERE guild_id IS :guild AND started_at >= :since AND (:author IS NULL OR author_id = :author)
"""
# What the engine did from :since to :now, every server together: the running time within the window (a run still
# going counts up to now), the images finished, the runs that failed or were cancelled, the runs begun.
_SELECT_ACTIVITY = """
SELECT COALESCE(SUM(MIN(COALESCE(finished_at, :now), :now) - MAX(started_at, :since)), 0),
       COALESCE(SUM(finished_at >= :since AND state IN ('posting', 'done')), 0),
       COALESCE(SUM(finished_at >= :since AND state = 'failed'), 0),
       COALESCE(SUM(finished_at >= :since AND state = 'cancelled'), 0),
       COALESCE(SUM(started_at >= :since), 0)
FROM jobs
WHERE started_at IS NOT NULL AND state != 'queued' AND started_at < :now
  AND (finished_at IS NULL OR finished_at > :since)
"""
