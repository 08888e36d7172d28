"""From settings to a ready Engine: find the model files, load them once, keep them for every later job."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from engine import generators
from engine.errors import CheckpointError
from engine.memory import MODELS_BYTES, Budget, cpu_budget, step_bytes, uses_half
from engine.models import registry
from engine.spec import JobSpec
from engine.speed import Speed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    """Where the models are. Explicit paths win over the models directory's layout."""

    models_dir: Path = Path(registry.DEFAULT_MODELS_DIR)
    vqgan_config: Path | None = None
    vqgan_checkpoint: Path | None = None
    clip_checkpoint: Path | None = None
    clip_model: str = registry.DEFAULT_CLIP  # the CLIP a spec gets when it names none (the CLI's --clip default)
    hf_endpoint: str | None = None  # a Hugging Face Hub mirror for downloads
    device: str = "auto"
    speed: Speed = Speed()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ModelSettings:
        """The engine's command lines' one reader of the environment (call `engine.env.load_env` first for `.env`):
        IMAGINE_MODELS_DIR, IMAGINE_VQGAN_CONFIG, IMAGINE_VQGAN_CHECKPOINT, IMAGINE_CLIP_CHECKPOINT,
        IMAGINE_CLIP_MODEL, IMAGINE_DEVICE, HF_ENDPOINT and the speed keys (`Speed.from_env`). The bot reads the
        same keys in `bot.config`."""
        env = os.environ if environ is None else environ
        value = lambda key: (env.get(key) or "").strip()  # noqa: E731
        opt = lambda key: Path(value(key)) if value(key) else None  # noqa: E731
        return cls(
            models_dir=registry.models_dir(value("IMAGINE_MODELS_DIR") or None),
            vqgan_config=opt("IMAGINE_VQGAN_CONFIG"),
            vqgan_checkpoint=opt("IMAGINE_VQGAN_CHECKPOINT"),
            clip_checkpoint=opt("IMAGINE_CLIP_CHECKPOINT"),
            clip_model=value("IMAGINE_CLIP_MODEL") or registry.DEFAULT_CLIP,
            hf_endpoint=value("HF_ENDPOINT") or None,
            device=value("IMAGINE_DEVICE") or "auto",
            speed=Speed.from_env(env),
        )

    def vqgan_files(self, name: str) -> tuple[Path, Path]:
        """The .yaml and .ckpt of the VQGAN `name` (explicit paths win over the models directory)."""
        config, checkpoint = registry.vqgan_paths(name, self.models_dir)
        return self.vqgan_config or config, self.vqgan_checkpoint or checkpoint


