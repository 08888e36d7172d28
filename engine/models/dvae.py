"""Loading DALL-E's discrete VAE (the `dall-e` package's `Encoder`/`Decoder`).

OpenAI released `encoder.pkl` and `decoder.pkl` as full pickles of the modules: loading one runs whatever code the
file names. They are read only from the operator's models directory (the name is a plain folder name there, never
a path from a member or a recipe), once, and converted to `encoder.pt`/`decoder.pt`, a config plus a state dict
that every later load reads weights-only.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from engine.errors import CheckpointError
from engine.files import replacing

log = logging.getLogger(__name__)

ENCODER_KEYS = ("n_hid", "n_blk_per_group", "input_channels", "vocab_size")
DECODER_KEYS = ("n_init", "n_hid", "n_blk_per_group", "output_channels", "vocab_size")
PARTS = {"encoder": ENCODER_KEYS, "decoder": DECODER_KEYS}
LOGIT_LAPLACE_EPS = 0.1  # dall_e.utils.logit_laplace_eps: pixels live in [eps, 1 - eps] for the dVAE


def dvae_dir(name: str, models_dir: str | Path) -> Path:
    """The folder of dVAE `name` in a models directory; refuses anything but a plain folder name."""
    from engine.models.registry import generator_model_dir

    try:
        return generator_model_dir("dalle", name, models_dir)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def _module_class(part: str):
    from dall_e.decoder import Decoder
    from dall_e.encoder import Encoder

    return Encoder if part == "encoder" else Decoder


def convert(directory: str | Path, force: bool = False) -> list[Path]:
    """Write `encoder.pt`/`decoder.pt` (config + state dict) beside the released pickles that lack them.

    Only for the operator's own models directory: this is the one place that unpickles the released files."""
    directory = Path(directory)
    written = []
    for part, keys in PARTS.items():
        source, dest = directory / f"{part}.pkl", directory / f"{part}.pt"
        if not source.is_file() or (dest.is_file() and not force):
            continue
        try:
            module = torch.load(source, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{source} could not be read ({type(exc).__name__}: {str(exc)[:200]}); delete it and download it "
                "again.",
                str(source),
            ) from None
        if not isinstance(module, _module_class(part)):
            raise CheckpointError(f"{source} is not a dall_e {part} (it holds a {type(module).__name__}).", str(source))
        config = {k: int(getattr(module, k)) for k in keys}
        state = {k: v.detach().float().contiguous() for k, v in module.state_dict().items()}
        with replacing(dest) as f:
            torch.save({"config": config, "state_dict": state}, f)
        log.info("converted %s to %s", source, dest)
        written.append(dest)
    return written


def build(part: str, config: dict) -> nn.Module:
    """A dall_e Encoder or Decoder of `config` (random weights, on the CPU)."""
    return _module_class(part)(**config, device=torch.device("cpu"), requires_grad=False)


def _load_part(directory: Path, part: str) -> nn.Module:
    path = directory / f"{part}.pt"
    if not path.is_file():
        raise CheckpointError(
            f"The DALL-E dVAE {part} is not installed ({path} is missing). "
            f"Run `python -m engine.models download {directory.name}`.",
            str(path),
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        config = {k: int(saved["config"][k]) for k in PARTS[part]}
        state = saved["state_dict"]
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path} could not be read ({type(exc).__name__}: {str(exc)[:200]}); delete it and run "
            f"`python -m engine.models download {directory.name}` again.",
            str(path),
        ) from None
    module = build(part, config)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match its config: {str(exc)[:200]}", str(path)) from None
    return module


class DVAE(nn.Module):
    """The encoder (image -> logits over the codes) and decoder (code distribution -> pixel statistics)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.vocab_size = int(decoder.vocab_size)
        self.factor = 2 ** (int(decoder.group_count) - 1)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> logits (B, vocab, H/8, W/8)."""
        x = (1 - 2 * LOGIT_LAPLACE_EPS) * image.float() + LOGIT_LAPLACE_EPS  # dall_e.utils.map_pixels
        return self.encoder(x).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """A distribution over the codes (B, vocab, h, w) -> pixel means (B, 3, 8h, 8w) in [eps, 1 - eps]."""
        stats = self.decoder(z.float()).float()  # (B, 6, H, W): means (logits) and log-scales
        return torch.sigmoid(stats[:, :3])


def load_dvae(name: str, models_dir: str | Path, device: torch.device | str = "cpu") -> DVAE:
    """The dVAE `name` from the models directory, converting the released pickles on first use."""
    directory = dvae_dir(name, models_dir)
    if not all((directory / f"{p}.pt").is_file() for p in PARTS):
        convert(directory)
    model = DVAE(_load_part(directory, "encoder"), _load_part(directory, "decoder"))
    model.eval().requires_grad_(False)
    return model.to(device)
