"""`python -m bench.animation`: seconds per animation frame at 256² on the real-size architectures.

Builds the imagenet f16 16384 VQGAN and CLIP ViT-B/32 with random weights (compute does not depend on weight
values), runs an animation of a few frames and prints the seconds of the first frame, of each later frame (its
steps plus the move and re-encoding that starts it), of one move + re-encode alone, and of the MP4 + WebP at the
end; then what a default animation (engine.keyframes: 48 frames of 30 steps after a first of 300) would take.

    python -m bench.animation --frames 2 --first-steps 2 --frame-steps 2          # this CPU, a smoke-sized run
    python -m bench.animation --device cuda --frames 8 --frame-steps 30           # a GPU
    python -m bench.animation --tiny                                               # tiny models (the test)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from bench.machine import cpu_name
from engine.engine import Engine
from engine.keyframes import DEFAULT_FRAME_STEPS, DEFAULT_FRAMES, Animation
from engine.run import pick_device
from engine.spec import JobSpec
from engine.speed import PRECISIONS, Speed

DEFAULT_FIRST_STEPS = 300


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _engine(args, device: torch.device) -> tuple[Engine, dict, str]:
    """The engine, the spec fields naming its models, and a label of them."""
    speed = Speed(precision=args.precision)
    if args.tiny:
        from engine.loading import EnginePool, ModelSettings
        from engine.models.tiny import write_tiny_models

        directory = write_tiny_models(Path(args.tiny_dir))
        fields = {"model": "tiny_f16", "clip_model": "tiny-clip"}
        pool = EnginePool(ModelSettings(models_dir=directory, device=str(device), speed=speed))
        return pool.engine_for(JobSpec("x", **fields)), fields, "tiny_f16 + tiny-clip"
    from engine.models.tiny import real_size_clip, real_size_vqgan

    perceptor, vqgan = real_size_clip(args.clip, device), real_size_vqgan(device)
    label = f"vqgan_imagenet_f16_16384 + {args.clip} (random weights)"
    return Engine(perceptor, vqgan=vqgan, device=device, speed=speed), {"clip_model": args.clip}, label


def bench(args: argparse.Namespace) -> dict:
    """Run one animation and time its parts."""
    from engine.animation import warp
    from engine.keyframes import Transform

    device = pick_device(args.device)
    engine, fields, label = _engine(args, device)
    animation = Animation(frames=args.frames, fps=12, frame_steps=args.frame_steps, zoom="0: (1.03)", angle=1)
    spec = JobSpec(
        "a bench animation", width=args.size, height=args.size, cutn=args.cutn, steps=args.first_steps, seed=1,
        animation=animation, **fields,
    )  # fmt: skip
    print(f"device {device} ({cpu_name()}), {label}, {args.size}x{args.size}, cutn {args.cutn}", flush=True)
    run = engine.start(spec)
    finished = []  # seconds at which each frame was done
    _sync(device)
    started = time.perf_counter()
    while not run.done:
        made = len(run.frames)
        engine.step([run])
        if len(run.frames) > made:
            _sync(device)
            finished.append(time.perf_counter() - started)
    first = finished[0]
    later = [b - a for a, b in zip(finished, finished[1:], strict=False)]
    steps_s = (finished[-1] - first) / max(1, (args.frames - 1) * args.frame_steps) if later else first / spec.steps
    image = run.image()
    _sync(device)
    moved_at = time.perf_counter()
    run.generator.encode(warp(image, Transform(zoom=1.03, angle=1.0)))
    _sync(device)
    transition = time.perf_counter() - moved_at
    ended = time.perf_counter()
    result = engine.result(run, 0.0)
    outputs = time.perf_counter() - ended
    per_frame = sum(later) / len(later) if later else None
    default_total = DEFAULT_FIRST_STEPS * steps_s + (DEFAULT_FRAMES - 1) * (DEFAULT_FRAME_STEPS * steps_s + transition)
    row = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "cpu": cpu_name(),
        "models": label,
        "size": args.size,
        "cutn": args.cutn,
        "frames": args.frames,
        "first_steps": args.first_steps,
        "frame_steps": args.frame_steps,
        "first_frame_s": first,
        "later_frame_s": later,
        "s_per_frame": per_frame,
        "s_per_step": steps_s,
        "move_and_reencode_s": transition,
        "mp4_and_preview_s": outputs,
        "video_bytes": len(result.video or b""),
        "preview_bytes": len(result.preview_animation or b""),
        "default_animation_minutes": default_total / 60,
    }
    shown = f"{per_frame:.2f} s/frame ({args.frame_steps} steps)" if per_frame is not None else "one frame only"
    print(
        f"{shown} | first frame {first:.2f} s ({args.first_steps} steps) | {steps_s:.3f} s/step | "
        f"move + re-encode {transition:.3f} s | MP4 + WebP {outputs:.2f} s ({row['video_bytes']} + "
        f"{row['preview_bytes']} bytes) | a default animation ({DEFAULT_FRAMES} frames, {DEFAULT_FIRST_STEPS} + "
        f"{DEFAULT_FRAME_STEPS}/frame steps) ~{row['default_animation_minutes']:.1f} min",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its figures as JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.animation", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--first-steps", type=int, default=5)
    p.add_argument("--frame-steps", type=int, default=5)
    p.add_argument("--clip", default="ViT-B-32")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--tiny", action="store_true", help="tiny models instead of the real-size ones (smoke test)")
    p.add_argument("--tiny-dir", default="/tmp/imagine-bench-models")
    p.add_argument("--json", default="bench-animation.json", help="where to write the figures")
    args = p.parse_args(argv)
    if args.tiny and args.size == 256:
        args.size = 64
    row = bench(args)
    Path(args.json).write_text(json.dumps(row, indent=2))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
