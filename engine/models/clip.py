"""CLIP through open-clip-torch: OpenAI's weights by name (from the models directory) or any local checkpoint."""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import CheckpointError
from engine.models.registry import find_clip_checkpoint

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Words whose BPE pieces the tokenizer keeps. open_clip's SimpleTokenizer caches every distinct word it has seen in a
# dict that only grows (about 150 bytes a word): a bot reading members' prompts for months, or one member typing
# gibberish, would grow it without end. Past this many it starts again from its special tokens.
TOKEN_CACHE = 1 << 14


class Perceptor(nn.Module):
    """CLIP wrapped for guidance: images in [0, 1] at `input_size` and texts in, unit embeddings out."""

    def __init__(self, model: nn.Module, tokenizer, name: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self._token_seed = dict(getattr(tokenizer, "cache", None) or {})  # SimpleTokenizer's special tokens
        self.name = name
        size = model.visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        """The device the model's weights are on."""
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
        cache = getattr(self.tokenizer, "cache", None)
        if isinstance(cache, dict) and len(cache) > TOKEN_CACHE:
            cache.clear()
            cache.update(self._token_seed)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def checkpoint_format(path: Path) -> str:
    """The kind of CLIP file: "torchscript" (OpenAI's released `.pt`), "safetensors", "state_dict" (torch.save of
    a dict of tensors), or "damaged" (a zip archive cut short, or no checkpoint at all)."""
    if path.suffix == ".safetensors":
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist()):
                return "torchscript"
        return "state_dict"
    with open(path, "rb") as f:
        head = f.read(1)
    return "state_dict" if head == b"\x80" else "damaged"  # torch.save's legacy format is a bare pickle


def _architecture_mismatch(name: str, model: nn.Module) -> str | None:
    """How a model rebuilt from a checkpoint's shapes differs from open_clip's config `name` (None: it matches)."""
    import open_clip

    config = open_clip.get_model_config(name)
    if config is None:
        return None  # a name open_clip does not know: the checkpoint's shapes define it
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    visual = model.visual
    found = {
        "embed_dim": model.text_projection.shape[1],
        "vision width": visual.conv1.weight.shape[0] if hasattr(visual, "conv1") else None,
        "vision layers": len(visual.transformer.resblocks) if hasattr(visual, "transformer") else None,
        "text width": model.ln_final.weight.shape[0],
    }
    wanted = {
        "embed_dim": config.get("embed_dim"),
        "vision width": vision.get("width") if isinstance(vision.get("layers"), int) else None,
        "vision layers": vision.get("layers") if isinstance(vision.get("layers"), int) else None,
        "text width": text.get("width"),
    }
    wrong = [f"{k} {found[k]} (expected {wanted[k]})" for k in found if wanted[k] is not None and found[k] != wanted[k]]
    return ", ".join(wrong) or None


def _from_torchscript(path: Path, name: str) -> nn.Module:
    """OpenAI's TorchScript archive: read its weights on the CPU and rebuild open_clip's model (QuickGELU, fp32).

    The archive's code is never run: only its state dict is read, and the architecture comes from its shapes.
    """
    from open_clip.model import build_model_from_openai_state_dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, and is how OpenAI shipped CLIP
        archive = torch.jit.load(str(path), map_location="cpu")
    state = dict(archive.state_dict())
    del archive
    model = build_model_from_openai_state_dict(state, quick_gelu=True, cast_dtype=None)
    mismatch = _architecture_mismatch(name, model)
    if mismatch:
        raise CheckpointError(
            f"The CLIP checkpoint {path} is not a {name} model: {mismatch}. Set IMAGINE_CLIP_MODEL (or --clip) to "
            "the architecture of this file, or download the right one.",
            str(path),
        )
    return model.float()


def _from_state_dict(path: Path, name: str, models_dir: str | Path | None) -> nn.Module:
    """An open_clip state dict (Hub `.safetensors`/`.bin`, or a training checkpoint): weights-only loading."""
    import open_clip

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
    # OpenAI's weights were trained with QuickGELU; the downloader names their files NAME-openai.*.
    quick_gelu = "openai" in path.name or name.endswith("quickgelu")
    return open_clip.create_model(name, pretrained=str(path), device="cpu", force_quick_gelu=quick_gelu)


def _tokenizer(name: str, context_length: int):
    import open_clip

    if open_clip.get_model_config(name) is not None:
        return open_clip.get_tokenizer(name)
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)  # OpenAI's tokenizer


def load_clip(
    name: str,
    checkpoint: str | Path | None = None,
    models_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Perceptor:
    """Build the CLIP model `name` from `checkpoint` (or the one in `models_dir/clip`): an OpenAI TorchScript
    archive, an open_clip/Hub state dict (`.safetensors`, `.bin`, `.pt`) or an open_clip training checkpoint.

    A config `NAME.json` beside a state dict (or in `models_dir/clip`) registers a custom architecture.
    Nothing is downloaded here, and no pickle beyond plain tensors is ever loaded.
    """
    path = Path(checkpoint) if checkpoint else find_clip_checkpoint(name, models_dir)
    if path is None or not path.is_file():
        where = f" at {path}" if path else (f" in {Path(models_dir) / 'clip'}" if models_dir else "")
        raise CheckpointError(
            f"No CLIP checkpoint for {name}{where}. Run `python -m engine.models download --clip {name}` "
            f"on a machine with internet access, or point --clip-checkpoint (IMAGINE_CLIP_CHECKPOINT) at a local "
            "open_clip or OpenAI checkpoint.",
            str(path) if path else None,
        )
    kind = checkpoint_format(path)
    if kind == "damaged":
        raise CheckpointError(
            f"The CLIP checkpoint {path} could not be loaded as {name}: it is cut short or not a checkpoint at all. "
            "Delete it and download it again.",
            str(path),
        )
    try:
        model = _from_torchscript(path, name) if kind == "torchscript" else _from_state_dict(path, name, models_dir)
    except CheckpointError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # torch, safetensors and pickle raise many kinds for a truncated or foreign file
        raise CheckpointError(
            f"The CLIP checkpoint {path} could not be loaded as {name} ({type(exc).__name__}: {str(exc)[:200]}). "
            "Check that it belongs to this architecture, or delete it and download it again.",
            str(path),
        ) from None
    model.eval().requires_grad_(False)
    return Perceptor(model, _tokenizer(name, int(model.context_length)), name).to(device)
