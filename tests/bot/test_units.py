"""Pure pieces of the bot: fair queue, edit pacing, rate limit, settings."""

import logging
import re
from pathlib import Path

import pytest

from bot.config import KEYS, ConfigError, Settings
from bot.queue import Entry, FairQueue, QueueFull, RateLimiter
from cogs.imagine._pacing import EditPacer

ROOT = Path(__file__).resolve().parents[2]


def test_fair_queue_round_robin():
    q = FairQueue(max_per_user=5, max_total=20)
    for job, user in [(1, 10), (2, 10), (3, 10), (4, 20), (5, 30), (6, 20)]:
        q.push(Entry(job, user))
    assert [e.job_id for e in q.order()] == [1, 4, 5, 2, 6, 3]
    assert q.position(6) == 5
    assert [q.pop().job_id for _ in range(6)] == [1, 4, 5, 2, 6, 3]
    assert q.pop() is None


def test_fair_queue_limits_and_remove():
    q = FairQueue(max_per_user=2, max_total=3)
    q.push(Entry(1, 10))
    q.push(Entry(2, 10))
    with pytest.raises(QueueFull, match="You already have 2 images waiting"):
        q.push(Entry(3, 10))
    q.push(Entry(3, 20))
    with pytest.raises(QueueFull, match=r"The queue is full \(3 images waiting\)"):
        q.push(Entry(4, 30))
    assert q.remove(2) and not q.remove(99)
    assert q.waiting_for(10) == 1 and len(q) == 2
    q.push(Entry(5, 10), max_per_user=1, force=True)  # recovery ignores limits
    with pytest.raises(QueueFull, match="You already have 1 image waiting"):
        q.check(10, max_per_user=1)


def test_five_jobs_in_one_channel_stay_under_discords_edit_limit():
    pacer = EditPacer(interval=5.0, per_channel=4, window=5.0)
    sent = []
    for tick in range(600):  # 60 s of progress reports every 0.1 s from 5 jobs in one channel
        now = tick * 0.1
        for message_id in range(5):
            if pacer.allow(channel_id=1, message_id=message_id, now=now):
                sent.append((now, message_id))
    for now, _ in sent:
        assert sum(1 for t, _ in sent if now <= t < now + 5.0) <= 5
    per_job = {m: [t for t, mm in sent if mm == m] for m in range(5)}
    for times in per_job.values():
        assert times and all(b - a >= 5.0 for a, b in zip(times, times[1:], strict=False))
    assert len(sent) >= 40  # the budget is used, not starved: about 4 edits per 5 s


def test_the_pacer_keeps_nothing_of_the_channels_of_ended_jobs():
    """Every job has a thread of its own: a pacer that kept each channel's entries would grow with every job."""
    pacer = EditPacer(interval=5.0, per_channel=4, window=5.0)
    for job in range(1000):
        assert pacer.allow(channel_id=10_000 + job, message_id=job, now=float(job))
        pacer.forget(job)
    assert not pacer._asking and not pacer._channel and not pacer._last_edit
    pacer.allow(channel_id=1, message_id=1, now=0.0)
    pacer.allow(channel_id=1, message_id=2, now=0.0)
    pacer.forget(1)
    assert 1 in pacer._asking and 1 in pacer._channel  # a status still asks there: the channel's budget stays


def test_rate_limiter():
    limiter = RateLimiter(2, 10.0)
    assert limiter.hit(1, 0.0) == 0 and limiter.hit(1, 1.0) == 0
    assert limiter.hit(1, 2.0) == pytest.approx(8.0)
    assert limiter.hit(2, 2.0) == 0
    assert limiter.hit(1, 10.5) == 0


