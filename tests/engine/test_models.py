"""Loading the real file formats: taming Lightning .ckpt + .yaml, open_clip checkpoints, and their failures."""

import shutil

import pytest
import torch
import yaml

from engine.errors import CheckpointError
from engine.models import registry
from engine.models.clip import load_clip
from engine.models.tiny import TINY_CLIP, TINY_GUMBEL, TINY_VQGAN
from engine.models.vqgan import convert_checkpoint, load_vqgan, read_config


def test_tiny_checkpoint_is_a_lightning_checkpoint(tiny_models):
    _, ckpt = registry.vqgan_paths(TINY_VQGAN, tiny_models)
    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert {"state_dict", "pytorch-lightning_version", "optimizer_states"} <= set(raw)
    assert any(k.startswith("loss.") for k in raw["state_dict"])
    # a weights-only load refuses it, so the loader's fallback is exercised
    with pytest.raises(Exception):  # noqa: B017 - torch raises UnpicklingError
        torch.load(ckpt, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(("name", "factor", "gumbel"), [(TINY_VQGAN, 16, False), (TINY_GUMBEL, 8, True)])
def test_load_vqgan_roundtrip(tiny_models, name, factor, gumbel):
    config, ckpt = registry.vqgan_paths(name, tiny_models)
    model = load_vqgan(config, ckpt)
    assert model.factor == factor and model.config.gumbel is gumbel
    assert not any(p.requires_grad for p in model.parameters())
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(model.state_dict()["decoder.conv_out.weight"], saved["decoder.conv_out.weight"])
    x = torch.rand(1, 3, 64, 32) * 2 - 1
    z = model.encode(x)
    assert z.shape == (1, model.config.embed_dim, 64 // factor, 32 // factor)
    # encoded latents are codebook vectors
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    assert (flat[:, None, :] - model.codebook[None]).abs().amax(-1).min(1).values.max() < 1e-6
    assert model.decode(z).shape == (1, 3, 64, 32)


def test_released_configs_parse(tmp_path):
    from engine.models.tiny import GUMBEL_F8_8192, IMAGENET_F16_16384

    for cfg in (IMAGENET_F16_16384, GUMBEL_F8_8192):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg.to_yaml_dict()))
        assert read_config(path) == cfg
    assert IMAGENET_F16_16384.factor == 16 and GUMBEL_F8_8192.factor == 8


def test_missing_files_say_how_to_fix(tmp_path, tiny_models):
    config, ckpt = registry.vqgan_paths(TINY_VQGAN, tiny_models)
    with pytest.raises(CheckpointError, match="does not exist.*python -m engine.models download") as info:
        load_vqgan(config, tmp_path / "nope.ckpt")
    assert info.value.path.endswith("nope.ckpt")
    with pytest.raises(CheckpointError, match="--vqgan-config"):
        load_vqgan(tmp_path / "nope.yaml", ckpt)


def test_corrupt_checkpoint(tmp_path, tiny_models):
    config, ckpt = registry.vqgan_paths(TINY_VQGAN, tiny_models)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt: delete it and download it again"):
        load_vqgan(config, broken)


def test_config_that_does_not_match(tiny_models):
    _, ckpt = registry.vqgan_paths(TINY_VQGAN, tiny_models)
    other_config, _ = registry.vqgan_paths(TINY_GUMBEL, tiny_models)
    with pytest.raises(CheckpointError, match="does not match the config"):
        load_vqgan(other_config, ckpt)


def test_bad_yaml(tmp_path, tiny_models):
    _, ckpt = registry.vqgan_paths(TINY_VQGAN, tiny_models)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  params:\n    embed_dim: 3\n")
    with pytest.raises(CheckpointError, match="not a taming-transformers model config"):
        load_vqgan(bad, ckpt)


def test_convert_keeps_inference_weights_and_loads_weights_only(tmp_path, tiny_models):
    config, ckpt = registry.vqgan_paths(TINY_VQGAN, tiny_models)
    out = convert_checkpoint(ckpt, tmp_path / "plain.ckpt")
    plain = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("loss.") for k in plain)
    a, b = load_vqgan(config, ckpt), load_vqgan(config, out)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_load_clip_from_open_clip_training_checkpoint(tiny_models):
    raw = torch.load(tiny_models / "clip" / f"{TINY_CLIP}.pt", map_location="cpu", weights_only=True)
    assert next(iter(raw["state_dict"])).startswith("module.")
    perceptor = load_clip(TINY_CLIP, models_dir=tiny_models)
    assert perceptor.input_size == 32
    key = "visual.conv1.weight"
    assert torch.equal(perceptor.model.state_dict()[key], raw["state_dict"][f"module.{key}"])
    text = perceptor.encode_text(["a cat", "a dog"])
    assert text.shape == (2, 32) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    image = torch.rand(3, 3, 32, 32, requires_grad=True)
    emb = perceptor.encode_image(image)
    emb.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_clip_from_explicit_path_and_plain_state_dict(tmp_path, tiny_models):
    clip_dir = tmp_path / "elsewhere"
    clip_dir.mkdir()
    shutil.copy(tiny_models / "clip" / f"{TINY_CLIP}.json", clip_dir)
    raw = torch.load(tiny_models / "clip" / f"{TINY_CLIP}.pt", map_location="cpu", weights_only=True)
    torch.save({k[len("module.") :]: v for k, v in raw["state_dict"].items()}, clip_dir / "plain.pt")
    perceptor = load_clip(TINY_CLIP, checkpoint=clip_dir / "plain.pt")
    assert perceptor.encode_text(["x"]).shape == (1, 32)


def test_missing_clip_says_how_to_fix(tmp_path):
    with pytest.raises(CheckpointError, match="python -m engine.models download --clip ViT-B-32"):
        load_clip("ViT-B-32", models_dir=tmp_path)


def test_clip_wrong_architecture(tiny_models):
    with pytest.raises(CheckpointError, match="could not be loaded as ViT-B-32"):
        load_clip("ViT-B-32", checkpoint=tiny_models / "clip" / f"{TINY_CLIP}.pt")


def test_unknown_clip_architecture(tiny_models):
    with pytest.raises(CheckpointError, match="Unknown CLIP architecture"):
        load_clip("no-such-net", checkpoint=tiny_models / "clip" / f"{TINY_CLIP}.pt")


def test_installed_vqgans(tiny_models):
    assert registry.installed_vqgans(tiny_models) == [TINY_VQGAN, TINY_GUMBEL]


def test_the_tokenizers_word_cache_stays_bounded_and_tokens_stay_the_same(tiny_models, monkeypatch):
    """open_clip's tokenizer keeps every distinct word it has read; the perceptor starts it again from its special
    tokens past TOKEN_CACHE words, and a word read again after that gives the same embedding."""
    import random
    import string

    from engine.models import clip

    monkeypatch.setattr(clip, "TOKEN_CACHE", 50)
    perceptor = load_clip(TINY_CLIP, models_dir=tiny_models)
    first = perceptor.encode_text(["a lighthouse at dusk"])
    rng = random.Random(0)
    for _ in range(40):  # 5 new words each
        perceptor.encode_text([" ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(5))])
        assert len(perceptor.tokenizer.cache) <= 50 + 5
    assert all(perceptor.tokenizer.cache[token] == token for token in perceptor._token_seed)  # specials still there
    assert torch.equal(perceptor.encode_text(["a lighthouse at dusk"]), first)
