"""`python -m bench.reference --script VQGAN-CLIP/generate.py`: the script users run, beside our engine.

The baseline is nerdyrodent's `generate.py` itself, unmodified, in a process of its own: the same imagenet f16
16384 VQGAN and ViT-B/32 CLIP files (random weights of the real size, in the released formats: a taming yaml with a
Lightning checkpoint, and OpenAI's TorchScript archive), the same size, cutouts, learning rate and prompt. Then our
engine loads those very files through its own loaders and runs the same job at fp32 and at the precision `auto`
picks on this CPU. Seconds per step are the median over the timed steps, after `--warmup` steps.

    git clone https://github.com/nerdyrodent/VQGAN-CLIP /opt/VQGAN-CLIP      # once, with internet
    pip install -e '.[reference]'     # what the script imports: OpenAI's `clip`, torch-optimizer, imageio
    python -m bench.reference --script /opt/VQGAN-CLIP/generate.py --sizes 128 256 --steps 8

What the script is given so that it runs on current libraries (none of it touches its loop):
- Lightning 2 moved `rank_zero_only` out of `pytorch_lightning.utilities.distributed`, which `taming.models.vqgan`
  imports: an alias module gives it the new location.
- `from CLIP import clip` expects OpenAI's repository checked out as `CLIP/`: the `openai-clip` package is that code.
- torch 2.6 and later refuse Lightning checkpoints by default (`weights_only`): the script's process runs with
  `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`, as its users on current torch must.
- The yaml's `lossconfig` is `torch.nn.Identity`: taming's LPIPS loss downloads VGG16 when it is built, and the
  script deletes the loss before its first step.
- `tqdm.tqdm` is wrapped to note when each iteration ends (the script counts its iterations with it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import cpu_name

# OpenAI's ViT-B/32
VIT_B_32 = {"embed": 512, "image": 224, "patch": 32, "width": 768, "layers": 12, "text_width": 512, "text_layers": 12}
PROMPT = "a cityscape at night | trending on artstation"


def imagenet_yaml() -> dict:
    """The released imagenet f16 16384 model.yaml, with the loss that would download VGG16 replaced (see above)."""
    from engine.models.tiny import IMAGENET_F16_16384

    doc = IMAGENET_F16_16384.to_yaml_dict()
    doc["model"]["params"]["lossconfig"] = {"target": "torch.nn.Identity"}
    return doc


def write_models(folder: Path, yaml_doc: dict | None = None, clip_sizes: dict = VIT_B_32) -> dict[str, Path]:
    """The VQGAN (`vqgan.yaml`, `vqgan.ckpt`; default the imagenet f16 16384 model) and CLIP (`ViT-B-32.pt`) files in
    their released formats, random weights; written once per folder."""
    from tests.engine.realformats import write_lightning_vqgan, write_openai_torchscript

    files = {"config": folder / "vqgan.yaml", "checkpoint": folder / "vqgan.ckpt", "clip": folder / "ViT-B-32.pt"}
    if not files["checkpoint"].is_file():
        write_lightning_vqgan(folder, "vqgan", yaml_doc=yaml_doc or imagenet_yaml())
    if not files["clip"].is_file():
        write_openai_torchscript(files["clip"], **clip_sizes)
    return files


def drive(script: Path, times: Path, argv: list[str]) -> None:
    """Run `script` as `__main__` with `argv`, noting the time of every tqdm update in `times` (JSON)."""
    import runpy
    import types

    import pytorch_lightning.utilities.rank_zero as rank_zero

    alias = types.ModuleType("pytorch_lightning.utilities.distributed")
    alias.rank_zero_only = rank_zero.rank_zero_only
    sys.modules["pytorch_lightning.utilities.distributed"] = alias
    try:
        import clip

        sys.modules["CLIP"] = types.ModuleType("CLIP")
        sys.modules["CLIP"].clip = clip
        sys.modules["CLIP.clip"] = clip
    except ImportError:  # a script that does not use CLIP (the tests' stand-in)
        pass

    import tqdm

    stamps: list[float] = []

    class Timed(tqdm.tqdm):
        def update(self, n=1):
            stamps.append(time.perf_counter())
            return super().update(n)

    tqdm.tqdm = Timed
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        times.write_text(json.dumps(stamps))


def per_step(stamps: list[float], warmup: int) -> float:
    """Median seconds per step from the end times of successive steps, leaving out the first `warmup` steps."""
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][max(0, warmup - 1) :]
    if not gaps:
        raise ValueError(f"{len(stamps)} steps timed: too few for {warmup} warm-up steps")
    return statistics.median(gaps)


def reference(script: Path, files: dict[str, Path], size: int, cutn: int, steps: int, warmup: int) -> float:
    """Seconds per step of the script at `size`, in a process of its own."""
    with tempfile.TemporaryDirectory(prefix="reference-") as work:
        times = Path(work) / "times.json"
        argv = ["-p", PROMPT, "-s", str(size), str(size), "-i", str(warmup + steps), "-cuts", str(cutn)]
        argv += ["-m", str(files["clip"]), "-conf", str(files["config"]), "-ckpt", str(files["checkpoint"])]
        argv += ["-cd", "cpu", "-sd", "0", "-se", str(10 * (warmup + steps)), "-o", str(Path(work) / "out.png")]
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONWARNINGS": "ignore"}
        command = [sys.executable, "-m", "bench.reference", "--drive", str(script), "--times", str(times), "--", *argv]
        subprocess.run(command, check=True, cwd=work, env=env, stdout=subprocess.DEVNULL)
        return per_step(json.loads(times.read_text()), warmup)


def ours(
    files: dict[str, Path], size: int, cutn: int, steps: int, warmup: int, precision: str, clip_model: str = "ViT-B-32"
) -> tuple[float, str]:
    """Seconds per step of our engine on the same files, and the precision it ran at."""
    from engine.loading import EnginePool, ModelSettings
    from engine.spec import JobSpec
    from engine.speed import Speed

    settings = ModelSettings(
        vqgan_config=files["config"],
        vqgan_checkpoint=files["checkpoint"],
        clip_checkpoint=files["clip"],
        clip_model=clip_model,
        device="cpu",
        speed=Speed(precision=precision),
    )
    spec = JobSpec(PROMPT, width=size, height=size, cutn=cutn, seed=0, steps=10_000, clip_model=clip_model)
    engine = EnginePool(settings).engine_for(spec)
    run = engine.start(spec)
    stamps = []
    for _ in range(warmup + steps):
        engine.step([run])
        stamps.append(time.perf_counter())
    return per_step(stamps, warmup), str(engine.fast.dtype or "float32").removeprefix("torch.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--drive"]:
        split = argv.index("--")
        drive(Path(argv[1]), Path(argv[3]), argv[split + 1 :])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", type=Path, required=True, help="nerdyrodent's generate.py (a checkout of it)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run, after the warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "imagine-reference-models")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if not args.script.is_file():
        parser.error(f"{args.script} is not a file: clone https://github.com/nerdyrodent/VQGAN-CLIP first")
    args.models.mkdir(parents=True, exist_ok=True)
    files = write_models(args.models)
    print(f"cpu: {cpu_name()}; random weights of the real size in {args.models}", flush=True)
    rows = []
    for size in args.sizes:
        row = {"size": size, "cutn": args.cutn, "cpu": cpu_name(), "script": str(args.script)}
        row["reference_s_per_step"] = reference(args.script, files, size, args.cutn, args.steps, args.warmup)
        row["ours_fp32_s_per_step"], _ = ours(files, size, args.cutn, args.steps, args.warmup, "fp32")
        row["ours_auto_s_per_step"], row["auto"] = ours(files, size, args.cutn, args.steps, args.warmup, "auto")
        for key in ("fp32", "auto"):
            row[f"{key}_speedup"] = row["reference_s_per_step"] / row[f"ours_{key}_s_per_step"]
        rows.append(row)
        print(
            f"{size}x{size} cutn={args.cutn}: generate.py {row['reference_s_per_step']:.2f} s/step; ours fp32 "
            f"{row['ours_fp32_s_per_step']:.2f} ({row['fp32_speedup']:.2f}x), ours auto={row['auto']} "
            f"{row['ours_auto_s_per_step']:.2f} ({row['auto_speedup']:.2f}x)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
