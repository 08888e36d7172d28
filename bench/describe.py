"""`python -m bench.describe`: what `/describe` costs: embedding the whole vocabulary once per CLIP model (and the
cache it leaves), describing a picture, and a later start that loads the cache.

Builds CLIP ViT-B/32 with random weights (compute does not depend on weight values), embeds every vocabulary
term into a fresh cache folder, then describes a random 512x512 PNG a few times and builds a second Describer
from the cache.

    python -m bench.describe                          # this CPU, ViT-B-32
    python -m bench.describe --device cuda --repeats 10
    python -m bench.describe --tiny                   # smoke run on the tiny CLIP
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from engine.describe import Describer, Vocabulary


def _picture(size: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _perceptor(args):
    if args.tiny:
        from engine.models.clip import load_clip
        from engine.models.tiny import TINY_CLIP, write_clip

        folder = Path(args.tiny_dir or tempfile.mkdtemp(prefix="imagine-describe-models-"))
        write_clip(folder)
        return load_clip(TINY_CLIP, models_dir=folder, device=args.device)
    from engine.models.tiny import real_size_clip

    return real_size_clip(args.clip, device=args.device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.describe", description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", default="ViT-B-32", help="open_clip architecture (random weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=512, help="side of the random picture described")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache-dir", help="where the embedding cache goes (default: a new temporary folder)")
    p.add_argument("--tiny", action="store_true", help="the tiny CLIP instead of the real-size one (smoke test)")
    p.add_argument("--tiny-dir", help="models folder for --tiny (default: a new temporary folder)")
    p.add_argument("--json", default="bench-describe.json")
    args = p.parse_args(argv)

    perceptor = _perceptor(args)
    cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix="imagine-describe-cache-"))
    vocabulary = Vocabulary.builtin()
    start = time.perf_counter()
    describer = Describer(perceptor, cache_dir, vocabulary)
    build_s = time.perf_counter() - start
    cache_bytes = describer.cache_path.stat().st_size
    print(f"{perceptor.name} on {args.device}: embedded {len(vocabulary)} terms in {build_s:.1f} s "
          f"({len(vocabulary) / build_s:.0f} terms/s); cache {cache_bytes / 2**20:.1f} MiB, "
          f"{describer.cache_path.name}")  # fmt: skip

    picture = _picture(args.size)
    describer.describe(picture)  # warm-up: first calls allocate
    times = []
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        description = describer.describe(picture)
        times.append(time.perf_counter() - start)
    print(f"describe {args.size}x{args.size}: mean {np.mean(times):.3f} s, min {min(times):.3f} s "
          f"over {args.repeats}; prompt ({len(description.prompt)} chars): {description.prompt}")  # fmt: skip

    start = time.perf_counter()
    Describer(perceptor, cache_dir, vocabulary)
    load_s = time.perf_counter() - start
    print(f"second Describer, from the cache: {load_s:.3f} s")

    row = {
        "clip": perceptor.name,
        "device": args.device,
        "terms": len(vocabulary),
        "terms_per_category": {c: len(t) for c, t in vocabulary.terms.items()},
        "embed_vocabulary_s": build_s,
        "cache_bytes": cache_bytes,
        "describe_size": args.size,
        "describe_mean_s": float(np.mean(times)),
        "describe_min_s": min(times),
        "load_from_cache_s": load_s,
        "prompt": description.prompt,
    }
    Path(args.json).write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
