"""Compositions: parts across the width (or height), mirrored pairs, tone and semantic symmetry, size weights."""

import json

import pytest
import torch

from engine.cutouts import NO_AUGMENT, Augment, Cutouts
from engine.errors import InvalidSpec
from engine.losses import region_weights, semantic_symmetry, size_weights, tone_asymmetry
from engine.spec import COMPOSITION_LR, DEFAULT_LR, JobSpec

# -- weights ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_region_weights_sum_to_one_and_are_right_at_the_edges(parts):
    position = torch.linspace(0, 1, 101)
    w = region_weights(position, parts)
    assert w.shape == (101, parts)
    assert torch.allclose(w.sum(1), torch.ones(101))
    assert (w >= 0).all()
    assert w[0, 0] == 1 and w[-1, -1] == 1
    for k in range(parts):  # each part owns its own centre
        centre = torch.tensor([(k + 0.5) / parts])
        assert region_weights(centre, parts)[0, k].item() == pytest.approx(1.0)


def test_region_weights_blend_smoothly():
    position = torch.linspace(0, 1, 1001)
    w = region_weights(position, 3)
    assert (w[1:, 0] <= w[:-1, 0] + 1e-7).all()  # the first part fades out monotonically
    assert (w[1:, 2] >= w[:-1, 2] - 1e-7).all()
    assert (w[1:] - w[:-1]).abs().max() < 0.01  # no jumps
    assert w[500, 1].item() == pytest.approx(1.0)  # the middle of three
    assert w[333, 0].item() == pytest.approx(w[333, 1].item(), abs=0.02)  # halfway between the first two centres


def test_size_weights():
    sizes = torch.tensor([32.0, 64.0, 128.0, 256.0])
    assert size_weights(sizes, 256, 0).tolist() == [1, 1, 1, 1]
    big = size_weights(sizes, 256, 1.0)
    small = size_weights(sizes, 256, -1.0)
    assert big.mean().item() == pytest.approx(1) and small.mean().item() == pytest.approx(1)
    assert big[-1] > big[0] and small[0] > small[-1]


# -- loss terms on constructed images -----------------------------------------------------------------------


def _symmetric_image(h=48, w=96, seed=0):
    half = torch.rand(1, 3, h, w // 2, generator=torch.Generator().manual_seed(seed))
    return torch.cat([half, half.flip(-1)], dim=-1)


def test_tone_asymmetry_is_zero_for_a_symmetric_image_and_rises_when_half_is_flipped():
    image = _symmetric_image()
    assert tone_asymmetry(image).item() < 1e-6
    broken = image.clone()
    broken[..., 48:] = broken[..., 48:].flip(-2)  # the right half upside down
    assert tone_asymmetry(broken).item() > 0.02
    # mirroring the whole picture does not change its asymmetry
    assert tone_asymmetry(broken.flip(-1)).item() == pytest.approx(tone_asymmetry(broken).item(), rel=1e-5)
    # a left-dark, right-bright picture is maximally asymmetric in tone
    ramp = torch.zeros(1, 3, 32, 64)
    ramp[..., 32:] = 1
    assert tone_asymmetry(ramp).item() == pytest.approx(1.0)


def test_semantic_symmetry_values():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, generator=g), torch.randn(8, generator=g)
    left = torch.randn(5, 8, generator=g)
    same_offset = left - a + b  # the right cutouts differ from B exactly as the left ones differ from A
    assert semantic_symmetry(left, same_offset, a, b).item() == pytest.approx(0, abs=1e-6)
    opposite = -(left - a) + b
    assert semantic_symmetry(left, opposite, a, b).item() == pytest.approx(2, abs=1e-6)


# -- cutouts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("augment", [NO_AUGMENT, Augment(noise=0.0)])
def test_mirrored_cutouts_see_the_mirror_image(augment):
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 64, 128, generator=g)
    cutouts = Cutouts(32, 10, augment=augment, mirror=True)
    batch = cutouts(image, [torch.Generator().manual_seed(1)])
    pairs = cutouts.pairs()
    assert pairs == 5
    originals, copies = batch.images[:pairs], batch.images[pairs : 2 * pairs]
    centers = batch.centers[0]
    assert (centers[:pairs, 0] <= 0.5 + 1e-6).all()  # originals on the left
    assert torch.allclose(centers[pairs:, 0], 1 - centers[:pairs, 0], atol=1e-6)
    assert torch.allclose(centers[pairs:, 1], centers[:pairs, 1])
    assert torch.equal(batch.sizes[0, :pairs], batch.sizes[0, pairs:])
    # the copy of a cutout of the mirrored image is the original cutout flipped
    mirrored = cutouts(image.flip(-1), [torch.Generator().manual_seed(1)])
    assert torch.allclose(mirrored.images[pairs : 2 * pairs], originals, atol=1e-4)
    # on a symmetric image, both cutouts of a pair see the same picture
    sym = _symmetric_image(64, 128)
    batch = cutouts(sym, [torch.Generator().manual_seed(1)])
    assert torch.allclose(batch.images[:pairs], batch.images[pairs : 2 * pairs], atol=1e-4)
    assert not torch.allclose(copies, originals, atol=1e-2)  # on the random image they differ


