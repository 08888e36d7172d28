"""`python -m engine.models`: list, download, verify and convert checkpoints; write tiny test models."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.errors import CheckpointError
from engine.models import registry


def _bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True)

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def _download(args: argparse.Namespace) -> int:
    from engine.models.download import fetch, fetch_any, sha256_from_url

    directory = registry.models_dir(args.dir)
    names = args.names or ([] if args.clip else [registry.DEFAULT_VQGAN])
    for name in names:
        entry = registry.VQGANS.get(name)
        if entry is None:
            print(f"Unknown model {name!r}. Known: {', '.join(registry.VQGANS)}.", file=sys.stderr)
            return 2
        yaml_path, ckpt_path = registry.vqgan_paths(name, directory)
        for remote, dest in ((entry.config, yaml_path), (entry.checkpoint, ckpt_path)):
            bar, update = _bar(dest.name)
            try:
                fetch_any(remote.urls, dest, remote.sha256, progress=update)
            finally:
                bar.close()
        print(f"{name}: {yaml_path} and {ckpt_path}")
    for clip_name in args.clip or []:
        import open_clip

        url = open_clip.get_pretrained_url(clip_name, "openai")
        if not url:
            print(
                f"No OpenAI weights are known for {clip_name!r}; known: ViT-B-32, ViT-B-16, RN50, ...", file=sys.stderr
            )
            return 2
        dest = Path(directory) / "clip" / f"{clip_name}-openai.pt"
        bar, update = _bar(dest.name)
        try:
            fetch(url, dest, sha256_from_url(url), progress=update)
        finally:
            bar.close()
        print(f"{clip_name}: {dest}")
    return 0


def _list(args: argparse.Namespace) -> int:
    directory = registry.models_dir(args.dir)
    installed = set(registry.installed_vqgans(directory))
    print(f"Models directory: {directory}")
    for name, entry in registry.VQGANS.items():
        mark = "installed" if name in installed else f"not installed (~{entry.size_mb} MB)"
        print(f"  {name:28} {mark:28} {entry.description}")
    for name in sorted(installed - set(registry.VQGANS)):
        print(f"  {name:28} {'installed':28} (local)")
    clip_dir = directory / "clip"
    for path in sorted(clip_dir.glob("*.pt")) if clip_dir.is_dir() else []:
        print(f"  clip: {path.name}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from engine.models.download import verify

    directory = registry.models_dir(args.dir)
    bad = 0
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".ckpt", ".pt", ".yaml", ".safetensors"):
            ok = verify(path)
            recorded = path.with_name(path.name + ".sha256").is_file()
            print(f"{'ok  ' if ok else ('BAD ' if recorded else '??  ')} {path}")
            bad += recorded and not ok
    return 1 if bad else 0


def _tiny(args: argparse.Namespace) -> int:
    from engine.models.tiny import TINY_CLIP, TINY_GUMBEL, TINY_VQGAN, write_tiny_models

    directory = write_tiny_models(args.dir)
    print(f"Wrote tiny random-weight models to {directory}: VQGAN {TINY_VQGAN}, {TINY_GUMBEL}; CLIP {TINY_CLIP}.")
    print(f'Try: python -m engine "a tiny test" --models-dir {directory} --model {TINY_VQGAN} --clip {TINY_CLIP}')
    return 0


def _convert(args: argparse.Namespace) -> int:
    from engine.models.vqgan import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.out)
    print(f"Wrote the inference weights of {args.checkpoint} to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("download", help="download VQGAN checkpoints and CLIP weights into the models directory")
    p.add_argument(
        "names", nargs="*", help=f"VQGAN names (default {registry.DEFAULT_VQGAN}): {', '.join(registry.VQGANS)}"
    )
    p.add_argument("--clip", action="append", metavar="NAME", help="also fetch OpenAI's CLIP weights, e.g. ViT-B-32")
    p.add_argument("--dir", help="models directory (default: $IMAGINE_MODELS_DIR or ./models)")
    p.set_defaults(func=_download)
    p = sub.add_parser("list", help="list known and installed models")
    p.add_argument("--dir")
    p.set_defaults(func=_list)
    p = sub.add_parser("verify", help="check installed files against their recorded SHA-256")
    p.add_argument("--dir")
    p.set_defaults(func=_verify)
    p = sub.add_parser("tiny", help="write tiny random-weight models in the real formats (for tests and trials)")
    p.add_argument("dir")
    p.set_defaults(func=_tiny)
    p = sub.add_parser("convert", help="keep only the inference weights of a Lightning .ckpt (loads weights-only)")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.set_defaults(func=_convert)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
