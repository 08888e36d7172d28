"""Images in and out: tensors <-> PIL, PNGs that carry their recipe, loading init and prompt images."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from engine.errors import InvalidSpec
from engine.spec import ENGINE_VERSION, JobSpec

RECIPE_KEY = "imagine:recipe"
MAX_INPUT_PIXELS = 64_000_000


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) in [0, 1] -> RGB image."""
    if image.dim() == 4:
        image = image[0]
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def from_pil(image: Image.Image, device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB image -> (1, 3, H, W) float in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device)


def load_image(source: str | Path | bytes) -> Image.Image:
    """Open a path or bytes as RGB, with a clear error for anything that is not an image."""
    name = "the attached image" if isinstance(source, bytes) else str(source)
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as exc:
        raise InvalidSpec(f"Cannot open {name}: {exc.strerror or exc}.") from None
    try:
        with handle, Image.open(handle) as img:
            if img.width * img.height > MAX_INPUT_PIXELS:
                raise InvalidSpec(f"{name} is {img.width}x{img.height}; images above 64 megapixels are refused.")
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise InvalidSpec(f"{name} is not an image that can be read ({type(exc).__name__}).") from None


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover width x height and crop the centre."""
    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), Image.LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def recipe(spec: JobSpec, width: int, height: int, steps_done: int, extra: dict[str, Any] | None = None) -> dict:
    """What reproduces or continues an image: the spec plus the real size, steps done and engine version."""
    return {
        "spec": spec.to_dict(),
        "width": width,
        "height": height,
        "steps_done": steps_done,
        "engine_version": ENGINE_VERSION,
        **(extra or {}),
    }


def encode_png(image: Image.Image, meta: dict[str, Any] | None = None, compress_level: int = 6) -> bytes:
    """PNG bytes; `meta` goes into text chunks (the whole recipe as JSON, the main fields readable by any viewer)."""
    info = PngImagePlugin.PngInfo()
    if meta is not None:
        info.add_itxt(RECIPE_KEY, json.dumps(meta, sort_keys=True, ensure_ascii=False))
        spec = meta.get("spec", {})
        readable = {
            "Title": spec.get("prompt", ""),
            "prompt": spec.get("prompt", ""),
            "seed": str(spec.get("seed", "")),
            "steps": str(meta.get("steps_done", spec.get("steps", ""))),
            "size": f"{meta.get('width')}x{meta.get('height')}",
            "model": f"{spec.get('generator')}:{spec.get('model')} + {spec.get('clip_model')}",
            "Software": f"imagine {meta.get('engine_version', ENGINE_VERSION)}",
        }
        for key, value in readable.items():
            info.add_itxt(key, value)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=compress_level)
    return out.getvalue()


def read_recipe(source: str | Path | bytes) -> dict[str, Any] | None:
    """The recipe stored in a PNG made by imagine, or None."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    with handle, Image.open(handle) as img:
        text = getattr(img, "text", {}).get(RECIPE_KEY)
    return json.loads(text) if text else None
