"""Tiny random-weight checkpoints in the real file formats, and real-size random-weight models for benchmarks.

`python -m engine.models tiny DIR` writes a models directory that the CLI and the bot can use on any machine:
taming-style Lightning `.ckpt` + `.yaml` VQGANs (f16 and gumbel f8) and an open_clip training checkpoint with
its model config. The weights are random, so the pictures are noise, but every loading path is the real one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from engine.models.vqgan import VQGAN, VQGANConfig

TINY_VQGAN = "tiny_f16"
TINY_GUMBEL = "tiny_gumbel_f8"
TINY_CLIP = "tiny-clip"
TINY_CLIP_48 = "tiny-clip-48"  # a second ViT at another input size, for ensembles
TINY_RN = "tiny-rn"  # a ResNet CLIP (open_clip's ModifiedResNet), for ensembles
TINY_BIGGAN = "tiny-biggan"
TINY_DVAE = "tiny-dvae"

# BigGAN-deep's released configs: (upsample?, in, out) channel multipliers per block, two blocks per resolution,
# attention at 64x64; the first block takes 16 * channel_width channels and a block that changes width halves it.
BIGGAN_DEEP_LAYERS = {
    128: [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 4]]
    + [[False, 4, 4], [True, 4, 2], [False, 2, 2], [True, 2, 1]],
    256: [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 8]]
    + [[False, 8, 4], [True, 4, 4], [False, 4, 2], [True, 2, 2], [False, 2, 1], [True, 1, 1]],
}
BIGGAN_DEEP_LAYERS[512] = BIGGAN_DEEP_LAYERS[256] + [[False, 1, 1], [True, 1, 1]]


def biggan_deep_config(size: int) -> dict:
    """The config.json of biggan-deep-<size>."""
    return {
        "output_dim": size,
        "z_dim": 128,
        "class_embed_dim": 128,
        "channel_width": 128,
        "num_classes": 1000,
        "layers": BIGGAN_DEEP_LAYERS[size],
        "attention_layer_position": 8,
        "eps": 1e-4,
        "n_stats": 51,
    }


TINY_BIGGAN_CONFIG = {
    **biggan_deep_config(128),
    "output_dim": 32,
    "z_dim": 16,
    "class_embed_dim": 16,
    "channel_width": 4,
    "layers": [[False, 16, 8], [True, 8, 4], [True, 4, 2], [True, 2, 1]],
    "attention_layer_position": 2,
}
DVAE_ENCODER = {"n_hid": 256, "n_blk_per_group": 2, "input_channels": 3, "vocab_size": 8192}
DVAE_DECODER = {"n_init": 128, "n_hid": 256, "n_blk_per_group": 2, "output_channels": 3, "vocab_size": 8192}
TINY_DVAE_ENCODER = {**DVAE_ENCODER, "n_hid": 64, "n_blk_per_group": 1, "vocab_size": 512}
TINY_DVAE_DECODER = {**DVAE_DECODER, "n_init": 16, "n_hid": 64, "n_blk_per_group": 1, "vocab_size": 512}

IMAGENET_F16_16384 = VQGANConfig(
    ddconfig={
        "double_z": False,
        "z_channels": 256,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 1, 2, 2, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [16],
        "dropout": 0.0,
    },
    embed_dim=256,
    n_embed=16384,
)
GUMBEL_F8_8192 = VQGANConfig(
    ddconfig={**IMAGENET_F16_16384.ddconfig, "ch_mult": [1, 1, 2, 4], "attn_resolutions": [32]},
    embed_dim=256,
    n_embed=8192,
    gumbel=True,
)


def tiny_vqgan_config(gumbel: bool = False) -> VQGANConfig:
    """The smallest VQGAN taming's modules allow (GroupNorm needs multiples of 32 channels)."""
    ch_mult = [1, 1, 1, 2] if gumbel else [1, 1, 1, 1, 2]
    return VQGANConfig(
        ddconfig={
            "double_z": False,
            "z_channels": 32,
            "resolution": 256,
            "in_channels": 3,
            "out_ch": 3,
            "ch": 32,
            "ch_mult": ch_mult,
            "num_res_blocks": 1,
            "attn_resolutions": [16] if not gumbel else [32],
            "dropout": 0.0,
        },
        embed_dim=32 if gumbel else 16,  # taming's GumbelVQ projects from quant_conv's output: embed_dim == z_channels
        n_embed=128,
        gumbel=gumbel,
    )


TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


TINY_CLIP_48_CONFIG = {**TINY_CLIP_CONFIG, "vision_cfg": {"image_size": 48, "layers": 1, "width": 64, "patch_size": 8}}
TINY_RN_CONFIG = {
    **TINY_CLIP_CONFIG,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64},
}
TINY_CLIPS = {TINY_CLIP: TINY_CLIP_CONFIG, TINY_CLIP_48: TINY_CLIP_48_CONFIG, TINY_RN: TINY_RN_CONFIG}


