"""Real-size runs on CUDA (imagenet f16 16384 VQGAN + ViT-B/32, random weights). Skipped without a GPU."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def models():
    from engine.models.tiny import real_size_clip, real_size_vqgan

    device = torch.device("cuda")
    return real_size_clip(device=device), real_size_vqgan(device), device


def test_real_size_cuda_run(models):
    from engine.engine import Engine
    from engine.spec import JobSpec

    perceptor, vqgan, device = models
    engine = Engine(perceptor, vqgan=vqgan, device=device)
    spec = JobSpec("a cityscape at night", width=256, height=256, steps=5, cutn=32, seed=0)
    seen = []
    result = engine.generate(spec, on_progress=seen.append)
    assert (result.width, result.height) == (256, 256)
    assert all(torch.isfinite(torch.tensor(p.loss)) for p in seen)
    run = engine.start(spec)
    engine.step([run])
    assert run.params.device.type == "cuda"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_stays_within_tolerance_of_fp32(models, precision):
    """One step's losses and gradient under autocast match fp32 closely, and a 20-step run's loss curve follows
    the fp32 one."""
    from engine.engine import Engine
    from engine.spec import JobSpec
    from engine.speed import Speed

    perceptor, vqgan, device = models
    reference = Engine(perceptor, vqgan=vqgan, device=device, speed=Speed(precision="fp32"))
    mixed = Engine(perceptor, vqgan=vqgan, device=device, speed=Speed(precision=precision))
    spec = JobSpec("a lighthouse in a storm", width=256, height=256, steps=20, cutn=32, seed=3)

    # Adam's first step moves every coordinate by lr * sign(grad): compare the gradient before the step instead.
    def gradient(engine):
        run = engine.start(spec)
        grads = []
        run.params.register_hook(lambda g: grads.append(g.detach().clone()))
        engine.step([run])
        return run.last_losses, grads[0]

    losses_ref, grad_ref = gradient(reference)
    losses_mix, grad_mix = gradient(mixed)
    assert torch.allclose(losses_mix, losses_ref, rtol=2e-2, atol=1e-3), (losses_mix, losses_ref)
    cosine = torch.nn.functional.cosine_similarity(grad_mix.flatten(), grad_ref.flatten(), dim=0).item()
    assert cosine > 0.95, cosine

    curves = []
    for engine in (reference, mixed):
        run = engine.start(spec)
        curve = []
        while not run.done:
            engine.step([run])
            curve.append(float(run.last_losses.sum()))
        curves.append(torch.tensor(curve))
    drop_ref = curves[0][0] - curves[0][-1]
    assert torch.isfinite(curves[1]).all()
    assert (curves[1] - curves[0]).abs().max() < 0.25 * abs(drop_ref) + 0.02, curves


def test_compiled_step_matches_eager(models):
    from engine.engine import Engine
    from engine.spec import JobSpec
    from engine.speed import Speed

    perceptor, vqgan, device = models
    eager = Engine(perceptor, vqgan=vqgan, device=device, speed=Speed(precision="fp32"))
    compiled = Engine(perceptor, vqgan=vqgan, device=device, speed=Speed(precision="fp32", compile=True))
    spec = JobSpec("a forest", width=256, height=256, steps=3, cutn=16, seed=1)
    a, b = eager.start(spec), compiled.start(spec)
    for _ in range(3):
        eager.step([a])
        compiled.step([b])
    assert not compiled.fast._decoder_call.failed
    assert torch.allclose(a.last_losses, b.last_losses, rtol=1e-3, atol=1e-4)


def test_decoder_checkpointing_gives_the_same_step(models):
    from engine.engine import Engine
    from engine.spec import JobSpec
    from engine.speed import Speed

    perceptor, vqgan, device = models
    plain = Engine(perceptor, vqgan=vqgan, device=device, speed=Speed(precision="fp32"))
    checkpointed = Engine(perceptor, vqgan=vqgan, device=device, speed=Speed(precision="fp32", checkpoint=True))
    spec = JobSpec("a desert", width=256, height=256, steps=2, cutn=16, seed=2)
    a, b = plain.start(spec), checkpointed.start(spec)
    plain.step([a])
    checkpointed.step([b])
    assert torch.allclose(a.params, b.params, rtol=1e-4, atol=1e-5)
