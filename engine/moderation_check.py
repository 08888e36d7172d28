"""A zero-shot check of images for unsafe content with the CLIP model a job already has loaded.

    check = SafetyCheck(perceptor)                 # descriptions encoded once, on first use
    unsafe, label = check.score(image)             # (1, 3, H, W) in [0, 1], or PNG bytes

The image's unit embedding is compared with every description of `engine/data/safety.json`; the probability of
"unsafe" is softmax(logit_scale * cosine) over all descriptions, summed over the unsafe ones, and `label` is the
unsafe description it is closest to. `engine.moderation.decide` turns the number into an action. One image encode
per call, no gradients, nothing kept between calls but the text embeddings.
"""

from __future__ import annotations

import logging
import math
import threading

import torch
import torch.nn.functional as F

from engine.images import fit, from_pil, load_image
from engine.moderation import SafetyData, load_data

log = logging.getLogger(__name__)


class SafetyCheck:
    """Scores images against the safety descriptions with one perceptor (CLIP)."""

    def __init__(self, perceptor, data: SafetyData | None = None) -> None:
        self.perceptor = perceptor
        self.data = data or load_data()
        self._embeddings: torch.Tensor | None = None
        self._lock = threading.Lock()  # engines on several threads may share one perceptor, and so one check

    @property
    def text_embeddings(self) -> torch.Tensor:
        """(P, D) unit embeddings of the descriptions, unsafe ones first; computed once."""
        with self._lock:
            if self._embeddings is None:
                self._embeddings = self.perceptor.encode_text(list(self.data.descriptions))
            return self._embeddings

    def prepare(self, image: torch.Tensor | bytes) -> torch.Tensor:
        """(1, 3, s, s) in [0, 1] at CLIP's input size: the centre square, resized with antialiasing."""
        size = self.perceptor.input_size
        if isinstance(image, bytes | bytearray | memoryview):
            return from_pil(fit(load_image(bytes(image), "the image to check"), size, size), self.perceptor.device)
        image = image.detach().float().to(self.perceptor.device)
        if image.dim() == 3:
            image = image[None]
        _, _, h, w = image.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = image[..., top : top + side, left : left + side]  # (1, 3, side, side)
        if side != size:
            square = F.interpolate(square, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        return square.clamp(0, 1)

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor | bytes) -> torch.Tensor:
        """(P,) softmax over the descriptions (unsafe ones first) for one image."""
        embedding = self.perceptor.encode_image(self.prepare(image))[0]  # (D,)
        logits = self.data.logit_scale * (self.text_embeddings @ embedding)  # (P,)
        return logits.softmax(dim=0)

    def score(self, image: torch.Tensor | bytes) -> tuple[float, str]:
        """The probability that `image` is unsafe, in [0, 1], and the unsafe description it is closest to. A check that
        breaks down (NaN or inf from a NaN image or model) reads 1.0: it fails closed, never as 0.0, "safe"."""
        probs = self.probabilities(image)
        unsafe = probs[: len(self.data.unsafe)]
        total = float(unsafe.sum())
        label = self.data.unsafe[int(unsafe.nan_to_num(nan=0.0).argmax())]
        if not math.isfinite(total):
            log.warning("the safety check gave %s; the image counts as unsafe", total)
            return 1.0, label
        return min(1.0, max(0.0, total)), label
