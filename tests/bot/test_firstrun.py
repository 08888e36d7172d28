"""What `make run` does before the bot starts: .env and the token, then the missing models, each step once."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from bot import firstrun
from engine.models import registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean(tmp_path, monkeypatch):
    """A fresh clone's folder: .env.example and nothing else; no IMAGINE_/DISCORD_ variables."""
    for key in [k for k in os.environ if k.startswith(("IMAGINE_", "DISCORD_"))]:
        monkeypatch.delenv(key)
    (tmp_path / ".env.example").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    return tmp_path


def test_without_a_token_it_creates_env_and_says_where_the_token_goes(clean, capsys):
    assert firstrun.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "DISCORD_TOKEN is not set: put the bot's token in .env" in err
    assert "DISCORD_TOKEN=" in (clean / ".env").read_text()
    assert firstrun.main([]) == 2  # the second time: the same sentence, .env left as it is


def test_the_token_is_asked_for_at_a_terminal_and_saved(clean, monkeypatch):
    monkeypatch.setattr(firstrun.getpass, "getpass", lambda prompt: "  pasted.token.value ")
    calls = []
    monkeypatch.setattr("engine.models.__main__.download", lambda *a: calls.append(a) or [])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    assert firstrun.main([]) == 0
    assert "DISCORD_TOKEN=pasted.token.value\n" in (clean / ".env").read_text()
    assert calls and calls[0][:2] == ([registry.DEFAULT_VQGAN], [registry.DEFAULT_CLIP])


def test_only_missing_models_are_downloaded(clean, monkeypatch, tiny_models):
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    monkeypatch.setenv("IMAGINE_MODELS_DIR", str(tiny_models))
    monkeypatch.setenv("IMAGINE_CLIP_MODEL", "tiny-clip")
    calls = []
    monkeypatch.setattr("engine.models.__main__.download", lambda *a: calls.append(a) or [])
    assert firstrun.main([]) == 0
    assert calls == []  # tiny_f16 and tiny-clip are there: nothing to fetch
    monkeypatch.setenv("IMAGINE_CLIP_MODEL", "ViT-B-32")
    assert firstrun.main([]) == 0
    assert calls[0][:2] == ([], ["ViT-B-32"])


def test_offline_download_is_one_sentence(clean, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = registry.VQGANS[registry.DEFAULT_VQGAN]
    local = registry.RemoteFile((f"http://127.0.0.1:{port}/model.yaml",))
    monkeypatch.setitem(registry.VQGANS, registry.DEFAULT_VQGAN, entry.__class__(entry.name, "", local, local, 1))
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    monkeypatch.setenv("IMAGINE_CLIP_MODEL", "tiny-clip")
    monkeypatch.setenv("IMAGINE_MODELS_DIR", str(clean / "models"))
    (clean / "models" / "clip").mkdir(parents=True)
    (clean / "models" / "clip" / "tiny-clip.pt").write_bytes(b"present")
    assert firstrun.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "cannot reach 127.0.0.1" in err and "Traceback" not in err
