"""Fetching checkpoints: resumable, checksummed, with a progress bar. Only ever run on the operator's request."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import CheckpointError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class DownloadError(CheckpointError):
    """A download that failed; `reason` is the short cause ("HTTP 404", "cannot reach host", ...)."""

    def __init__(self, message: str, reason: str, path: str | None = None) -> None:
        super().__init__(message, path)
        self.reason = reason


OFFLINE_HELP = (
    "This machine cannot reach {host}. Download the files on a machine with internet access and copy them to "
    "{dest}, or point --vqgan-checkpoint/--vqgan-config/--clip-checkpoint (or IMAGINE_VQGAN_CHECKPOINT, "
    "IMAGINE_VQGAN_CONFIG, IMAGINE_CLIP_CHECKPOINT) at local files."
)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, as hex, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_from_url(url: str) -> str | None:
    """OpenAI publishes each CLIP file under a directory named by its SHA-256."""
    parts = url.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 and re.fullmatch(r"[0-9a-f]{64}", parts[-2]) else None


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "imagine-downloader/1"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def fetch(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    *,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest`, resuming `dest.part` if present, and check the SHA-256.

    With a known checksum a mismatch deletes the partial file and raises. Without one, the digest of the first
    complete download is written to `dest.sha256` and the next fetch or `verify` checks against it.
    `progress(done, total)` is called as bytes arrive.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sidecar = dest.with_name(dest.name + ".sha256")
    expected = sha256 or (sidecar.read_text().split()[0] if sidecar.is_file() else None)
    if dest.is_file():
        if expected is None or sha256_of(dest) == expected:
            return dest
        log.warning("%s does not match its checksum; downloading it again", dest)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is already complete (or longer than the file)
            response, offset = None, offset
        else:
            raise DownloadError(
                f"Downloading {url} failed: HTTP {exc.code} {exc.reason}.", f"HTTP {exc.code}", str(dest)
            ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        host = urllib.parse.urlparse(url).hostname or url
        raise DownloadError(
            OFFLINE_HELP.format(host=host, dest=dest) + f" ({getattr(exc, 'reason', exc)})",
            f"cannot reach {host}",
            str(dest),
        ) from None
    if response is not None:
        with response:
            resumed = offset and response.status == 206
            if offset and not resumed:
                offset = 0  # the server ignored the range: start again
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            done = offset
            with open(part, "ab" if resumed else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
            if total is not None and done != total:
                raise DownloadError(
                    f"The download of {url} stopped at {done} of {total} bytes; run the command again to resume.",
                    f"stopped at {done} of {total} bytes",
                    str(dest),
                )
    digest = sha256_of(part)
    if expected is not None and digest != expected:
        part.unlink()
        raise DownloadError(
            f"{dest.name} from {url} has SHA-256 {digest}, expected {expected}: the file was deleted; "
            "run the command again, or try another mirror.",
            f"SHA-256 {digest[:12]}... is not the expected {expected[:12]}...",
            str(dest),
        )
    part.replace(dest)
    sidecar.write_text(f"{digest}  {dest.name}\n")
    return dest


@dataclass(frozen=True)
class Source:
    """One place a file can come from: a label for messages, its URL, where it goes, and its SHA-256 if known."""

    label: str
    url: str
    dest: Path
    sha256: str | None = None
    hub: bool = False  # a Hugging Face Hub file: its SHA-256 is asked of the Hub first (the LFS ETag)


def _short_reason(exc: CheckpointError) -> str:
    return getattr(exc, "reason", None) or str(exc)


def hub_sha256(url: str, timeout: float = 30.0) -> str | None:
    """The SHA-256 the Hugging Face Hub publishes for a file (its LFS ETag), or None for a small non-LFS file."""
    import huggingface_hub

    try:
        meta = huggingface_hub.get_hf_file_metadata(url, timeout=timeout)
    except Exception as exc:  # httpx and huggingface_hub raise their own kinds for network and HTTP errors
        status = getattr(getattr(exc, "response", None), "status_code", None)
        reason = f"HTTP {status}" if status else f"cannot reach {urllib.parse.urlparse(url).hostname}"
        raise DownloadError(f"Asking the Hub about {url} failed ({reason}).", reason) from None
    etag = (meta.etag or "").strip('"')
    return etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None


def fetch_first(sources: list[Source], what: str, progress_for=None, timeout: float = 60.0) -> Path:
    """Fetch from the first source that works. When none does, raise one CheckpointError naming each source's
    reason once. `progress_for(source)` returns the progress callback of that attempt (or None)."""
    reasons = []
    created = {d for s in sources for d in (s.dest.parent, *s.dest.parent.parents) if not d.exists()}
    for source in sources:
        try:
            sha256 = source.sha256
            if source.hub and sha256 is None:
                sha256 = hub_sha256(source.url, timeout)
            return fetch(
                source.url,
                source.dest,
                sha256,
                progress=progress_for(source) if progress_for else None,
                timeout=timeout,
            )
        except CheckpointError as exc:
            log.debug("%s: %s", source.label, exc)
            reasons.append(f"{source.label}: {_short_reason(exc)}")
    for folder in sorted(created, key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only the folders this call made, and only when they are empty
    dest = sources[0].dest.parent if sources else Path(".")
    raise CheckpointError(
        f"Could not download {what} ({'; '.join(reasons)}). Check this machine's internet access and run the "
        f"command again (it resumes), or copy the files from elsewhere into {dest}, or point --vqgan-checkpoint, "
        "--vqgan-config and --clip-checkpoint (IMAGINE_VQGAN_CHECKPOINT, IMAGINE_VQGAN_CONFIG, "
        "IMAGINE_CLIP_CHECKPOINT) at local files.",
        str(dest),
    )


def fetch_any(
    urls: tuple[str, ...],
    dest: str | Path,
    sha256: str | None = None,
    *,
    what: str | None = None,
    progress_for=None,
    timeout: float = 60.0,
) -> Path:
    """Try each mirror of one file in turn (each labelled by its host); one CheckpointError naming every failure
    if none works. `what` names the file in that sentence (default: its file name)."""
    dest = Path(dest)
    sources = [Source(urllib.parse.urlparse(u).hostname or u, u, dest, sha256) for u in urls]
    return fetch_first(sources, what or dest.name, progress_for, timeout)


def verify(path: str | Path) -> bool:
    """True when `path` matches the digest recorded beside it (`path.sha256`)."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    return path.is_file() and sidecar.is_file() and sha256_of(path) == sidecar.read_text().split()[0]
