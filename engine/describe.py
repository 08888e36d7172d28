"""What CLIP sees in a picture: the best-matching subjects, mediums, artists, movements and flavors of a built-in
vocabulary, and a ready-to-use prompt made of them (in the manner of CLIP Interrogator, without a captioner).

    describer = Describer(pool.perceptor("ViT-B-32"), cache_dir)   # embeds the vocabulary once per CLIP model
    description = describer.describe(png_bytes)                     # InvalidSpec with a sentence for a bad file
    description.prompt   # "a lighthouse, an oil painting by Ivan Aivazovsky, romanticism, dramatic lighting, ..."

The vocabulary's text embeddings are the expensive part (a few thousand text encodes); they are computed once
per CLIP model and vocabulary and cached in one file. Describing a picture then costs one image encode, a few
matrix products and a few dozen text encodes for the flavors.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import torch
from PIL import Image

from engine.files import replacing
from engine.uploads import check_size, open_image

log = logging.getLogger(__name__)

CATEGORIES = ("subjects", "mediums", "artists", "movements", "flavors")
# How a term is written for the text encoder. The templates are part of the vocabulary's digest.
TEMPLATES = {"subjects": "{}", "mediums": "{article} {}", "artists": "art by {}", "movements": "{}", "flavors": "{}"}
MAX_PROMPT = 300  # characters
FLAVOR_CANDIDATES = 32  # flavors tried in the prompt, by their own similarity to the picture
FLAVORS_IN_PROMPT = 3
CACHE_VERSION = 1


def article(term: str) -> str:
    """ "a" or "an" for a medium ("an oil painting", "a 3D render", "an 8mm film still", "a ukiyo-e print")."""
    lower = term.lower()
    if lower.startswith(("uni", "use", "usu", "eu", "one", "ukiyo")):
        return "a"
    if re.match(r"(8|11|18|80)(?!\d\d)", lower) or lower[:1] in "aeiou":
        return "an"
    return "a"


def _read_terms(text: str) -> tuple[str, ...]:
    """One term a line; blank lines and `#` comments left out."""
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


@dataclass(frozen=True)
class Vocabulary:
    """The terms of each category, in file order; `digest` changes with any term or template."""

    terms: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        missing = [c for c in CATEGORIES if not self.terms.get(c)]
        if missing:
            raise ValueError(f"the vocabulary has no terms for {', '.join(missing)}")
        object.__setattr__(self, "terms", MappingProxyType({c: tuple(self.terms[c]) for c in CATEGORIES}))

    @classmethod
    def builtin(cls) -> Vocabulary:
        """The vocabulary shipped in engine/data/vocabulary (one `<category>.txt` each)."""
        folder = resources.files("engine") / "data" / "vocabulary"
        return cls({c: _read_terms((folder / f"{c}.txt").read_text(encoding="utf-8")) for c in CATEGORIES})

    @property
    def digest(self) -> str:
        """SHA-256 of every category's template and terms."""
        h = hashlib.sha256()
        for category in CATEGORIES:
            h.update(f"{category}\0{TEMPLATES[category]}\0".encode())
            h.update("\n".join(self.terms[category]).encode() + b"\0")
        return h.hexdigest()

    def __len__(self) -> int:
        return sum(len(t) for t in self.terms.values())

    def texts(self, category: str) -> list[str]:
        """The category's terms as the text encoder reads them."""
        template = TEMPLATES[category]
        return [template.replace("{article}", article(t)).format(t) for t in self.terms[category]]


