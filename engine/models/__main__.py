"""`python -m engine.models`: list, download, verify and convert checkpoints; write tiny test models."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine import quality
from engine.env import load_env, quiet_libraries
from engine.errors import CheckpointError, EngineError, InvalidSpec
from engine.models import registry
from engine.speed import Speed, cpu_precision


def _progress(source) -> object:
    """A progress callback that opens its bar on the first bytes (a failed attempt prints no empty bar)."""
    from tqdm import tqdm

    bars: list = []

    def update(done: int, total: int | None) -> None:
        if not bars:
            bars.append(
                tqdm(
                    desc=source.dest.name,
                    total=total,
                    initial=done,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    dynamic_ncols=True,
                )
            )
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()
        if total is not None and done >= total:
            bar.close()

    return update


def clip_sources(name: str, directory: Path, hub_endpoint: str | None = None) -> list:
    """Where OpenAI's CLIP weights for `name` can come from, in order: OpenAI's own URL (its SHA-256 is in the
    URL), then the Hugging Face Hub copy open_clip knows (the Hub publishes each file's SHA-256)."""
    import huggingface_hub
    import open_clip

    from engine.models.download import Source, sha256_from_url

    config = open_clip.get_pretrained_cfg(name, "openai") or {}
    clip_dir = Path(directory) / "clip"
    sources = []
    if config.get("url"):
        url = config["url"]
        sources.append(Source("OpenAI", url, clip_dir / f"{name}-openai.pt", sha256_from_url(url)))
    if config.get("hf_hub"):
        repo = config["hf_hub"].strip("/")
        for filename, suffix in (
            ("open_clip_model.safetensors", "safetensors"),
            ("open_clip_pytorch_model.bin", "bin"),
        ):
            url = huggingface_hub.hf_hub_url(repo, filename, endpoint=hub_endpoint)
            sources.append(Source(f"the Hub ({filename})", url, clip_dir / f"{name}-openai.{suffix}", hub=True))
    return sources


def download_generator_model(entry: registry.GeneratorModelEntry, directory: Path) -> list[Path]:
    """Fetch a BigGAN or the dVAE into `<directory>/<generator>/<name>/` under the released file names. The dVAE's
    pickles are converted right away into weights-only files (the one time they are unpickled)."""
    from engine.models.download import fetch_any

    folder = registry.generator_model_dir(entry.generator, entry.name, directory)
    done = []
    for filename, remote in entry.files:
        dest = folder / filename
        done.append(
            fetch_any(remote.urls, dest, remote.sha256, what=f"{entry.name} ({filename})", progress_for=_progress)
        )
    if entry.generator == "dalle":
        from engine.models.dvae import convert

        done.extend(convert(folder))
    return done


def download(names: list[str], clips: list[str], directory: Path, hub_endpoint: str | None = None) -> list[Path]:
    """Fetch VQGANs (yaml + checkpoint), BigGANs, the DALL-E dVAE and OpenAI CLIP weights into `directory`; skip
    what is already there."""
    from engine.models.download import fetch_any, fetch_first

    done = []
    for name in names:
        if name in registry.GENERATOR_MODELS:
            done.extend(download_generator_model(registry.GENERATOR_MODELS[name], directory))
            continue
        entry = registry.VQGANS.get(name)
        if entry is None:
            known = ", ".join([*registry.VQGANS, *registry.GENERATOR_MODELS])
            raise CheckpointError(f"Unknown model {name!r}. Known: {known}.")
        yaml_path, ckpt_path = registry.vqgan_paths(name, directory)
        for remote, dest in ((entry.config, yaml_path), (entry.checkpoint, ckpt_path)):
            done.append(
                fetch_any(remote.urls, dest, remote.sha256, what=f"{name} ({dest.name})", progress_for=_progress)
            )
    for name in clips:
        present = registry.find_clip_checkpoint(name, directory)
        if present is not None and "openai" in present.name:
            done.append(present)
            continue
        sources = clip_sources(name, directory, hub_endpoint)
        if not sources:
            raise CheckpointError(f"No OpenAI weights are known for {name!r}; known: ViT-B-32, ViT-B-16, RN50, ...")
        done.append(fetch_first(sources, f"the CLIP weights {name}", _progress))
    return done


def _settings():
    """The IMAGINE_* keys and HF_ENDPOINT, read in the engine's one place."""
    from engine.loading import ModelSettings

    return ModelSettings.from_env()


def _directory(args: argparse.Namespace, settings=None) -> Path:
    """--dir, else IMAGINE_MODELS_DIR (from `settings` when read already), else ./models."""
    return Path(args.dir) if args.dir else (settings or _settings()).models_dir


def _download(args: argparse.Namespace) -> int:
    settings = _settings()
    directory = _directory(args, settings)
    clips = list(args.clip or [])
    for name in args.quality or []:  # every CLIP model of the preset
        clips += [clip for clip, _ in quality.expand(name)["perceptors"] if clip not in clips]
    names = args.names or ([] if clips else [registry.DEFAULT_VQGAN])
    for path in download(names, clips, directory, settings.hf_endpoint):
        print(f"ok: {path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    directory = _directory(args)
    installed = set(registry.installed_vqgans(directory))
    print(f"Models directory: {directory}")
    for name, entry in registry.VQGANS.items():
        mark = "installed" if name in installed else f"not installed (~{entry.size_mb} MB)"
        print(f"  {name:28} {mark:28} {entry.description}")
    for name in sorted(installed - set(registry.VQGANS)):
        print(f"  {name:28} {'installed':28} (local)")
    for generator in registry.GENERATOR_FOLDERS:
        present = set(registry.installed_generator_models(directory, generator))
        for name, entry in registry.GENERATOR_MODELS.items():
            if entry.generator == generator:
                mark = "installed" if name in present else f"not installed (~{entry.size_mb} MB)"
                print(f"  {name:28} {mark:28} {entry.description}")
        for name in sorted(present - set(registry.GENERATOR_MODELS)):
            print(f"  {name:28} {'installed':28} ({generator}, local)")
    clip_dir = directory / "clip"
    for path in sorted(clip_dir.iterdir()) if clip_dir.is_dir() else []:
        if path.suffix in (".pt", ".safetensors", ".bin"):
            print(f"  clip: {path.name}")
    for preset in quality.PRESETS.values():
        missing = [n for n, _ in preset.perceptors if registry.find_clip_checkpoint(n, directory) is None]
        mark = f"needs {', '.join(missing)} (download --quality {preset.name})" if missing else "ready"
        print(f"  quality {preset.name:20} {mark}")
    try:
        precision = Speed.from_env().precision
    except InvalidSpec as exc:
        precision = f"auto ({exc})"
    print(f"Precision on this machine's CPU: {cpu_precision(precision)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from engine.models.download import verify

    directory = _directory(args)
    bad = 0
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".ckpt", ".pt", ".yaml", ".safetensors", ".bin", ".pkl"):
            ok = verify(path)
            recorded = path.with_name(path.name + ".sha256").is_file()
            print(f"{'ok  ' if ok else ('BAD ' if recorded else '??  ')} {path}")
            bad += recorded and not ok
    return 1 if bad else 0


def _tiny(args: argparse.Namespace) -> int:
    from engine.models.tiny import TINY_BIGGAN, TINY_CLIP, TINY_DVAE, TINY_GUMBEL, TINY_VQGAN, write_tiny_models

    directory = write_tiny_models(args.dir)
    print(
        f"Wrote tiny random-weight models to {directory}: VQGAN {TINY_VQGAN}, {TINY_GUMBEL}; BigGAN {TINY_BIGGAN} "
        f"(32x32); dVAE {TINY_DVAE}; CLIP {TINY_CLIP}."
    )
    print(f'Try: python -m engine "a tiny test" --models-dir {directory} --model {TINY_VQGAN} --clip {TINY_CLIP}')
    print(f"  or --generator biggan --model {TINY_BIGGAN} -s 32x32, --generator dalle --model {TINY_DVAE}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from engine.models.vqgan import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.out, trust=args.trust)
    print(f"Wrote the inference weights of {args.checkpoint} to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.models download|list|verify|tiny|convert`; 1 with one sentence on stderr on failure."""
    parser = argparse.ArgumentParser(prog="python -m engine.models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "download", help="download VQGAN, BigGAN or DALL-E dVAE checkpoints and CLIP weights into the models directory"
    )
    p.add_argument(
        "names",
        nargs="*",
        help=f"model names (default {registry.DEFAULT_VQGAN}): "
        f"{', '.join([*registry.VQGANS, *registry.GENERATOR_MODELS])}",
    )
    p.add_argument(
        "--clip",
        action="append",
        metavar="NAME",
        help="also fetch OpenAI's CLIP weights: ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, RN50, RN101, RN50x4, ...",
    )
    p.add_argument(
        "--quality",
        action="append",
        choices=list(quality.PRESET_ORDER),
        help="also fetch every CLIP model of this quality preset (engine.quality)",
    )
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
    p.add_argument(
        "--trust",
        action="store_true",
        help="allow a full pickle load of the input (runs code the file names): only for your own files",
    )
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.set_defaults(func=_convert)
    args = parser.parse_args(argv)
    load_env()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    try:
        return args.func(args)
    except EngineError as exc:  # a download or file that failed, or a setting in .env that cannot be used
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
