"""The bot's wiring: settings, the job queue, the bridge to the engine, start-up. No torch here."""
