"""The models the engine knows by name: where to download them and where they live in the models directory.

Standard library only: the bot reads it to offer model choices without loading torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODELS_DIR = "models"
DEFAULT_VQGAN = "vqgan_imagenet_f16_16384"
DEFAULT_CLIP = "ViT-B-32"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: mirrors in order of preference, and its SHA-256 where it was published."""

    urls: tuple[str, ...]
    sha256: str | None = None


@dataclass(frozen=True)
class VQGANEntry:
    """A released VQGAN: its yaml and checkpoint."""

    name: str
    description: str
    config: RemoteFile
    checkpoint: RemoteFile
    size_mb: int


_HEIBOX = "https://heibox.uni-heidelberg.de/d/{}/files/?p=%2F{}&dl=1"
_MIRROR = "http://mirror.io.community/blob/vqgan/{}"

VQGANS: dict[str, VQGANEntry] = {
    e.name: e
    for e in (
        VQGANEntry(
            "vqgan_imagenet_f16_16384",
            "ImageNet, f16, 16384 codes: the community's default",
            RemoteFile(
                (
                    _HEIBOX.format("a7530b09fed84f80a887", "configs%2Fmodel.yaml"),
                    _MIRROR.format("vqgan_imagenet_f16_16384.yaml"),
                )
            ),
            RemoteFile(
                (
                    _HEIBOX.format("a7530b09fed84f80a887", "ckpts%2Flast.ckpt"),
                    _MIRROR.format("vqgan_imagenet_f16_16384.ckpt"),
                )
            ),
            980,
        ),
        VQGANEntry(
            "vqgan_wikiart_16384",
            "WikiArt, f16, 16384 codes: painterly",
            RemoteFile((_MIRROR.format("wikiart_16384.yaml"),)),
            RemoteFile((_MIRROR.format("wikiart_16384.ckpt"),)),
            980,
        ),
        VQGANEntry(
            "vqgan_gumbel_f8_8192",
            "OpenImages, f8, 8192 codes, gumbel quantiser: finer detail, 4x the tokens",
            RemoteFile((_HEIBOX.format("2e5662443a6b4307b470", "configs%2Fmodel.yaml"),)),
            RemoteFile((_HEIBOX.format("2e5662443a6b4307b470", "ckpts%2Flast.ckpt"),)),
            376,
        ),
    )
}


@dataclass(frozen=True)
class GeneratorModelEntry:
    """Released weights of another generator (BigGAN, the DALL-E dVAE): files saved under
    `<models dir>/<generator>/<name>/` with the names they were released under."""

    name: str
    generator: str  # the spec's generator: "biggan" or "dalle"
    description: str
    files: tuple[tuple[str, RemoteFile], ...]  # (file name in the model's folder, where to get it)
    size_mb: int


# pytorch-pretrained-biggan's own URLs (its PRETRAINED_MODEL_ARCHIVE_MAP and PRETRAINED_CONFIG_ARCHIVE_MAP).
_BIGGAN = "https://s3.amazonaws.com/models.huggingface.co/biggan/{}"
_DALLE = "https://cdn.openai.com/dall-e/{}"


def _biggan(size: int, size_mb: int) -> GeneratorModelEntry:
    name = f"biggan-deep-{size}"
    return GeneratorModelEntry(
        name,
        "biggan",
        f"BigGAN-deep, ImageNet's 1000 classes, {size}x{size} only (Big Sleep)",
        (
            ("config.json", RemoteFile((_BIGGAN.format(f"{name}-config.json"),))),
            ("pytorch_model.bin", RemoteFile((_BIGGAN.format(f"{name}-pytorch_model.bin"),))),
        ),
        size_mb,
    )


GENERATOR_MODELS: dict[str, GeneratorModelEntry] = {
    e.name: e
    for e in (
        _biggan(128, 201),
        _biggan(256, 214),
        _biggan(512, 215),
        GeneratorModelEntry(
            "dalle-dvae",
            "dalle",
            "DALL-E's discrete VAE, 8192 codes, f8 (any size in multiples of 8); converted on download",
            (
                ("encoder.pkl", RemoteFile((_DALLE.format("encoder.pkl"),))),
                ("decoder.pkl", RemoteFile((_DALLE.format("decoder.pkl"),))),
            ),
            372,
        ),
    )
}
GENERATOR_FOLDERS = {"biggan": "biggan", "dalle": "dalle"}
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def generator_model_dir(generator: str, name: str, directory: str | Path) -> Path:
    """The folder of a BigGAN or dVAE in a models directory. Only a plain name is accepted (it comes from specs,
    which members write), so nothing outside the models directory is ever read."""
    if not _PLAIN_NAME.match(name or "") or ".." in name:
        raise ValueError(f"{name!r} is not a model name (letters, digits, '-', '_' and '.').")
    return Path(directory) / GENERATOR_FOLDERS[generator] / name


def installed_generator_models(directory: str | Path, generator: str) -> list[str]:
    """Names of the BigGAN or dVAE folders present in a models directory."""
    base = Path(directory) / GENERATOR_FOLDERS[generator]
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def biggan_native_size(directory: str | Path, name: str) -> int | None:
    """The one size a BigGAN makes: its config's `output_dim`, else the size in its released name; None if unknown."""
    try:
        config = json.loads((generator_model_dir("biggan", name, directory) / "config.json").read_text())
        return int(config["output_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        match = re.fullmatch(r"biggan-deep-(\d+)", name or "")
        return int(match[1]) if match else None


def models_dir(explicit: str | Path | None = None) -> Path:
    """The models directory: `explicit` (a flag or a setting), else ./models. The environment is read by
    `engine.loading.ModelSettings.from_env` and `bot.config`, not here."""
    return Path(explicit or DEFAULT_MODELS_DIR)


def vqgan_paths(name: str, directory: str | Path) -> tuple[Path, Path]:
    """Where the yaml and the checkpoint of VQGAN `name` live in a models directory."""
    base = Path(directory) / "vqgan"
    return base / f"{name}.yaml", base / f"{name}.ckpt"


def default_vqgan(directory: str | Path) -> str:
    """The VQGAN a job gets without choosing: the default if it is installed (or nothing is), else the first one."""
    installed = installed_vqgans(directory)
    return DEFAULT_VQGAN if DEFAULT_VQGAN in installed or not installed else installed[0]


def installed_vqgans(directory: str | Path) -> list[str]:
    """Names of the VQGANs whose yaml and checkpoint are both present."""
    base = Path(directory) / "vqgan"
    if not base.is_dir():
        return []
    return sorted(p.stem for p in base.glob("*.yaml") if p.with_suffix(".ckpt").is_file())


# Where `python -m engine.models download --clip NAME` puts OpenAI's weights: its TorchScript archive from
# OpenAI's site, or the Hugging Face Hub copy of the same weights as an open_clip state dict.
CLIP_CHECKPOINT_NAMES = (
    "{name}-openai.pt",
    "{name}-openai.safetensors",
    "{name}-openai.bin",
    "{name}.pt",
    "{name}.safetensors",
    "{name}.bin",
)


def find_clip_checkpoint(name: str, directory: str | Path | None) -> Path | None:
    """The CLIP checkpoint for `name` in a models directory's `clip/` folder, if there is one."""
    if directory is None:
        return None
    clip_dir = Path(directory) / "clip"
    for pattern in CLIP_CHECKPOINT_NAMES:
        candidate = clip_dir / pattern.format(name=name)
        if candidate.is_file():
            return candidate
    return None