class EnginePool:
    """One Engine per (VQGAN, CLIP) pair, loaded on first use and shared by every job after."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self._engines: dict[tuple[str, str], object] = {}
        self._perceptors: dict[str, object] = {}
        self._weights: dict[tuple[str, str], object] = {}  # (generator, model) -> its loaded weights
        self._safety: dict[str, object] = {}  # CLIP name -> the SafetyCheck its engines share
        self._lock = threading.Lock()
        self._device = None

    @property
    def device(self):
        """The torch device of every model here (the settings' choice, `auto` resolved once)."""
        if self._device is None:
            from engine.run import pick_device
            from engine.speed.fast import precision_reason

            self._device = pick_device(self.settings.device)
            log.info("device %s, precision %s", self._device, precision_reason(self.settings.speed, self._device))
        return self._device

    @property
    def loaded(self) -> bool:
        """Whether an engine is loaded (the start-up check loads the default one; a job loads its own)."""
        return bool(self._engines)

    def memory(self) -> dict[str, int]:
        """The device's memory now, in bytes: allocated by tensors, reserved by the caching allocator, the peak
        allocated and the total; empty on a CPU, or before anything was loaded (nothing imports torch for it)."""
        if self._device is None or self._device.type != "cuda":
            return {}
        import torch

        device = self._device
        return {
            "allocated": torch.cuda.memory_allocated(device),
            "reserved": torch.cuda.memory_reserved(device),
            "peak": torch.cuda.max_memory_allocated(device),
            "total": torch.cuda.get_device_properties(device).total_memory,
        }

    def perceptor(self, name: str, member: bool = False):
        """The CLIP model `name`, loaded on first use and shared by every engine (ensembles included). The explicit
        checkpoint of the settings (--clip-checkpoint) is the primary CLIP's; an ensemble's other members
        (`member`) come from the models directory unless they are the settings' own CLIP."""
        from engine.models.clip import load_clip

        with self._lock:
            if name not in self._perceptors:
                log.info("loading CLIP %s on %s", name, self.device)
                explicit = self.settings.clip_checkpoint
                if member and name != self.settings.clip_model:
                    explicit = None
                self._perceptors[name] = load_clip(name, explicit, self.settings.models_dir, self.device)
            return self._perceptors[name]

    def member(self, name: str):
        """An ensemble's CLIP model `name` besides the primary (`perceptor`, from the models directory)."""
        return self.perceptor(name, member=True)

    def weights(self, generator: str, model: str):
        """The weights `model` of `generator` (as its declaration loads them), loaded on first use; None for a
        generator that needs none."""
        found = generators.declaration(generator)
        if found.load is None:
            return None
        with self._lock:
            if (generator, model) not in self._weights:
                log.info("loading the %s model %s on %s", generator, model, self.device)
                self._weights[generator, model] = found.load(self.settings, model, self.device)
            return self._weights[generator, model]

    def vqgan(self, name: str):
        """The VQGAN `name` (from the models directory, or the explicit files), loaded on first use."""
        return self.weights("vqgan", name)

    def engine_for(self, spec: JobSpec):
        """The Engine for `spec`'s models (loading them if needed)."""
        from engine.engine import Engine
        from engine.moderation_check import SafetyCheck

        found = generators.declaration(spec.generator)
        key = (spec.generator, spec.model if found.weights else "", spec.clip_model)
        if key not in self._engines:
            perceptor = self.perceptor(spec.clip_model)
            weights = self.weights(spec.generator, spec.model)
            vqgan = weights if spec.generator == "vqgan" else None  # the engine's faster decode is VQGAN's
            with self._lock:
                safety = self._safety.setdefault(spec.clip_model, SafetyCheck(perceptor))
                self._engines.setdefault(
                    key,
                    Engine(
                        perceptor,
                        vqgan,
                        device=self.device,
                        speed=self.settings.speed,
                        weights={spec.generator: weights},
                        safety=safety,
                        clips=self.member,  # an ensemble's other CLIP models, shared through this pool
                    ),
                )
        return self._engines[key]

    def check(self, spec: JobSpec) -> None:
        """Raise CheckpointError now if the files `spec` needs are absent (before a job is queued)."""
        found = generators.declaration(spec.generator)
        missing = found.missing(self.settings, spec.model) if found.missing else None
        if missing is not None:
            raise CheckpointError(
                f"The model {spec.model} is not installed ({missing} is missing). "
                f"Run `python -m engine.models download {spec.model}`.",
                str(missing),
            )
        for k, (name, _) in enumerate(spec.perceptors):
            explicit = self.settings.clip_checkpoint is not None and (k == 0 or name == self.settings.clip_model)
            if not explicit and registry.find_clip_checkpoint(name, self.settings.models_dir) is None:
                raise CheckpointError(
                    f"The CLIP model {name} is not installed. Run `python -m engine.models download --clip {name}`.",
                    str(self.settings.models_dir / "clip"),
                )


MAX_CONCURRENT = 8


def suggest_concurrency(device, width: int = 512, height: int = 512, cutn: int = 32, speed: Speed = Speed()) -> int:
    """How many runs of this size fit on `device` at once (1 on CPU, where batching adds latency, not speed)."""
    import torch

    from engine.speed.fast import autocast_dtype

    device = torch.device(device)
    if device.type != "cuda":
        return 1
    free, _total = torch.cuda.mem_get_info(device)
    per_run = step_bytes(width, height, cutn, autocast_dtype(speed, device) is not None)
    fits = int((free - MODELS_BYTES) // max(per_run, 1))
    return max(1, min(MAX_CONCURRENT, fits))


def device_budget(device, speed: Speed = Speed(), free: bool = True):
    """The memory a job may use on `device` after the models (an `engine.memory.Budget`): on CUDA the free memory
    now (`free`, for one run of the CLI) or the device's total (the bot, whose jobs come and go); on a CPU the
    available RAM. None where it cannot be told."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return cpu_budget(speed.precision)
    free_bytes, total = torch.cuda.mem_get_info(device)
    return Budget((free_bytes if free else total) - MODELS_BYTES, uses_half(speed.precision, "cuda"), "the GPU")
