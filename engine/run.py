"""One job's run: its latent, optimiser, random generator and schedule (`Run`), advanced by an `engine.engine.Engine`;
a run can be snapshotted and resumed to give the same continuation (`save_snapshot`, `load_snapshot`). Also the
choice of device.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from engine.errors import InvalidSpec
from engine.files import write_atomically
from engine.generators import declaration, generator_key
from engine.generators.parts import Generator
from engine.images import encode_png, fit, from_pil, load_image, snapshot_bytes, to_pil
from engine.prompts import parse_regions
from engine.quality import step_counts
from engine.spec import JobSpec

if TYPE_CHECKING:  # an engine makes runs (Engine.start); a run only keeps a reference to its engine
    from engine.engine import Engine

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1


class Run:
    """All the state of one job: parameters, optimiser, random generator, targets and step count."""

    def __init__(self, engine: Engine, spec: JobSpec, snapshot: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.spec = spec
        self.generator: Generator = engine.generator_for(spec)
        self.width, self.height = self.generator.output_size(spec.width, spec.height)
        self.stage = 0  # upscales done so far (each doubled width and height)
        if spec.upscales:  # refuse now rather than after the first stage's steps
            scale = 2 ** len(spec.upscales)
            engine.check_memory(spec, self.width * scale, self.height * scale)
        device = engine.device
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(spec.seed)

        self.prompt = ""  # the prompt the targets were built from (changes when the run is steered)
        # The CLIP models guiding this run (engine.ensemble.Member), the primary first; each has its own embeddings
        # of the prompts (`member_targets`) and image prompts. `targets`, `directions`, `image_targets`: the primary's.
        self.members = engine.members(spec)
        pictures = [(load_image(t.text, "an image prompt"), t.weight, t.stop) for t in spec.image_targets]
        self.member_image_targets = [
            [(engine.image_embedding(picture, m.perceptor), weight, stop) for picture, weight, stop in pictures]
            for m in self.members
        ]
        self.image_targets = self.member_image_targets[0]
        self.last_terms: dict[str, torch.Tensor] = {}
        self.last_similarity: torch.Tensor | None = None
        # Whether every loss so far was finite: a flag on the device, so the step never waits for it; the loop reads it
        # where it reads the device anyway (reports, snapshots, the result).
        self.finite: torch.Tensor | None = None

        self.init_image: torch.Tensor | None = None
        # An animation's finished frames (PNGs, engine.keyframes) and the frame whose start the parameters hold.
        self.frames: list[bytes] = []
        self.frame_started = 0
        if snapshot is not None:
            self._restore(snapshot)
            self.follow_stages()
            self.follow_frames()
            self.follow_schedule()
            return
        if spec.init_image:
            picture = fit(load_image(spec.init_image, "the init image"), self.width, self.height)
            self.init_image = from_pil(picture, device)
            params = self.generator.encode(self.init_image)
        else:
            params = self.generator.init_params(1, self.width, self.height, self.gen)
            start = declaration(spec.generator).start
            if start is not None:
                params = start(self.generator, params, spec.options)
        self.params = params.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.params], lr=spec.lr)
        self.step_index = 0
        self.last_losses: torch.Tensor | None = None
        self.last_image: torch.Tensor | None = None
        self.follow_schedule()

    def set_prompt(self, text: str) -> None:
        """Aim at `text` from now on (z, the optimiser state and the step count stay as they are)."""
        engine, device = self.engine, self.engine.device
        regions = parse_regions(text)
        prompts = [p for region in regions for p in region]
        self.texts = [p.text for p in prompts]
        weights = [p.weight for p in prompts]
        stops = [p.stop if p.stop is not None else float("-inf") for p in prompts]
        region_of = [k for k, region in enumerate(regions) for _ in region]
        for _, weight, stop in self.image_targets:
            weights.append(weight)
            stops.append(stop if stop is not None else float("-inf"))
            region_of.append(-1)  # image prompts apply everywhere
        self.weights = torch.tensor(weights, device=device)
        self.stops = torch.tensor(stops, device=device)
        self.regions = len(regions)
        self.region_of = torch.tensor(region_of, device=device)  # (P,) part of each target, -1 = everywhere
        self.member_targets = []  # (targets (P, D), directions (K, D)) in each member's embedding space
        for member, images in zip(self.members, self.member_image_targets, strict=True):
            embeds = [engine.text_embeddings(self.texts, member.perceptor), *(e for e, _, _ in images)]
            targets = torch.cat(embeds)  # (P, D)
            # each part's direction for semantic symmetry: the weighted mean of its positive prompts
            n = len(prompts)
            positive = self.weights[:n].clamp(min=0)[:, None] * targets[:n]
            directions = targets.new_zeros(len(regions), targets.shape[1])
            directions.index_add_(0, self.region_of[:n], positive)
            self.member_targets.append((targets, F.normalize(directions, dim=-1)))  # (K, D)
        self.targets, self.directions = self.member_targets[0]
        self.prompt = text

    def follow_schedule(self) -> None:
        """Switch to the prompt the spec's schedule gives for the coming step, if it differs."""
        text = self.spec.prompt_at(self.step_index)
        if text != self.prompt:
            self.set_prompt(text)

    def steer(self, text: str) -> JobSpec:
        """Change the prompt from the coming step on, recording it in the spec's schedule (returns the new spec)."""
        schedule = [(s, t) for s, t in self.spec.prompt_schedule if s < self.step_index]
        self.spec = self.spec.replace(prompt_schedule=(*schedule, (self.step_index, text)))
        self.follow_schedule()
        return self.spec

    def follow_stages(self) -> None:
        """Upscale as often as the spec's stages say the coming step needs (re-encoding at twice the size; the
        optimiser starts afresh, since its moments belong to the old parameters)."""
        while self.stage < self.spec.stage_at(self.step_index):
            width, height = self.width * 2, self.height * 2
            self.engine.check_memory(self.spec, width, height)
            params = self.generator.upscale(self.params.detach(), self.width, self.height)
            self.generator = self.engine.generator_for(self.spec, width, height)
            self.width, self.height, self.stage = width, height, self.stage + 1
            self.params = params.detach().clone().requires_grad_(True)
            self.optimizer = torch.optim.Adam([self.params], lr=self.spec.lr)
            if self.init_image is not None:
                self.init_image = F.interpolate(self.init_image, size=(height, width), mode="bicubic").clamp(0, 1)
            self.last_image = None  # the next preview shows the upscaled image (the losses stay the last step's)

    def follow_frames(self) -> None:
        """In an animation, at a frame's last step: keep the frame (a PNG), then start the next one from it, moved
        by that frame's transform and re-encoded (the optimiser starts afresh, as after an upscale). With an init
        weight, the moved frame is also the image the next frame is pulled towards."""
        animation = self.spec.animation
        if animation is None:
            return
        while True:
            made = len(self.frames)
            if self.frame_started < made < animation.frames:
                self._start_frame(made)
            if made >= animation.frames_done_at(self.step_index, self.spec.steps):
                return
            self.frames.append(encode_png(to_pil(self.image())))

    def _start_frame(self, frame: int) -> None:
        from engine.animation import from_png, warp

        # From the kept PNG, not the live image: a run resumed from a snapshot moves the very same pixels.
        moved = warp(from_png(self.frames[frame - 1], self.engine.device), self.spec.animation.transform(frame))
        params = self.generator.encode(moved)
        self.params = params.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.params], lr=self.spec.lr)
        if self.spec.init_weight > 0:
            self.init_image = moved
        self.frame_started = frame

    @property
    def frame(self) -> int:
        """The animation frame being made (the last one once every step ran); 0 for a still image."""
        animation = self.spec.animation
        return 0 if animation is None else min(len(self.frames), animation.frames - 1)

    @property
    def done(self) -> bool:
        """Whether every step of every stage has run."""
        return self.step_index >= self.spec.total_steps

    def cut_counts(self) -> tuple[int, int]:
        """(overview, inner) cutouts of the coming step, per CLIP model (engine.quality's schedules)."""
        spec = self.spec
        return step_counts(spec.cut_overview, spec.cut_inner, spec.cutn, self.step_index)

    def group_key(self) -> tuple:
        """Runs with equal keys can share one batched step: same generator and size, same CLIP models and the same
        cutouts this step."""
        key = generator_key(self.spec, self.width, self.height)
        spec = self.spec
        ensemble = (spec.perceptors, self.cut_counts(), spec.cut_gray)
        return (key, self.width, self.height, spec.cutn, spec.cut_pow, spec.layout, ensemble)

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here (tensors on the CPU; save with torch.save)."""
        opt = self.optimizer.state_dict()
        return {
            "format": SNAPSHOT_FORMAT,
            "spec": self.spec.to_json(),
            "step": self.step_index,
            "params": self.params.detach().cpu().clone(),
            "optimizer": _to_cpu(opt),
            "rng": self.gen.get_state().clone(),
            "init_image": None if self.init_image is None else self.init_image.cpu().clone(),
            "stage": self.stage,
            # an animation's finished frames and the frame the parameters were started for (none for a still image,
            # whose snapshot stays as it was)
            **({"frames": list(self.frames), "frame_started": self.frame_started} if self.spec.animation else {}),
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        if snap.get("format") != SNAPSHOT_FORMAT:
            raise InvalidSpec("The snapshot was written by an incompatible engine version.")
        device = self.engine.device
        self.params = snap["params"].to(device).clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.params], lr=self.spec.lr)
        self.optimizer.load_state_dict(snap["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.spec.lr
        self.gen.set_state(snap["rng"])
        self.step_index = int(snap["step"])
        self.stage = int(snap.get("stage", 0))  # snapshots from before upscaling existed are all at stage 0
        self.width, self.height = self.width * 2**self.stage, self.height * 2**self.stage
        if self.stage:
            self.generator = self.engine.generator_for(self.spec, self.width, self.height)
        self.init_image = None if snap["init_image"] is None else snap["init_image"].to(device)
        self.frames = [bytes(frame) for frame in snap.get("frames", [])]
        self.frame_started = int(snap.get("frame_started", 0))
        self.last_losses = None
        self.last_image = None

    @torch.no_grad()
    def image(self) -> torch.Tensor:
        """The current image (1, 3, H, W) in [0, 1]."""
        return self.generator.decode(self.params)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def pick_device(name: str | None = None) -> torch.device:
    """The device to use: `name` if given ("cpu", "cuda", "cuda:1"), else cuda when available, else cpu."""
    if name and name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise InvalidSpec(f"Unknown device {name!r}; use cpu, cuda or cuda:N.") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidSpec(f"Device {name} was asked for, but no CUDA device is available here.")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def save_snapshot(snapshot: dict[str, Any], path) -> None:
    """Write a snapshot atomically (a crash mid-write leaves the previous one)."""
    write_atomically(path, snapshot_bytes(snapshot))


def load_snapshot(source) -> dict[str, Any]:
    """Read a snapshot from a path or from bytes (weights-only: safe to load); InvalidSpec if it is not one."""
    name = "The saved state" if isinstance(source, bytes | bytearray | memoryview) else Path(source).name
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(bytes(source))
    try:
        snap = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InvalidSpec(f"The snapshot {name} does not exist.") from None
    except Exception:  # noqa: BLE001 - any file that is not a snapshot: pickle, zip and format errors alike
        raise InvalidSpec(f"{name} is not a snapshot written by imagine (--snapshot).") from None
    if not isinstance(snap, dict) or "params" not in snap or "format" not in snap:
        raise InvalidSpec(f"{name} is not a snapshot written by imagine (--snapshot).")
    return snap
