"""From settings to a ready Engine: find the model files, load them once, keep them for every later job."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

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
        self._vqgans: dict[str, object] = {}
        self._others: dict[tuple[str, str], object] = {}  # (generator, name) -> a loaded BigGAN or dVAE
        self._safety: dict[str, object] = {}  # CLIP name -> the SafetyCheck its engines share
        self._lock = threading.Lock()
        self._device = None

    @property
    def device(self):
        """The torch device of every model here (the settings' choice, `auto` resolved once)."""
        if self._device is None:
            from engine.run import pick_device

            self._device = pick_device(self.settings.device)
        return self._device

    def perceptor(self, name: str):
        """The CLIP model `name`, loaded on first use."""
        from engine.models.clip import load_clip

        with self._lock:
            if name not in self._perceptors:
                log.info("loading CLIP %s on %s", name, self.device)
                self._perceptors[name] = load_clip(
                    name, self.settings.clip_checkpoint, self.settings.models_dir, self.device
                )
            return self._perceptors[name]

    def vqgan(self, name: str):
        """The VQGAN `name` (from the models directory, or the explicit files), loaded on first use."""
        from engine.models.vqgan import load_vqgan

        with self._lock:
            if name not in self._vqgans:
                config, checkpoint = self.settings.vqgan_files(name)
                log.info("loading VQGAN %s from %s on %s", name, checkpoint, self.device)
                self._vqgans[name] = load_vqgan(config, checkpoint, self.device)
            return self._vqgans[name]

    def _model_dir(self, generator: str, name: str) -> Path:
        try:
            return registry.generator_model_dir(generator, name, self.settings.models_dir)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None

    def biggan(self, name: str):
        """The BigGAN `name` (a folder of the models directory), loaded on first use."""
        from engine.models.biggan import load_biggan

        with self._lock:
            if ("biggan", name) not in self._others:
                directory = self._model_dir("biggan", name)
                log.info("loading BigGAN %s from %s on %s", name, directory, self.device)
                self._others["biggan", name] = load_biggan(directory, self.device)
            return self._others["biggan", name]

    def dvae(self, name: str):
        """The DALL-E dVAE `name` (a folder of the models directory), loaded on first use."""
        from engine.models.dvae import load_dvae

        with self._lock:
            if ("dalle", name) not in self._others:
                log.info("loading the DALL-E dVAE %s on %s", name, self.device)
                self._others["dalle", name] = load_dvae(name, self.settings.models_dir, self.device)
            return self._others["dalle", name]

    def engine_for(self, spec: JobSpec):
        """The Engine for `spec`'s models (loading them if needed)."""
        from engine.run import Engine
        from engine.safety import SafetyCheck

        model = spec.model if spec.generator in ("vqgan", "biggan", "dalle") else ""
        key = (model, spec.clip_model) if spec.generator == "vqgan" else (spec.generator, model, spec.clip_model)
        if key not in self._engines:
            perceptor = self.perceptor(spec.clip_model)
            loaded = {
                "vqgan": lambda: {"vqgan": self.vqgan(model)},
                "biggan": lambda: {"biggan": self.biggan(model)},
                "dalle": lambda: {"dvae": self.dvae(model)},
            }.get(spec.generator, dict)()
            with self._lock:
                safety = self._safety.setdefault(spec.clip_model, SafetyCheck(perceptor))
                self._engines.setdefault(
                    key, Engine(perceptor, device=self.device, speed=self.settings.speed, safety=safety, **loaded)
                )
        return self._engines[key]

    def check(self, spec: JobSpec) -> None:
        """Raise CheckpointError now if the files `spec` needs are absent (before a job is queued)."""
        if spec.generator == "vqgan":
            for path in self.settings.vqgan_files(spec.model):
                if not path.is_file():
                    raise CheckpointError(
                        f"The model {spec.model} is not installed ({path} is missing). "
                        f"Run `python -m engine.models download {spec.model}`.",
                        str(path),
                    )
        elif spec.generator in ("biggan", "dalle"):
            directory = self._model_dir(spec.generator, spec.model)
            needed = ("config.json", "pytorch_model.bin") if spec.generator == "biggan" else ("decoder", "encoder")
            for name in needed:
                candidates = (name, f"{name}.pt", f"{name}.pkl")
                present = any((directory / c).is_file() for c in candidates)
                if not present:
                    raise CheckpointError(
                        f"The model {spec.model} is not installed ({directory / name} is missing). "
                        f"Run `python -m engine.models download {spec.model}`.",
                        str(directory / name),
                    )


MAX_CONCURRENT = 8


def suggest_concurrency(device, width: int = 512, height: int = 512, cutn: int = 32, speed: Speed = Speed()) -> int:
    """How many runs of this size fit on `device` at once (1 on CPU, where batching adds latency, not speed)."""
    import torch

    from engine.fast import autocast_dtype

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
