"""Stand-ins for the files an operator downloads, written from the formats' own descriptions, not by the loader.

- OpenAI's CLIP release (`ViT-B-32.pt`): a TorchScript archive (`torch.jit.save`) of OpenAI's own module tree,
  whose state dict uses OpenAI's key names (`visual.conv1.weight`, `visual.transformer.resblocks.0.attn.in_proj_weight`,
  `token_embedding.weight`, `text_projection`, ...) plus the `input_resolution`, `context_length` and `vocab_size`
  entries, with linear, convolution and projection weights in fp16 (OpenAI's `convert_weights`) and QuickGELU.
- taming-transformers' `last.ckpt`: a Lightning 1.x checkpoint (`epoch`, `global_step`,
  `pytorch-lightning_version`, `state_dict` with `loss.*` entries, `optimizer_states`, `lr_schedulers`, and
  `callbacks` keyed by the `ModelCheckpoint` class itself), beside the released `model.yaml`.
- The Hugging Face Hub copy of OpenAI's weights (`open_clip_model.safetensors`, `open_clip_pytorch_model.bin`):
  an open_clip state dict with no prefix.

Nothing here imports `engine.models`: the modules are built from taming's and torch's own classes.
"""

from __future__ import annotations

import json
import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch
import yaml
from torch import nn


# -- OpenAI's TorchScript CLIP ---------------------------------------------------------------------------------
class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, width * 4), gelu=QuickGELU(), c_proj=nn.Linear(width * 4, width))
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x, mask=None):  # (L, N, D): OpenAI's transformer is sequence-first
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x, mask=None):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, image: int, patch: int, width: int, layers: int, embed: int) -> None:
        super().__init__()
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((image // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, max(1, width // 64))
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed))

    def forward(self, x):  # (N, 3, S, S) -> (N, embed)
        x = self.conv1(x).flatten(2).permute(0, 2, 1)  # (N, grid², width)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class OpenAICLIP(nn.Module):
    """OpenAI's CLIP module tree (the ViT or the ResNet variant), small."""

    def __init__(self, *, embed=32, image=32, patch=8, width=64, layers=1, text_width=64, text_layers=1, resnet=None):
        """`resnet`: the ResNet's blocks per stage, e.g. (3, 4, 6, 3) for RN50 (`width` then is its stem width, 64
        for RN50, 80 for RN50x4); None: a ViT."""
        super().__init__()
        context, vocab = 77, 49408  # OpenAI's tokenizer: fixed
        if resnet is None:
            self.visual = VisionTransformer(image, patch, width, layers, embed)
        else:
            self.visual = ModifiedResNet(resnet, embed, width * 32 // 64, image, width)
            _trained_looking_batchnorms(self.visual)
        self.transformer = Transformer(text_width, text_layers, max(1, text_width // 64))
        self.token_embedding = nn.Embedding(vocab, text_width)
        self.positional_embedding = nn.Parameter(torch.randn(context, text_width) * 0.01)
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.randn(text_width, embed) * text_width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))
        # The released archives carry these three as entries of their state dict.
        self.register_buffer("input_resolution", torch.tensor(image))
        self.register_buffer("context_length", torch.tensor(context))
        self.register_buffer("vocab_size", torch.tensor(vocab))

    def encode_image(self, image):
        return self.visual(image)

    def encode_text(self, tokens):  # (N, 77) -> (N, embed)
        x = self.token_embedding(tokens) + self.positional_embedding
        mask = torch.full((77, 77), float("-inf")).triu(1)
        x = self.ln_final(self.transformer(x.permute(1, 0, 2), mask).permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ self.text_projection

    def forward(self, image):
        return image.mean() * self.logit_scale.float()


class Bottleneck(nn.Module):
    """OpenAI's ResNet block: anti-aliased strided convolution (an average pool before the last 1x1 convolution)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * 4, 1, stride=1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * 4)),
                    ]
                )
            )

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """OpenAI's attention pooling: the mean token attends to all the others (positional embeddings added)."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x):
        x = x.flatten(start_dim=2).permute(2, 0, 1)  # (HW, N, C)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = nn.functional.multi_head_attention_forward(
            query=x,
            key=x,
            value=x,
            embed_dim_to_check=x.shape[-1],
            num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True,
            training=self.training,
            need_weights=False,
        )
        return x[0]


class ModifiedResNet(nn.Module):
    """OpenAI's CLIP ResNet (RN50, RN50x4, ...): a three-convolution stem, anti-aliased bottlenecks, attention
    pooling; the input side is 32 x the pooling grid."""

    def __init__(self, layers, output_dim: int, heads: int, input_resolution: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * 4
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


def _trained_looking_batchnorms(model: nn.Module) -> None:
    """Running statistics and affine parameters away from their initial values, as in a trained network (so a
    loader that dropped them would give other numbers)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.0)
                module.bias.uniform_(-0.1, 0.1)
                module.num_batches_tracked.fill_(1000)


def _half_like_openai(model: nn.Module) -> None:
    """OpenAI's `convert_weights`: linear and convolution weights, attention projections, and the two projection
    matrices in fp16; layer norms and embeddings stay fp32."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()
        if isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "in_proj_bias"):
                getattr(module, name).data = getattr(module, name).data.half()
    for name in ("text_projection", "proj"):
        for module in (model, model.visual):
            if hasattr(module, name) and isinstance(getattr(module, name), nn.Parameter):
                getattr(module, name).data = getattr(module, name).data.half()


def write_openai_torchscript(path: Path, seed: int = 0, **sizes) -> dict:
    """Write a TorchScript archive laid out like OpenAI's release. Returns references computed in fp32 from the
    same (fp16-rounded) weights: {"image": input, "image_embedding": ..., "tokens": ..., "text_embedding": ...}."""
    torch.manual_seed(seed)
    model = OpenAICLIP(**sizes).eval()
    _half_like_openai(model)
    reference_model = OpenAICLIP(**sizes).eval()
    reference_model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    )
    size = int(model.input_resolution)
    image = torch.rand(2, 3, size, size)
    tokens = torch.zeros(1, 77, dtype=torch.long)
    tokens[0, :4] = torch.tensor([49406, 320, 1929, 49407])  # <start> a cat <end>
    with torch.no_grad():
        ref = {
            "image": image,
            "image_embedding": reference_model.encode_image(image),
            "tokens": tokens,
            "text_embedding": reference_model.encode_text(tokens),
        }
    traced = torch.jit.trace(model, (image,), check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path))
    return ref