def weights_fingerprint(model: torch.nn.Module, samples: int = 64) -> str:
    """A digest of a model's weights: every tensor's name, shape and dtype and `samples` values spread over it.

    This is the part of the cache key that follows the CLIP weights. It needs nothing from the caller (the pool
    hands out models, not files), it follows the values themselves rather than a file's size and mtime (copying
    a checkpoint keeps the cache; a fine-tune saved over the same name does not reuse it), and a sample of every
    tensor notices a retrained layer or a different precision, for one small gather per tensor.
    """
    h = hashlib.sha256()
    picked = []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            flat = tensor.detach().reshape(-1)
            if flat.numel():
                picked.append(flat[:: max(1, flat.numel() // samples)][:samples].float())
        if picked:
            h.update(torch.cat(picked).cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Description:
    """What CLIP sees in a picture: per category, the best terms and their cosine similarities, best first, and a
    prompt made of them (`prompt_similarity` is the prompt's own cosine similarity to the picture)."""

    prompt: str
    prompt_similarity: float
    ranked: dict[str, tuple[tuple[str, float], ...]]  # a plain dict, so a Description pickles (workers send it)
    flavors: tuple[str, ...]  # the flavors that made it into the prompt
    model: str

    def best(self, category: str) -> str:
        """The best-matching term of `category`."""
        return self.ranked[category][0][0]

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {
            "prompt": self.prompt,
            "prompt_similarity": self.prompt_similarity,
            "ranked": {c: [[t, s] for t, s in pairs] for c, pairs in self.ranked.items()},
            "flavors": list(self.flavors),
            "model": self.model,
        }


def preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """CLIP's own preprocessing up to normalisation: shortest side to `size` (bicubic, antialiased), centre crop;
    (1, 3, size, size) in [0, 1]. The perceptor normalises."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = TF.resize(image.convert("RGB"), size, interpolation=InterpolationMode.BICUBIC)
    return TF.to_tensor(TF.center_crop(image, size)).unsqueeze(0)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "clip"


class Describer:
    """Matches pictures against a vocabulary with one CLIP model; the vocabulary's embeddings come from the cache
    file in `cache_dir` when one matches the model and the vocabulary, and are computed (and cached) otherwise."""

    def __init__(
        self,
        perceptor,
        cache_dir: str | Path,
        vocabulary: Vocabulary | None = None,
        batch_size: int = 256,
        top: int = 10,
    ) -> None:
        self.perceptor = perceptor
        self.vocabulary = vocabulary or Vocabulary.builtin()
        self.top = top
        self.batch_size = batch_size
        self.fingerprint = weights_fingerprint(perceptor)
        self.cache_path = Path(cache_dir) / (
            f"describe-{_safe_name(perceptor.name)}-{self.vocabulary.digest[:12]}-{self.fingerprint[:12]}.pt"
        )
        embeddings = self._load_cache()
        if embeddings is None:
            embeddings = self._embed_vocabulary()
            self._write_cache(embeddings)
        self.embeddings = {c: e.to(perceptor.device) for c, e in embeddings.items()}  # each (terms, D), unit rows

    # --- the cache -------------------------------------------------------------------------------------------

    def _embed_vocabulary(self) -> dict[str, torch.Tensor]:
        log.info("embedding %d vocabulary terms with CLIP %s", len(self.vocabulary), self.perceptor.name)
        return {category: self.encode_texts(self.vocabulary.texts(category)).cpu() for category in CATEGORIES}

    def _load_cache(self) -> dict[str, torch.Tensor] | None:
        """The cached embeddings, or None when there are none or they are damaged or do not fit (then rebuilt)."""
        if not self.cache_path.is_file():
            return None
        try:
            saved = torch.load(self.cache_path, map_location="cpu", weights_only=True)
            expected = {
                "version": CACHE_VERSION,
                "model": self.perceptor.name,
                "vocabulary": self.vocabulary.digest,
                "weights": self.fingerprint,
            }
            if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in expected.items()):
                raise ValueError("it belongs to another model or vocabulary")
            embeddings = saved["embeddings"]
            dims = set()
            for category in CATEGORIES:
                e = embeddings[category]
                if not isinstance(e, torch.Tensor) or e.ndim != 2 or e.shape[0] != len(self.vocabulary.terms[category]):
                    raise ValueError(f"its {category} do not match the vocabulary")
                if not torch.isfinite(e).all():
                    raise ValueError(f"its {category} hold non-finite values")
                dims.add(e.shape[1])
            if len(dims) != 1:
                raise ValueError("its categories have different widths")
            return {c: embeddings[c].float() for c in CATEGORIES}
        except Exception as exc:  # a cut-short or foreign file raises many kinds; the cache is only a cache
            log.warning("rebuilding the description cache %s: %s", self.cache_path, exc)
            return None

    def _write_cache(self, embeddings: dict[str, torch.Tensor]) -> None:
        """Write the cache atomically (a temporary file renamed over it); a cache that cannot be written is logged."""
        payload = {
            "version": CACHE_VERSION,
            "model": self.perceptor.name,
            "vocabulary": self.vocabulary.digest,
            "weights": self.fingerprint,
            "embeddings": embeddings,
        }
        try:
            with replacing(self.cache_path) as f:
                torch.save(payload, f)
        except OSError as exc:
            log.warning("could not write the description cache %s: %s", self.cache_path, exc)

    # --- matching --------------------------------------------------------------------------------------------

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), D) unit vectors, encoded `batch_size` at a time."""
        step = self.batch_size
        return torch.cat([self.perceptor.encode_text(texts[i : i + step]) for i in range(0, len(texts), step)])

    def encode_image(self, image: bytes | Image.Image, what: str = "the attachment") -> torch.Tensor:
        """(D,) unit vector of a picture (checked like every upload first when it comes as bytes)."""
        if isinstance(image, bytes | bytearray | memoryview):
            image = open_image(bytes(image), what)  # size, bombs, metadata and format, then one decode
        elif isinstance(image, Image.Image):
            check_size(image.width, image.height, what)
        else:
            raise TypeError(f"describe() takes image bytes or a PIL image, not {type(image).__name__}")
        x = preprocess(image, self.perceptor.input_size).to(self.perceptor.device)  # (1, 3, s, s)
        with torch.no_grad():
            return self.perceptor.encode_image(x)[0]  # (D,)

    def rank(self, image_embedding: torch.Tensor, category: str, top: int | None = None) -> list[tuple[str, float]]:
        """The `top` terms of `category` closest to the image embedding, best first."""
        sims = self.embeddings[category] @ image_embedding  # (terms,)
        values, indices = sims.topk(min(top or self.top, sims.numel()))
        terms = self.vocabulary.terms[category]
        return [(terms[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)]

    def describe(self, image: bytes | Image.Image, what: str = "the attachment") -> Description:
        """The best terms of every category for `image` and a prompt of them.

        Raises engine.errors.InvalidSpec (with a sentence naming `what`) for bytes that are not a picture that can
        be read, or a picture too large or too thin (the upload rules of engine.uploads)."""
        target = self.encode_image(image, what)
        ranked = {c: tuple(self.rank(target, c)) for c in CATEGORIES}
        best = {c: ranked[c][0][0] for c in CATEGORIES}
        medium = f"{article(best['mediums'])} {best['mediums']}"
        base = f"{best['subjects']}, {medium} by {best['artists']}, {best['movements']}"
        base = base[:MAX_PROMPT].rstrip(", ")
        candidates = [t for t, _ in self.rank(target, "flavors", FLAVOR_CANDIDATES)]
        prompt, similarity, flavors = self._add_flavors(base, candidates, target)
        return Description(
            prompt=prompt,
            prompt_similarity=similarity,
            ranked=ranked,
            flavors=tuple(flavors),
            model=self.perceptor.name,
        )

    def _add_flavors(self, prompt: str, candidates: list[str], target: torch.Tensor) -> tuple[str, float, list[str]]:
        """Greedy: append the flavor that brings the prompt's embedding closest to the picture, while one does.

        Each round encodes the prompt with every remaining candidate in one batch, and keeps only the better half
        of them for the next round, so three flavors cost about 1 + 32 + 16 + 8 text encodes."""
        similarity = float(self.encode_texts([prompt])[0] @ target)
        chosen: list[str] = []
        while len(chosen) < FLAVORS_IN_PROMPT and candidates:
            candidates = [f for f in candidates if len(prompt) + 2 + len(f) <= MAX_PROMPT]
            if not candidates:
                break
            scores = (self.encode_texts([f"{prompt}, {f}" for f in candidates]) @ target).tolist()
            order = sorted(range(len(candidates)), key=lambda i: -scores[i])
            if scores[order[0]] <= similarity:
                break
            chosen.append(candidates[order[0]])
            prompt, similarity = f"{prompt}, {candidates[order[0]]}", scores[order[0]]
            candidates = [candidates[i] for i in order[1 : max(2, len(order) // 2)]]
        return prompt, similarity, chosen
