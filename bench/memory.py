"""`python -m bench.memory`: what one step keeps for its backward, per size and cutout count, on any device.

Sums the distinct tensors autograd saves during one real-size step (imagenet f16 VQGAN + ViT-B/32, random
weights; the weights themselves excluded), fits bytes = a * pixels + b * cutouts + c, and prints the largest
square that one job can use on 12, 24 and 80 GB cards.
On CUDA it also prints the measured peak. The fit is what `engine.memory.step_bytes` uses.

    python -m bench.memory --sizes 128 256 --cutn 16 32
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from engine.engine import Engine
from engine.models.tiny import real_size_clip, real_size_vqgan
from engine.run import pick_device
from engine.spec import JobSpec
from engine.speed import PRECISIONS, Speed


def saved_bytes(engine: Engine, spec: JobSpec) -> int:
    """Bytes of the distinct tensors saved for the backward in one step of `spec` (model weights excluded: they
    are resident anyway)."""
    seen: dict[int, int] = {}
    weights = {t.untyped_storage().data_ptr() for t in engine.perceptor.parameters()}
    if engine.vqgan is not None:
        weights |= {t.untyped_storage().data_ptr() for t in engine.vqgan.parameters()}

    def pack(t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        if key not in weights:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    run = engine.start(spec)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        engine.step([run])
    return sum(seen.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--cutn", type=int, nargs="+", default=[16, 32])
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--checkpoint", action="store_true", help="with decoder gradient checkpointing")
    p.add_argument("--json", default="bench-memory.json")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    engine = Engine(
        real_size_clip(device=device),
        vqgan=real_size_vqgan(device),
        device=device,
        speed=Speed(args.precision, checkpoint=args.checkpoint),
    )
    rows = []
    for size in args.sizes:
        for cutn in args.cutn:
            spec = JobSpec("memory", width=size, height=size, cutn=cutn, steps=10)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            saved = saved_bytes(engine, spec)
            row = {"size": size, "cutn": cutn, "saved_mb": saved / 2**20, "precision": args.precision}
            if device.type == "cuda":
                row["cuda_step_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            rows.append(row)
            print(json.dumps(row), flush=True)
    # least squares fit of saved = a * pixels + b * cutn + c
    a_rows = torch.tensor([[r["size"] ** 2, r["cutn"], 1.0] for r in rows], dtype=torch.float64)
    y = torch.tensor([r["saved_mb"] * 2**20 for r in rows], dtype=torch.float64)
    coef = torch.linalg.lstsq(a_rows, y[:, None]).solution.squeeze(1)
    per_pixel, per_cutout, constant = coef.tolist()
    label = args.precision + (", checkpointed decoder" if args.checkpoint else "")
    print(
        f"fit: {per_pixel:.0f} bytes per pixel + {per_cutout / 2**20:.1f} MB per cutout "
        f"+ {constant / 2**20:.0f} MB ({label})"
    )
    for card in (12, 24, 80):
        fits = []
        for side in (256, 384, 512, 640, 768, 1024, 1280, 1536):
            need = per_pixel * side * side + per_cutout * 32 + constant + 1.5 * 2**30
            if need < card * 2**30:
                fits.append(side)
        print(f"{card} GB card, 32 cutouts, one job: up to {max(fits) if fits else 'none'} px square")
    with open(args.json, "w") as f:
        fit = {"bytes_per_pixel": per_pixel, "bytes_per_cutout": per_cutout, "constant_bytes": constant}
        json.dump({"rows": rows, **fit}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
