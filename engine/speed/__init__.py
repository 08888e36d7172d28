"""Speed settings of the loop: precision, memory layout, compilation and checkpointing, none of which changes
what it computes beyond a tolerance. Standard library only (the settings travel with the bot's configuration);
`engine.speed.fast` applies them to the loaded models.
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
        """Read IMAGINE_PRECISION, IMAGINE_COMPILE, IMAGINE_CHECKPOINT, IMAGINE_CHANNELS_LAST and IMAGINE_FAST_CLIP
        (empty or missing: the default). A value of the wrong kind is an InvalidSpec naming the key."""
        env = os.environ if environ is None else environ
        precision = (env.get("IMAGINE_PRECISION") or "auto").strip().lower()
        if precision not in PRECISIONS:
            raise InvalidSpec(
                f"Unknown precision {precision!r} in IMAGINE_PRECISION; use one of {', '.join(PRECISIONS)}."
            )
        return cls(
            precision=precision,
            channels_last=parse_flag("IMAGINE_CHANNELS_LAST", env.get("IMAGINE_CHANNELS_LAST"), True),
            fast_clip=parse_flag("IMAGINE_FAST_CLIP", env.get("IMAGINE_FAST_CLIP"), True),
            compile=parse_flag("IMAGINE_COMPILE", env.get("IMAGINE_COMPILE"), False),
            checkpoint=parse_flag("IMAGINE_CHECKPOINT", env.get("IMAGINE_CHECKPOINT"), False),
        )


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_flag(key: str, raw: str | None, default: bool) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off; empty means `default`; anything else names the key."""
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value not in _TRUE + _FALSE:
        raise InvalidSpec(f"{key} must be 1 or 0, not {value!r}.")
    return value in _TRUE


PLAIN = Speed(precision="fp32", channels_last=False, fast_clip=False, compile=False, checkpoint=False)
