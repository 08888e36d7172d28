"""`python -m bench.compositions`: what each composition term costs per step, relative to a plain run of the
same size and cutouts (real-size random-weight models, or --tiny).

    python -m bench.compositions --size 256x128 --cutn 32 --steps 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from engine.engine import Engine
from engine.models.tiny import real_size_clip, real_size_vqgan
from engine.run import pick_device
from engine.spec import JobSpec

CASES = {
    "plain (single prompt)": dict(prompt="a castle"),
    "panorama, 2 parts": dict(prompt="a castle / a forest", layout="panorama"),
    "panorama, 3 parts + size weights": dict(prompt="a / b / c", layout="panorama", size_weight=1.0),
    "mirror pairs only": dict(prompt="heaven / hell", layout="mirror", tone_weight=0.0, semantic_weight=0.0),
    "mirror + tone symmetry": dict(prompt="heaven / hell", layout="mirror", tone_weight=0.5, semantic_weight=0.0),
    "mirror + semantic symmetry": dict(prompt="heaven / hell", layout="mirror", tone_weight=0.0, semantic_weight=0.1),
    "mirror, both terms (defaults)": dict(prompt="heaven / hell", layout="mirror"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compositions", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None)
    p.add_argument("--size", default="256x128")
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds over all cases (less drift)")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", default="bench-compositions.json")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = pick_device(args.device)
    extra = {}
    if args.tiny:
        from engine.loading import EnginePool, ModelSettings
        from engine.models.tiny import write_tiny_models

        pool = EnginePool(ModelSettings(models_dir=write_tiny_models("/tmp/imagine-bench-models"), device=str(device)))
        extra = dict(model="tiny_f16", clip_model="tiny-clip")
        engine = pool.engine_for(JobSpec("x", **extra))
    else:
        engine = Engine(real_size_clip(device=device), vqgan=real_size_vqgan(device), device=device)
    runs = {
        name: engine.start(JobSpec(width=width, height=height, cutn=args.cutn, steps=10_000, **extra, **case))
        for name, case in CASES.items()
    }
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for run in runs.values():  # warm-up
        engine.step([run])
    for _ in range(args.repeats):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for _ in range(args.steps):
                engine.step([run])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append((time.perf_counter() - started) / args.steps)
    base = min(times["plain (single prompt)"])
    rows = []
    for name, values in times.items():
        best = min(values)
        rows.append({"case": name, "s_per_step": best, "relative": best / base})
        print(f"{name:34s} {best:.4f} s/step  {best / base:.3f}x plain", flush=True)
    Path(args.json).write_text(json.dumps({"size": args.size, "cutn": args.cutn, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
