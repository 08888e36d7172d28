-- Posting is a state: a finished job stays 'posting' (image saved, score recorded) until its result message
-- exists; recovery re-posts such jobs. The jobs.state column is free text, so no column changes are needed.
--
-- The install token: a random value made with the database. Job buttons carry it in their custom_id, so a
-- button left over from a deleted or replaced database (whose ids now name other jobs) is refused.
-- `legacy_buttons` marks a database that already had jobs before buttons carried the token: its old
-- token-less buttons still belong to it and keep working; a fresh database refuses token-less buttons.
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('install', lower(hex(randomblob(5))));
INSERT INTO meta (key, value)
    SELECT 'legacy_buttons', '1' WHERE EXISTS (SELECT 1 FROM jobs) OR EXISTS (SELECT 1 FROM tournaments);