def test_settings_from_env_and_hidden_token(caplog):
    s = Settings.from_env({"DISCORD_TOKEN": "sekrit.token.value", "IMAGINE_MAX_STEPS": "400", "DEV_GUILD_ID": "42"})
    assert s.max_steps == 400 and s.dev_guild_id == 42 and s.token == "sekrit.token.value"
    assert "sekrit" not in repr(s) and "sekrit" not in str(s)
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("starting with %r", s)
    assert "sekrit" not in caplog.text
    with pytest.raises(ConfigError, match="IMAGINE_MAX_STEPS must be a whole number"):
        Settings.from_env({"IMAGINE_MAX_STEPS": "many"})
    fast = Settings.from_env({"IMAGINE_PRECISION": "FP16", "IMAGINE_COMPILE": "yes", "IMAGINE_TIMELAPSE": "0"})
    assert (fast.speed.precision, fast.speed.compile, fast.speed.checkpoint, fast.timelapse) == (
        "fp16",
        True,
        False,
        False,
    )
    with pytest.raises(ConfigError, match="IMAGINE_COMPILE must be 1 or 0"):
        Settings.from_env({"IMAGINE_COMPILE": "maybe"})
    with pytest.raises(ConfigError, match="IMAGINE_PRECISION"):
        Settings.from_env({"IMAGINE_PRECISION": "fp8"})


def test_problems_explain_what_is_missing(tmp_path, tiny_models):
    s = Settings.from_env({"IMAGINE_MODELS_DIR": str(tmp_path)})
    problems = " ".join(s.problems())
    assert "DISCORD_TOKEN is not set" in problems and "python -m engine.models download" in problems
    ok = Settings.from_env({"DISCORD_TOKEN": "x", "IMAGINE_MODELS_DIR": str(tiny_models)})
    assert ok.problems() == []


def test_env_example_documents_every_key():
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_]+)=", text, flags=re.M))
    assert documented == set(KEYS)
    source = "\n".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    read = set(re.findall(r'"((?:IMAGINE|DISCORD|DEV)_[A-Z_]+)"', source))
    assert read <= set(KEYS), read - set(KEYS)


def test_the_environment_is_read_in_one_place_per_side():
    """bot/config.py reads the environment for the bot and its workers; engine.loading.ModelSettings.from_env (and
    engine.speed, which it calls) for the engine's command lines. Nothing else looks at os.environ for settings."""
    readers = {"bot/config.py", "engine/loading.py", "engine/speed/__init__.py", "engine/env.py", "bot/firstrun.py"}
    found = set()
    for package in ("bot", "cogs", "engine", "storage"):
        for path in (ROOT / package).rglob("*.py"):
            if re.search(r"os\.environ|os\.getenv", path.read_text()):
                found.add(path.relative_to(ROOT).as_posix())
    assert found <= readers, found - readers
    # and the engine's reader knows every engine key the bot knows
    from engine.loading import ModelSettings

    env = {
        "IMAGINE_MODELS_DIR": "m",
        "IMAGINE_CLIP_MODEL": "RN50",
        "HF_ENDPOINT": "http://mirror",
        "IMAGINE_DEVICE": "cpu",
    }
    engine_side, bot_side = ModelSettings.from_env(env), Settings.from_env(env).model_settings()
    assert engine_side == bot_side and engine_side.clip_model == "RN50" and engine_side.hf_endpoint == "http://mirror"


def test_bot_refuses_to_start_without_token(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "DISCORD_"))}
    proc = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "DISCORD_TOKEN is not set" in proc.stderr and "Traceback" not in proc.stderr


