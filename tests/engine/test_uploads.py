"""Hostile pictures: every one is refused with a sentence (no path of this machine) before it is decoded in
full, whether it comes from an upload, a file the engine reloads (Reroll, Continue, recovery) or the CLI."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from engine import uploads
from engine.errors import CheckpointError, InvalidSpec
from engine.images import fit, load_image, read_recipe, recipe
from engine.spec import JobSpec
from tests import bombs
from tests.bombs import HOSTILE


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server-secret-folder")
    files = {}
    for name, (make, expected) in HOSTILE.items():
        path = folder / f"{len(files)}.png"
        path.write_bytes(make())
        files[name] = (path, expected)
    return files


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_pictures_are_refused_with_a_sentence_and_no_path(hostile, name):
    path, expected = hostile[name]
    with pytest.raises(InvalidSpec) as caught:
        load_image(path, "the init image")
    message = str(caught.value)
    assert expected in message and message.startswith("The init image")
    assert str(path.parent) not in message and "server-secret-folder" not in message
    from engine import uploads

    with pytest.raises(InvalidSpec, match="^The image prompt"):
        uploads.check_image(path.read_bytes(), "the image prompt")


def test_good_pictures_pass_in_every_format():
    from engine import uploads

    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        assert uploads.check_image(bombs.picture((80, 60), fmt)) == (80, 60)
    assert uploads.check_image(bombs.picture((800, 100))) == (800, 100)  # 8:1 is the limit, not beyond
    assert uploads.check_image(bombs.animation(3)) == (4, 4)  # a short animation: its first frame


def test_a_missing_file_is_a_sentence_without_its_path(tmp_path):
    with pytest.raises(InvalidSpec) as caught:
        load_image(tmp_path / "gone.png", "the init image")
    assert str(tmp_path) not in str(caught.value) and "missing" in str(caught.value)


def test_stored_names_are_content_digests():
    from engine import uploads

    data = bombs.picture()
    name = uploads.stored_name(data)
    assert name.endswith(".png") and len(name) == 36 and name == uploads.stored_name(data)
    assert uploads.stored_name(bombs.picture(fmt="JPEG")).endswith(".jpg")


def test_fit_never_makes_more_than_the_target(monkeypatch):
    """The 65500x1 line used to be scaled by 48 to cover 64x48: 3,144,000x48 pixels before the crop."""
    made = []
    resize = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        made.append(size)
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    for source in [(65500, 1), (1, 30000), (300, 200), (8, 6), (64, 48)]:
        out = fit(Image.new("RGB", source), 64, 48)
        assert out.size == (64, 48)
    assert all(w * h <= 4 * 64 * 48 for w, h in made), made


def test_fit_crops_the_centre():
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (100, 0, 200, 100))  # the middle third is red
    out = fit(image, 50, 50)
    assert out.size == (50, 50) and out.getpixel((25, 25)) == (255, 0, 0) and out.getpixel((1, 25))[0] > 200


@pytest.mark.parametrize("field", ["init_image", "image_prompts"])
def test_a_run_that_reloads_a_hostile_file_fails_with_a_sentence(engine, tiny_spec, hostile, field):
    """Reroll, Continue, Branch and recovery start runs from the stored spec: the file is checked again."""
    path, _ = hostile["a 65500x1 line"]
    spec = tiny_spec(**({field: str(path)} if field == "init_image" else {field: (str(path),)}))
    with pytest.raises(InvalidSpec, match="too long and thin") as caught:
        engine.start(spec)
    assert str(path.parent) not in str(caught.value)


def test_recipes_name_images_without_folders(tiny_spec):
    spec = tiny_spec(init_image="/srv/imagine/data/inputs/ab12.png", image_prompts=("/srv/x/inputs/cd34.png:0.5",))
    meta = recipe(spec, 64, 48, 6)
    assert meta["spec"]["init_image"] == "ab12.png" and meta["spec"]["image_prompts"] == ["cd34.png:0.5"]
    assert "/srv" not in str(meta)
    assert spec.init_image.startswith("/srv")  # the job itself still knows where its file is


def test_read_recipe_refuses_what_is_not_a_recipe(tmp_path):
    for name, data in [("garbage.png", b"\x00garbage"), ("photo.jpg", bombs.picture(fmt="JPEG"))]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidSpec, match="is not a PNG made by imagine"):
            read_recipe(path)
    assert read_recipe(bombs.picture()) is None
    with pytest.raises(InvalidSpec, match="Cannot open"):
        read_recipe(tmp_path / "missing.png")


def test_public_messages_carry_no_paths():
    from engine.errors import public_message

    error = InvalidSpec("/srv/imagine/data/inputs/1a2b-cat.png is 10000x10000; images above 64 megapixels")
    assert public_message(error) == "1a2b-cat.png is 10000x10000; images above 64 megapixels"
    missing = CheckpointError("The model x is not installed (/srv/models/x.ckpt is missing).", "/srv/models/x.ckpt")
    assert "/srv" not in public_message(missing) and "not installed" in public_message(missing)
    for kept in ["a city / a forest", "AC/DC at night", "see https://example.com/a/b", "1/2 of a cake"]:
        assert public_message(InvalidSpec(kept)) == kept


def test_memory_budget_refuses_what_cannot_fit():
    from engine.memory import Budget, job_bytes

    gpu = Budget(available=20 * 10**9, half=True, where="the GPU")
    gpu.check(512, 512, 32)
    with pytest.raises(InvalidSpec, match=r"A 4096x4096 image with 32 cutouts needs about \d+\.\d GB .* the GPU"):
        gpu.check(4096, 4096, 32)
    # the decoder's attention grows with the square of the pixels: 4096x4096 needs far more than 16 x 1024x1024
    assert job_bytes(4096, 4096, 1, False) > 16 * job_bytes(1024, 1024, 1, False)
    assert job_bytes(512, 512, 32, True) < job_bytes(512, 512, 32, False)
    assert job_bytes(512, 512, 64, False) > job_bytes(512, 512, 32, False)


def test_a_snapshot_that_is_not_one_is_a_sentence(tmp_path):
    from engine.run import load_snapshot

    for data in [b"not a snapshot", bombs.picture()]:
        path = tmp_path / "s.pt"
        path.write_bytes(data)
        with pytest.raises(InvalidSpec, match="s.pt is not a snapshot written by imagine") as caught:
            load_snapshot(path)
        assert str(tmp_path) not in str(caught.value)


def test_spec_with_a_lone_surrogate_is_refused():
    with pytest.raises(InvalidSpec, match="not valid text"):
        JobSpec("a \ud800 lighthouse")
    with pytest.raises(InvalidSpec, match="not valid text"):
        JobSpec("a lighthouse", prompt_schedule=((5, "a \udcff castle"),))


def _grey16(width: int = 64, height: int = 32) -> bytes:
    """A 16-bit greyscale PNG (PIL mode I;16): black on the left to white on the right."""
    import numpy as np

    row = np.linspace(0, 65535, width).round().astype(np.uint16)
    image = Image.fromarray(np.tile(row, (height, 1)))
    assert image.mode == "I;16"
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _halves(size=(40, 20)) -> Image.Image:
    """Red on the left half, blue on the right."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


