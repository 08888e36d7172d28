"""A short real-size run on CUDA (imagenet f16 16384 VQGAN + ViT-B/32, random weights). Skipped without a GPU."""

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_size_cuda_run():
    from engine.models.tiny import real_size_clip, real_size_vqgan
    from engine.run import Engine
    from engine.spec import JobSpec

    device = torch.device("cuda")
    engine = Engine(real_size_clip(device=device), vqgan=real_size_vqgan(device), device=device)
    spec = JobSpec("a cityscape at night", width=256, height=256, steps=5, cutn=32, seed=0)
    seen = []
    result = engine.generate(spec, on_progress=seen.append)
    assert (result.width, result.height) == (256, 256)
    assert all(torch.isfinite(torch.tensor(p.loss)) for p in seen)
    run = engine.start(spec)
    engine.step([run])
    assert run.params.device.type == "cuda"
