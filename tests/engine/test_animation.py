"""Animations: each frame starts from the one before, moved by its keyframed transform and re-encoded; the frames are
part of the run's snapshot, so a run killed mid-animation resumes at its last finished frame and ends with the same
frames; the result carries the MP4 of the frames made, also when stopped."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.errors import Cancelled
from engine.events import Progress, Snapshotted
from engine.images import read_recipe
from engine.keyframes import Animation, Transform
from engine.spec import JobSpec


def _pixels(data: bytes) -> torch.Tensor:
    """A PNG as (H, W, 3) floats in [0, 1]."""
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255)


def _disc(image: torch.Tensor) -> tuple[float, float, float]:
    """Area and centre (x, y) of the dark pixels of (H, W, 3) or (1, 3, H, W): the disc of `_pattern`."""
    grey = image.mean(-1) if image.dim() == 3 else image[0].mean(0)
    ys, xs = torch.nonzero(grey < 0.5, as_tuple=True)
    return float(len(xs)), xs.float().mean().item(), ys.float().mean().item()


def _pattern(path, width=64, height=48, radius=8, centre=(32, 24)) -> str:
    """A dark disc on a light ground, as the init image the first frame starts from."""
    picture = Image.new("RGB", (width, height), (230, 230, 230))
    x, y = centre
    ImageDraw.Draw(picture).ellipse((x - radius, y - radius, x + radius - 1, y + radius - 1), fill=(20, 20, 20))
    picture.save(path)
    return str(path)


def _pixel_spec(init: str, animation: Animation, **kw) -> JobSpec:
    fields = dict(generator="pixels", width=64, height=48, steps=1, seed=3, cutn=4, clip_model="tiny-clip", lr=0.01)
    fields.update(kw)
    return JobSpec("a red apple", init_image=init, animation=animation, **fields)


def test_a_zoom_keyframe_scales_the_next_frames_start(pool, tmp_path):
    """Measured on the pixels: the disc of frame n is zoom times wider at the start of frame n+1 (area zoom²), and the
    start equals frame n's centre enlarged by an independent resampler (PIL's)."""
    animation = Animation(frames=3, frame_steps=1, zoom="1: (1.2), 2: (1.44)")
    spec = _pixel_spec(_pattern(tmp_path / "disc.png"), animation)
    engine = pool.engine_for(spec)
    run = engine.start(spec)
    starts = []
    for _ in range(2):  # the last step of frame 0, then of frame 1
        engine.step([run])
        starts.append(run.image())  # the next frame's start, decoded from its re-encoded parameters
    assert len(run.frames) == 2 and run.frame == 2
    for n, zoom in ((0, 1.2), (1, 1.44)):
        before, after = _disc(_pixels(run.frames[n])), _disc(starts[n])
        assert after[0] / before[0] == pytest.approx(zoom**2, rel=0.08)
        assert after[1:] == pytest.approx(before[1:], abs=0.6)  # about the centre
    # frame 1's start is frame 0's centre, 1/1.2 of each side, enlarged back to the full size
    frame0 = Image.open(io.BytesIO(run.frames[0])).convert("RGB")
    w, h = frame0.size
    box = (w / 2 - w / 2.4, h / 2 - h / 2.4, w / 2 + w / 2.4, h / 2 + h / 2.4)
    expected = torch.from_numpy(np.asarray(frame0.resize((w, h), Image.BICUBIC, box=box), dtype=np.float32) / 255)
    start = starts[0][0].permute(1, 2, 0)
    zoomed, unmoved = (start - expected).abs().mean(), (start - _pixels(run.frames[0])).abs().mean()
    assert zoomed < 0.1 * unmoved  # the measure tells a zoom from none


def test_the_warp_moves_right_down_and_turns_counterclockwise():
    from engine.animation import warp

    image = torch.zeros(1, 3, 40, 60)
    image[..., 18:22, 38:42] = 1  # a dot 10 pixels right of the centre (29.5, 19.5) of a wide picture
    spot = lambda t: _disc(1 - t)[1:]  # noqa: E731 - the bright dot's centre
    assert spot(warp(image, Transform(translation_x=5, translation_y=3))) == pytest.approx((44.5, 22.5), abs=0.1)
    assert spot(warp(image, Transform(angle=90))) == pytest.approx((29.5, 9.5), abs=0.1)  # up, 10 pixels, not 6.7
    assert spot(warp(image, Transform(zoom=1.5))) == pytest.approx((44.5, 19.5), abs=0.1)
    assert warp(image, Transform()) is image


def _vqgan_spec(tiny_spec, **kw) -> JobSpec:
    animation = Animation(frames=4, frame_steps=2, fps=8, zoom="0: (1.1)", angle="0: (0), 3: (6)", translation_x=2)
    return tiny_spec(steps=3, progress_every=1, animation=animation, **kw)


def test_resume_after_a_kill_mid_animation_keeps_the_finished_frames(engine, tiny_spec, tiny_models):
    """Killed after step 6 (one step into frame 2), a new engine continues from the snapshot of step 6: it takes only
    the 3 steps left, starts with frames 0 and 1 as they were, and ends with the uninterrupted run's frames."""
    from engine.loading import EnginePool, ModelSettings
    from engine.loop import Callbacks, run_to_end
    from engine.run import load_snapshot

    spec = _vqgan_spec(tiny_spec)  # frame 0: steps 0-2, frame 1: 3-4, frame 2: 5-6, frame 3: 7-8
    assert spec.total_steps == 9
    snapshots: dict[int, bytes] = {}
    whole = engine.start(spec)

    def keep(event) -> None:
        if isinstance(event, Snapshotted):
            snapshots[event.step] = event.state

    uninterrupted = run_to_end(engine, whole, Callbacks(on_event=keep, snapshot_every=3))
    assert len(whole.frames) == 4 and uninterrupted.frames_done == 4 and sorted(snapshots) == [3, 6, 9]

    fresh = EnginePool(ModelSettings(models_dir=tiny_models, device="cpu")).engine_for(spec)  # after a restart
    assert fresh is not engine
    resumed = fresh.start(spec, load_snapshot(snapshots[6]))
    assert (resumed.step_index, resumed.frame) == (6, 2) and resumed.frames == whole.frames[:2]
    steps = []
    result = run_to_end(fresh, resumed, Callbacks(on_step=lambda run: steps.append(run.step_index)))
    assert steps == [7, 8, 9]  # no finished frame is made again
    assert resumed.frames == whole.frames
    assert result.image == uninterrupted.image and result.frames_done == 4


