-- The most expensive quality preset members of the server may ask for (engine.quality: draft, normal, best); NULL:
-- every preset.
ALTER TABLE guild_settings ADD COLUMN max_quality TEXT;
