"""Loading BigGAN-deep as pytorch-pretrained-biggan publishes it: a folder with `config.json` and
`pytorch_model.bin` (a plain state dict, so it loads weights-only).

The package's own `BigGAN.from_pretrained` downloads from the network and loads with a full pickle; only its
`BigGAN` and `BigGANConfig` classes are used here, imported narrowly: the package's `__init__` imports its
`utils`, which needs scipy and nltk (undeclared, and only for sampling helpers), so `model` and `config` are
imported without running it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import pickle
import sys
import zipfile
from pathlib import Path

import torch

from engine.errors import CheckpointError

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_KEYS = (
    "output_dim",
    "z_dim",
    "class_embed_dim",
    "channel_width",
    "num_classes",
    "layers",
    "attention_layer_position",
    "eps",
    "n_stats",
)


PACKAGE = "pytorch_pretrained_biggan"


def biggan_module():
    """`pytorch_pretrained_biggan.model` (BigGAN, BigGANConfig), imported without the package's `__init__`."""
    if f"{PACKAGE}.model" in sys.modules:
        return sys.modules[f"{PACKAGE}.model"]
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None:
            raise CheckpointError("BigGAN needs the pytorch-pretrained-biggan package: pip install -e . installs it.")
        sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    return importlib.import_module(f"{PACKAGE}.model")


def read_config(path: str | Path):
    """A `BigGANConfig` from the released `config.json`."""
    BigGANConfig = biggan_module().BigGANConfig

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"The BigGAN config {path} does not exist. Run `python -m engine.models download {path.parent.name}`.",
            str(path),
        )
    try:
        data = json.loads(path.read_text())
        missing = [k for k in CONFIG_KEYS if k not in data]
        if missing:
            raise KeyError(", ".join(missing))
        if data["z_dim"] != data["class_embed_dim"]:
            raise ValueError("z_dim and class_embed_dim differ")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a BigGAN config ({type(exc).__name__}: {exc}); use the config.json released with the "
            "weights.",
            str(path),
        ) from None
    return BigGANConfig.from_dict({k: data[k] for k in CONFIG_KEYS})


def build(config):
    """A BigGAN of `config` with the package's classes (random weights)."""
    return biggan_module().BigGAN(config)


def load_biggan(directory: str | Path, device: torch.device | str = "cpu"):
    """BigGAN-deep from a released folder (`config.json` + `pytorch_model.bin`), in eval mode and frozen.

    Eval mode matters: the spectral norms would otherwise run a power iteration (and change) at every forward."""
    directory = Path(directory)
    config = read_config(directory / CONFIG_NAME)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(
            f"The BigGAN weights {weights} do not exist. Run `python -m engine.models download {directory.name}`.",
            str(weights),
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"The BigGAN weights {weights} could not be read ({type(exc).__name__}: {str(exc)[:200]}). "
            "They are probably truncated: delete the file and download it again.",
            str(weights),
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{weights} holds no state dict.", str(weights))
    model = build(config)
    expected = model.state_dict()
    wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if wrong:
        raise CheckpointError(
            f"The BigGAN weights {weights} do not match {config.output_dim}x{config.output_dim} config.json: "
            f"{len(wrong)} tensors of another shape (e.g. {wrong[0]}). Use the config released with the weights.",
            str(weights),
        )
    # The spectral norms' load hook derives `weight_v` for files saved before torch kept it.
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise CheckpointError(
            f"The BigGAN weights {weights} lack {len(missing)} tensors (e.g. {missing[0]}).", str(weights)
        )
    if unexpected:
        log.info("ignoring %d unexpected tensors in %s", len(unexpected), weights)
    model.eval().requires_grad_(False)
    return model.to(device)