def test_upload_fits_the_limit():
    import io

    from PIL import Image

    from cogs.imagine._presenter import fit_upload

    noise = Image.effect_noise((512, 512), 64).convert("RGB")
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    png = buf.getvalue()
    assert fit_upload(png, len(png)) == (png, "png")
    data, ext = fit_upload(png, len(png) // 2)
    assert ext == "webp" and len(data) <= len(png) // 2


def test_sparkline_and_similarity_lines():
    from cogs.imagine._embeds import SPARKS, similarity_lines, sparkline, status_embed
    from engine.events import Progress
    from engine.spec import JobSpec
    from storage import Job, JobState

    rising = sparkline([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert rising[0] == SPARKS[0] and rising[-1] == SPARKS[-1] and list(rising) == sorted(rising)
    assert sparkline([0.3] * 5) == SPARKS[len(SPARKS) // 2] * 5 and sparkline([]) == ""
    assert len(sparkline(list(range(100)), width=24)) == 24
    history = [(0.10, 0.30), (0.15, 0.28), (0.22, 0.25)]
    lines = similarity_lines(["a castle", "fog"], history).splitlines()
    assert lines[0].endswith("0.220 · a castle") and lines[1].endswith("0.250 · fog")
    spec = JobSpec("a castle | fog:0.5", steps=30)
    job = Job(
        3,
        1,
        2,
        4,
        spec.to_json(),
        "new",
        None,
        JobState.RUNNING,
        *([None] * 7),
        10,
        None,
        None,
        None,
        None,
        0.0,
        0.0,
        None,
    )
    progress = Progress(10, 30, 0.8, (0.5, 0.3), 4.0, b"png", 256, 256, (0.22, 0.25))
    embed = status_embed(job, spec, progress, history=history)
    field = next(f for f in embed.fields if f.name == "CLIP similarity")
    assert "a castle" in field.value and "fog" in field.value


def test_pick_winner_votes_then_score_then_number():
    from bot.tournaments import pick_winner

    class J:
        def __init__(self, score):
            self.score = score

    finished = {1: J(0.20), 2: J(0.30), 3: J(0.25)}
    assert pick_winner(finished, {1: 2, 3: 1}) == (1, "votes")
    assert pick_winner(finished, {}) == (2, "score")
    assert pick_winner(finished, {1: 1, 3: 1}) == (3, "score")  # a tie in votes: the better score of the two
    assert pick_winner({1: J(0.3), 2: J(0.3)}, {}) == (1, "score")
    assert pick_winner(finished, {4: 9}) == (2, "score")  # votes for a candidate that did not finish


def test_continue_grows_the_last_stage_and_upscale_adds_one():
    from bot.jobs import continue_spec, upscale_spec
    from engine.errors import InvalidSpec
    from engine.spec import JobSpec

    spec = JobSpec("a fox", steps=100)
    assert continue_spec(spec, 100, 50).steps == 150
    assert continue_spec(spec, 40, 50).steps == 90  # stopped early: 50 beyond where it stopped
    upscaled = upscale_spec(spec, 100, 30)
    assert upscaled.upscales == (30,) and upscaled.steps == 100 and upscaled.total_steps == 130
    assert upscale_spec(spec, 60, 30).steps == 60  # a stopped run is upscaled where it stopped
    continued = continue_spec(upscaled, 130, 50)
    assert continued.steps == 100 and continued.upscales == (80,)  # the upscale stays at step 100
    with pytest.raises(InvalidSpec, match="cannot be continued any further"):
        continue_spec(JobSpec("a fox", steps=9_990), 9_990, 50)
    with pytest.raises(InvalidSpec, match="at most 3 times"):
        upscale_spec(spec.replace(upscales=(1, 1, 1), width=64, height=64), 103, 10)
    with pytest.raises(InvalidSpec, match="cannot be upscaled"):
        upscale_spec(JobSpec("a fox", generator="biggan", steps=10), 10, 10)
    with pytest.raises(InvalidSpec, match="largest side allowed"):
        upscale_spec(JobSpec("a fox", width=4096, height=256), 300, 10)


@pytest.mark.parametrize(
    ("argv", "key", "code"),
    [
        (["-m", "bot.backends.celery.worker"], "IMAGINE_WORKER_SLOTS", 2),  # read as the worker starts
        (["-m", "engine.models", "list"], "IMAGINE_PRECISION", 1),  # the engine's reader checks the speed keys too
    ],
)
def test_a_bad_setting_is_one_sentence_from_the_worker_and_the_models_command(tmp_path, argv, key, code):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "DISCORD_"))}
    env.update({key: "many", "PYTHONPATH": str(ROOT)})
    done = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("error: ") and key in done.stderr and "Traceback" not in done.stderr
