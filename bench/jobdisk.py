"""`python -m bench.jobdisk`: disk used by one job at the default snapshot settings, and its timelapse sizes.

Runs a job through the engine's loop with a SnapshotHistory (IMAGINE_SNAPSHOT_EVERY / _BUDGET defaults)
and the bot's frame store, like the bot does, then makes the timelapse for a few upload limits. Tiny models
run it fast (their random-weight pictures are noisy: a worst case for compression); the snapshot size of the
real imagenet f16 VQGAN at the same size is measured from one real-size step.

    python -m bench.jobdisk --size 512 --steps 300
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

from bot.timelapse import frame_paths, make_timelapse, save_frame
from engine.engine import Engine
from engine.events import Snapshotted
from engine.loading import EnginePool, ModelSettings
from engine.loop import Callbacks, run_to_end
from engine.models.tiny import real_size_clip, real_size_vqgan, write_tiny_models
from engine.run import save_snapshot
from engine.snapshots import SnapshotHistory
from engine.spec import JobSpec

LIMITS = {"10 MiB (Discord default)": 10 * 2**20, "25 MiB": 25 * 2**20, "8 MiB": 8 * 2**20}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.jobdisk", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=25, help="snapshot interval (IMAGINE_SNAPSHOT_EVERY)")
    p.add_argument("--budget", type=int, default=6, help="snapshots kept (IMAGINE_SNAPSHOT_BUDGET)")
    p.add_argument("--no-real", action="store_true", help="skip the real-size snapshot measurement")
    p.add_argument("--json", default="bench-jobdisk.json")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="imagine-jobdisk-"))
    pool = EnginePool(ModelSettings(models_dir=write_tiny_models(work / "models"), device="cpu"))
    spec = JobSpec(
        "a lighthouse in a storm",
        width=args.size,
        height=args.size,
        steps=args.steps,
        cutn=8,
        model="tiny_f16",
        clip_model="tiny-clip",
    )
    engine = pool.engine_for(spec)
    history = SnapshotHistory(work / "snapshots", args.every, args.budget)
    frames_dir = work / "frames"

    def on_progress(progress, preview) -> None:
        buffer = io.BytesIO()
        preview.save(buffer, format="PNG", compress_level=1)
        save_frame(frames_dir, progress.step, buffer.getvalue())

    def on_event(event) -> None:
        if isinstance(event, Snapshotted):
            history.save(event.step, event.state, event.thumbnail)

    callbacks = Callbacks(on_progress=on_progress, on_event=on_event, snapshot_every=args.every)
    result = run_to_end(engine, engine.start(spec), callbacks)
    frames = frame_paths(frames_dir)
    row = {
        "size": args.size,
        "steps": args.steps,
        "snapshots_kept": history.steps(),
        "tiny_snapshot_dir_bytes": history.disk_bytes(),
        "final_png_bytes": len(result.image),
        "frames": len(frames),
        "frames_bytes": sum(f.stat().st_size for f in frames),
        "timelapse": {},
    }
    for name, limit in LIMITS.items():
        for fmt in ("webp", "gif"):
            made = make_timelapse(frames, limit, result.image, fmt=fmt)
            row["timelapse"][f"{fmt} within {name}"] = (
                None if made is None else {"bytes": len(made.data), "frames": made.frames, "size": made.size}
            )
    if not args.no_real:
        real = Engine(real_size_clip(), vqgan=real_size_vqgan(), device="cpu")
        run = real.start(JobSpec("x", width=args.size, height=args.size, cutn=8, steps=2))
        real.step([run])
        save_snapshot(run.snapshot(), work / "real.pt")
        one = (work / "real.pt").stat().st_size
        row["real_snapshot_bytes"] = one
        row["real_snapshot_dir_bytes_estimate"] = one * len(history.steps())
    print(json.dumps(row, indent=1))
    Path(args.json).write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
