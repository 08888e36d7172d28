"""Fetching checkpoints: resumable, checksummed, with a progress bar. Only ever run on the operator's request."""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from engine.errors import CheckpointError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
OFFLINE_HELP = (
    "This machine cannot reach {host}. Download the files on a machine with internet access and copy them to "
    "{dest}, or point --vqgan-checkpoint/--vqgan-config/--clip-checkpoint (or IMAGINE_VQGAN_CHECKPOINT, "
    "IMAGINE_VQGAN_CONFIG, IMAGINE_CLIP_CHECKPOINT) at local files."
)


def sha256_of(path: Path) -> str:
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
            raise CheckpointError(f"Downloading {url} failed: HTTP {exc.code} {exc.reason}.", str(dest)) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        host = urllib.parse.urlparse(url).hostname or url
        raise CheckpointError(
            OFFLINE_HELP.format(host=host, dest=dest) + f" ({getattr(exc, 'reason', exc)})", str(dest)
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
                raise CheckpointError(
                    f"The download of {url} stopped at {done} of {total} bytes; run the command again to resume.",
                    str(dest),
                )
    digest = sha256_of(part)
    if expected is not None and digest != expected:
        part.unlink()
        raise CheckpointError(
            f"{dest.name} from {url} has SHA-256 {digest}, expected {expected}: the file was deleted; "
            "run the command again, or try another mirror.",
            str(dest),
        )
    part.replace(dest)
    sidecar.write_text(f"{digest}  {dest.name}\n")
    return dest


def fetch_any(urls: tuple[str, ...], dest: str | Path, sha256: str | None = None, **kwargs) -> Path:
    """Try each mirror in turn; raise the last error if none works."""
    error: CheckpointError | None = None
    for url in urls:
        try:
            return fetch(url, dest, sha256, **kwargs)
        except CheckpointError as exc:
            log.warning("%s", exc)
            error = exc
    assert error is not None
    raise error


def verify(path: str | Path) -> bool:
    """True when `path` matches the digest recorded beside it (`path.sha256`)."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    return path.is_file() and sidecar.is_file() and sha256_of(path) == sidecar.read_text().split()[0]