# -- taming's Lightning 1.x checkpoint -------------------------------------------------------------------------
def tiny_taming_yaml(ch: int = 32, z_channels: int = 32, embed_dim: int = 16, n_embed: int = 64) -> dict:
    """The released `model.yaml` shape (imagenet f16 16384's keys), at a tiny width."""
    return {
        "model": {
            "base_learning_rate": 4.5e-06,
            "target": "taming.models.vqgan.VQModel",
            "params": {
                "embed_dim": embed_dim,
                "n_embed": n_embed,
                "ddconfig": {
                    "double_z": False,
                    "z_channels": z_channels,
                    "resolution": 256,
                    "in_channels": 3,
                    "out_ch": 3,
                    "ch": ch,
                    "ch_mult": [1, 1, 1, 1, 2],
                    "num_res_blocks": 1,
                    "attn_resolutions": [16],
                    "dropout": 0.0,
                },
                "lossconfig": {
                    "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                    "params": {
                        "disc_conditional": False,
                        "disc_in_channels": 3,
                        "disc_start": 250001,
                        "disc_weight": 0.8,
                        "codebook_weight": 1.0,
                    },
                },
            },
        }
    }


class _VQModelWeights(nn.Module):
    """The attribute names of taming's `VQModel`, built from taming's own modules (its state dict is the file's)."""

    def __init__(self, params: dict) -> None:
        super().__init__()
        import contextlib
        import io

        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer2

        dd = params["ddconfig"]
        with contextlib.redirect_stdout(io.StringIO()):
            self.encoder = Encoder(**dd)
            self.decoder = Decoder(**dd)
        self.quantize = VectorQuantizer2(params["n_embed"], params["embed_dim"], beta=0.25)
        self.quant_conv = nn.Conv2d(dd["z_channels"], params["embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(params["embed_dim"], dd["z_channels"], 1)


def _lightning_class(module: str, name: str) -> type:
    """A class that pickles as `module.name`, as Lightning's own would (Lightning is not installed here)."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls = type(name, (), {"__module__": module})
    setattr(sys.modules[module], name, cls)
    return cls


def write_lightning_vqgan(directory: Path, name: str, seed: int = 0, yaml_doc: dict | None = None) -> tuple[Path, Path]:
    """`name.yaml` + `name.ckpt` as taming released them (Lightning 1.0.8), in `directory`."""
    doc = yaml_doc or tiny_taming_yaml()
    torch.manual_seed(seed)
    model = _VQModelWeights(doc["model"]["params"])
    with torch.no_grad():
        model.quantize.embedding.weight.normal_()
    state = OrderedDict(model.state_dict())
    state["loss.logvar"] = torch.zeros(())
    state["loss.perceptual_loss.scaling_layer.shift"] = torch.randn(1, 3, 1, 1)
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    model_checkpoint = _lightning_class("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    checkpoint = {
        "epoch": 11,
        "global_step": 1180000,
        "pytorch-lightning_version": "1.0.8",
        "callbacks": {
            model_checkpoint: {
                "monitor": "val/rec_loss",
                "best_model_score": torch.tensor(0.3),
                "best_model_path": "/home/user/logs/checkpoints/epoch=000011.ckpt",
            }
        },
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "betas": (0.5, 0.9)}]}],
        "lr_schedulers": [],
        "state_dict": state,
    }
    directory.mkdir(parents=True, exist_ok=True)
    yaml_path, ckpt_path = directory / f"{name}.yaml", directory / f"{name}.ckpt"
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        torch.save(checkpoint, ckpt_path)
    finally:
        for module in [m for m in sys.modules if m.startswith("pytorch_lightning")]:
            del sys.modules[module]
    return yaml_path, ckpt_path


# -- the Hub's open_clip state dict ----------------------------------------------------------------------------
TINY_HUB_CONFIG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


def write_hub_state_dict(path: Path, name: str, config: dict | None = None, seed: int = 0) -> Path:
    """An open_clip state dict as the Hub holds it (`.safetensors` or `.bin` by `path`'s suffix); for a name open_clip
    does not know, its `name.json` config is written beside it."""
    import open_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    if config is not None:
        config_path = path.parent / f"{name}.json"
        config_path.write_text(json.dumps(config))
        open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    state = open_clip.create_model(name, pretrained=None).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path
