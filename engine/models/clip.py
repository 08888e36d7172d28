"""CLIP through open-clip-torch: OpenAI's weights by name (from the models directory) or any local checkpoint."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import CheckpointError

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Perceptor(nn.Module):
    """CLIP wrapped for guidance: images in [0, 1] at `input_size` and texts in, unit embeddings out."""

    def __init__(self, model: nn.Module, tokenizer, name: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        size = model.visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> CLIP's input statistics."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, s, s) in [0, 1] -> (N, D) unit vectors (float32); differentiable in x."""
        return F.normalize(self.model.encode_image(self.normalize(x)).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (P, D) unit vectors (float32)."""
        tokens = self.tokenizer(texts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def _is_torchscript(path: Path) -> bool:
    """OpenAI's released `.pt` files are TorchScript archives (and use QuickGELU)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def find_clip_checkpoint(name: str, models_dir: str | Path | None) -> Path | None:
    """Where `python -m engine.models download --clip NAME` puts a checkpoint, if it is there."""
    if models_dir is None:
        return None
    clip_dir = Path(models_dir) / "clip"
    for candidate in (clip_dir / f"{name}-openai.pt", clip_dir / f"{name}.pt", clip_dir / f"{name}.safetensors"):
        if candidate.is_file():
            return candidate
    return None


def load_clip(
    name: str,
    checkpoint: str | Path | None = None,
    models_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Perceptor:
    """Build the open_clip architecture `name` and load `checkpoint` (or the one in `models_dir/clip`).

    A config `NAME.json` beside the checkpoint (or in `models_dir/clip`) registers a custom architecture.
    Nothing is downloaded here.
    """
    import open_clip

    path = Path(checkpoint) if checkpoint else find_clip_checkpoint(name, models_dir)
    if path is None or not path.is_file():
        where = f" at {path}" if path else (f" in {Path(models_dir) / 'clip'}" if models_dir else "")
        raise CheckpointError(
            f"No CLIP checkpoint for {name}{where}. Run `python -m engine.models download --clip {name}` "
            f"on a machine with internet access, or point --clip-checkpoint (IMAGINE_CLIP_CHECKPOINT) at a local "
            "open_clip or OpenAI checkpoint.",
            str(path) if path else None,
        )
    for config_dir in {path.parent, *([Path(models_dir) / "clip"] if models_dir else [])}:
        config = config_dir / f"{name}.json"
        if config.is_file():
            open_clip.add_model_config(config)
    if name not in open_clip.list_models():
        raise CheckpointError(
            f"Unknown CLIP architecture {name!r}. Use one of open_clip's names (e.g. ViT-B-32, ViT-B-16) or put "
            f"a {name}.json model config beside the checkpoint.",
            str(path),
        )
    quick_gelu = _is_torchscript(path) or name.endswith("quickgelu")
    try:
        model = open_clip.create_model(name, pretrained=str(path), device="cpu", force_quick_gelu=quick_gelu)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AssertionError) as exc:
        raise CheckpointError(
            f"The CLIP checkpoint {path} could not be loaded as {name} ({type(exc).__name__}: {str(exc)[:200]}). "
            "Check that it belongs to this architecture, or delete it and download it again.",
            str(path),
        ) from None
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    return Perceptor(model, tokenizer, name).to(device)
