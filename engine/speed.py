"""Speed settings of the loop: precision, memory layout, compilation and checkpointing, none of which changes
what it computes beyond a tolerance. Standard library only (the settings travel with the bot's configuration);
`engine.fast` applies them to the loaded models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.errors import InvalidSpec

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FP16_LOSS_SCALE = 1024.0


@dataclass(frozen=True)
class Speed:
    """Speed settings. The defaults are what the bot and the CLI use."""

    precision: str = "auto"  # auto = bf16 on a CUDA device (fp16 where bf16 is missing), fp32 on CPU
    channels_last: bool = True  # decoder activations in NHWC on CUDA
    fast_clip: bool = True  # packed attention and matmul patch embedding in CLIP's image tower
    compile: bool = False  # torch.compile the decoder and CLIP's image tower (first steps are slow)
    checkpoint: bool = False  # recompute the decoder's up-sampling blocks in the backward (less memory)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InvalidSpec(f"Unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}.")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Speed:
        env = os.environ if environ is None else environ
        flag = lambda key, default: _flag(env.get(key), default)  # noqa: E731
        return cls(
            precision=env.get("IMAGINE_PRECISION") or "auto",
            channels_last=flag("IMAGINE_CHANNELS_LAST", True),
            fast_clip=flag("IMAGINE_FAST_CLIP", True),
            compile=flag("IMAGINE_COMPILE", False),
            checkpoint=flag("IMAGINE_CHECKPOINT", False),
        )


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


PLAIN = Speed(precision="fp32", channels_last=False, fast_clip=False, compile=False, checkpoint=False)
