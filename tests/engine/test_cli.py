"""The command lines as a user runs them: `python -m engine` and `python -m engine.models`."""

import os
import signal
import subprocess
import sys
import time

from engine.images import read_recipe

TINY = ["--model", "tiny_f16", "--clip", "tiny-clip", "-s", "48x32", "--cutn", "4", "--device", "cpu"]


def _run(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300, **kw)


def test_cli_writes_png_with_recipe_and_frames(tiny_models, tmp_path):
    out = tmp_path / "city.png"
    args = ["-m", "engine", "a city | night:0.5", "-o", str(out), "--steps", "4", "--seed", "9"]
    proc = _run(
        [*args, *TINY, "--models-dir", str(tiny_models), "--save-every", "2", "--snapshot", str(tmp_path / "s.pt")]
    )
    assert proc.returncode == 0, proc.stderr
    assert "48x32 rounded to 48x32" not in proc.stderr and "seed 9" in proc.stderr
    meta = read_recipe(out)
    assert meta["spec"]["prompt"] == "a city | night:0.5" and meta["spec"]["seed"] == 9 and meta["steps_done"] == 4
    assert (tmp_path / "city-00002.png").is_file() and (tmp_path / "city-00004.png").is_file()
    # the recipe reproduces the same bytes; a snapshot continues it
    again = tmp_path / "again.png"
    proc = _run(["-m", "engine", "--recipe", str(out), "-o", str(again), "-q", "--models-dir", str(tiny_models)])
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == out.read_bytes()
    longer = tmp_path / "longer.png"
    proc = _run(
        [
            "-m",
            "engine",
            "--recipe",
            str(out),
            "--resume",
            str(tmp_path / "s.pt"),
            "--steps",
            "6",
            "-o",
            str(longer),
            "-q",
            "--models-dir",
            str(tiny_models),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert read_recipe(longer)["steps_done"] == 6


def test_cli_panorama_and_juxtaposition(tiny_models, tmp_path):
    base = ["--model", "tiny_f16", "--clip", "tiny-clip", "--cutn", "4", "--device", "cpu", "--steps", "3", "-q"]
    base += ["--models-dir", str(tiny_models), "--seed", "2"]
    pano = tmp_path / "pano.png"
    proc = _run(["-m", "engine", "Sunny clearing / Enchanted garden", "-s", "96x32", "-o", str(pano), *base])
    assert proc.returncode == 0, proc.stderr
    spec = read_recipe(pano)["spec"]
    assert (spec["layout"], spec["lr"], spec["width"], spec["height"]) == ("panorama", 0.05, 96, 32)
    mirror = tmp_path / "mirror.png"
    args = ["Entrance to heaven / Entrance to hell", "--layout", "mirror", "--tone-weight", "1", "--size-weight", "-1"]
    proc = _run(["-m", "engine", *args, "-s", "64x32", "-o", str(mirror), *base])
    assert proc.returncode == 0, proc.stderr
    spec = read_recipe(mirror)["spec"]
    assert (spec["layout"], spec["tone_weight"], spec["semantic_weight"], spec["size_weight"]) == ("mirror", 1, 0.1, -1)
    again = tmp_path / "again.png"  # the recipe reproduces the composition
    proc = _run(["-m", "engine", "--recipe", str(mirror), "-o", str(again), "-q", "--models-dir", str(tiny_models)])
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == mirror.read_bytes()
    proc = _run(["-m", "engine", "a / b / c", "--layout", "mirror", "-s", "64x32", "-o", str(mirror), *base])
    assert proc.returncode == 2 and "one prompt or two" in proc.stderr


def test_cli_prompt_schedule(tiny_models, tmp_path):
    out = tmp_path / "story.png"
    base = [*TINY, "--models-dir", str(tiny_models), "--steps", "4", "--seed", "1", "-q", "-o", str(out)]
    proc = _run(["-m", "engine", "a castle", "--prompt-at", "3=a forest", "--prompt-at", "1=a ruin", *base])
    assert proc.returncode == 0, proc.stderr
    assert read_recipe(out)["spec"]["prompt_schedule"] == [[1, "a ruin"], [3, "a forest"]]
    proc = _run(["-m", "engine", "a castle", "--prompt-at", "soon=a forest", *base])
    assert proc.returncode == 2 and "STEP=TEXT" in proc.stderr


def test_cli_reports_rounding_and_bad_input(tiny_models, tmp_path):
    proc = _run(["-m", "engine", "x:1,5", "-o", str(tmp_path / "o.png"), *TINY, "--models-dir", str(tiny_models)])
    assert proc.returncode == 2 and "is not a number" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(["-m", "engine", "x", "-o", str(tmp_path / "o.png"), "--models-dir", str(tmp_path)])
    assert proc.returncode == 2 and "python -m engine.models download" in proc.stderr
    proc = _run(
        [
            "-m",
            "engine",
            "x",
            "--steps",
            "1",
            "-q",
            "-o",
            str(tmp_path / "o.png"),
            *TINY[:-4],
            "-s",
            "50x40",
            "--models-dir",
            str(tiny_models),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert "50x40 rounded to 48x32" in proc.stderr


def test_ctrl_c_stops_cleanly_and_keeps_the_image(tiny_models, tmp_path):
    out = tmp_path / "stopped.png"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "slow",
            "--steps",
            "10000",
            "-o",
            str(out),
            *TINY,
            "--models-dir",
            str(tiny_models),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    seen = ""
    while "steps on" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += proc.stderr.readline()
    assert "steps on" in seen, seen
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopped early at step" in err
    meta = read_recipe(out)
    assert 0 < meta["steps_done"] < 10000


def test_models_tiny_command_writes_loadable_models(tmp_path):
    proc = _run(["-m", "engine.models", "tiny", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    proc = _run(["-m", "engine.models", "list", "--dir", str(tmp_path)])
    assert "tiny_f16" in proc.stdout and "vqgan_imagenet_f16_16384" in proc.stdout and "not installed" in proc.stdout


def _shared_recipe(tmp_path, tiny_models, **changes):
    """A PNG whose recipe names a model by path, with a yaml and a pickle that writes a marker when loaded."""
    import pickle
    import shutil

    from PIL import Image

    from engine.images import encode_png
    from engine.spec import JobSpec

    evil = tmp_path / "evil"
    evil.mkdir()
    shutil.copy(tiny_models / "vqgan" / "tiny_f16.yaml", evil / "m.yaml")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (evil / "m.ckpt").write_bytes(pickle.dumps(Payload()))
    spec = JobSpec("a harbour", width=48, height=32, steps=2, cutn=4, model="tiny_f16", clip_model="tiny-clip")
    data = {**spec.to_dict(), "model": str(evil / "m"), **changes}
    png = tmp_path / "shared.png"
    png.write_bytes(encode_png(Image.new("RGB", (8, 8)), {"spec": data}))
    return png, marker


def test_a_recipe_cannot_point_the_cli_at_a_model_file(tiny_models, tmp_path):
    import pytest

    from engine.cli import build_parser, spec_from_args
    from engine.errors import InvalidSpec

    png, marker = _shared_recipe(tmp_path, tiny_models)
    argv = ["--recipe", str(png)]
    with pytest.raises(InvalidSpec, match="not a path"):
        spec_from_args(build_parser().parse_args(argv), argv)
    out = tmp_path / "x.png"
    argv = ["--recipe", str(png), "-q", "--device", "cpu", "--models-dir", str(tiny_models), "-o", str(out)]
    proc = _run(["-m", "engine", *argv])
    assert proc.returncode == 2 and "not a path" in proc.stderr, proc.stderr
    assert not marker.exists() and not out.exists()


def test_a_recipe_does_not_choose_which_pictures_the_cli_reads(tiny_models, tmp_path):
    from engine.cli import build_parser, spec_from_args

    png, _ = _shared_recipe(tmp_path, tiny_models, model="tiny_f16", init_image="/etc/hostname", init_weight=0.5)
    argv = ["--recipe", str(png)]
    spec = spec_from_args(build_parser().parse_args(argv), argv)
    assert spec.model == "tiny_f16" and spec.init_image is None and spec.image_prompts == ()


def _refused(capsys, argv):
    """Run the CLI in this process; it must answer one line `error: <sentence>` and exit 2, no traceback."""
    from engine.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_cli_refuses_bad_inputs_with_one_line(tiny_models, tmp_path, capsys):
    models = ["--models-dir", str(tiny_models), "-o", str(tmp_path / "out.png")]
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\x01 not a snapshot nor a picture")
    jpeg = tmp_path / "photo.jpg"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(jpeg)
    err = _refused(capsys, ["a cat", "--resume", str(garbage), *TINY, *models])
    assert "garbage.bin is not a snapshot written by imagine" in err
    err = _refused(capsys, ["--recipe", str(garbage), *TINY, *models])
    assert "is not a PNG made by imagine" in err
    err = _refused(capsys, ["--recipe", str(jpeg), *TINY, *models])
    assert "is not a PNG made by imagine" in err
    err = _refused(capsys, ["--recipe", str(tmp_path / "missing.png"), *TINY, *models])
    assert "Cannot open" in err
    err = _refused(capsys, ["a \ud800 lighthouse", *TINY, *models])
    assert "not valid text" in err
    err = _refused(capsys, ["a cat", *TINY, *models, "--device", "warp-drive"])
    assert "Unknown device" in err


def test_cli_refuses_a_job_that_cannot_fit_before_loading_models(tmp_path, capsys):
    """-s 4096x4096 once tried 17 GiB in the decoder's attention; now the estimate refuses it up front (the
    models directory does not even exist: nothing was loaded)."""
    argv = ["a cat", "-s", "4096x4096", "--device", "cpu", "--models-dir", str(tmp_path / "none")]
    err = _refused(capsys, [*argv, "-o", str(tmp_path / "out.png")])
    assert "A 4096x4096 image with 32 cutouts needs about" in err and "Choose a smaller size" in err


def test_cli_refuses_a_hostile_init_image_before_loading_models(tmp_path, capsys):
    from tests import bombs

    line = tmp_path / "line.png"
    line.write_bytes(bombs.line())
    argv = ["a cat", "--init-image", str(line), "--device", "cpu", "--models-dir", str(tmp_path / "none")]
    err = _refused(capsys, [*argv, "-o", str(tmp_path / "out.png")])
    assert "65500x1, too long and thin" in err


def test_cli_recipe_finds_its_images_beside_the_png(tmp_path):
    """Recipes name images by file name only (no server folders): the CLI looks for them next to the PNG."""
    from PIL import Image

    from engine.cli import build_parser, spec_from_args
    from engine.images import encode_png, recipe
    from engine.spec import JobSpec

    spec = JobSpec("a cat", init_image="/srv/data/inputs/ab12.png", image_prompts=("/srv/data/inputs/cd34.png:2",))
    png = tmp_path / "made.png"
    png.write_bytes(encode_png(Image.new("RGB", (8, 8)), recipe(spec, 256, 256, 300)))
    argv = ["--recipe", str(png)]
    again = spec_from_args(build_parser().parse_args(argv), argv)
    assert (again.init_image, again.image_prompts) == (None, ())  # not beside the PNG: left out, with a note
    (tmp_path / "ab12.png").write_bytes(b"")
    (tmp_path / "cd34.png").write_bytes(b"")
    again = spec_from_args(build_parser().parse_args(argv), argv)
    assert again.init_image == str(tmp_path / "ab12.png")
    assert again.image_prompts == (f"{tmp_path / 'cd34.png'}:2",)
