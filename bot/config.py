"""Settings: the bot's and the GPU worker's only reader of the environment (and of `.env`). The token and the Redis
URL's password never appear in a repr or a log (`secrets()` lists them for `bot.logs`). The engine's command lines
have their own reader of the same keys, `engine.loading.ModelSettings.from_env`; `model_settings()` hands the engine
its part of these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bot.logs import redact, url_secrets
from engine.env import load_env
from engine.models import registry
from engine.moderation import LEVELS
from engine.speed import Speed, parse_flag

# Every key the bot reads, with its default and meaning; `.env.example` is checked against this table.
KEYS: dict[str, tuple[str, str]] = {
    "DISCORD_TOKEN": ("", "the bot's token from the Discord developer portal (required)"),
    "DEV_GUILD_ID": ("", "a guild id to copy the commands to for instant updates while developing"),
    "IMAGINE_DATA_DIR": ("data", "where the database, images and snapshots are kept"),
    "IMAGINE_MODELS_DIR": ("models", "models directory (python -m engine.models download puts files here)"),
    "IMAGINE_VQGAN_CONFIG": ("", "explicit VQGAN .yaml (overrides the models directory)"),
    "IMAGINE_VQGAN_CHECKPOINT": ("", "explicit VQGAN .ckpt (overrides the models directory)"),
    "IMAGINE_CLIP_CHECKPOINT": ("", "explicit CLIP checkpoint (overrides the models directory)"),
    "IMAGINE_CLIP_MODEL": (registry.DEFAULT_CLIP, "open_clip architecture used for guidance"),
    "HF_ENDPOINT": ("", "a Hugging Face Hub mirror for the CLIP download (empty: huggingface.co)"),
    "IMAGINE_DEVICE": ("auto", "cpu, cuda, cuda:1 or auto"),
    "IMAGINE_MAX_CONCURRENT": ("auto", "jobs advanced together in one batched step (auto: from GPU memory, 1 on CPU)"),
    "IMAGINE_PRECISION": ("auto", "auto (bf16 on CUDA and on CPUs with native bf16, else fp32), fp32, bf16 or fp16"),
    "IMAGINE_COMPILE": ("0", "1 to torch.compile the decoder and CLIP (faster steps on GPU after a slow start)"),
    "IMAGINE_CHECKPOINT": ("0", "1 to recompute decoder activations in the backward (less memory, slower)"),
    "IMAGINE_CHANNELS_LAST": ("1", "1 to keep decoder activations channels-last on CUDA (0 to turn it off)"),
    "IMAGINE_FAST_CLIP": ("1", "1 for the packed-attention form of CLIP's image tower (0: the stock modules)"),
    "IMAGINE_BACKEND": (
        "embedded",
        "embedded (the engine in the bot's process) or celery (GPU workers on other hosts)",
    ),
    "IMAGINE_REDIS_URL": (
        "redis://localhost:6379/0",
        "the Redis of the celery backend (broker, events, snapshots): redis://, or rediss:// for TLS",
    ),
    "IMAGINE_WORKER_SLOTS": ("1", "jobs one GPU worker (python -m bot.backends.celery.worker) runs at once, batched"),
    "IMAGINE_MAX_STEPS": ("500", "the most steps a member may ask for"),
    "IMAGINE_DEFAULT_STEPS": ("300", "steps when a member does not say"),
    "IMAGINE_MAX_QUEUED_PER_USER": ("3", "waiting jobs one member may have at once"),
    "IMAGINE_MAX_QUEUE": ("50", "waiting jobs in all"),
    "IMAGINE_CONTINUE_STEPS": ("100", "steps the Continue button adds"),
    "IMAGINE_UPSCALE_STEPS": ("100", "steps the Upscale button runs at twice the size"),
    "IMAGINE_SNAPSHOT_EVERY": ("25", "steps between snapshots (crash recovery, Continue, Branch)"),
    "IMAGINE_SNAPSHOT_BUDGET": ("6", "snapshots kept per job: the newest and evenly spaced older ones"),
    "IMAGINE_RETENTION_DAYS": ("30", "days a finished job's snapshots and the uploads are kept (0: forever)"),
    "IMAGINE_DISK_BUDGET_MB": ("0", "MB for images, snapshots and uploads; the oldest go first (0: no budget)"),
    "IMAGINE_TOURNAMENT_STEPS": ("100", "steps of each candidate's first stage in a seed tournament"),
    "IMAGINE_TOURNAMENT_WAIT": ("600", "seconds before the most voted (then best scoring) candidate goes on"),
    "IMAGINE_TIMELAPSE": ("1", "1 to post a timelapse of every finished job (0 to turn it off)"),
    "IMAGINE_EDIT_INTERVAL": ("5", "seconds between edits of one job's status message"),
    "IMAGINE_MODERATION": (
        "spoiler",
        "the output check of servers that chose none: off, spoiler, withhold or strict (see README)",
    ),
    "IMAGINE_GALLERY_PORT": ("0", "port of the web gallery served by the bot (0: no gallery)"),
    "IMAGINE_GALLERY_HOST": ("127.0.0.1", "address the gallery listens on (0.0.0.0 to serve other hosts)"),
    "IMAGINE_GALLERY_URL": ("", "the gallery's public address, for links from the Recipe button"),
    "IMAGINE_LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING"),
    "IMAGINE_LOG_FORMAT": ("text", "text, or json: one JSON object a line, with the job's id on every line of a job"),
    "IMAGINE_HEALTH_PORT": ("8081", "port of the bot's /healthz, /readyz and /metrics (0: none)"),
    "IMAGINE_HEALTH_HOST": (
        "127.0.0.1",
        "address /healthz, /readyz and /metrics listen on, the bot's and a worker's (0.0.0.0 for a scraper elsewhere)",
    ),
    "IMAGINE_WORKER_HEALTH_PORT": ("8082", "port of a GPU worker's own /healthz, /readyz and /metrics (0: none)"),
}


class ConfigError(ValueError):
    """A setting that cannot be used, named with its key and what it should be (one sentence)."""


REDIS_SCHEMES = ("redis", "rediss")  # what Celery's Redis broker speaks
MAX_WORKER_SLOTS = 64  # jobs one GPU worker runs at once; the bot counts no heartbeat that claims more

SPEED_KEYS = (
    "IMAGINE_PRECISION",
    "IMAGINE_COMPILE",
    "IMAGINE_CHECKPOINT",
    "IMAGINE_CHANNELS_LAST",
    "IMAGINE_FAST_CLIP",
)


@dataclass(frozen=True)
class Settings:
    """What the bot needs to run. Build with `Settings.from_env()`."""

    token: str = field(repr=False)
    dev_guild_id: int | None = None
    data_dir: Path = Path("data")
    models_dir: Path = Path("models")
    vqgan_config: Path | None = None
    vqgan_checkpoint: Path | None = None
    clip_checkpoint: Path | None = None
    clip_model: str = registry.DEFAULT_CLIP
    hf_endpoint: str | None = None
    device: str = "auto"
    max_concurrent: int | None = None  # None: ask the backend (from GPU memory, or the live workers' slots)
    backend: str = "embedded"
    redis_url: str = "redis://localhost:6379/0"
    worker_slots: int = 1
    speed: Speed = Speed()
    max_steps: int = 500
    default_steps: int = 300
    max_queued_per_user: int = 3
    max_queue: int = 50
    continue_steps: int = 100
    upscale_steps: int = 100
    snapshot_every: int = 25
    snapshot_budget: int = 6
    retention_days: float = 30.0
    disk_budget_mb: int = 0
    edit_interval: float = 5.0
    timelapse: bool = True
    tournament_steps: int = 100
    tournament_wait: float = 600.0
    moderation: str = "spoiler"
    gallery_port: int = 0
    gallery_host: str = "127.0.0.1"
    gallery_url: str = ""
    log_level: str = "INFO"
    log_format: str = "text"  # text | json
    # from_env's defaults are 8081 and 8082; settings built by hand (tests) open no port unless they say so
    health_port: int = 0
    health_host: str = "127.0.0.1"
    worker_health_port: int = 0

    def __repr__(self) -> str:  # the dataclass repr already hides the token; say so explicitly
        shown = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k != "token")
        return redact(f"Settings(token=<hidden>, {shown})", self.secrets())

    def secrets(self) -> tuple[str, ...]:
        """What no log line or message may show: the token, and the Redis password as written in the URL and
        percent-decoded (`bot.logs.install` takes them)."""
        return tuple(s for s in (self.token, *url_secrets(self.redis_url)) if s)

    @property
    def db_path(self) -> Path:
        """The SQLite database, in the data directory."""
        return self.data_dir / "imagine.sqlite"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, dotenv: str | Path | None = None) -> Settings:
        """Read settings from `environ` (default: os.environ after loading `.env`). Raises ConfigError with the
        key name for a value that is not of the right kind."""
        if environ is None:
            environ = load_env(dotenv)
        get = lambda key: (environ.get(key) or KEYS[key][0]).strip()  # noqa: E731

        def integer(key: str, low: int = 0, high: int | None = None) -> int:
            try:
                value = int(get(key))
            except ValueError:
                raise ConfigError(f"{key} must be a whole number, not {get(key)!r}") from None
            if value < low:
                raise ConfigError(f"{key} must be at least {low}")
            if high is not None and value > high:
                raise ConfigError(f"{key} must be at most {high}")
            return value

        def path(key: str) -> Path | None:
            return Path(get(key)) if get(key) else None

        def backend(value: str) -> str:
            if value.lower() not in ("embedded", "celery"):
                raise ConfigError(f"IMAGINE_BACKEND must be embedded or celery, not {value!r}")
            return value.lower()

        try:
            speed = Speed.from_env({k: get(k) for k in SPEED_KEYS})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

        def moderation(value: str) -> str:
            if value.lower() not in LEVELS:
                raise ConfigError(f"IMAGINE_MODERATION must be one of {', '.join(LEVELS)}, not {value!r}")
            return value.lower()

        def redis_url(value: str) -> str:
            try:
                parts = urlsplit(value)
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            except ValueError as exc:
                raise ConfigError(f"IMAGINE_REDIS_URL is not a URL that can be used ({exc})") from None
            if parts.scheme.lower() not in REDIS_SCHEMES:
                raise ConfigError(
                    f"IMAGINE_REDIS_URL must begin with redis:// or rediss:// (TLS), not {redact(value)!r:.80}"
                )
            if "password" in parse_qs(parts.query):  # redis-py reads it there, Celery's broker does not
                raise ConfigError(
                    "IMAGINE_REDIS_URL must carry the password before the host (rediss://user:password@host), "
                    "not in ?password="
                )
            return value

        def log_format(value: str) -> str:
            if value.lower() not in ("text", "json"):
                raise ConfigError(f"IMAGINE_LOG_FORMAT must be text or json, not {value!r}")
            return value.lower()

        try:
            edit_interval = float(get("IMAGINE_EDIT_INTERVAL"))
        except ValueError:
            raise ConfigError("IMAGINE_EDIT_INTERVAL must be a number of seconds") from None
        return cls(
            token=get("DISCORD_TOKEN"),
            dev_guild_id=integer("DEV_GUILD_ID") if get("DEV_GUILD_ID") else None,
            data_dir=Path(get("IMAGINE_DATA_DIR")),
            models_dir=Path(get("IMAGINE_MODELS_DIR")),
            vqgan_config=path("IMAGINE_VQGAN_CONFIG"),
            vqgan_checkpoint=path("IMAGINE_VQGAN_CHECKPOINT"),
            clip_checkpoint=path("IMAGINE_CLIP_CHECKPOINT"),
            clip_model=get("IMAGINE_CLIP_MODEL"),
            hf_endpoint=get("HF_ENDPOINT") or None,
            device=get("IMAGINE_DEVICE"),
            max_concurrent=None
            if get("IMAGINE_MAX_CONCURRENT").lower() == "auto"
            else integer("IMAGINE_MAX_CONCURRENT", 1),
            speed=speed,
            backend=backend(get("IMAGINE_BACKEND")),
            redis_url=redis_url(get("IMAGINE_REDIS_URL")),
            worker_slots=integer("IMAGINE_WORKER_SLOTS", 1, MAX_WORKER_SLOTS),
            max_steps=integer("IMAGINE_MAX_STEPS", 1),
            default_steps=integer("IMAGINE_DEFAULT_STEPS", 1),
            max_queued_per_user=integer("IMAGINE_MAX_QUEUED_PER_USER", 1),
            max_queue=integer("IMAGINE_MAX_QUEUE", 1),
            continue_steps=integer("IMAGINE_CONTINUE_STEPS", 1),
            upscale_steps=integer("IMAGINE_UPSCALE_STEPS", 1),
            snapshot_every=integer("IMAGINE_SNAPSHOT_EVERY", 0),
            snapshot_budget=integer("IMAGINE_SNAPSHOT_BUDGET", 2),
            retention_days=float(integer("IMAGINE_RETENTION_DAYS", 0)),
            disk_budget_mb=integer("IMAGINE_DISK_BUDGET_MB", 0),
            edit_interval=max(1.0, edit_interval),
            timelapse=parse_flag("IMAGINE_TIMELAPSE", get("IMAGINE_TIMELAPSE"), True),
            tournament_steps=integer("IMAGINE_TOURNAMENT_STEPS", 1),
            tournament_wait=float(integer("IMAGINE_TOURNAMENT_WAIT", 0)),
            moderation=moderation(get("IMAGINE_MODERATION")),
            gallery_port=integer("IMAGINE_GALLERY_PORT", 0),
            gallery_host=get("IMAGINE_GALLERY_HOST"),
            gallery_url=get("IMAGINE_GALLERY_URL").rstrip("/"),
            log_level=get("IMAGINE_LOG_LEVEL").upper(),
            log_format=log_format(get("IMAGINE_LOG_FORMAT")),
            health_port=integer("IMAGINE_HEALTH_PORT", 0, 65535),
            health_host=get("IMAGINE_HEALTH_HOST"),
            worker_health_port=integer("IMAGINE_WORKER_HEALTH_PORT", 0, 65535),
        )

    def model_settings(self):
        """The engine's `ModelSettings` for these settings: where the models are, the device and the speed."""
        from engine.loading import ModelSettings  # torch-free, like this module

        return ModelSettings(
            models_dir=self.models_dir,
            vqgan_config=self.vqgan_config,
            vqgan_checkpoint=self.vqgan_checkpoint,
            clip_checkpoint=self.clip_checkpoint,
            clip_model=self.clip_model,
            hf_endpoint=self.hf_endpoint,
            device=self.device,
            speed=self.speed,
        )

    def vqgan_installed(self) -> bool:
        """Whether some VQGAN's files are there (in the models directory, or given explicitly)."""
        return bool(registry.installed_vqgans(self.models_dir)) or bool(self.vqgan_config and self.vqgan_checkpoint)

    def default_model(self) -> str:
        """The VQGAN a member gets without choosing: the registry's default if installed, else the first installed."""
        return registry.default_vqgan(self.models_dir)

    def problems(self) -> list[str]:
        """What stops the bot from starting, as sentences for the operator."""
        found = []
        if not self.token:
            found.append("DISCORD_TOKEN is not set: put the bot token in .env (see .env.example).")
        if self.backend == "embedded" and not self.vqgan_installed():
            found.append(
                f"No VQGAN is installed in {self.models_dir}: run `python -m engine.models download "
                f"{registry.DEFAULT_VQGAN} --clip {self.clip_model}`, or set IMAGINE_VQGAN_CONFIG and "
                "IMAGINE_VQGAN_CHECKPOINT."
            )
        return found
