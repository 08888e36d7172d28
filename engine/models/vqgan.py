"""Loading taming-transformers VQGAN checkpoints (`.ckpt` + `.yaml`) for inference.

Only `taming.modules.*` is imported: `taming.models.vqgan` pulls in a training script and an old
pytorch-lightning API. The loss (discriminator, LPIPS) is never built: its config downloads VGG weights.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from engine.errors import CheckpointError

log = logging.getLogger(__name__)

INFERENCE_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")
_DDCONFIG_KEYS = (
    "double_z",
    "z_channels",
    "resolution",
    "in_channels",
    "out_ch",
    "ch",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "dropout",
)


@dataclass(frozen=True)
class VQGANConfig:
    """The architecture of one VQGAN, as read from taming's yaml."""

    ddconfig: dict[str, Any]
    embed_dim: int
    n_embed: int
    gumbel: bool = False

    @property
    def factor(self) -> int:
        """How many pixels one latent token covers along a side."""
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The taming-style yaml document for this architecture (what the released configs look like)."""
        target = "taming.models.vqgan.GumbelVQ" if self.gumbel else "taming.models.vqgan.VQModel"
        params: dict[str, Any] = {
            "embed_dim": self.embed_dim,
            "n_embed": self.n_embed,
            "ddconfig": dict(self.ddconfig),
            "lossconfig": {
                "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 0, "codebook_weight": 1.0},
            },
        }
        if self.gumbel:
            params["kl_weight"] = 1.0e-08
            params["temperature_scheduler_config"] = {
                "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
                "params": {
                    "warm_up_steps": 0,
                    "max_decay_steps": 1000001,
                    "lr_start": 0.9,
                    "lr_max": 0.9,
                    "lr_min": 1e-6,
                },
            }
        return {"model": {"base_learning_rate": 4.5e-06, "target": target, "params": params}}


def read_config(path: str | Path) -> VQGANConfig:
    """Read a taming yaml (`model.params.ddconfig`, `embed_dim`, `n_embed`, `model.target`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"The VQGAN config {path} does not exist. Download it with `python -m engine.models download` "
            "or point --vqgan-config (IMAGINE_VQGAN_CONFIG) at the model's .yaml file.",
            str(path),
        )
    try:
        doc = yaml.safe_load(path.read_text())
        model = doc["model"]
        params = model["params"]
        dd = params["ddconfig"]
        ddconfig = {k: dd[k] for k in _DDCONFIG_KEYS if k in dd}
        missing = [k for k in ("z_channels", "ch", "ch_mult", "num_res_blocks", "resolution") if k not in ddconfig]
        if missing:
            raise KeyError(", ".join(missing))
        ddconfig.setdefault("double_z", False)
        ddconfig.setdefault("in_channels", 3)
        ddconfig.setdefault("out_ch", 3)
        ddconfig.setdefault("attn_resolutions", [])
        ddconfig.setdefault("dropout", 0.0)
        ddconfig["dropout"] = 0.0  # inference only
        gumbel = "Gumbel" in str(model.get("target", ""))
        return VQGANConfig(ddconfig, int(params["embed_dim"]), int(params["n_embed"]), gumbel)
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"The VQGAN config {path} is not a taming-transformers model config ({type(exc).__name__}: {exc}). "
            "Use the .yaml that was released with the checkpoint.",
            str(path),
        ) from None


class VQGAN(nn.Module):
    """The inference half of taming's VQModel/GumbelVQ, with the same parameter names as the checkpoints."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2

        self.config = config
        z_channels = config.ddconfig["z_channels"]
        with contextlib.redirect_stdout(io.StringIO()):  # taming prints the z shape when it builds the decoder
            self.encoder = Encoder(**config.ddconfig)
            self.decoder = Decoder(**config.ddconfig)
        if config.gumbel:
            self.quantize = GumbelQuantize(z_channels, config.embed_dim, n_embed=config.n_embed, kl_weight=1e-8)
        else:
            self.quantize = VectorQuantizer2(config.n_embed, config.embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, z_channels, 1)

    @property
    def factor(self) -> int:
        """How many pixels one latent token covers along a side (the config's)."""
        return self.config.factor

    @property
    def codebook(self) -> torch.Tensor:
        """The codebook, (n_embed, embed_dim)."""
        return self.quantize.embed.weight if self.config.gumbel else self.quantize.embedding.weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] (B, 3, H, W) -> quantised latent (B, embed_dim, H/f, W/f)."""
        h = self.quant_conv(self.encoder(x))
        if self.config.gumbel:
            # The gumbel quantiser picks codes from its own projection; take the most likely code instead of
            # sampling (taming samples gumbel noise from the global RNG, which would break seeding).
            idx = self.quantize.proj(h).argmax(1)  # (B, h, w)
            return self.codebook[idx].permute(0, 3, 1, 2)
        return quantize_nearest(h, self.codebook)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised latent -> image in about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z_q))


def quantize_nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest codebook vector per position; (B, D, h, w) in and out."""
    b, d, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, D)
    dist = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)[None, :] - 2 * flat @ codebook.T
    idx = dist.argmin(1)
    return codebook[idx].view(b, h, w, d).permute(0, 3, 1, 2)


