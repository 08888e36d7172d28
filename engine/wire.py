"""The engine's events as flat fields of bytes, for a message stream between hosts (a Redis Stream entry).

    fields = encode(event)          # {b"type": b"progress", b"data": b"{json}", b"blob": png, ...}
    event = decode(fields)          # the same event back

Standard library only. Binary parts (previews, snapshot states, thumbnails, the final PNG) travel as raw bytes
beside a JSON part; an engine error travels as its class name and sentence and comes back as that class.
"""

from __future__ import annotations

import dataclasses
import json

from engine import errors
from engine.spec import Event, Failed, Finished, JobSpec, Progress, Result, Snapshotted

_ERRORS = {cls.__name__: cls for cls in (errors.InvalidSpec, errors.CheckpointError, errors.OutOfMemory)}


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
        return {b"type": b"finished", b"data": _dump(data), b"blob": result.image}
    if isinstance(event, Failed):
        error = event.error
        kind = type(error).__name__ if type(error).__name__ in _ERRORS else "EngineError"
        message = str(error) if isinstance(error, errors.EngineError) else ""
        return {b"type": b"failed", b"data": _dump({"kind": kind, "message": message})}
    if isinstance(event, Steered):
        return {b"type": b"steered", b"data": _dump({"nonce": event.nonce, "spec": event.spec})}
    raise TypeError(f"not an engine event: {event!r}")


def decode(fields: dict[bytes, bytes]) -> Event | Steered:
    """Stream fields back into the event they encode."""
    kind = fields[b"type"]
    data = json.loads(fields[b"data"])
    if kind == b"progress":
        data["losses"] = tuple(data["losses"])
        data["similarities"] = tuple(data["similarities"])
        return Progress(**data, preview=fields.get(b"blob"))
    if kind == b"snapshot":
        return Snapshotted(data["step"], fields[b"blob"], fields.get(b"thumb"))
    if kind == b"finished":
        scores = tuple((text, float(score)) for text, score in data.pop("scores"))
        spec = JobSpec.from_json(data.pop("spec"))
        return Finished(Result(spec=spec, image=fields[b"blob"], scores=scores, **data))
    if kind == b"failed":
        cls = _ERRORS.get(data["kind"], errors.EngineError)
        message = data["message"] or "Something went wrong on a GPU worker while making this image; it was logged."
        return Failed(cls(message))
    if kind == b"steered":
        return Steered(data["nonce"], data["spec"])
    raise ValueError(f"unknown event type {kind!r}")
