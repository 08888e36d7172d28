-- Jobs, their state history, votes and per-guild settings.
CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id            INTEGER,
    channel_id          INTEGER NOT NULL,
    author_id           INTEGER NOT NULL,
    spec_json           TEXT    NOT NULL,
    kind                TEXT    NOT NULL DEFAULT 'new',      -- new | reroll | continue
    parent_id           INTEGER REFERENCES jobs(id),
    state               TEXT    NOT NULL DEFAULT 'queued',   -- queued | running | done | failed | cancelled
    error               TEXT,
    thread_id           INTEGER,                             -- where progress and the result go
    queued_message_id   INTEGER,                             -- the "Queued #N" message in the channel
    status_message_id   INTEGER,
    result_message_id   INTEGER,
    image_path          TEXT,
    snapshot_path       TEXT,
    steps_done          INTEGER NOT NULL DEFAULT 0,
    width               INTEGER,
    height              INTEGER,
    score               REAL,
    scores_json         TEXT,
    created_at          REAL    NOT NULL,
    started_at          REAL,
    finished_at         REAL
);
CREATE INDEX jobs_state ON jobs(state, id);
CREATE INDEX jobs_author ON jobs(guild_id, author_id, id);
CREATE INDEX jobs_result_message ON jobs(result_message_id);

CREATE TABLE job_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  INTEGER NOT NULL REFERENCES jobs(id),
    state   TEXT    NOT NULL,
    at      REAL    NOT NULL,
    detail  TEXT
);
CREATE INDEX job_events_job ON job_events(job_id, id);

CREATE TABLE votes (
    job_id   INTEGER NOT NULL REFERENCES jobs(id),
    user_id  INTEGER NOT NULL,
    value    INTEGER NOT NULL CHECK (value IN (-1, 1)),
    at       REAL    NOT NULL,
    PRIMARY KEY (job_id, user_id, value)
);

CREATE TABLE guild_settings (
    guild_id          INTEGER PRIMARY KEY,
    max_queued_per_user INTEGER,
    use_threads       INTEGER NOT NULL DEFAULT 1
);
