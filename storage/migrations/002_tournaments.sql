-- Seed tournaments: several candidates of one prompt run a short first stage; one of them goes on.
CREATE TABLE tournaments (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id            INTEGER,
    channel_id          INTEGER NOT NULL,
    author_id           INTEGER NOT NULL,
    spec_json           TEXT    NOT NULL,                    -- the full run (all steps) for the winner
    candidates          INTEGER NOT NULL,
    state               TEXT    NOT NULL DEFAULT 'running',  -- running | voting | decided | failed
    thread_id           INTEGER,
    grid_message_id     INTEGER,
    chosen              INTEGER,                             -- the candidate number (1-based) that went on
    decided_by          TEXT,                                -- author | votes | score
    decide_at           REAL,
    created_at          REAL    NOT NULL
);
CREATE INDEX tournaments_state ON tournaments(state, id);

ALTER TABLE jobs ADD COLUMN tournament_id INTEGER REFERENCES tournaments(id);
ALTER TABLE jobs ADD COLUMN candidate INTEGER;                -- its number in the tournament (1-based)
CREATE INDEX jobs_tournament ON jobs(tournament_id, candidate);