def write_vqgan(directory: Path, name: str, config: VQGANConfig, seed: int = 0) -> tuple[Path, Path]:
    """A random VQGAN saved as taming saved them: Lightning checkpoint with loss.* keys, and the yaml."""
    torch.manual_seed(seed)
    model = VQGAN(config)
    with torch.no_grad():
        model.codebook.normal_()  # a spread-out codebook, like a trained one (taming initialises it near zero)
    state = dict(model.state_dict())
    # What the released checkpoints also hold and the loader must ignore.
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(8, 3, 3, 3)
    checkpoint = {
        "epoch": 3,
        "global_step": 1000,
        "pytorch-lightning_version": "1.0.8",
        "state_dict": state,
        "callbacks": {},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6}]}],
        "lr_schedulers": [],
        # Lightning 1.0 pickled the hyperparameters as a Namespace: weights-only loading refuses it.
        "hparams": argparse.Namespace(base_learning_rate=4.5e-6, name=name),
    }
    directory = Path(directory) / "vqgan"
    directory.mkdir(parents=True, exist_ok=True)
    yaml_path, ckpt_path = directory / f"{name}.yaml", directory / f"{name}.ckpt"
    yaml_path.write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
    torch.save(checkpoint, ckpt_path)
    return yaml_path, ckpt_path


def write_clip(directory: Path, name: str = TINY_CLIP, config: dict | None = None, seed: int = 0) -> Path:
    """A random open_clip model saved as open_clip's trainer saves it (`module.`-prefixed, under state_dict)."""
    import open_clip

    directory = Path(directory) / "clip"
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"{name}.json"
    config_path.write_text(json.dumps(config or TINY_CLIP_CONFIG, indent=2))
    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    checkpoint = {
        "epoch": 1,
        "name": name,
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": {"state": {}, "param_groups": []},
    }
    path = directory / f"{name}.pt"
    torch.save(checkpoint, path)
    return path


def as_if_trained(model, iterations: int = 5):
    """A random BigGAN made usable: the package leaves the last BatchNorm's scale and shift uninitialised (whatever
    memory held), and the spectral norms' u and v random, which gives a meaningless sigma to divide by in eval
    mode. Set the scale to 1 and the shift to 0, and run the power iterations (a training-mode forward each)."""
    config = model.config
    with torch.no_grad():
        model.generator.bn.weight.fill_(1.0)
        model.generator.bn.bias.zero_()
        noise, classes = torch.zeros(1, config.z_dim), torch.full((1, config.num_classes), 1 / config.num_classes)
        for _ in range(iterations):
            model.train()(noise, classes, 1.0)
    return model.eval()


def write_biggan(directory: Path, name: str = TINY_BIGGAN, config: dict | None = None, seed: int = 0) -> Path:
    """A random BigGAN as pytorch-pretrained-biggan releases it: `config.json` + `pytorch_model.bin`."""
    from engine.models.biggan import biggan_module

    config = config or TINY_BIGGAN_CONFIG
    folder = Path(directory) / "biggan" / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = as_if_trained(biggan_module().BigGAN(biggan_module().BigGANConfig.from_dict(config)))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def write_dvae(directory: Path, name: str = TINY_DVAE, seed: int = 0) -> Path:
    """A random dVAE as OpenAI released it: whole `dall_e` modules pickled (`encoder.pkl`, `decoder.pkl`)."""
    from engine.models.dvae import build

    folder = Path(directory) / "dalle" / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(build("encoder", TINY_DVAE_ENCODER), folder / "encoder.pkl")
    torch.save(build("decoder", TINY_DVAE_DECODER), folder / "decoder.pkl")
    return folder


def write_tiny_models(directory: str | Path) -> Path:
    """Write the tiny VQGANs, BigGAN, dVAE and CLIPs (TINY_CLIPS: two ViTs and a ResNet at three input sizes, for
    ensembles) into `directory` (a models directory); returns it."""
    directory = Path(directory)
    write_vqgan(directory, TINY_VQGAN, tiny_vqgan_config())
    write_vqgan(directory, TINY_GUMBEL, tiny_vqgan_config(gumbel=True), seed=1)
    write_biggan(directory)
    write_dvae(directory)
    for seed, (name, config) in enumerate(TINY_CLIPS.items()):
        write_clip(directory, name, config, seed=seed)
    return directory


def real_size_vqgan(device: str | torch.device = "cpu") -> VQGAN:
    """The imagenet f16 16384 architecture with random weights (compute does not depend on weight values)."""
    model = VQGAN(IMAGENET_F16_16384)
    with torch.no_grad():
        model.codebook.normal_()
    return model.eval().requires_grad_(False).to(device)


def real_size_biggan(size: int = 256, device: str | torch.device = "cpu"):
    """biggan-deep-<size> with random weights."""
    from engine.models.biggan import biggan_module

    model = biggan_module().BigGAN(biggan_module().BigGANConfig.from_dict(biggan_deep_config(size)))
    return as_if_trained(model, iterations=1).requires_grad_(False).to(device)


def real_size_dvae(device: str | torch.device = "cpu"):
    """DALL-E's dVAE architecture (8192 codes) with random weights."""
    from engine.models.dvae import DVAE, build

    model = DVAE(build("encoder", DVAE_ENCODER), build("decoder", DVAE_DECODER))
    return model.eval().requires_grad_(False).to(device)


def real_size_clip(name: str = "ViT-B-32", device: str | torch.device = "cpu"):
    """An open_clip architecture with random weights, wrapped for guidance."""
    import open_clip

    from engine.models.clip import Perceptor

    model = open_clip.create_model(name, pretrained=None).eval().requires_grad_(False)
    return Perceptor(model, open_clip.get_tokenizer(name), name).to(device)
