"""The fast forms of the models compute what the stock ones do; precision, checkpointing and compile options."""

import logging

import pytest
import torch

from engine.engine import Engine
from engine.speed import PLAIN, Speed
from engine.speed.fast import (
    ClassTokenBlock,
    PackedSelfAttention,
    PatchEmbed,
    attention,
    autocast_dtype,
    fast_image_tower,
    loss_scale,
)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _tower_matches(visual, size):
    fast = fast_image_tower(visual)
    assert isinstance(fast.conv1, PatchEmbed)
    assert isinstance(fast.transformer.resblocks[-1], ClassTokenBlock)
    assert all(isinstance(b.attn, PackedSelfAttention) for b in fast.transformer.resblocks[:-1])
    # the copy shares the original weights: nothing is duplicated in memory
    originals = {p.data_ptr() for p in visual.parameters()}
    assert {p.data_ptr() for p in fast.parameters()} <= originals
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    stock_out = visual(x)
    fast_out = fast(x)
    assert _rel(fast_out, stock_out) < 1e-5
    g = torch.randn_like(stock_out)
    (stock_grad,) = torch.autograd.grad(stock_out, x, g)
    (fast_grad,) = torch.autograd.grad(fast(x), x, g)
    assert _rel(fast_grad, stock_grad) < 1e-4


def test_fast_tower_matches_stock_tiny(engine):
    _tower_matches(engine.perceptor.model.visual, engine.perceptor.input_size)


def test_fast_tower_matches_stock_real_size_vit_b32():
    from engine.models.tiny import real_size_clip

    torch.manual_seed(0)
    perceptor = real_size_clip("ViT-B-32")
    _tower_matches(perceptor.model.visual, 224)


def test_attention_on_the_cpu_computes_in_fp32_under_bf16_autocast():
    """The CPU's bf16 attention kernel is slower than its fp32 one at CLIP's lengths: attention runs in fp32 and
    only its result is rounded, whatever the autocast hands it."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 2, 50, 16, generator=gen).to(torch.bfloat16) for _ in range(3))
    exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, exact.to(torch.bfloat16))


def test_the_stock_model_is_left_untouched(engine):
    visual = engine.perceptor.model.visual
    assert isinstance(visual.transformer.resblocks[0].attn, torch.nn.MultiheadAttention)
    assert isinstance(visual.conv1, torch.nn.Conv2d)


def _engine(engine, **speed):
    return Engine(engine.perceptor, engine.vqgan, device="cpu", speed=Speed(**speed) if speed else PLAIN)


def _steps(engine, spec, n):
    run = engine.start(spec)
    for _ in range(n):
        engine.step([run])
    return run


def test_default_speed_steps_like_the_plain_settings(engine, tiny_spec):
    """The fast forms (packed CLIP attention, matmul patches, channels-last) compute what the stock modules do; the
    precision, which `auto` makes bf16 on a CPU with native bf16, is held at fp32 here (test_cpu_bf16 covers it)."""
    spec = tiny_spec(steps=4)
    fast = _steps(_engine(engine, precision="fp32", fast_clip=True, channels_last=True), spec, 4)
    plain = _steps(_engine(engine), spec, 4)
    assert _rel(fast.params, plain.params) < 1e-4
    assert torch.allclose(fast.last_losses, plain.last_losses, rtol=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_stays_within_tolerance_of_fp32(engine, tiny_spec, precision):
    spec = tiny_spec(steps=1, cutn=16)
    grads = {}
    for name, eng in (("fp32", _engine(engine, precision="fp32")), (precision, _engine(engine, precision=precision))):
        run = eng.start(spec)
        seen = []
        run.params.register_hook(lambda g, seen=seen: seen.append(g.detach().clone()))
        eng.step([run])
        grads[name] = (run.last_losses, seen[0])
    assert _engine(engine, precision=precision).fast.dtype is not None
    (loss_ref, grad_ref), (loss_mix, grad_mix) = grads["fp32"], grads[precision]
    assert torch.allclose(loss_mix, loss_ref, rtol=2e-2), (loss_mix, loss_ref)
    cosine = torch.nn.functional.cosine_similarity(grad_mix.flatten(), grad_ref.flatten(), dim=0).item()
    assert cosine > 0.95, cosine


def test_auto_precision_on_cpu_is_bf16_only_where_it_is_native(monkeypatch):
    from engine.speed import fast

    cpu = torch.device("cpu")
    for native, expected in ((False, None), (True, torch.bfloat16)):
        monkeypatch.setattr(fast, "cpu_computes_bf16", lambda native=native: native)
        assert autocast_dtype(Speed(), cpu) is expected
    assert autocast_dtype(Speed(precision="bf16"), cpu) is torch.bfloat16
    assert autocast_dtype(Speed(precision="fp32"), cpu) is None
    assert loss_scale(Speed(precision="fp16"), cpu) > 1 and loss_scale(Speed(), cpu) == 1


def test_checkpointed_decoder_gives_the_same_steps(engine, tiny_spec):
    spec = tiny_spec(steps=3)
    plain = _steps(_engine(engine, precision="fp32"), spec, 3)
    checkpointed_engine = _engine(engine, precision="fp32", checkpoint=True)
    checkpointed = _steps(checkpointed_engine, spec, 3)
    assert torch.allclose(checkpointed.params, plain.params, atol=1e-6)
    assert any("Checkpointed" in type(m).__name__ for m in checkpointed_engine.fast._decoder.modules())


def test_compile_failure_falls_back_to_eager(engine, tiny_spec, monkeypatch, caplog):
    def broken_compile(fn, **kw):
        def compiled(*a, **k):
            raise RuntimeError("no compiler here")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    spec = tiny_spec(steps=2)
    with caplog.at_level(logging.WARNING, logger="engine.speed.fast"):
        compiled = _steps(_engine(engine, precision="fp32", compile=True), spec, 2)
    plain = _steps(_engine(engine, precision="fp32"), spec, 2)
    assert torch.allclose(compiled.params, plain.params)
    assert "running it eagerly" in caplog.text


def test_compiled_steps_match_eager(engine, tiny_spec):
    """torch.compile for real (inductor on this CPU): the same steps within float tolerance."""
    spec = tiny_spec(steps=2, cutn=4)
    compiled_engine = _engine(engine, precision="fp32", compile=True)
    compiled = _steps(compiled_engine, spec, 2)
    eager = _steps(_engine(engine, precision="fp32"), spec, 2)
    assert not compiled_engine.fast._decoder_call.failed and not compiled_engine.fast._visual_call.failed
    assert _rel(compiled.params, eager.params) < 1e-3


def test_speed_from_env():
    speed = Speed.from_env({"IMAGINE_PRECISION": "fp16", "IMAGINE_COMPILE": "1", "IMAGINE_CHANNELS_LAST": "0"})
    assert (speed.precision, speed.compile, speed.channels_last, speed.checkpoint) == ("fp16", True, False, False)
    assert Speed.from_env({}) == Speed()
    with pytest.raises(Exception, match="precision"):
        Speed.from_env({"IMAGINE_PRECISION": "fp8"})
