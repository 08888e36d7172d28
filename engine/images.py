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
from engine.uploads import open_image

RECIPE_KEY = "imagine:recipe"
MAX_INPUT_BYTES = 64 * 1024 * 1024  # a file on this machine (an upload is at most 10 MB)


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


def load_image(source: str | Path | bytes, what: str = "the image") -> Image.Image:
    """Open a path or bytes as RGB after the upload checks of `engine.uploads` (files are read again on Reroll,
    Continue and after a restart, so the limits hold there too). Errors are sentences that name `what`, never
    a path on this machine."""
    if isinstance(source, bytes):
        data = source
    else:
        try:
            with open(source, "rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
        except OSError:
            raise InvalidSpec(f"{what.capitalize()} cannot be opened: it is missing or unreadable.") from None
    return open_image(data, what, max_bytes=MAX_INPUT_BYTES)


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover width x height and crop the centre. The crop is taken in the source's coordinates, so
    nothing larger than width x height is ever made, whatever the source's shape."""
    scale = max(width / image.width, height / image.height)
    box_w, box_h = min(image.width, width / scale), min(image.height, height / scale)
    left, top = (image.width - box_w) / 2, (image.height - box_h) / 2
    return image.resize((width, height), Image.LANCZOS, box=(left, top, left + box_w, top + box_h))


def recipe(spec: JobSpec, width: int, height: int, steps_done: int, extra: dict[str, Any] | None = None) -> dict:
    """What reproduces or continues an image: the spec (images by file name only) plus the real size, steps done
    and engine version."""
    return {
        "spec": spec.to_public_dict(),
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
    """The recipe stored in a PNG made by imagine, or None; InvalidSpec if `source` is not a readable picture."""
    name = "the recipe file" if isinstance(source, bytes) else str(source)
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as exc:
        raise InvalidSpec(f"Cannot open {name}: {exc.strerror or exc}.") from None
    try:
        with handle, Image.open(handle, formats=["PNG"]) as img:
            text = getattr(img, "text", {}).get(RECIPE_KEY)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidSpec(f"{name} is not a PNG made by imagine.") from None
    if not text:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidSpec(f"The recipe in {name} is damaged (not valid JSON).") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise InvalidSpec(f"The recipe in {name} is damaged (it holds no spec).")
    return meta


def snapshot_bytes(snapshot: dict[str, Any]) -> bytes:
    """A snapshot as bytes (torch.save), to store or send anywhere."""
    buffer = io.BytesIO()
    torch.save(snapshot, buffer)
    return buffer.getvalue()
