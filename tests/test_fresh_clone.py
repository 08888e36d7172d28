"""The README's two commands on a fresh clone, as far as this machine allows: `make run` must get to the point
where it needs a token or the network and say so in a sentence. (`make test` on a fresh clone is what CI runs.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


@pytest.fixture
def clone(tmp_path):
    if shutil.which("git") is None or shutil.which("make") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git, make and a git checkout")
    target = tmp_path / "imagine"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    return target


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "DISCORD_", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


def _make_run(clone: Path, env: dict, *make_args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", *make_args, "run"], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _reuse_this_environment() -> list[str]:
    """Make's targets that build the environment are taken as done: this process's venv is used as it is."""
    return [f"VENV={VENV}", "-o", f"{VENV}/.installed", "-o", f"{VENV}/.torch", "-o", f"{VENV}/bin/python"]


def test_make_run_asks_for_the_token_then_reaches_discord(clone, tiny_models):
    proc = _make_run(clone, _env(), *_reuse_this_environment())
    assert proc.returncode != 0
    assert "error: DISCORD_TOKEN is not set: put the bot's token in .env" in proc.stderr
    assert (clone / ".env").is_file() and "Traceback" not in proc.stderr

    env = _env(
        DISCORD_TOKEN="not.a.real.token",
        IMAGINE_MODELS_DIR=str(tiny_models),
        IMAGINE_CLIP_MODEL="tiny-clip",
        IMAGINE_DEVICE="cpu",
    )
    (clone / ".env").unlink()
    proc = _make_run(clone, env, *_reuse_this_environment())
    assert proc.returncode != 0
    # Offline here: Discord cannot be reached. With a network, Discord refuses the made-up token. Both are one line.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ("Discord could not be reached" in errors[0] or "refused the token" in errors[0])
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_make_run_from_nothing(clone):
    """The whole of `make run` on a fresh clone: the environment, torch, the project, then the token sentence."""
    proc = _make_run(clone, _env(), timeout=1800)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "error: DISCORD_TOKEN is not set" in proc.stderr, proc.stderr[-2000:]
    assert (clone / ".venv" / ".installed").is_file()
    again = _make_run(clone, _env(), timeout=300)  # idempotent: nothing is installed the second time
    assert "pip" not in again.stdout and "error: DISCORD_TOKEN is not set" in again.stderr
