-- Running the bot for a community: per-server settings, blocked words, members' preferences, Delete, the
-- moderation verdict of each image, and the timelapse message (Delete removes it with the image).
ALTER TABLE guild_settings ADD COLUMN channels       TEXT;              -- JSON list of channel ids; NULL: all
ALTER TABLE guild_settings ADD COLUMN default_steps  INTEGER;           -- NULL: the bot's setting
ALTER TABLE guild_settings ADD COLUMN max_steps      INTEGER;
ALTER TABLE guild_settings ADD COLUMN sizes          TEXT;              -- JSON list of size names; NULL: all
ALTER TABLE guild_settings ADD COLUMN max_queued_total INTEGER;         -- waiting jobs of this server, together
ALTER TABLE guild_settings ADD COLUMN timelapse      INTEGER;           -- NULL: the bot's setting
ALTER TABLE guild_settings ADD COLUMN moderation     TEXT;              -- off | spoiler | withhold | strict
ALTER TABLE guild_settings ADD COLUMN builtin_words  INTEGER NOT NULL DEFAULT 1;
ALTER TABLE guild_settings ADD COLUMN gallery        INTEGER NOT NULL DEFAULT 0;

CREATE TABLE blocked_words (
    guild_id  INTEGER NOT NULL,
    word      TEXT    NOT NULL,                                         -- as the admin typed it
    added_by  INTEGER NOT NULL,
    added_at  REAL    NOT NULL,
    PRIMARY KEY (guild_id, word)
);

CREATE TABLE member_settings (
    user_id     INTEGER PRIMARY KEY,
    dm_results  INTEGER NOT NULL DEFAULT 0
);

ALTER TABLE jobs ADD COLUMN timelapse_message_id INTEGER;
ALTER TABLE jobs ADD COLUMN moderation TEXT;                          -- post | spoiler | withhold; NULL: unchecked
ALTER TABLE jobs ADD COLUMN unsafe     REAL;                          -- the check's probability, when made
ALTER TABLE jobs ADD COLUMN deleted_at REAL;                          -- Delete keeps the row, hides the image
ALTER TABLE jobs ADD COLUMN deleted_by INTEGER;
