"""Where the job service keeps files under the data directory: each job's image, saved states, timelapse frames and
animation, and the members' uploaded pictures.

    images/<id>.png            the finished image
    snapshots/<id>/<step>.pt   saved states (and <step>.webp thumbnails; see engine.snapshots)
    frames/<id>/               the previews a timelapse is made of (removed once it is posted)
    timelapses/<id>.webp|gif   the kept animation (the gallery shows it)
    videos/<id>.mp4|webp       an animation job's video and its looping preview (kept until pruned)
    inputs/<digest>.<ext>      uploaded pictures, named by their content (engine.uploads.stored_name)
    describe/                  /describe's vocabulary embeddings
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.files import write_atomically
from engine.spec import JobSpec
from engine.uploads import check_image, stored_name


class JobFiles:
    """The paths of a job's files under `data_dir` (see the module's docstring), and the uploaded pictures kept."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)

    def image(self, job_id: int) -> Path:
        """Where a job's finished image is saved."""
        return self.data_dir / "images" / f"{job_id}.png"

    def snapshot_dir(self, job_id: int) -> Path:
        """The folder of a job's saved states."""
        return self.data_dir / "snapshots" / str(job_id)

    def frames(self, job_id: int) -> Path:
        """The folder of a job's timelapse frames."""
        return self.data_dir / "frames" / str(job_id)

    def timelapse(self, job_id: int, ext: str) -> Path:
        """Where a job's animation is kept, as a file of type `ext` (webp or gif)."""
        return self.data_dir / "timelapses" / f"{job_id}.{ext}"

    def video(self, job_id: int, ext: str = "mp4") -> Path:
        """Where an animation job's video (mp4) or its looping preview (webp) is kept."""
        return self.data_dir / "videos" / f"{job_id}.{ext}"

    def timelapse_file(self, job_id: int) -> Path | None:
        """The kept animation of a job's run (the gallery shows it), if one was made."""
        for ext in ("webp", "gif"):
            path = self.timelapse(job_id, ext)
            if path.is_file():
                return path
        return None

    @property
    def describe_cache(self) -> Path:
        """Where /describe keeps the vocabulary's embeddings (one file per CLIP model)."""
        return self.data_dir / "describe"

    def snapshots(self, job_id: int) -> list[tuple[int, Path, Path | None]]:
        """The saved states of a job, oldest first: (step, snapshot file, thumbnail file or None). Files are named
        by step (see engine.snapshots)."""
        directory = self.snapshot_dir(job_id)
        if not directory.is_dir():
            return []
        found = []
        for path in sorted(directory.glob("*.pt")):
            if path.stem.isdigit():
                thumb = path.with_suffix(".webp")
                found.append((int(path.stem), path, thumb if thumb.is_file() else None))
        return found

    async def keep_picture(self, data: bytes, what: str) -> str:
        """Check an uploaded picture completely (size, format, metadata, dimensions, frames, decoding; InvalidSpec
        naming `what`) before anything is queued, and keep it under a name made from its content (never the member's
        file name; the same picture is kept once). Returns the name a spec reads it by."""
        await asyncio.to_thread(check_image, data, f"the {what}")
        path = self.data_dir / "inputs" / stored_name(data)
        if not path.is_file():
            await asyncio.to_thread(write_atomically, path, data)
        return str(path)


def read_pictures(spec: JobSpec) -> dict[str, bytes]:
    """The bytes of the pictures a spec reads (those still on disk; the engine says which are missing)."""
    found = {}
    for name in spec.pictures():
        path = Path(name)
        if path.is_file():
            found[name] = path.read_bytes()
    return found