# What a Lightning 1.x checkpoint (taming's released `last.ckpt`) pickles besides tensors and plain containers:
# the callbacks' states are keyed by the callback's class, and hyperparameters may be an AttributeDict or a
# Namespace. Lightning is not installed: each is read as an inert stand-in, and nothing of Lightning's code runs.
_LIGHTNING_CLASSES = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
)


class _AttributeDict(dict):
    """Stands in for Lightning's AttributeDict (a dict) while unpickling."""


def _lightning_globals() -> list:
    stand_ins: list = [(type(n.rsplit(".", 1)[1], (), {}), n) for n in _LIGHTNING_CLASSES]
    stand_ins.append((_AttributeDict, "pytorch_lightning.utilities.parsing.AttributeDict"))
    stand_ins.append(argparse.Namespace)
    return stand_ins


def _torch_load(path: Path, trust: bool = False) -> Any:
    """Load a checkpoint weights-only, allowing the few inert globals a Lightning 1.x checkpoint names.

    `trust=True` (the operator's explicit `convert --trust`) is the only way to an unrestricted pickle load.
    """
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(_lightning_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)[:3])
        except Exception:
            names = "unknown classes"
        raise CheckpointError(
            f"The checkpoint {path} holds Python objects besides weights ({names}), which are never loaded "
            f"automatically. If it is your own file and you trust it, convert it once: `python -m engine.models "
            f"convert --trust {path} {path.with_suffix('.weights.ckpt')}`.",
            str(path),
        ) from None


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The inference tensors of a taming `.ckpt` (Lightning, under `state_dict`) or of a plain state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"The VQGAN checkpoint {path} does not exist. Download it with `python -m engine.models download` "
            "or point --vqgan-checkpoint (IMAGINE_VQGAN_CHECKPOINT) at the model's .ckpt file.",
            str(path),
        )
    try:
        raw = _torch_load(path, trust)
    except CheckpointError:
        raise
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"The VQGAN checkpoint {path} could not be read ({type(exc).__name__}: {str(exc)[:200]}). "
            "It is probably truncated or corrupt: delete it and download it again.",
            str(path),
        ) from None
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"The VQGAN checkpoint {path} holds no state dict.", str(path))
    return {k: v for k, v in state.items() if k.startswith(INFERENCE_PREFIXES) and isinstance(v, torch.Tensor)}


def load_vqgan(config_path: str | Path, checkpoint_path: str | Path, device: torch.device | str = "cpu") -> VQGAN:
    """Build the VQGAN of `config_path` and load the inference weights of `checkpoint_path` (eval mode, frozen)."""
    config = read_config(config_path)
    state = read_state_dict(checkpoint_path)
    model = VQGAN(config)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or wrong:
        detail = (
            f"{len(missing)} missing (e.g. {missing[0]})"
            if missing
            else f"{len(wrong)} of another shape (e.g. {wrong[0]})"
        )
        raise CheckpointError(
            f"The VQGAN checkpoint {checkpoint_path} does not match the config {config_path}: {detail}. "
            "Use the .yaml that was released with this checkpoint.",
            str(checkpoint_path),
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    model.eval().requires_grad_(False)
    return model.to(device)


def convert_checkpoint(checkpoint_path: str | Path, out_path: str | Path, trust: bool = False) -> Path:
    """Write just the inference tensors of a `.ckpt` as a plain state dict (loads with weights_only).

    `trust=True` allows an unrestricted pickle load of the input: only for the operator's own files."""
    state = read_state_dict(checkpoint_path, trust)
    out = Path(out_path)
    torch.save({"state_dict": state}, out)
    return out
