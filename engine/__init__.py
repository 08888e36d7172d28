"""The synchronous torch side of imagine: models, the optimisation loop, images.

Importing `engine`, `engine.spec` or `engine.errors` loads no torch; the modules that need it import it themselves.
"""

from engine.spec import ENGINE_VERSION as __version__

__all__ = ["__version__"]
