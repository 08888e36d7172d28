"""The loop's parts on constructed inputs: losses, clamp, quantiser, generators, cutouts."""

import math

import pytest
import torch

from engine.cutouts import NO_AUGMENT, Augment, Cutouts
from engine.generators.fourier import FourierGenerator
from engine.generators.parts import clamp_with_grad
from engine.generators.vqgan import quantize_straight_through
from engine.losses import cosine_scores, prompt_losses, spherical_distance


def _unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_spherical_distance_is_half_angle_squared():
    x = _unit([1, 0], [0, 1], [-1, 0])
    y = _unit([1, 0])
    d = spherical_distance(x, y).squeeze(1)
    expected = torch.tensor([0.0, (math.pi / 2) ** 2 / 2, math.pi**2 / 2])
    assert torch.allclose(d, expected, atol=1e-5)


def test_prompt_losses_weights_and_stop():
    embeds = _unit([1, 0], [0.8, 0.6]).requires_grad_(True)
    targets = _unit([1, 0], [0, 1])
    weights = torch.tensor([2.0, -1.0])
    stops = torch.tensor([float("-inf"), float("-inf")])
    losses = prompt_losses(embeds, targets, weights, stops)
    plain = spherical_distance(embeds, targets).mean(0)
    assert torch.allclose(losses, torch.stack([2 * plain[0], -plain[1]]))
    # a stop above the distance cuts that prompt's gradient but keeps its value
    stopped = prompt_losses(embeds, targets, weights, torch.tensor([10.0, float("-inf")]))
    assert torch.allclose(stopped, losses)
    (g_stop,) = torch.autograd.grad(stopped[0], embeds)
    assert g_stop.abs().sum() == 0


def test_cosine_scores():
    s = cosine_scores(_unit([1, 0], [1, 0]), _unit([1, 0], [0, 1], [-1, 0]))
    assert torch.allclose(s, torch.tensor([1.0, 0.0, -1.0]), atol=1e-6)


def test_clamp_with_grad_passes_only_gradients_that_return_into_range():
    x = torch.tensor([-0.5, 0.5, 1.5, 1.5, -0.5], requires_grad=True)
    y = clamp_with_grad(x, 0.0, 1.0)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0]))
    grad = torch.tensor([-1.0, 1.0, 1.0, -1.0, 1.0])
    y.backward(grad)
    # below range: a negative gradient (descent raises x) passes; above: a positive one passes
    assert torch.equal(x.grad, torch.tensor([-1.0, 1.0, 1.0, 0.0, 0.0]))


def test_straight_through_quantiser():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    z = torch.tensor([[[[0.9]], [[1.2]]], [[[-0.8]], [[1.7]]]]).view(2, 2, 1, 1).requires_grad_(True)
    z_q = quantize_straight_through(z, codebook)
    assert torch.equal(z_q.detach().flatten(), torch.tensor([1.0, 1.0, -1.0, 2.0]))
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_fourier_encode_decode_inverse():
    gen = FourierGenerator()
    image = torch.rand(1, 3, 32, 48) * 0.9 + 0.05
    assert torch.allclose(gen.decode(gen.encode(image)), image, atol=1e-4)
    g = torch.Generator().manual_seed(0)
    params = gen.init_params(2, 48, 32, g)
    assert gen.decode(params).shape == (2, 3, 32, 48)
    assert gen.output_size(49, 33) == (48, 32)


def test_cutouts_shapes_and_ranges():
    cut = Cutouts(cut_size=16, cutn=10, cut_pow=1.0)
    images = torch.rand(2, 3, 40, 64)
    batch = cut(images, [torch.Generator().manual_seed(i) for i in range(2)])
    assert batch.images.shape == (20, 3, 16, 16)
    assert batch.centers.shape == (2, 10, 2) and batch.sizes.shape == (2, 10)
    assert ((batch.sizes >= 16) & (batch.sizes <= 40)).all()
    assert ((batch.centers >= 0) & (batch.centers <= 1)).all()


def test_cutout_without_augment_is_an_antialiased_crop():
    # A full-height crop of a square image, no augmentation: equals a plain box-filtered resize.
    cut = Cutouts(cut_size=8, cutn=1, cut_pow=1e-9, augment=NO_AUGMENT)
    image = torch.rand(1, 3, 32, 32)
    batch = cut(image, [torch.Generator().manual_seed(0)])
    reference = torch.nn.functional.avg_pool2d(image, 4)
    # max_size 32 with cut_pow ~ 0 gives size 32 (the whole image) sampled at level log2(32/8)=2 of the pyramid
    assert batch.sizes.item() == 32
    assert torch.allclose(batch.images, reference, atol=0.08)
    assert (batch.images - reference).abs().mean() < 0.03


def test_cutouts_are_reproducible_per_generator_and_differentiable():
    cut = Cutouts(cut_size=16, cutn=4, augment=Augment())
    images = torch.rand(1, 3, 48, 48, requires_grad=True)
    a = cut(images, [torch.Generator().manual_seed(7)]).images
    b = cut(images, [torch.Generator().manual_seed(7)]).images
    c = cut(images, [torch.Generator().manual_seed(8)]).images
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert images.grad.abs().sum() > 0


@pytest.mark.parametrize("levels", [1, 4])
def test_cutouts_of_a_batch_match_cutouts_one_by_one(levels):
    cut = Cutouts(cut_size=16, cutn=4, levels=levels)
    images = torch.rand(3, 3, 64, 64)
    together = cut(images, [torch.Generator().manual_seed(i) for i in range(3)]).images
    alone = torch.cat([cut(images[i : i + 1], [torch.Generator().manual_seed(i)]).images for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)