def test_stratified_cutouts_cover_the_width_evenly():
    image = torch.rand(1, 3, 64, 192)
    n = 16
    cutouts = Cutouts(32, n, augment=NO_AUGMENT, stratify=0)
    for seed in range(3):
        batch = cutouts(image, [torch.Generator().manual_seed(seed)])
        x = batch.centers[0, :, 0] * 192
        size = batch.sizes[0]
        u = (x - size / 2) / (192 - size)  # where each centre sits in its allowed range
        counts = torch.bincount((u * n).floor().long().clamp(0, n - 1), minlength=n)
        assert counts.tolist() == [1] * n


# -- specs --------------------------------------------------------------------------------------------------


def test_spec_layouts_and_their_defaults():
    panorama = JobSpec("Sunny clearing in the enchanted garden / Enchanted garden", width=512, height=256)
    assert panorama.layout == "panorama" and panorama.lr == COMPOSITION_LR
    assert [[p.text for p in r] for r in panorama.regions] == [
        ["Sunny clearing in the enchanted garden"],
        ["Enchanted garden"],
    ]
    assert JobSpec("a poster of AC/DC").layout == "single" and JobSpec("a cat").lr == DEFAULT_LR
    mirror = JobSpec("Entrance to heaven / Entrance to hell", layout="mirror")
    assert (mirror.tone_weight, mirror.semantic_weight) == (0.5, 0.1)
    both = JobSpec("a | b:0.5 / c:2 | d:-1", layout="vertical")
    assert [[(p.text, p.weight) for p in r] for r in both.regions] == [[("a", 1), ("b", 0.5)], [("c", 2), ("d", -1)]]
    assert len(both.prompts) == 4
    recorded = json.loads(mirror.to_json())  # the recipe records every weight, resolved
    assert recorded["lr"] == COMPOSITION_LR and recorded["tone_weight"] == 0.5 and recorded["layout"] == "mirror"
    assert JobSpec.from_json(mirror.to_json()) == mirror
    assert JobSpec("a / b", layout="mirror", tone_weight=0, semantic_weight=0).tone_weight == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompt="a / b", layout="single"), "need the panorama"),
        (dict(prompt="a / b / c", layout="mirror"), "one prompt or two"),
        (dict(prompt="a / b", semantic_weight=0.2), "needs the mirror layout"),
        (dict(prompt="a", layout="spiral"), "Unknown layout"),
        (dict(prompt="a / b / c / d / e"), "at most 4"),
        (dict(prompt="a", tone_weight=-1), "tone_weight"),
    ],
)
def test_bad_compositions_are_refused(kwargs, message):
    with pytest.raises(InvalidSpec, match=message):
        JobSpec(**kwargs)


# -- the loop -----------------------------------------------------------------------------------------------


def test_panorama_weights_cutouts_by_position(engine, tiny_spec):
    spec = tiny_spec("red | bright:0.5 / blue", width=128, height=48, layout="panorama")
    run = engine.start(spec)
    centers = torch.tensor([[0.05, 0.5], [0.5, 0.5], [0.95, 0.5]])
    weights = engine._cutout_weights(run, centers, torch.tensor([48.0, 48.0, 48.0]))
    assert weights.shape == (3, 3)  # cutouts x targets (red, bright, blue)
    assert weights[0].tolist() == [1, 1, 0] and weights[2].tolist() == [0, 0, 1]
    assert weights[1, 0].item() == pytest.approx(0.5) and weights[1, 2].item() == pytest.approx(0.5)
    vertical = engine.start(tiny_spec("sky / sea", width=48, height=128, layout="vertical"))
    w = engine._cutout_weights(vertical, torch.tensor([[0.5, 0.05], [0.5, 0.95]]), torch.tensor([48.0, 48.0]))
    assert w.tolist() == [[1, 0], [0, 1]]


@pytest.mark.parametrize("layout", ["panorama", "vertical", "mirror"])
def test_compositions_run_and_keep_their_recipe(engine, tiny_spec, layout):
    from engine.images import read_recipe

    spec = tiny_spec(
        "a garden / a forest",
        width=96 if layout != "vertical" else 48,
        height=48 if layout != "vertical" else 96,
        layout=layout,
        steps=4,
        size_weight=0.5,
    )
    result = engine.generate(spec)
    assert read_recipe(result.image)["spec"] == json.loads(spec.to_json())
    assert [t for t, _ in result.scores] == ["a garden", "a forest"]


def _asymmetry(engine, spec, seeds=3):
    values = []
    for seed in range(seeds):
        run = engine.start(spec.replace(seed=seed))
        while not run.done:
            engine.step([run])
        values.append(tone_asymmetry(run.image()).item())
    return sum(values) / len(values)


@pytest.mark.parametrize(("generator", "steps", "lr", "most"), [("fourier", 40, None, 0.2), ("vqgan", 60, 0.2, 0.9)])
def test_symmetry_terms_reduce_asymmetry(engine, tiny_spec, generator, steps, lr, most, capsys):
    """A juxtaposition with the default symmetry weights ends measurably more symmetric than without them."""
    spec = tiny_spec(
        "heaven / hell", width=96, height=48, cutn=16, steps=steps, generator=generator, layout="mirror", lr=lr
    )
    with_terms = _asymmetry(engine, spec)
    without = _asymmetry(engine, spec.replace(tone_weight=0.0, semantic_weight=0.0))
    with capsys.disabled():
        print(
            f"\n{generator}: tone asymmetry {without:.4f} without the symmetry terms, {with_terms:.4f} with them "
            f"({with_terms / without:.2f}x)"
        )
    assert with_terms < most * without