def test_progress_counts_frames_and_steps(engine, tiny_spec):
    reports: list[Progress] = []
    spec = _vqgan_spec(tiny_spec)
    engine.generate(spec, on_progress=reports.append)
    # frame 0: steps 0-2, frame 1: 3-4, frame 2: 5-6, frame 3: 7-8; a report after step k shows the frame coming next
    assert [p.frame for p in reports] == [0, 0, 1, 1, 2, 2, 3, 3, 3] and [p.step for p in reports] == list(range(1, 10))
    assert {(p.frames, p.steps) for p in reports} == {(4, 9)}
    still = []
    engine.generate(tiny_spec(steps=2, progress_every=1), on_progress=still.append)
    assert {(p.frame, p.frames) for p in still} == {(0, 0)}


def test_the_result_holds_the_mp4_a_preview_and_a_recipe_that_replays(engine, tiny_spec):
    from engine.video import probe

    spec = _vqgan_spec(tiny_spec)
    result = engine.generate(spec)
    info = probe(result.video)
    assert (info.frames, info.fps, info.width, info.height) == (4, 8.0, result.width, result.height)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    preview = Image.open(io.BytesIO(result.preview_animation))
    durations = []
    for index in range(preview.n_frames):  # libwebp merges a frame into the one before where they are the same
        preview.seek(index)
        preview.load()
        durations.append(preview.info["duration"])
    assert preview.format == "WEBP" and sum(durations) == 4 * 1000 / 8
    recipe = read_recipe(result.image)
    assert JobSpec.from_dict(recipe["spec"]) == spec and recipe["steps_done"] == 9
    assert engine.generate(JobSpec.from_dict(recipe["spec"])).video == result.video


def test_the_output_check_judges_every_frame_the_video_shows(engine, tiny_spec, monkeypatch):
    """The post shows the video, so an unsafe frame in the middle flags the animation, not only its last frame."""
    judged = []

    def score(image):
        judged.append(image)
        return (0.9, "gore") if len(judged) == 3 else (0.1, "none")  # the last frame is judged first, then 0, 1...

    monkeypatch.setattr(engine.safety, "score", score)
    result = engine.generate(_vqgan_spec(tiny_spec, moderation="spoiler"))
    assert len(judged) == 1 + result.frames_done == 5
    assert (result.unsafe, result.unsafe_label) == (0.9, "gore")


