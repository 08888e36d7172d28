"""The engine's events as flat fields of bytes, for a message stream between hosts (a job's Redis Stream entry: the
Celery worker writes them, the bot's Celery backend reads them).

    fields = encode(event)          # {b"type": b"progress", b"data": b"{json}", b"blob": png, ...}
    event = decode(fields)          # the same event back, or MalformedEvent
    check_pictures(event)           # its PNGs are PNGs of the size they say, or MalformedEvent

Standard library only (with `engine.spec` and `engine.errors`, which are too): the bot imports it without torch.
Binary parts (previews, snapshot states, thumbnails, the final PNG) travel as raw bytes
beside a JSON part; an engine error travels as its class name and sentence and comes back as that class.

Whoever can write to the stream can write anything there, so `decode` trusts nothing: every part and field must be
of its kind and size, numbers finite (but a diverging run's losses, which the embedded backend shows as they are),
unsafe scores from 0 to 1; `check_pictures` adds that the pictures are PNGs no larger than they say. Anything else
is a MalformedEvent: one sentence for the member, the detail for the log.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from typing import Any

from engine import errors
from engine.events import Event, Failed, Finished, Progress, Result, Snapshotted
from engine.keyframes import MAX_FRAMES
from engine.spec import MAX_SIDE, MAX_TOTAL_STEPS, MAX_UPSCALES, JobSpec

_ERRORS = {
    cls.__name__: cls for cls in (errors.InvalidSpec, errors.Diverged, errors.CheckpointError, errors.OutOfMemory)
}

MAX_IMAGE_BYTES = 64 * 2**20  # a final PNG or a preview
MAX_THUMBNAIL_BYTES = 2**20  # a snapshot's small WebP
MAX_DATA_BYTES = 2**20  # the JSON part
MAX_MESSAGE_CHARS = 2000  # an engine error's sentence
MAX_TEXT_CHARS = 10_000  # a prompt, a label, a spec's own JSON is bounded by MAX_DATA_BYTES
MAX_VALUES = 256  # losses, similarities, scores: one per prompt, region and image prompt
MAX_PIXELS_SIDE = MAX_SIDE << MAX_UPSCALES  # the largest side an upscaled image reaches
MAX_STEP = MAX_TOTAL_STEPS  # every stage's or every frame's steps
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_VIDEO_BYTES = 64 * 2**20  # an animation's MP4 (engine.animation.MAX_VIDEO_BYTES) or its WebP preview


class MalformedEvent(errors.EngineError, ValueError):
    """A stream entry that is not an event as `encode` writes it; the message is for the member, `detail` (what
    was wrong) for the log."""

    SENTENCE = "A GPU worker sent back something that could not be read, so this job was stopped; it was logged."

    def __init__(self, detail: str) -> None:
        super().__init__(self.SENTENCE)
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Steered:
    """A running job's prompt was changed at the request `nonce`; `spec` is its new spec (JSON)."""

    nonce: str
    spec: str


def _dump(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode(event: Event | Steered) -> dict[bytes, bytes]:
    """One event as stream fields."""
    if isinstance(event, Progress):
        data = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name != "preview"}
        fields = {b"type": b"progress", b"data": _dump(data)}
        if event.preview is not None:
            fields[b"blob"] = event.preview
        return fields
    if isinstance(event, Snapshotted):
        fields = {b"type": b"snapshot", b"data": _dump({"step": event.step}), b"blob": event.state}
        if event.thumbnail is not None:
            fields[b"thumb"] = event.thumbnail
        return fields
    if isinstance(event, Finished):
        result = event.result
        data = {
            "spec": result.spec.to_json(),
            "width": result.width,
            "height": result.height,
            "steps_done": result.steps_done,
            "scores": result.scores,
            "elapsed": result.elapsed,
            "cancelled": result.cancelled,
            "unsafe": result.unsafe,
            "unsafe_label": result.unsafe_label,
        }
        fields = {b"type": b"finished", b"data": _dump(data), b"blob": result.image}
        if result.video is not None:  # an animation
            data["frames_done"] = result.frames_done
            fields.update({b"data": _dump(data), b"video": result.video})
            if result.preview_animation is not None:
                fields[b"preview_animation"] = result.preview_animation
        return fields
    if isinstance(event, Failed):
        error = event.error
        kind = type(error).__name__ if type(error).__name__ in _ERRORS else "EngineError"
        message = str(error) if isinstance(error, errors.EngineError) else ""
        return {b"type": b"failed", b"data": _dump({"kind": kind, "message": message[:MAX_MESSAGE_CHARS]})}
    if isinstance(event, Steered):
        return {b"type": b"steered", b"data": _dump({"nonce": event.nonce, "spec": event.spec})}
    raise TypeError(f"not an engine event: {event!r}")


