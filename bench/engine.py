"""`python -m bench.engine`: steps per second of the real-size architectures, ours beside a plain reference loop.

Builds the imagenet f16 16384 VQGAN and CLIP ViT-B/32 with random weights (compute does not depend on weight
values), runs a fixed number of steps per configuration and prints steps/s, images/hour at 300 steps, peak
memory and, where the device's peak is known, the achieved fraction of peak FLOP/s. The plain loop is fp32,
makes its cutouts one by one, augments each cutout on its own and runs one CLIP forward per step.

    python -m bench.engine --sizes 128 --cutn 32 --steps 3                     # this CPU
    python -m bench.engine --device cuda --sizes 256 512 --batch 1 4 8 --flops  # a GPU
    python -m bench.engine --device cuda --compile --sizes 512                  # with torch.compile
    python -m bench.engine --tiny --steps 2                                     # smoke run on tiny models
    python -m bench.engine --sizes 256 --generators vqgan fourier siren biggan dalle --no-plain  # every generator

    python -m bench.engine --quality draft normal best --sizes 256 --steps 2     # the quality presets

`--quality` runs each preset (engine.quality: its CLIP ensemble at real size with random weights, its cutout
schedules and losses) and prints s/step, the ratio to draft beside engine.quality's estimate, and the step's
memory: the CUDA peak on a GPU; on a CPU the activations one step keeps for its backward (the process's peak RSS
only grows, so it is printed but not per preset).

The other generators run at the same sizes with real-size random weights: BigGAN-deep at its native size
(biggan-deep-128/256/512, other sizes skipped), DALL-E's dVAE (8192 codes), SIREN (8 x 256) and Fourier.

Speed settings (precision, channels_last, the fast CLIP tower, compile, checkpointing) are the engine's own
(`engine.speed.Speed`); the plain loop always runs with `engine.speed.PLAIN` on its own copy of the models.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.machine import cpu_name
from engine import generators, quality
from engine.engine import Engine
from engine.models.tiny import real_size_biggan, real_size_clip, real_size_dvae, real_size_vqgan
from engine.run import pick_device
from engine.spec import JobSpec
from engine.speed import PLAIN, PRECISIONS, Speed

# Dense bf16 peak of known devices (TFLOP/s), for the fraction of peak.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "RTX 4090": 165.0, "A10": 125.0}


class PlainLoop:
    """The deliberately plain reference: per-cutout crops, resizes and augmentations, fp32, nothing compiled."""

    def __init__(self, engine: Engine, spec: JobSpec) -> None:
        self.engine, self.spec = engine, spec
        self.run = engine.start(spec)
        self.gen = torch.Generator(device=engine.device).manual_seed(spec.seed)

    def step(self) -> None:
        run, engine, spec = self.run, self.engine, self.spec
        size = engine.perceptor.input_size
        image = run.generator.decode(run.params)  # (1, 3, H, W)
        _, _, h, w = image.shape
        max_size, min_size = min(w, h), min(w, h, size)
        cutouts = []
        for _ in range(spec.cutn):
            r = lambda: torch.rand((), generator=self.gen, device=engine.device).item()  # noqa: E731
            s = int(r() ** spec.cut_pow * (max_size - min_size) + min_size)
            x, y = int(r() * (w - s + 1)), int(r() * (h - s + 1))
            cut = F.adaptive_avg_pool2d(image[:, :, y : y + s, x : x + s], size)
            if r() < 0.5:
                cut = cut.flip(3)
            angle = math.radians((r() * 2 - 1) * 10)
            theta = torch.tensor(
                [[[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]]],
                device=engine.device,
            )
            grid = F.affine_grid(theta, list(cut.shape), align_corners=False)
            cut = F.grid_sample(cut, grid, padding_mode="reflection", align_corners=False)
            cut = cut + torch.randn(cut.shape, generator=self.gen, device=engine.device) * r() * 0.1
            cutouts.append(cut)
        embeds = engine.perceptor.encode_image(torch.cat(cutouts))
        from engine.losses import prompt_losses

        loss = prompt_losses(embeds, run.targets, run.weights, run.stops).sum()
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.generator.project_(run.params)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step, steps: int, device: torch.device, warmup: int = 1) -> float:
    for _ in range(warmup):  # allocations, kernel selection, compilation
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - started) / steps


def _flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def _peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


GENERATORS = generators.NAMES


def _other_engines(args, device, perceptor, speed, pool=None) -> dict:
    """name -> (engine maker for a size, model label, spec fields) for the generators besides VQGAN."""
    if args.tiny:
        tiny = lambda **f: lambda size: pool.engine_for(JobSpec("x", clip_model="tiny-clip", **f))  # noqa: E731
        return {
            "fourier": (tiny(generator="fourier"), "-"),
            "siren": (tiny(generator="siren"), "-"),
            "pixels": (tiny(generator="pixels"), "-"),
            "biggan": (tiny(generator="biggan", model="tiny-biggan", width=32, height=32), "tiny-biggan"),
            "dalle": (tiny(generator="dalle", model="tiny-dvae"), "tiny-dvae"),
        }
    plain = lambda **models: lambda size: Engine(perceptor, device=device, speed=speed, **models)  # noqa: E731
    bigs: dict = {}

    def biggan(size: int) -> Engine:
        if size not in bigs:
            bigs.clear()  # one BigGAN in memory at a time
            bigs[size] = Engine(
                perceptor, device=device, speed=speed, weights={"biggan": real_size_biggan(size, device)}
            )
        return bigs[size]

    return {
        "fourier": (plain(), "-"),
        "siren": (plain(), "8 x 256 sine layers"),
        "pixels": (plain(), "-"),
        "biggan": (biggan, "biggan-deep-<size> (random weights)"),
        "dalle": (
            plain(weights={"dalle": real_size_dvae(device)}) if "dalle" in args.generators else None,
            "dVAE (random weights)",
        ),
    }


# --tiny stands the presets' CLIP models in with the tiny ones (three input sizes, a ResNet among them).
TINY_STAND_INS = {"ViT-B-32": "tiny-clip", "ViT-B-16": "tiny-clip-48", "RN50x4": "tiny-rn", "RN50": "tiny-rn"}


def saved_bytes(engine: Engine, runs: list) -> int:
    """Bytes of the distinct tensors one step saves for its backward, every model's weights excluded."""
    models = [m.perceptor for r in runs for m in r.members] + ([engine.vqgan] if engine.vqgan is not None else [])
    weights = {t.untyped_storage().data_ptr() for m in models for t in m.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        if key not in weights:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        engine.step(runs)
    return sum(seen.values())


def bench_quality(args: argparse.Namespace) -> list[dict]:
    """A row per preset and size: s/step, the ratio to draft (measured and estimated) and the step's memory."""
    device = pick_device(args.device)
    speed = Speed(precision=args.precision, channels_last=not args.no_channels_last, fast_clip=not args.no_fast_clip)
    if args.tiny:
        from engine.loading import EnginePool, ModelSettings
        from engine.models.tiny import write_tiny_models

        pool = EnginePool(ModelSettings(models_dir=write_tiny_models(Path(args.tiny_dir)), device=str(device)))
        clip = lambda name: pool.perceptor(TINY_STAND_INS.get(name, name))  # noqa: E731
        vqgan, model = pool.vqgan("tiny_f16"), "tiny_f16"
    else:
        loaded: dict = {}
        clip = lambda name: loaded.setdefault(name, real_size_clip(name, device))  # noqa: E731
        vqgan, model = real_size_vqgan(device), "vqgan_imagenet_f16_16384 (random weights)"
    print(f"device {device} ({cpu_name()}), speed {speed}", flush=True)
    rows, draft = [], {}
    for name in args.quality:
        fields = quality.expand(name)
        if args.tiny:
            fields["perceptors"] = tuple((TINY_STAND_INS.get(n, n), w) for n, w in fields["perceptors"])
            fields["clip_model"] = fields["perceptors"][0][0]
        names = [n for n, _ in quality.expand(name)["perceptors"]]
        engine = Engine(clip(names[0]), vqgan=vqgan, device=device, speed=speed, clips=clip)
        for size in args.sizes:
            spec = JobSpec("bench prompt", **{**fields, "steps": 10_000, "width": size, "height": size})
            estimate = quality.relative_cost(JobSpec("x", **{**quality.expand(name), "width": size, "height": size}))
            runs = [engine.start(spec)]
            counts = runs[0].cut_counts()
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            seconds = _time(lambda runs=runs, engine=engine: engine.step(runs), args.steps, device, args.warmup)
            peak_cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            kept = saved_bytes(engine, runs) / 2**20
            draft.setdefault(size, seconds)
            row = {
                "quality": name,
                "clips": names,
                "device": torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else f"cpu x{torch.get_num_threads()}",
                "cpu": cpu_name(),
                "model": model,
                "size": size,
                "cutouts_per_clip": {"overview": counts[0], "inner": counts[1]},
                "s_per_step": seconds,
                "relative_to_first": seconds / draft[size],
                "estimated_relative_cost": estimate,
                "activations_mb": kept,
                "peak_cuda_mb": peak_cuda,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
            rows.append(row)
            print(
                f"quality {name:6} {size}x{size} {'+'.join(names)} ({counts[0]} overview + {counts[1]} inner cutouts "
                f"each) | {seconds:.3f} s/step | {row['relative_to_first']:.2f}x {args.quality[0]} "
                f"(estimate {estimate:.2f}x draft) | step activations {kept:.0f} MB"
                + (f" | cuda peak {peak_cuda:.0f} MB" if peak_cuda is not None else "")
                + f" | rss so far {row['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    return rows


def bench(args: argparse.Namespace) -> list[dict]:
    if args.quality:
        return bench_quality(args)
    device = pick_device(args.device)
    pool = None
    if args.tiny:
        from engine.loading import EnginePool, ModelSettings
        from engine.models.tiny import write_tiny_models

        directory = write_tiny_models(Path(args.tiny_dir))
        pool = EnginePool(ModelSettings(models_dir=directory, device=str(device)))
        loaded = pool.engine_for(JobSpec("x", model="tiny_f16", clip_model="tiny-clip"))
        perceptor, vqgan = loaded.perceptor, loaded.vqgan
        model, clip = "tiny_f16", "tiny-clip"
    else:
        perceptor, vqgan = real_size_clip(args.clip, device), real_size_vqgan(device)
        model, clip = "vqgan_imagenet_f16_16384 (random weights)", f"{args.clip} (random weights)"
    speed = Speed(
        precision=args.precision,
        channels_last=not args.no_channels_last,
        fast_clip=not args.no_fast_clip,
        compile=args.compile,
        checkpoint=args.checkpoint,
    )
    # The plain loop gets its own models when ours would change their memory layout (channels_last on CUDA).
    plain_models = (copy.deepcopy(perceptor), copy.deepcopy(vqgan)) if device.type == "cuda" else (perceptor, vqgan)
    plain_engine = None if args.no_plain else Engine(*plain_models, device=device, speed=PLAIN)
    engine = Engine(perceptor, vqgan=vqgan, device=device, speed=speed)
    eager = Engine(perceptor, vqgan=vqgan, device=device, speed=dataclasses.replace(speed, compile=False))
    print(f"device {device} ({cpu_name()}), speed {speed}, autocast {engine.fast.dtype}", flush=True)
    others = _other_engines(args, device, perceptor, speed, pool)
    peak = _peak_tflops(device)
    rows = []
    for name in args.generators:
        for size in args.sizes:
            if name == "biggan" and (size if not args.tiny else 32) not in (32, 128, 256, 512):
                print(f"biggan {size}x{size}: skipped (BigGAN-deep makes 128, 256 or 512 only)", flush=True)
                continue
            if name == "vqgan":
                rows.extend(_bench_size(args, device, engine, eager, plain_engine, peak, speed, model, clip, size))
            else:
                make, label = others[name]
                other = make(size)
                side = 32 if args.tiny and name == "biggan" else size
                rows.extend(
                    _bench_size(args, device, other, other, None, peak, speed, label, clip, side, generator=name)
                )
    return rows


def _bench_size(args, device, engine, eager, plain_engine, peak, speed, model, clip, size, generator="vqgan"):
    """The rows of one generator at one size, a row per batch size."""
    rows = []
    for batch in args.batch:
        fields = {"generator": generator}
        if generator == "biggan" and args.tiny:
            fields["model"] = "tiny-biggan"
        elif generator == "dalle" and args.tiny:
            fields["model"] = "tiny-dvae"
        specs = [
            JobSpec(f"bench prompt {i}", width=size, height=size, cutn=args.cutn, seed=i, steps=10_000, **fields)
            for i in range(batch)
        ]
        runs = [engine.start(s) for s in specs]
        baseline_cuda = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            baseline_cuda = torch.cuda.memory_allocated(device) / 2**20  # weights (and the plain copy)
        ours = _time(lambda runs=runs: engine.step(runs), args.steps, device, args.warmup)
        peak_cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        flops = _flops(lambda runs=runs: eager.step(runs)) if args.flops else None
        row = {
            "device": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"cpu x{torch.get_num_threads()}",
            "cpu": cpu_name(),
            "autocast": str(engine.fast.dtype).removeprefix("torch."),
            "generator": generator,
            "model": model.replace("<size>", str(size)),
            "clip": clip,
            "size": size,
            "cutn": args.cutn,
            "batch": batch,
            "ours_s_per_step": ours,
            "ours_steps_per_s": batch / ours,
            "images_per_hour_300": 3600 * batch / (ours * 300),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": peak_cuda,
            "step_cuda_mb": None if peak_cuda is None else peak_cuda - baseline_cuda,
            "speed": dict(speed.__dict__),
            "tflop_per_step": flops / 1e12 if flops else None,
            "fraction_of_peak": (flops / ours / 1e12 / peak) if (flops and peak) else None,
        }
        if batch == 1 and plain_engine is not None:
            plain = PlainLoop(plain_engine, specs[0])
            row["plain_s_per_step"] = _time(plain.step, args.steps, device, 1)
            row["ours_over_plain"] = row["plain_s_per_step"] / ours
        rows.append(row)
        _print(row)
    return rows


def _print(row: dict) -> None:
    parts = [
        f"{row.get('generator', 'vqgan'):7} {row['size']}x{row['size']} cutn={row['cutn']} batch={row['batch']}",
        f"{row['ours_steps_per_s']:.2f} steps/s ({row['ours_s_per_step']:.3f} s/step)",
        f"{row['images_per_hour_300']:.1f} img/h@300",
        f"rss {row['peak_rss_mb']:.0f} MB",
    ]
    if row["peak_cuda_mb"] is not None:
        parts.append(f"cuda peak {row['peak_cuda_mb']:.0f} MB (steps {row['step_cuda_mb']:.0f} MB)")
    if row["tflop_per_step"]:
        parts.append(f"{row['tflop_per_step']:.2f} TFLOP/step")
    if row["fraction_of_peak"]:
        parts.append(f"{100 * row['fraction_of_peak']:.1f}% of peak")
    if "ours_over_plain" in row:
        parts.append(f"plain {row['plain_s_per_step']:.3f} s/step, ours/plain {row['ours_over_plain']:.2f}x")
    print(" | ".join(parts), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[128])
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="concurrent jobs advanced in one step")
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument(
        "--generators", nargs="+", choices=GENERATORS, default=["vqgan"], help="which generators (default vqgan)"
    )
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--clip", default="ViT-B-32")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (use more with --compile)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder and CLIP's image tower")
    p.add_argument("--checkpoint", action="store_true", help="gradient checkpointing of the decoder")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--no-fast-clip", action="store_true", help="stock open_clip attention and patch embedding")
    p.add_argument("--no-plain", action="store_true", help="skip the plain reference loop")
    p.add_argument("--flops", action="store_true", help="count FLOPs of one step (slow on CPU)")
    p.add_argument("--tiny", action="store_true", help="tiny models instead of the real-size ones (smoke test)")
    p.add_argument("--tiny-dir", default="/tmp/imagine-bench-models")
    p.add_argument("--json", default="bench-engine.json", help="where to write the figures")
    p.add_argument("--quality", nargs="+", choices=quality.PRESET_ORDER, help="time these quality presets instead")
    args = p.parse_args(argv)
    rows = bench(args)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
