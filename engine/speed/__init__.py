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

    # auto = bf16 on a CUDA device (fp16 where bf16 is missing) and on a CPU that computes bf16 natively (AVX512-BF16
    # or AMX: `cpu_bf16_flags`), fp32 on other CPUs
    precision: str = "auto"
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


# The CPU flags (Linux's /proc/cpuinfo names) of native bf16 arithmetic: AVX512-BF16 (Intel since Cooper Lake and
# Sapphire Rapids, AMD since Zen 4) and AMX (Intel since Sapphire Rapids). Without them torch emulates bf16 and
# is slower than fp32.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The native-bf16 flags this CPU has (of BF16_FLAGS), read from /proc/cpuinfo (or `cpuinfo`, its text);
    empty where it has none or the file cannot be read. The torch side asks torch the same question
    (`engine.speed.fast.cpu_computes_bf16`); this one serves the bot's memory check, which loads no torch."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return ()
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return tuple(flag for flag in BF16_FLAGS if flag in flags)


def cpu_precision(precision: str = "auto") -> str:
    """What `precision` means on this machine's CPU, in words (`python -m engine.models` prints it)."""
    if precision != "auto":
        return f"{precision} (IMAGINE_PRECISION={precision})"
    flags = cpu_bf16_flags()
    if flags:
        return f"bf16 (auto: this CPU computes bf16 natively: {', '.join(flags)}; IMAGINE_PRECISION=fp32 forces fp32)"
    return "fp32 (auto: this CPU has no native bf16 arithmetic)"


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
