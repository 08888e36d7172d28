"""Writing a file so that a stop mid-write never leaves a truncated one: the one atomic write of the project.

    write_atomically(path, data)                 # bytes
    with replacing(path) as f: torch.save(x, f)  # whatever writes to a binary file

The data go to a temporary file beside `path` (same folder, so the rename stays on one file system), are flushed to
disk, and the temporary file is renamed over `path`; a failure removes the temporary file and leaves what was at
`path` before. Standard library only, so the bot side writes its files with it too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` when the block ends without an error (its folder is made if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    tmp = Path(name)
    try:
        with os.fdopen(handle, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring)."""
    with replacing(path) as f:
        f.write(data)
