"""The downloader against a real HTTP server on loopback: resume, checksums, mirrors, offline."""

import hashlib
import http.server
import socket
import threading

import pytest

from engine.errors import CheckpointError
from engine.models.download import fetch, fetch_any, sha256_from_url, verify

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    ranges: list = []
    fail_after: int | None = None

    def do_GET(self):  # noqa: N802
        if self.path != "/file.bin":
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        if header:
            start = int(header.split("=")[1].rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_fetch_with_checksum_and_progress(server, tmp_path):
    seen = []
    path = fetch(f"{server}/file.bin", tmp_path / "m.ckpt", SHA, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert verify(path)
    # a second fetch finds the file complete and downloads nothing
    fetch(f"{server}/file.bin", path, SHA)
    assert len(_Handler.ranges) == 1


def test_resume_partial_download(server, tmp_path):
    dest = tmp_path / "m.ckpt"
    (tmp_path / "m.ckpt.part").write_bytes(PAYLOAD[:300_000])
    fetch(f"{server}/file.bin", dest, SHA)
    assert _Handler.ranges == ["bytes=300000-"]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_and_explains(server, tmp_path):
    dest = tmp_path / "m.ckpt"
    with pytest.raises(CheckpointError, match="expected 0000"):
        fetch(f"{server}/file.bin", dest, "0" * 64)
    assert not dest.exists() and not (tmp_path / "m.ckpt.part").exists()


def test_unknown_checksum_is_recorded_then_enforced(server, tmp_path):
    dest = tmp_path / "m.ckpt"
    fetch(f"{server}/file.bin", dest)
    assert (tmp_path / "m.ckpt.sha256").read_text().startswith(SHA)
    dest.write_bytes(b"tampered")
    assert not verify(dest)
    fetch(f"{server}/file.bin", dest)  # re-downloads because the recorded digest no longer matches
    assert dest.read_bytes() == PAYLOAD


def test_offline_explains_local_files(tmp_path):
    with pytest.raises(CheckpointError, match="cannot reach 127.0.0.1.*--vqgan-checkpoint"):
        fetch(f"http://127.0.0.1:{_free_port()}/x.ckpt", tmp_path / "x.ckpt", timeout=5)


def test_mirrors_are_tried_in_turn(server, tmp_path):
    dest = fetch_any((f"{server}/missing", f"{server}/file.bin"), tmp_path / "m.ckpt", SHA)
    assert dest.read_bytes() == PAYLOAD


def test_openai_urls_carry_their_checksum():
    url = "https://openaipublic.azureedge.net/clip/models/" + "ab" * 32 + "/ViT-B-32.pt"
    assert sha256_from_url(url) == "ab" * 32
    assert sha256_from_url("http://mirror.io.community/blob/vqgan/x.ckpt") is None


def test_download_command_offline_message(tmp_path, capsys):
    from engine.models.__main__ import main

    code = main(["download", "vqgan_imagenet_f16_16384", "--dir", str(tmp_path)])
    # this machine has no internet: the command must fail with the offline advice, not a traceback
    if code == 0:  # pragma: no cover - only where the internet is reachable
        pytest.skip("internet reachable")
    assert code == 1
    assert "point --vqgan-checkpoint" in capsys.readouterr().err


# -- CLIP from two sources: OpenAI's URL, then the Hub's copy ---------------------------------------------------
class _Hub(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for the Hub's file endpoint: HEAD answers with the LFS ETag (the SHA-256), GET serves."""

    files: dict = {}
    etags: dict = {}

    def _file(self):
        return type(self).files.get(self.path)

    def do_HEAD(self):  # noqa: N802
        body = self._file()
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("X-Linked-Etag", f'"{type(self).etags.get(self.path, hashlib.sha256(body).hexdigest())}"')
        self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_GET(self):  # noqa: N802
        body = self._file()
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """OpenAI's URL answers 404; the Hub serves a tiny open_clip state dict as `open_clip_model.safetensors`."""
    import open_clip

    from tests.engine import realformats

    weights = realformats.write_hub_state_dict(
        tmp_path / "src" / "tinyhub.safetensors", "tinyhub", realformats.TINY_HUB_CONFIG
    )
    _Hub.files = {"/org/tinyhub/resolve/main/open_clip_model.safetensors": weights.read_bytes()}
    _Hub.etags = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    real_cfg = open_clip.get_pretrained_cfg
    cfg = {"url": f"{url}/clip/models/{'ab' * 32}/tinyhub.pt", "hf_hub": "org/tinyhub/"}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda n, t: cfg if n == "tinyhub" else real_cfg(n, t))
    monkeypatch.setenv("HF_ENDPOINT", url)
    yield url, weights
    httpd.shutdown()


def test_clip_download_falls_back_to_the_hub_and_loads(hub, tmp_path, capsys):
    from engine.models.__main__ import main
    from engine.models.clip import load_clip

    _, weights = hub
    models = tmp_path / "models"
    assert main(["download", "--clip", "tinyhub", "--dir", str(models)]) == 0
    got = models / "clip" / "tinyhub-openai.safetensors"
    assert got.read_bytes() == weights.read_bytes()
    assert verify(got)
    (models / "clip" / "tinyhub.json").write_bytes((weights.parent / "tinyhub.json").read_bytes())
    assert load_clip("tinyhub", models_dir=models).encode_text(["a cat"]).shape == (1, 32)
    # a second run finds the file and asks nobody
    _Hub.files = {}
    assert main(["download", "--clip", "tinyhub", "--dir", str(models)]) == 0


def test_clip_download_refuses_a_bad_digest_in_one_sentence_and_leaves_nothing(hub, tmp_path, capsys):
    from engine.models.__main__ import main

    _Hub.etags = {"/org/tinyhub/resolve/main/open_clip_model.safetensors": "cd" * 32}
    models = tmp_path / "models"
    assert main(["download", "--clip", "tinyhub", "--dir", str(models)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "B/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: Could not download the CLIP weights tinyhub")
    assert "OpenAI: HTTP 404" in err and "is not the expected cdcdcdcdcdcd" in err and "HTTP 404" in err
    assert "0.00B" not in err
    assert not models.exists()  # no half-written file, no empty folder


def test_clip_download_keeps_folders_that_were_there(hub, tmp_path, capsys):
    from engine.models.__main__ import main

    _Hub.files = {}
    models = tmp_path / "models"
    (models / "vqgan").mkdir(parents=True)
    assert main(["download", "--clip", "tinyhub", "--dir", str(models)]) == 1
    assert sorted(p.name for p in models.iterdir()) == ["vqgan"]
