"""Discord glue: slash commands, views, embeds. Thin; no SQL, no torch."""
