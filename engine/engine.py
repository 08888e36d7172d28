"""The engine: the models loaded once and the step that advances runs (`engine.run.Run`, one job's state each).

    engine = Engine(perceptor, vqgan=vqgan)           # models loaded once, shared by every run
    result = engine.generate(spec, on_progress=..., should_stop=...)   # a loop of one (engine.loop)

`Engine.step(runs)` advances runs of the same size and generator in one batched decode + CLIP pass; each run
keeps its own latent, optimiser and random generator, so a run's result does not depend on its neighbours
(up to float rounding).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from engine.cutouts import Augment, Cutouts
from engine.errors import Diverged, OutOfMemory
from engine.events import Progress, Result, Snapshotted
from engine.generators import declaration, generator_key, make_generator
from engine.generators.parts import Generator
from engine.images import encode_png, fit, from_pil, recipe, to_pil
from engine.losses import (
    cosine_scores,
    prompt_losses,
    region_weights,
    semantic_symmetry,
    size_weights,
    tone_asymmetry,
)
from engine.moderation import checks_images, checks_previews
from engine.moderation_check import SafetyCheck
from engine.run import Run
from engine.spec import JobSpec
from engine.speed import Speed
from engine.speed.fast import FastModels

log = logging.getLogger(__name__)

TEXT_CACHE = 4096  # text embeddings kept per engine (512 floats each for ViT-B-32: about 8 MB)


class Engine:
    """Shared models plus the step that advances runs. Create once per process (or per GPU)."""

    def __init__(
        self,
        perceptor,
        vqgan=None,
        device: torch.device | str | None = None,
        augment: Augment = Augment(),
        speed: Speed = Speed(),
        weights: dict[str, object] | None = None,
        safety: SafetyCheck | None = None,
    ):
        self.device = torch.device(device) if device is not None else perceptor.device
        self.perceptor = perceptor
        self.vqgan = vqgan
        # the loaded weights of each generator this engine runs, by generator name (`engine.generators`)
        self.weights = {"vqgan": vqgan, **(weights or {})}
        self.augment = augment
        self.speed = speed
        self.fast = FastModels(speed, self.device, perceptor, vqgan)
        self._generators: dict[tuple, Generator] = {}
        self._text_cache: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        # The moderation check; engines that share a perceptor can share one, so its descriptions are encoded once.
        self.safety = safety if safety is not None else SafetyCheck(perceptor)

    # -- models ---------------------------------------------------------------------------------------------
    def generator_for(self, spec: JobSpec, width: int | None = None, height: int | None = None) -> Generator:
        """The generator of `spec` (at a size: SIREN's renders one size), made once and shared by its runs."""
        width, height = width or spec.width, height or spec.height
        key = generator_key(spec, width, height)
        if key not in self._generators:
            self._generators[key] = make_generator(spec, width, height, self.weights.get(spec.generator), self)
        return self._generators[key]

    def free_bytes(self) -> int | None:
        """Memory free on the device for activations (on the CPU, the host's available memory), or None where it
        is not known."""
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            return free
        if self.device.type == "cpu":
            try:
                with open("/proc/meminfo") as meminfo:
                    fields = dict(line.split(":", 1) for line in meminfo)
                return int(fields["MemAvailable"].split()[0]) * 1024
            except (OSError, KeyError, ValueError):
                return None
        return None

    def check_memory(self, spec: JobSpec, width: int, height: int) -> None:
        """Refuse with a sentence, before starting, a size whose step is estimated not to fit in free memory."""
        from engine.memory import step_bytes

        free = self.free_bytes()
        if free is None:
            return
        need = step_bytes(width, height, spec.cutn, self.fast.dtype is not None, declaration(spec.generator).memory)
        if need > free:
            what = f"{spec.width}x{spec.height} upscaled to " if (width, height) != (spec.width, spec.height) else ""
            raise OutOfMemory(
                f"{what}{width}x{height} with {spec.cutn} cutouts needs about {need / 2**30:.1f} GiB for its steps, "
                f"and {free / 2**30:.1f} GiB are free: try fewer upscales, a smaller size or fewer cutouts."
            )

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """CLIP embeddings of `texts`, stacked; only texts not among the TEXT_CACHE most recently used are encoded
        (a long-running bot sees every prompt and Steer text of its members: the cache must not grow with them)."""
        cache = self._text_cache
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            for text, emb in zip(missing, self.perceptor.encode_text(missing), strict=True):
                cache[text] = emb
        stacked = torch.stack([cache[t] for t in texts])
        for text in texts:
            cache.move_to_end(text)
        while len(cache) > TEXT_CACHE:
            cache.popitem(last=False)
        return stacked

    @torch.no_grad()
    def image_embedding(self, picture) -> torch.Tensor:
        """One unit embedding (1, D) of a PIL image (centre crop at CLIP's input size)."""
        size = self.perceptor.input_size
        return self.perceptor.encode_image(from_pil(fit(picture, size, size), self.device))

    @torch.no_grad()
    def scores(self, image: torch.Tensor, texts: list[str]) -> list[float]:
        """CLIP cosine similarity of an image (1, 3, H, W) to each text: mean over square crops covering it."""
        _, _, h, w = image.shape
        side, size = min(w, h), self.perceptor.input_size
        count = max(1, -(-max(w, h) // side))
        crops = []
        for i in range(count):
            offset = 0 if count == 1 else round(i * (max(w, h) - side) / (count - 1))
            crop = image[..., :, offset : offset + side] if w >= h else image[..., offset : offset + side, :]
            crops.append(F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False))
        embeds = self.perceptor.encode_image(torch.cat(crops).clamp(0, 1))
        return cosine_scores(embeds, self.text_embeddings(texts)).tolist()

    # -- runs -----------------------------------------------------------------------------------------------
    def start(self, spec: JobSpec, snapshot: dict[str, Any] | None = None) -> Run:
        """A new run of `spec`, or the continuation of `snapshot` (whose spec may ask for more steps)."""
        return self._guard(lambda: Run(self, spec, snapshot), spec)

    def step(self, runs: list[Run]) -> None:
        """Advance each run by one optimiser step, all in one batched decode and CLIP forward."""
        if not runs:
            return
        keys = {r.group_key() for r in runs}
        if len(keys) > 1:
            raise ValueError(f"runs of different shapes cannot share a step: {keys}")
        self._guard(lambda: self._step(runs), runs[0].spec)

    def _step(self, runs: list[Run]) -> None:
        for run in runs:
            run.follow_schedule()
        first = runs[0]
        generator, spec = first.generator, first.spec
        params = torch.cat([r.params for r in runs])  # (B, ...)
        fast = self.fast
        with fast.autocast():
            images = generator.decode(params)  # (B, 3, H, W), float32
        cutouts = self.cutouts_for(spec)
        batch = cutouts(images, [r.gen for r in runs])
        with fast.autocast():
            features = fast.encode_image(self.perceptor.normalize(batch.images))
        embeds = F.normalize(features, dim=-1).view(len(runs), spec.cutn, -1)  # (B, cutn, D)
        total = images.new_zeros(())
        pairs = cutouts.pairs()
        for i, run in enumerate(runs):
            weights = self._cutout_weights(run, batch.centers[i], batch.sizes[i])
            losses = prompt_losses(embeds[i], run.targets, run.weights, run.stops, weights)  # (P,)
            loss = losses.sum()
            terms = {}
            if run.spec.init_weight > 0 and run.init_image is not None:
                loss = loss + run.spec.init_weight * F.mse_loss(images[i : i + 1], run.init_image)
            if run.spec.tone_weight > 0:
                terms["tone"] = tone_asymmetry(images[i : i + 1]).sum()
                loss = loss + run.spec.tone_weight * terms["tone"]
            if run.spec.semantic_weight > 0 and pairs:
                left, right = embeds[i, :pairs], embeds[i, pairs : 2 * pairs]
                terms["semantic"] = semantic_symmetry(left, right, run.directions[0], run.directions[-1])
                loss = loss + run.spec.semantic_weight * terms["semantic"]
            run.last_terms = {k: v.detach() for k, v in terms.items()}
            finite = torch.isfinite(loss.detach())
            run.finite = finite if run.finite is None else run.finite & finite
            run.last_similarity = (embeds[i].detach() @ run.targets[: len(run.texts)].T).mean(0)
            total = total + loss
            run.last_losses = losses.detach()
            run.last_image = images[i : i + 1].detach()
        for run in runs:
            run.optimizer.zero_grad(set_to_none=True)
        if fast.loss_scale != 1.0:
            (total * fast.loss_scale).backward()
            for run in runs:
                run.params.grad.div_(fast.loss_scale)
        else:
            total.backward()
        for run in runs:
            run.optimizer.step()
            generator.project_(run.params)
            run.step_index += 1
            run.follow_stages()

    def cutouts_for(self, spec: JobSpec) -> Cutouts:
        """The cutout sampler of a spec's layout: even coverage along the split axis, mirrored pairs."""
        stratify = {"panorama": 0, "vertical": 1}.get(spec.layout)
        return Cutouts(
            self.perceptor.input_size,
            spec.cutn,
            spec.cut_pow,
            self.augment,
            stratify=stratify,
            mirror=spec.layout == "mirror",
        )

    def _cutout_weights(self, run: Run, centers: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor | None:
        """(cutn, P) weights of each cutout's distance to each target: by position (parts) and size; None = 1."""
        spec = run.spec
        weights = None
        if run.regions > 1:
            axis = 1 if spec.layout == "vertical" else 0
            per_region = region_weights(centers[:, axis], run.regions)  # (cutn, K)
            everywhere = per_region.new_ones(per_region.shape[0], 1)
            columns = torch.cat([per_region, everywhere], dim=1)  # index K (= -1) is "everywhere"
            weights = columns[:, run.region_of]  # (cutn, P)
        if spec.size_weight != 0:
            by_size = size_weights(sizes, float(min(run.width, run.height)), spec.size_weight)[:, None]
            weights = by_size if weights is None else weights * by_size
        return weights

    def _guard(self, fn: Callable[[], Any], spec: JobSpec) -> Any:
        try:
            return fn()
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise OutOfMemory(
                f"The GPU ran out of memory at {spec.width}x{spec.height} with {spec.cutn} cutouts. "
                "Try a smaller size or fewer cutouts."
            ) from None

    # -- reports --------------------------------------------------------------------------------------------
    def check_finite(self, run: Run, image: torch.Tensor | None = None) -> None:
        """Raise Diverged if a loss of `run` so far, its parameters or `image` are infinite or NaN (one device sync):
        such a run has no picture left to show, and continuing it cannot bring one back."""
        bad = run.finite is not None and not bool(run.finite)
        bad = bad or not bool(torch.isfinite(run.params.detach()).all())
        if bad or (image is not None and not bool(torch.isfinite(image).all())):
            raise Diverged(
                f"The image fell apart by step {run.step_index}: its numbers became infinite or not a number, so there "
                "is nothing to show. Try smaller prompt weights, a smaller init weight or a lower learning rate."
            )

    def progress(self, run: Run, elapsed: float, preview: bool = True) -> Progress:
        """The run's Progress: losses, similarities, a preview PNG (unless `preview` is False) and, at levels that check
        previews, its unsafe score."""
        losses = run.last_losses.tolist() if run.last_losses is not None else []
        png = encode_png(self.preview(run), compress_level=1) if preview else None
        similarities = run.last_similarity.tolist() if run.last_similarity is not None else []
        unsafe = None
        if checks_previews(run.spec.moderation):
            unsafe, _ = self.safety.score(run.last_image if run.last_image is not None else run.image())
        return Progress(
            step=run.step_index,
            steps=run.spec.total_steps,
            loss=float(sum(losses)),
            losses=tuple(losses),
            elapsed=elapsed,
            preview=png,
            width=run.width,
            height=run.height,
            similarities=tuple(similarities),
            prompt=run.prompt,
            unsafe=unsafe,
        )

    def preview(self, run: Run):
        """The latest image as a PIL image (one device-to-host copy; encoding it is left to the caller)."""
        return to_pil(run.last_image if run.last_image is not None else run.image())

    def result(self, run: Run, elapsed: float, cancelled: bool = False) -> Result:
        """The run's Result: the PNG with its recipe, CLIP scores per text, and the unsafe score and label at levels
        that check images."""
        image = run.image()
        self.check_finite(run, image)
        scores = self.scores(image, run.texts)
        unsafe, label = self.safety.score(image) if checks_images(run.spec.moderation) else (None, None)
        meta = recipe(
            run.spec, run.width, run.height, run.step_index, {"scores": dict(zip(run.texts, scores, strict=True))}
        )
        return Result(
            spec=run.spec,
            image=encode_png(to_pil(image), meta),
            width=run.width,
            height=run.height,
            steps_done=run.step_index,
            scores=tuple(zip(run.texts, scores, strict=True)),
            elapsed=elapsed,
            cancelled=cancelled,
            unsafe=unsafe,
            unsafe_label=label,
        )

    def generate(
        self,
        spec: JobSpec,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        snapshot: dict[str, Any] | None = None,
        on_snapshot: Callable[[Snapshotted], None] | None = None,
        snapshot_every: int = 0,
    ) -> Result:
        """Run `spec` to the end (or continue `snapshot`) in a loop of one; raise Cancelled (with the last image)
        if stopped. Progress reports carry a PNG preview."""
        from engine.loop import Callbacks, run_to_end

        def progress(report: Progress, preview) -> None:
            on_progress(dataclasses.replace(report, preview=encode_png(preview, compress_level=1)))

        def event(e) -> None:
            if isinstance(e, Snapshotted):
                on_snapshot(e)

        callbacks = Callbacks(
            on_progress=progress if on_progress is not None else None,
            on_event=event if on_snapshot is not None else None,
            should_stop=should_stop or (lambda: False),
            snapshot_every=snapshot_every if on_snapshot is not None else 0,
        )
        return run_to_end(self, self.start(spec, snapshot), callbacks)
