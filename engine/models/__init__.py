"""Model files: the registry of known models, downloads, loaders (VQGAN, CLIP) and tiny test models.

This package's `__init__` loads no torch; `vqgan`, `clip` and `tiny` do.
"""
