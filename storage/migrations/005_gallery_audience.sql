-- Who could see each result when it was posted, so that the web gallery publishes only what everyone in the
-- server could see: 'everyone' (the @everyone role could view the channel, or a public thread's parent channel,
-- and it is not age-restricted) or 'restricted'. NULL: posted before this was recorded, never public.
ALTER TABLE jobs ADD COLUMN audience            TEXT;
ALTER TABLE jobs ADD COLUMN audience_channel_id INTEGER;               -- the channel that decided: a thread's parent

-- Channels whose images the server's staff keep out of the web gallery (a channel's threads with it).
ALTER TABLE guild_settings ADD COLUMN gallery_excluded TEXT;           -- JSON list of channel ids; NULL: none