@pytest.mark.parametrize(("stop_after", "frames"), [(6, 2), (1, 1)])
def test_a_stopped_animation_keeps_what_it_made(engine, tiny_spec, stop_after, frames):
    """Cancel keeps the finished frames (stopped in the first frame: that frame so far)."""
    from engine.loop import Callbacks, run_to_end
    from engine.video import probe

    spec = _vqgan_spec(tiny_spec)
    run = engine.start(spec)
    with pytest.raises(Cancelled) as stopped:
        run_to_end(engine, run, Callbacks(should_stop=lambda: run.step_index >= stop_after))
    result = stopped.value.result
    assert result.cancelled and result.frames_done == frames and result.steps_done == stop_after
    assert probe(result.video).frames == frames


@pytest.mark.parametrize("name", ["fourier", "pixels", "dalle", "siren"])
def test_every_generator_that_encodes_can_animate(gpool, name):
    from tests.engine.test_generators import SPECS

    fields = {"generator": name, "width": 32, "height": 24} if name in ("fourier", "pixels") else SPECS[name]
    spec = JobSpec(
        "a red apple", steps=1, seed=1, cutn=2, clip_model="tiny-clip", animation=Animation(frames=2, frame_steps=1),
        **fields,
    )  # fmt: skip
    result = gpool.engine_for(spec).generate(spec)
    assert result.frames_done == 2 and result.steps_done == 2 and result.video


def test_continuing_a_finished_animation_equals_planning_its_frames(engine, tiny_spec):
    """Continue: the finished run's snapshot under the spec with more frames gives the longer run's frames."""
    from engine.images import snapshot_bytes
    from engine.run import load_snapshot

    spec = _vqgan_spec(tiny_spec)
    run = engine.start(spec)
    while not run.done:
        engine.step([run])
    longer = spec.extended(spec.animation.frame_steps)
    assert longer.animation.frames == 5
    continued = engine.start(longer, load_snapshot(snapshot_bytes(run.snapshot())))
    while not continued.done:
        engine.step([continued])
    planned = engine.start(longer)
    while not planned.done:
        engine.step([planned])
    assert continued.frames == planned.frames and continued.frames[:4] == run.frames


def test_a_still_images_snapshot_is_unchanged(engine, tiny_spec):
    run = engine.start(tiny_spec(steps=2))
    engine.step([run])
    assert "frames" not in run.snapshot() and run.frames == [] and run.frame == 0


def test_cli_animates_with_a_preset_or_keyframes_and_writes_the_mp4(tiny_models, tmp_path):
    import subprocess
    import sys

    from engine.video import probe

    out = tmp_path / "zoom.png"
    base = [sys.executable, "-m", "engine", "a red apple", "--model", "tiny_f16", "--clip", "tiny-clip", "-s", "48x32"]
    base += ["--cutn", "2", "--device", "cpu", "--models-dir", str(tiny_models), "--seed", "4", "-q", "--steps", "4"]
    args = ["--animate", "zoom-in", "--frames", "3", "--fps", "6", "--frame-prompts", "2: a green pear", "-o", str(out)]
    proc = subprocess.run([*base, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "then 2 more frames of 1 steps (3 at 6 fps)" in proc.stderr  # a quarter of --steps per later frame
    info = probe(out.with_suffix(".mp4").read_bytes())
    assert (info.frames, info.fps, info.width, info.height) == (3, 6.0, 48, 32)
    recorded = read_recipe(out)["spec"]["animation"]
    assert recorded["zoom"] == "0: (1.03)" and recorded["prompts"] == [[2, "a green pear"]]
    # the recipe replays the whole animation; keyframe flags change it
    again = tmp_path / "again.png"
    replay = [*base[:3], "--recipe", str(out), "-o", str(again), "-q", "--models-dir", str(tiny_models)]
    proc = subprocess.run(replay, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert again.with_suffix(".mp4").read_bytes() == out.with_suffix(".mp4").read_bytes()
    bad = subprocess.run([*base, "--zoom", "0: (1.0), 30 (1.04)", "-o", str(tmp_path / "b.png")], capture_output=True)
    assert bad.returncode == 2 and b"zoom keyframes" in bad.stderr and b"e.g. '0: (1.0), 30: (1.04)'" in bad.stderr