def _jpeg_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: how a viewer must turn the stored pixels
    out = io.BytesIO()
    _halves().save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _mpo() -> bytes:
    """A multi-picture JPEG as phones write them (two frames)."""
    out = io.BytesIO()
    _halves().save(out, format="MPO", save_all=True, append_images=[Image.new("RGB", (40, 20), (0, 255, 0))])
    return out.getvalue()


def _reddish(pixel) -> bool:
    return pixel[0] > 200 and pixel[2] < 60


def _bluish(pixel) -> bool:
    return pixel[2] > 200 and pixel[0] < 60


def test_a_16_bit_grey_png_keeps_its_tones():
    """Converted straight to RGB, every 16-bit value above 255 was clipped: the picture came out white."""
    data = _grey16()
    for image in (uploads.open_image(data), load_image(data, "the init image")):
        assert image.mode == "RGB" and image.size == (64, 32)
        left, middle, right = (image.getpixel((x, 16)) for x in (0, 32, 63))
        assert left == (0, 0, 0) and right == (255, 255, 255)
        assert 120 <= middle[0] <= 135 and middle[0] == middle[1] == middle[2]


@pytest.mark.parametrize(
    ("orientation", "size", "red_at", "blue_at"),
    [
        (1, (40, 20), (2, 10), (37, 10)),  # as stored
        (3, (40, 20), (37, 10), (2, 10)),  # upside down: red ends on the right
        (6, (20, 40), (10, 2), (10, 37)),  # turned a quarter clockwise: the left half ends on top
        (8, (20, 40), (10, 37), (10, 2)),  # a quarter anticlockwise: the left half ends at the bottom
    ],
)
def test_a_photo_is_turned_the_way_its_exif_says(orientation, size, red_at, blue_at):
    data = _jpeg_with_orientation(orientation)
    assert uploads.check_image(data) == size
    for image in (uploads.open_image(data), load_image(data)):
        assert image.size == size
        assert _reddish(image.getpixel(red_at)) and _bluish(image.getpixel(blue_at))


def test_an_mpo_photo_is_read_and_kept_as_a_jpeg():
    data = _mpo()
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
    image = uploads.open_image(data)
    assert image.size == (40, 20) and _reddish(image.getpixel((2, 10)))  # the first picture
    assert uploads.stored_name(data).endswith(".jpg")


def test_no_accepted_picture_is_kept_under_an_unknown_extension():
    apng = io.BytesIO()
    _halves().save(apng, format="PNG", save_all=True, append_images=[_halves()])
    made = {fmt: bombs.picture(fmt=fmt) for fmt in ("PNG", "JPEG", "WEBP", "GIF")}
    made.update(
        {"APNG": apng.getvalue(), "MPO": _mpo(), "16-bit PNG": _grey16(), "EXIF JPEG": _jpeg_with_orientation(6)}
    )
    for what, data in made.items():
        uploads.check_image(data)
        name = uploads.stored_name(data)
        assert name.rsplit(".", 1)[1] in ("png", "jpg", "webp", "gif"), (what, name)


def test_a_photo_with_broken_exif_is_read_as_stored():
    out = io.BytesIO()
    _halves().save(out, format="JPEG", exif=b"Exif\x00\x00not a TIFF header at all")
    image = uploads.open_image(out.getvalue())
    assert image.size == (40, 20) and _reddish(image.getpixel((2, 10)))
