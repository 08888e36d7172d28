"""Stand-ins for the BigGAN and DALL-E dVAE files an operator downloads, written from the formats' own
descriptions with the packages' classes, not by the loader.

- pytorch-pretrained-biggan's release (`biggan-deep-256-pytorch_model.bin`, `-config.json`, saved in the model's
  folder as `pytorch_model.bin` and `config.json`): the `BigGAN` module's state dict in torch's legacy (pre-zip)
  format, whose spectral norms hold `weight_orig`, `weight_u` and `weight_v`, and the `BigGANConfig` as JSON.
- OpenAI's dVAE (`encoder.pkl`, `decoder.pkl`): a full pickle (`torch.save(module)`) of `dall_e`'s `Encoder` and
  `Decoder`; weights-only loading refuses it.

Nothing here imports `engine.models`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import torch

# A small BigGAN-deep: 4 -> 32 pixels, attention at 8x8, ImageNet's 1000 classes. The first block takes
# 16 * channel_width channels (what `gen_z` makes) and each block that changes width halves it.
TINY_BIGGAN = {
    "output_dim": 32,
    "z_dim": 16,
    "class_embed_dim": 16,
    "channel_width": 4,
    "num_classes": 1000,
    "layers": [[False, 16, 8], [True, 8, 4], [True, 4, 2], [True, 2, 1]],
    "attention_layer_position": 2,
    "eps": 1e-4,
    "n_stats": 51,
}
# dall_e's validators: n_hid >= 64, vocab_size >= 512, n_init >= 8.
TINY_ENCODER = {"n_hid": 64, "n_blk_per_group": 1, "input_channels": 3, "vocab_size": 512}
TINY_DECODER = {
    "n_init": 16,
    "n_hid": 64,
    "n_blk_per_group": 1,
    "output_channels": 3,
    "vocab_size": 512,
}


def _biggan_classes():
    """BigGAN, BigGANConfig from the package's model module (its __init__ wants scipy, which we do not install)."""
    name = "pytorch_pretrained_biggan"
    if name not in sys.modules:
        sys.modules[name] = importlib.util.module_from_spec(importlib.util.find_spec(name))
    model = importlib.import_module(f"{name}.model")
    return model.BigGAN, model.BigGANConfig


def write_biggan(folder: Path, config: dict | None = None, seed: int = 0):
    """`config.json` + `pytorch_model.bin` as the release has them; returns the module that was saved."""
    BigGAN, BigGANConfig = _biggan_classes()

    config = dict(config or TINY_BIGGAN)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = BigGAN(BigGANConfig.from_dict(config))
    with torch.no_grad():
        model.generator.bn.weight.fill_(1.0)  # the package leaves these uninitialised; training set them
        model.generator.bn.bias.zero_()
        # settle the spectral norms' u and v (power iterations run in training mode's forward)
        for _ in range(5):
            model.train()(torch.zeros(1, config["z_dim"]), torch.full((1, config["num_classes"]), 1e-3), 1.0)
    model.eval()
    with torch.no_grad():  # BatchNorm statistics per truncation step, as the conversion from TF stored them
        for name, buffer in model.named_buffers():
            if name.endswith("running_vars"):
                buffer.uniform_(0.5, 1.5)
            elif name.endswith("running_means"):
                buffer.normal_(0, 0.1)
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                param.fill_(0.5)  # attention on, as in a trained model
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    torch.save(model.state_dict(), folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    return model


def write_dvae(folder: Path, seed: int = 0):
    """`encoder.pkl` + `decoder.pkl`: whole dall_e modules pickled, as OpenAI released them. Returns both."""
    from dall_e import Decoder, Encoder

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    encoder = Encoder(**TINY_ENCODER, device=torch.device("cpu"), requires_grad=False)
    decoder = Decoder(**TINY_DECODER, device=torch.device("cpu"), requires_grad=False)
    torch.save(encoder, folder / "encoder.pkl")
    torch.save(decoder, folder / "decoder.pkl")
    return encoder, decoder
