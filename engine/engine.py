"""The engine: the models loaded once and the step that advances runs (`engine.run.Run`, one job's state each).

    engine = Engine(perceptor, vqgan=vqgan)           # models loaded once, shared by every run
    result = engine.generate(spec, on_progress=..., should_stop=...)   # a loop of one (engine.loop)

`Engine.step(runs)` advances runs of the same size and generator in one batched decode + CLIP pass; each run
keeps its own latent, optimiser and random generator, so a run's result does not depend on its neighbours
(up to float rounding).

A spec may name several CLIP models (`JobSpec.perceptors`, engine.ensemble): the engine's own perceptor is the
first (the primary), the others are loaded by name through `clips` (the pool's loader) and shared by every run.
The primary alone gives the live similarity and the final scores (engine.quality.SCORE_CONVENTION).
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
from engine.ensemble import Member, member_cutouts
from engine.errors import Diverged, InvalidSpec, OutOfMemory
from engine.events import Progress, Result, Snapshotted
from engine.generators import declaration, generator_key, make_generator
from engine.generators.parts import Generator, clamp_with_grad
from engine.images import encode_png, fit, from_pil, recipe, to_pil
from engine.losses import (
    cosine_scores,
    prompt_losses,
    range_loss,
    region_weights,
    saturation_loss,
    semantic_symmetry,
    size_weights,
    tone_asymmetry,
    tv_loss,
)
from engine.moderation import checks_images, checks_previews
from engine.moderation_check import SafetyCheck
from engine.quality import memory_cutouts
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
        clips: Callable[[str], Any] | None = None,
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
        self._member_text_caches: dict[int, collections.OrderedDict[str, torch.Tensor]] = {}  # by id(perceptor)
        # The other CLIP models of ensembles, loaded by name on first use (`clips`: the pool's shared loader).
        self._clips = clips
        self._members: dict[str, Member] = {}
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

    def members(self, spec: JobSpec) -> list[Member]:
        """The CLIP models guiding `spec`'s runs with their weights: this engine's perceptor first (the primary),
        then the spec's other perceptors, loaded through `clips` once and kept."""
        named = spec.perceptors or ((spec.clip_model, 1.0),)
        out = [Member(named[0][0], self.perceptor, self.fast, named[0][1])]
        for name, weight in named[1:]:
            if name not in self._members:
                if self._clips is None:
                    raise InvalidSpec(f"This engine has no CLIP model {name} to add to the ensemble.")
                perceptor = self._clips(name)
                self._members[name] = Member(name, perceptor, FastModels(self.speed, self.device, perceptor), 1.0)
            out.append(dataclasses.replace(self._members[name], weight=weight))
        return out

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
        cutouts = round(memory_cutouts(spec))  # in ViT-B/32 cutouts, every CLIP of the ensemble counted
        need = step_bytes(width, height, cutouts, self.fast.dtype is not None, declaration(spec.generator).memory)
        if need > free:
            what = f"{spec.width}x{spec.height} upscaled to " if (width, height) != (spec.width, spec.height) else ""
            models = len(spec.perceptors)
            each = f" for each of {models} CLIP models" if models > 1 else ""
            raise OutOfMemory(
                f"{what}{width}x{height} with {spec.cutn} cutouts{each} needs about {need / 2**30:.1f} GiB for its "
                f"steps, and {free / 2**30:.1f} GiB are free: try fewer upscales, a smaller size or fewer cutouts."
            )

    def text_embeddings(self, texts: list[str], perceptor=None) -> torch.Tensor:
        """CLIP embeddings of `texts` (by `perceptor`, default the primary), stacked; only texts not among the
        TEXT_CACHE most recently used are encoded (a long-running bot sees every prompt and Steer text of its
        members: the cache must not grow with them)."""
        if perceptor is None or perceptor is self.perceptor:
            perceptor, cache = self.perceptor, self._text_cache
        else:  # an ensemble's other CLIP (kept for the engine's life, so its id stays its own)
            cache = self._member_text_caches.setdefault(id(perceptor), collections.OrderedDict())
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            for text, emb in zip(missing, perceptor.encode_text(missing), strict=True):
                cache[text] = emb
        stacked = torch.stack([cache[t] for t in texts])
        for text in texts:
            cache.move_to_end(text)
        while len(cache) > TEXT_CACHE:
            cache.popitem(last=False)
        return stacked

    @torch.no_grad()
    def image_embedding(self, picture, perceptor=None) -> torch.Tensor:
        """One unit embedding (1, D) of a PIL image (centre crop at the input size of `perceptor`, default the
        primary)."""
        perceptor = perceptor if perceptor is not None else self.perceptor
        size = perceptor.input_size
        return perceptor.encode_image(from_pil(fit(picture, size, size), self.device))

    @torch.no_grad()
    def scores(self, image: torch.Tensor, texts: list[str]) -> list[float]:
        """CLIP cosine similarity of an image (1, 3, H, W) to each text: mean over square crops covering it. By the
        primary CLIP alone, also for an ensemble (engine.quality.SCORE_CONVENTION)."""
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
        raw = None  # the decoder's output before the clamp, for the range and saturation losses
        overshoot = any(r.spec.range_scale > 0 or r.spec.sat_scale > 0 for r in runs)
        with fast.autocast():
            if overshoot and hasattr(generator, "decode_raw"):
                raw = generator.decode_raw(params)  # (B, 3, H, W), about [0, 1]
                images = clamp_with_grad(raw, 0.0, 1.0)
            else:
                images = generator.decode(params)  # (B, 3, H, W), float32
        # Each CLIP of the ensemble: its cutouts at its input size, one batched forward (the runs of a step share
        # their members and this step's cutout counts: Run.group_key).
        overview, inner = first.cut_counts()
        gens = [r.gen for r in runs]
        views = []
        for member in first.members:
            cutouts = self.cutouts_for(spec, member.input_size, inner) if inner else None
            batch = member_cutouts(images, gens, cutouts, overview, member.input_size, spec.cut_gray)
            with fast.autocast():
                features = member.fast.encode_image(member.perceptor.normalize(batch.images))
            embeds = F.normalize(features, dim=-1).view(len(runs), batch.centers.shape[1], -1)  # (B, n, D)
            views.append((member, embeds, batch, cutouts.pairs() if cutouts is not None else 0))
        total = images.new_zeros(())
        for i, run in enumerate(runs):
            losses, semantic = None, None
            for (member, embeds, batch, pairs), (targets, directions) in zip(views, run.member_targets, strict=True):
                weights = self._cutout_weights(run, batch.centers[i], batch.sizes[i])
                part = prompt_losses(embeds[i], targets, run.weights, run.stops, weights) * member.weight  # (P,)
                losses = part if losses is None else losses + part
                if run.spec.semantic_weight > 0 and pairs:
                    left, right = embeds[i, :pairs], embeds[i, pairs : 2 * pairs]
                    term = semantic_symmetry(left, right, directions[0], directions[-1]) * member.weight
                    semantic = term if semantic is None else semantic + term
            loss = losses.sum()
            terms = {}
            if run.spec.init_weight > 0 and run.init_image is not None:
                loss = loss + run.spec.init_weight * F.mse_loss(images[i : i + 1], run.init_image)
            if run.spec.tone_weight > 0:
                terms["tone"] = tone_asymmetry(images[i : i + 1]).sum()
                loss = loss + run.spec.tone_weight * terms["tone"]
            if semantic is not None:
                terms["semantic"] = semantic
                loss = loss + run.spec.semantic_weight * terms["semantic"]
            extra = self._image_losses(run, images[i : i + 1], (raw if raw is not None else images)[i : i + 1], terms)
            if extra is not None:
                loss = loss + extra
            run.last_terms = {k: v.detach() for k, v in terms.items()}
            finite = torch.isfinite(loss.detach())
            run.finite = finite if run.finite is None else run.finite & finite
            primary = views[0][1]  # the similarity shown is the primary CLIP's (engine.quality.SCORE_CONVENTION)
            run.last_similarity = (primary[i].detach() @ run.targets[: len(run.texts)].T).mean(0)
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
            run.follow_frames()

    @staticmethod
    def _image_losses(run: Run, image: torch.Tensor, raw: torch.Tensor, terms: dict) -> torch.Tensor | None:
        """The spec's total-variation, range and saturation losses of one image (in [-1, 1], as Disco's), scaled,
        each also kept in `terms` (None when the spec has none); `raw` is the image before the clamp (the same image
        for a generator that cannot overshoot)."""
        spec, loss = run.spec, None
        if not (spec.tv_scale > 0 or spec.range_scale > 0 or spec.sat_scale > 0):
            return None
        loss = 0.0
        if spec.tv_scale > 0:
            terms["tv"] = tv_loss(image * 2 - 1).sum()
            loss = loss + spec.tv_scale * terms["tv"]
        if spec.range_scale > 0:
            terms["range"] = range_loss(raw * 2 - 1).sum()
            loss = loss + spec.range_scale * terms["range"]
        if spec.sat_scale > 0:
            terms["saturation"] = saturation_loss(raw * 2 - 1).sum()
            loss = loss + spec.sat_scale * terms["saturation"]
        return loss

    def cutouts_for(self, spec: JobSpec, size: int | None = None, cutn: int | None = None) -> Cutouts:
        """The (inner) cutout sampler of a spec's layout, at a CLIP's input `size` (default the primary's) and `cutn`
        cutouts (default the spec's): even coverage along the split axis, mirrored pairs."""
        stratify = {"panorama": 0, "vertical": 1}.get(spec.layout)
        return Cutouts(
            size or self.perceptor.input_size,
            cutn or spec.cutn,
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
            frame=run.frame,
            frames=run.spec.animation.frames if run.spec.animation is not None else 0,
        )

    def preview(self, run: Run):
        """The latest image as a PIL image (one device-to-host copy; encoding it is left to the caller)."""
        return to_pil(run.last_image if run.last_image is not None else run.image())

    def result(self, run: Run, elapsed: float, cancelled: bool = False) -> Result:
        """The run's Result: the PNG with its recipe, CLIP scores per text, and the unsafe score and label at levels
        that check images (for an animation, those of its most unsafe frame: its video shows them all)."""
        image = run.image()
        self.check_finite(run, image)
        scores = self.scores(image, run.texts)
        unsafe, label = self.safety.score(image) if checks_images(run.spec.moderation) else (None, None)
        if unsafe is not None and run.spec.animation is not None:  # the video shows every frame: each is judged
            for frame in run.frames:
                unsafe, label = max((unsafe, label), self.safety.score(frame), key=lambda verdict: verdict[0])
        meta = recipe(
            run.spec, run.width, run.height, run.step_index, {"scores": dict(zip(run.texts, scores, strict=True))}
        )
        video = preview = None
        if run.spec.animation is not None:  # the frames made so far, also when stopped (at least the first)
            from engine.animation import outputs

            video, preview = outputs(run.frames, to_pil(image), run.spec.animation.fps)
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
            video=video,
            preview_animation=preview,
            frames_done=len(run.frames) if run.frames else int(video is not None),
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
