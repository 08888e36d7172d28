"""The files an operator downloads load through the paths a user takes: the models directory in the layout
`download` writes, and the explicit flags. The stand-ins are written by `realformats`, not by the loader."""

from __future__ import annotations

import os
import pickle
import sys

import pytest
import torch

from engine.errors import CheckpointError
from tests.engine import realformats


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """A models directory as `download` lays it out: OpenAI's TorchScript CLIP, the Hub's state dicts, and
    taming's Lightning checkpoint with its yaml."""
    root = tmp_path_factory.mktemp("models")
    refs = realformats.write_openai_torchscript(root / "clip" / "tinyopenai-openai.pt")
    realformats.write_hub_state_dict(
        root / "clip" / "tinyhub-openai.safetensors", "tinyhub", realformats.TINY_HUB_CONFIG, seed=1
    )
    realformats.write_hub_state_dict(root / "clip" / "tinybin-openai.bin", "tinybin", realformats.TINY_HUB_CONFIG)
    realformats.write_lightning_vqgan(root / "vqgan", "tinytaming")
    return root, refs


def test_the_stand_ins_are_the_hard_formats(downloaded):
    """What made the first real run fail: a weights-only load refuses both files, as it refuses the real ones."""
    root, _ = downloaded
    for path in (root / "clip" / "tinyopenai-openai.pt", root / "vqgan" / "tinytaming.ckpt"):
        with pytest.raises(Exception, match="(?i)weights only|torchscript"):
            torch.load(path, map_location="cpu", weights_only=True)
    state = torch.jit.load(str(root / "clip" / "tinyopenai-openai.pt")).state_dict()
    assert state["visual.conv1.weight"].dtype == torch.float16
    assert state["ln_final.weight"].dtype == torch.float32
    assert {"input_resolution", "context_length", "vocab_size"} <= set(state)


def test_openai_torchscript_loads_in_fp32_with_quickgelu_and_openais_numbers(downloaded):
    from engine.models.clip import load_clip

    root, refs = downloaded
    perceptor = load_clip("tinyopenai", models_dir=root)
    params = list(perceptor.model.parameters())
    assert params and all(p.dtype == torch.float32 for p in params)
    acts = [type(m).__name__ for m in perceptor.model.visual.modules()]
    assert "QuickGELU" in acts and "GELU" not in acts
    with torch.no_grad():
        image = perceptor.model.encode_image(refs["image"])
        text = perceptor.model.encode_text(refs["tokens"])
    # Every weight landed where OpenAI's module tree uses it: the embeddings are OpenAI's forward's.
    torch.testing.assert_close(image, refs["image_embedding"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(text, refs["text_embedding"], rtol=1e-4, atol=1e-4)
    assert perceptor.encode_text(["a cat"]).shape == (1, 32)


@pytest.mark.parametrize("name", ["tinyhub", "tinybin"])
def test_hub_state_dicts_load_from_the_download_layout(downloaded, name):
    from engine.models.clip import load_clip

    root, _ = downloaded
    perceptor = load_clip(name, models_dir=root)
    acts = [type(m).__name__ for m in perceptor.model.visual.modules()]
    assert "QuickGELU" in acts  # OpenAI's weights (the -openai name) need OpenAI's activation
    assert perceptor.encode_image(torch.rand(1, 3, 32, 32)).shape == (1, 32)


def test_a_torchscript_clip_of_another_architecture_is_refused_with_a_sentence(downloaded):
    from engine.models.clip import load_clip

    root, _ = downloaded
    with pytest.raises(CheckpointError, match="not a ViT-B-32 model: embed_dim 32 \\(expected 512\\)"):
        load_clip("ViT-B-32", checkpoint=root / "clip" / "tinyopenai-openai.pt")


def test_lightning_checkpoint_loads_weights_only(downloaded, monkeypatch):
    from engine.models import vqgan

    root, _ = downloaded
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real_load(*a, **k))
    model = vqgan.load_vqgan(root / "vqgan" / "tinytaming.yaml", root / "vqgan" / "tinytaming.ckpt")
    assert calls == [True]
    assert model.codebook.shape == (64, 16)
    assert "pytorch_lightning" not in sys.modules  # the stand-in classes are inert; Lightning is never imported


class _Payload:
    """Pickles as a call of os.system: what a hostile checkpoint would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_holding_code_is_refused_and_never_run(tmp_path):
    from engine.models import vqgan

    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"encoder.x": torch.ones(1)}, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="never loaded automatically.*convert --trust"):
        vqgan.read_state_dict(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the raw file really is a code-running pickle
        torch.load(path, weights_only=True)


def _cli(args, tmp_path):
    from engine.cli import main

    out = tmp_path / "out.png"
    code = main([*args, "-o", str(out), "-s", "64x48", "--steps", "2", "--cutn", "4", "--seed", "3", "-q"])
    return code, out


def test_cli_makes_an_image_from_the_download_layout(downloaded, tmp_path):
    root, _ = downloaded
    code, out = _cli(
        ["a lighthouse", "--models-dir", str(root), "--model", "tinytaming", "--clip", "tinyopenai"], tmp_path
    )
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_makes_an_image_from_explicit_files(downloaded, tmp_path):
    root, _ = downloaded
    args = ["a lighthouse", "--models-dir", str(tmp_path / "empty"), "--model", "tinytaming", "--clip", "tinyopenai"]
    args += ["--vqgan-config", str(root / "vqgan" / "tinytaming.yaml")]
    args += ["--vqgan-checkpoint", str(root / "vqgan" / "tinytaming.ckpt")]
    args += ["--clip-checkpoint", str(root / "clip" / "tinyopenai-openai.pt")]
    code, out = _cli(args, tmp_path)
    assert code == 0 and out.is_file()


def test_cli_with_a_hub_clip(downloaded, tmp_path):
    root, _ = downloaded
    code, out = _cli(
        ["a lighthouse", "--models-dir", str(root), "--model", "tinytaming", "--clip", "tinyhub"], tmp_path
    )
    assert code == 0 and out.is_file()


@pytest.mark.slow
def test_real_size_files_load_and_step(tmp_path):
    """ViT-B/32 as OpenAI's TorchScript archive and as the Hub's safetensors, imagenet f16 16384 as taming's
    Lightning checkpoint: random weights of the real sizes, through the same paths."""
    from engine.cli import main

    root = tmp_path / "models"
    realformats.write_openai_torchscript(
        root / "clip" / "ViT-B-32-openai.pt", embed=512, image=224, patch=32, width=768, layers=12, text_width=512,
        text_layers=12,
    )  # fmt: skip
    doc = realformats.tiny_taming_yaml(ch=128, z_channels=256, embed_dim=256, n_embed=16384)
    doc["model"]["params"]["ddconfig"].update(ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2)
    realformats.write_lightning_vqgan(root / "vqgan", "vqgan_imagenet_f16_16384", yaml_doc=doc)
    args = ["a lighthouse", "--models-dir", str(root), "-s", "64x64", "--steps", "1", "--cutn", "2", "-q"]
    assert main([*args, "-o", str(tmp_path / "a.png")]) == 0
    (root / "clip" / "ViT-B-32-openai.pt").unlink()
    realformats.write_hub_state_dict(root / "clip" / "ViT-B-32-openai.safetensors", "ViT-B-32")
    assert main([*args, "-o", str(tmp_path / "b.png")]) == 0