# -- reading: every part checked -------------------------------------------------------------------------------
# The parts of each kind of entry (besides b"type" and b"data"): required, optional.
_PARTS = {
    b"progress": ((), (b"blob",)),
    b"snapshot": ((b"blob",), (b"thumb",)),
    b"finished": ((b"blob",), (b"video", b"preview_animation")),
    b"failed": ((), ()),
    b"steered": ((), ()),
}
# The JSON fields of each kind: required, optional (a worker of an older version leaves the newer ones out).
_FIELDS = {
    b"progress": (
        {"step", "steps", "loss", "losses", "elapsed"},
        {"width", "height", "similarities", "prompt", "unsafe", "frame", "frames"},
    ),
    b"snapshot": ({"step"}, set()),
    b"finished": (
        {"spec", "width", "height", "steps_done", "scores", "elapsed", "cancelled"},
        {"unsafe", "unsafe_label", "frames_done"},
    ),
    b"failed": ({"kind", "message"}, set()),
    b"steered": ({"nonce", "spec"}, set()),
}


def _data(raw: Any, kind: bytes) -> dict[str, Any]:
    if not isinstance(raw, bytes) or len(raw) > MAX_DATA_BYTES:
        raise MalformedEvent("the data part is missing or too large")
    try:
        data = json.loads(raw)  # NaN and Infinity read as floats: each field says whether it takes them
    except (ValueError, RecursionError) as exc:  # not JSON, a number of thousands of digits, nesting too deep
        raise MalformedEvent(f"the data is not JSON that can be read ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise MalformedEvent("the data is not a JSON object")
    required, optional = _FIELDS[kind]
    if missing := required - set(data):
        raise MalformedEvent(f"the data lacks {', '.join(sorted(missing))}")
    if unknown := set(data) - required - optional:
        raise MalformedEvent(f"the data has unknown fields {', '.join(sorted(unknown))[:200]}")
    return data


def _int(data: dict, name: str, low: int, high: int) -> int:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedEvent(f"{name} is not a whole number from {low} to {high}")
    return value


def _number(value: Any, name: str, low: float = -math.inf, high: float = math.inf, finite: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedEvent(f"{name} is not a number")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        if finite:
            raise MalformedEvent(f"{name} is not a finite number")
        return value
    if not low <= value <= high:
        raise MalformedEvent(f"{name} is not from {low:g} to {high:g}")
    return value


def _numbers(data: dict, name: str, finite: bool = True) -> tuple[float, ...]:
    values = data.get(name, [])
    if not isinstance(values, list) or len(values) > MAX_VALUES:
        raise MalformedEvent(f"{name} is not a list of at most {MAX_VALUES} numbers")
    return tuple(_number(v, name, finite=finite) for v in values)


def _unsafe(data: dict) -> float | None:
    value = data.get("unsafe")
    return None if value is None else _number(value, "unsafe", 0.0, 1.0)


def _text(data: dict, name: str, limit: int = MAX_TEXT_CHARS, optional: bool = False) -> str | None:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise MalformedEvent(f"{name} is not a text of at most {limit} characters")
    return value


def _blob(fields: dict, name: bytes, limit: int | None) -> bytes | None:
    value = fields.get(name)
    if value is not None and (not isinstance(value, bytes) or (limit is not None and len(value) > limit)):
        raise MalformedEvent(f"the {name.decode()} part is not bytes of at most {limit} bytes")
    return value


def png_size(data: bytes) -> tuple[int, int] | None:
    """The width and height a PNG's header gives, or None if `data` does not begin as a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _png(data: bytes, what: str, size: tuple[int, int] | None = None) -> bytes:
    found = png_size(data)
    if found is None:
        raise MalformedEvent(f"{what} is not a PNG")
    if size is not None and found != size:
        raise MalformedEvent(f"{what} is {found[0]}x{found[1]}, not the {size[0]}x{size[1]} it says")
    if not (0 < found[0] <= MAX_PIXELS_SIDE and 0 < found[1] <= MAX_PIXELS_SIDE):
        raise MalformedEvent(f"{what} claims {found[0]}x{found[1]} pixels")
    return data


def decode(fields: dict[bytes, bytes]) -> Event | Steered:
    """Stream fields back into the event they encode; MalformedEvent for anything `encode` does not write."""
    if not isinstance(fields, dict):
        raise MalformedEvent("the entry is not a set of fields")
    kind = fields.get(b"type")
    if kind not in _PARTS:
        raise MalformedEvent(f"unknown event type {kind!r:.60}")
    required, optional = _PARTS[kind]
    parts = set(fields) - {b"type", b"data"}
    if missing := set(required) - parts:
        raise MalformedEvent(f"a {kind.decode()} entry lacks its {b', '.join(sorted(missing)).decode()} part")
    if unknown := parts - set(required) - set(optional):
        raise MalformedEvent(f"a {kind.decode()} entry has unknown parts {sorted(unknown)!r:.200}")
    data = _data(fields.get(b"data"), kind)
    if kind == b"progress":
        preview = _blob(fields, b"blob", MAX_IMAGE_BYTES)
        return Progress(
            step=_int(data, "step", 0, MAX_STEP),
            steps=_int(data, "steps", 1, MAX_STEP),
            # a diverging run reports its NaN losses before it fails with its own sentence
            loss=_number(data["loss"], "loss", finite=False),
            losses=_numbers(data, "losses", finite=False),
            elapsed=_number(data["elapsed"], "elapsed", 0.0),
            preview=preview,
            width=_int(data, "width", 0, MAX_PIXELS_SIDE) if "width" in data else 0,
            height=_int(data, "height", 0, MAX_PIXELS_SIDE) if "height" in data else 0,
            similarities=_numbers(data, "similarities", finite=False),
            prompt=_text(data, "prompt") if "prompt" in data else "",
            unsafe=_unsafe(data),
            frame=_int(data, "frame", 0, MAX_FRAMES) if "frame" in data else 0,
            frames=_int(data, "frames", 0, MAX_FRAMES) if "frames" in data else 0,
        )
    if kind == b"snapshot":
        return Snapshotted(
            _int(data, "step", 0, MAX_STEP), _blob(fields, b"blob", None), _blob(fields, b"thumb", MAX_THUMBNAIL_BYTES)
        )
    if kind == b"finished":
        width, height = _int(data, "width", 1, MAX_PIXELS_SIDE), _int(data, "height", 1, MAX_PIXELS_SIDE)
        scores = data["scores"]
        if not isinstance(scores, list) or len(scores) > MAX_VALUES:
            raise MalformedEvent(f"scores is not a list of at most {MAX_VALUES} pairs")
        if not all(isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) for pair in scores):
            raise MalformedEvent("scores is not a list of [prompt, score] pairs")
        if not isinstance(data["cancelled"], bool):
            raise MalformedEvent("cancelled is not true or false")
        try:
            spec = JobSpec.from_json(_text(data, "spec", MAX_DATA_BYTES))
        except errors.InvalidSpec as exc:
            raise MalformedEvent(f"the spec cannot be used ({exc})") from None
        return Finished(
            Result(
                spec=spec,
                image=_blob(fields, b"blob", MAX_IMAGE_BYTES),
                width=width,
                height=height,
                steps_done=_int(data, "steps_done", 0, MAX_STEP),
                scores=tuple((text[:MAX_TEXT_CHARS], _number(score, "a score")) for text, score in scores),
                elapsed=_number(data["elapsed"], "elapsed", 0.0),
                cancelled=data["cancelled"],
                unsafe=_unsafe(data),
                unsafe_label=_text(data, "unsafe_label", optional=True),
                video=_blob(fields, b"video", MAX_VIDEO_BYTES),
                preview_animation=_blob(fields, b"preview_animation", MAX_VIDEO_BYTES),
                frames_done=_int(data, "frames_done", 0, MAX_FRAMES) if "frames_done" in data else 0,
            )
        )
    if kind == b"failed":
        cls = _ERRORS.get(_text(data, "kind", 100), errors.EngineError)
        message = _text(data, "message", MAX_MESSAGE_CHARS)
        return Failed(cls(message or "Something went wrong on a GPU worker while making this image; it was logged."))
    return Steered(_text(data, "nonce", 64), _text(data, "spec", MAX_DATA_BYTES))


def check_pictures(event: Event | Steered) -> Event | Steered:
    """`event` itself if its pictures are what they say: the final image a PNG of the result's size, a preview a
    PNG of at most MAX_PIXELS_SIDE a side (a decompression bomb is refused before anything opens it); else
    MalformedEvent. The bot calls it on every event it reads from a worker."""
    if isinstance(event, Finished):
        _png(event.result.image, "the image", (event.result.width, event.result.height))
        video, preview = event.result.video, event.result.preview_animation
        if video is not None and video[4:8] != b"ftyp":  # an MP4 begins with its ftyp box
            raise MalformedEvent("the video is not an MP4")
        if preview is not None and not (preview[:4] == b"RIFF" and preview[8:12] == b"WEBP" or preview[:4] == b"GIF8"):
            raise MalformedEvent("the animation's preview is not a WebP or GIF")
    elif isinstance(event, Progress) and event.preview is not None:
        _png(event.preview, "the preview")
    return event
