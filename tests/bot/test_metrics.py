"""The metrics' own rules, without a bot: a run resumed from a snapshot counts only its own steps, the wait is measured
from the last time a job entered the queue, label values stay bounded, and each bot has a registry of its own."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics, generator_label, size_label
from engine.events import Finished, Progress, Result
from engine.spec import JobSpec
from storage import Job, JobState


def _job(job_id=1, state=JobState.QUEUED, kind="new", created=1000.0, **spec) -> Job:
    spec = JobSpec("a secret prompt", model="tiny_f16", width=512, height=512, steps=100, **spec)
    return Job(
        id=job_id, guild_id=5, channel_id=6, author_id=424242, spec_json=spec.to_json(), kind=kind, parent_id=None,
        state=state, error=None, thread_id=None, queued_message_id=None, status_message_id=None,
        result_message_id=None, image_path=None, snapshot_path=None, steps_done=0, width=None, height=None,
        score=None, scores_json=None, created_at=created, started_at=None, finished_at=None,
    )  # fmt: skip


def _samples(metrics: Metrics) -> dict:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_resumed_run_counts_its_own_steps_and_pace():
    metrics = Metrics()
    job = _job(kind="continue")
    metrics.job_event(job, 80, Progress(90, 120, 0.5, (0.5,), 2.0))
    metrics.job_event(job, 80, Progress(100, 120, 0.5, (0.5,), 4.0))
    result = Result(job.spec, b"png", 512, 512, 120, (("x", 0.2),), 8.0)
    metrics.job_event(job, 80, Finished(result))
    found = _samples(metrics)
    assert found["imagine_steps_total", (("generator", "vqgan"),)] == 40  # 80 -> 120, not 120
    key = (("generator", "vqgan"), ("size", "512x512"))
    assert found["imagine_job_steps_per_second_sum", key] == 40 / 8.0
    assert found["imagine_job_duration_seconds_sum", key] == 8.0
    cancelled = replace(result, cancelled=True, steps_done=130)
    metrics.job_event(_job(2), 120, Finished(cancelled))  # a cancelled run: steps and pace, no running time
    after = _samples(metrics)
    assert after["imagine_job_duration_seconds_count", key] == 1
    assert after["imagine_job_steps_per_second_count", key] == 2


def test_the_wait_runs_from_the_last_time_the_job_entered_the_queue():
    metrics = Metrics()
    metrics.job_state(_job(), 1000.0)
    metrics.job_state(replace(_job(), state=JobState.RUNNING), 1030.0)
    metrics.job_state(replace(_job(), state=JobState.QUEUED), 5000.0)  # requeued after a restart
    metrics.job_state(replace(_job(), state=JobState.RUNNING), 5002.0)
    found = _samples(metrics)
    assert found["imagine_queue_wait_seconds_sum", (("kind", "new"),)] == 30 + 2
    assert found["imagine_jobs_total", (("kind", "new"), ("state", "queued"))] == 2
    posted = replace(_job(), state=JobState.POSTING, moderation="spoiler")
    metrics.job_state(posted, 5010.0)
    assert _samples(metrics)["imagine_moderation_actions_total", (("action", "spoiler"),)] == 1


def test_labels_stay_bounded_and_registries_apart():
    assert size_label(512, 288) == "512x288" and size_label(1024, 576) == "1024x576"  # named, and upscaled
    assert size_label(333, 333) == "other<=256k" and size_label(5000, 5000) == "other>4M"
    assert generator_label("vqgan") == "vqgan" and generator_label("a member's text") == "other"
    one, two = Metrics(), Metrics()
    one.job_state(_job(7), 1.0)
    one.discord_response(429, "a made-up scope")
    text = one.render().decode()
    assert "secret" not in text and "424242" not in text and 'job="' not in text
    assert _samples(one)["imagine_discord_rate_limited_total", (("scope", "unknown"),)] == 1
    assert _samples(two)["imagine_jobs_total", (("kind", "new"), ("state", "queued"))] == 0  # its own registry


async def test_the_embedded_backend_is_ready_once_its_models_are_loaded(tiny_models):
    from bot.backends.embedded import EmbeddedBackend
    from engine.loading import EnginePool, ModelSettings

    pool = EnginePool(ModelSettings(models_dir=tiny_models, clip_model="tiny-clip", device="cpu"))
    backend = EmbeddedBackend(pool)
    try:
        assert await backend.readiness() == "The models are not loaded yet."
        assert await backend.observe() == {}  # nothing loaded: torch is not even asked
        pool.engine_for(JobSpec("warm up", model="tiny_f16", clip_model="tiny-clip"))
        assert await backend.readiness() is None
        assert await backend.observe() == {}  # a CPU: the process's memory is the engine's (process_* metrics)
    finally:
        await backend.close()
