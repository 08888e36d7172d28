"""The benchmark runs (on tiny models); its figures are printed, never asserted as timings."""

import json


def test_bench_engine_runs_on_tiny_models(tmp_path, capsys):
    from bench.engine import main

    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "--tiny",
                "--tiny-dir",
                str(tmp_path / "m"),
                "--sizes",
                "32",
                "--batch",
                "1",
                "2",
                "--cutn",
                "4",
                "--steps",
                "1",
                "--flops",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert [(r["size"], r["batch"]) for r in rows] == [(32, 1), (32, 2)]
    assert rows[0]["ours_over_plain"] > 0 and rows[0]["tflop_per_step"] > 0
    assert "steps/s" in capsys.readouterr().out


def test_bench_compositions_runs_on_tiny_models(tmp_path, capsys):
    from bench.compositions import CASES, main

    out = tmp_path / "c.json"
    assert main(["--tiny", "--size", "64x32", "--cutn", "4", "--steps", "1", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == list(CASES) and rows[0]["relative"] == 1.0
    assert "x plain" in capsys.readouterr().out


def test_bench_jobdisk_runs_on_tiny_models(tmp_path):
    from bench.jobdisk import main

    out = tmp_path / "d.json"
    assert (
        main(["--size", "64", "--steps", "20", "--every", "5", "--budget", "3", "--no-real", "--json", str(out)]) == 0
    )
    row = json.loads(out.read_text())
    assert row["snapshots_kept"] == [10, 20]
    assert row["frames"] == 2 and row["timelapse"]["webp within 8 MiB"]["frames"] == 3


def test_bench_engine_runs_every_generator_on_tiny_models(tmp_path, capsys):
    from bench.engine import main

    out = tmp_path / "bench.json"
    argv = ["--tiny", "--tiny-dir", str(tmp_path / "m"), "--sizes", "32", "--cutn", "2", "--steps", "1"]
    argv += ["--generators", "vqgan", "fourier", "siren", "biggan", "dalle", "pixels", "--no-plain", "--json", str(out)]
    assert main(argv) == 0
    rows = json.loads(out.read_text())
    assert [r["generator"] for r in rows] == ["vqgan", "fourier", "siren", "biggan", "dalle", "pixels"]
    assert all(r["ours_steps_per_s"] > 0 for r in rows)


def test_bench_describe_runs_on_the_tiny_clip(tmp_path, capsys):
    from bench.describe import main

    out = tmp_path / "describe.json"
    argv = ["--tiny", "--tiny-dir", str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c"), "--size", "64"]
    assert main([*argv, "--repeats", "1", "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["terms"] == sum(row["terms_per_category"].values()) >= 3000
    assert row["cache_bytes"] > 0 and row["describe_min_s"] > 0 and row["prompt"]
    assert "second Describer, from the cache" in capsys.readouterr().out


def test_bench_cluster_runs_with_one_worker(tmp_path, capsys):
    import shutil

    import pytest

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    from bench.cluster import main

    out = tmp_path / "cluster.json"
    argv = ["--workers", "1", "--jobs", "2", "--steps", "2", "--samples", "2", "--no-kill", "--json", str(out)]
    assert main(argv) == 0
    [row] = json.loads(out.read_text())
    assert row["workers"] == 1 and row["jobs"] == 2 and len(row["latency_s"]) == 2 and row["jobs_per_hour"] > 0
    assert "jobs/hour" in capsys.readouterr().out


def test_bench_soak_runs_the_real_bot_through_a_kill(tmp_path, tiny_models, capsys):
    """The soak, small: the real bot process, one SIGKILL mid-job, a cancel, a steer and a Continue; its report has
    every sample's figures and slopes, and no job is lost or posted twice."""
    from bench.soak import DISK_FIGURES, PROCESS_FIGURES, main

    out = tmp_path / "soak.json"
    argv = ["--jobs", "12", "--sample-every", "4", "--kills", "1", "--members", "6", "--models", str(tiny_models)]
    argv += ["--cancel-every", "5", "--steer-every", "5", "--continue-every", "4", "--dir", str(tmp_path / "soak")]
    argv += ["--archive-after", "3"]  # Discord's day, compressed: threads archived while the soak goes on
    assert main([*argv, "--stall", "60", "--quiet", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    samples = report["samples"]
    jobs = [s["jobs"] for s in samples]
    assert jobs[0] == 0 and jobs[-1] == 12 and all(j >= 4 * k for k, j in enumerate(jobs)) and jobs == sorted(jobs)
    assert all(s["unended"] == 0 for s in samples), samples  # each sample taken with the line drained
    for sample in samples[1:]:
        assert all(sample[name] is not None for name in (*PROCESS_FIGURES, *DISK_FIGURES)), sample
        assert sample["rss_mb"] > 50 and sample["threads"] >= 2 and sample["tasks"] >= 1 and sample["fds"] >= 3
        assert sample["anon_mb"] + sample["file_mb"] <= sample["rss_mb"] + 1 and sample["heap_mb"] > 10
        assert sample["os_threads"] >= sample["threads"]
    assert len({s["pid"] for s in samples}) == 2  # the kill: a second process
    assert set(report["slopes_per_1000_jobs"]) == {*PROCESS_FIGURES, *DISK_FIGURES}
    check = report["check"]
    assert check["jobs"] == 12 and check["done"] >= 8 and check["states"].get("cancelled", 0) >= 1
    assert check["lost"] == 0 and check["duplicated"] == 0 and check["posted_not_done"] == 0, check
    assert len(report["kills"]) == 1 and report["kills"][0]["running"], report["kills"]
    assert report["loop_lag_whole_run"]["count"] > 0
    assert report["threads_archived"] >= 4  # posts and Continues after archiving lost nothing (the check above)
    assert "slope per 1,000 jobs" in capsys.readouterr().out


def test_bench_engine_times_the_quality_presets_on_tiny_models(tmp_path, capsys):
    from bench.engine import main

    out = tmp_path / "q.json"
    argv = ["--tiny", "--tiny-dir", str(tmp_path / "m"), "--quality", "draft", "best", "--sizes", "64"]
    assert main([*argv, "--steps", "1", "--warmup", "0", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["quality"] for r in rows] == ["draft", "best"] and rows[0]["relative_to_first"] == 1.0
    assert rows[1]["clips"] == ["ViT-B-32", "ViT-B-16", "RN50x4"] and rows[1]["activations_mb"] > 0
    assert rows[1]["estimated_relative_cost"] > 1 and "s/step" in capsys.readouterr().out


def test_bench_soak_prompts_repeat_words_out_of_a_vocabulary():
    """By default each soak prompt has a word of its own; with --vocabulary N, prompts of 4 to 8 words out of N made-up
    words (letters only), so that the caches keyed by words fill up early, as they do on a server."""
    from types import SimpleNamespace

    from bench.soak import Soak

    prompts = [Soak.prompt(SimpleNamespace(args=SimpleNamespace(vocabulary=30)), n) for n in range(200)]
    words = [prompt.split() for prompt in prompts]
    assert all(4 <= len(w) <= 8 and all(x.isalpha() for x in w) for w in words)
    assert 25 <= len({x for w in words for x in w}) <= 30 and len(set(prompts)) > 190
    unique = [Soak.prompt(SimpleNamespace(args=SimpleNamespace(vocabulary=0)), n) for n in range(50)]
    assert len({prompt.split()[1] for prompt in unique}) == 50


def test_the_soak_launchers_census_tells_cyclic_garbage_from_live_objects():
    """The bot's census on SIGUSR2 (tests/bot/launch.py `--census`) counts what a full collection frees apart from what
    stays alive: garbage waiting in reference cycles, the soak's growth, shows as such."""
    from tests.bot.launch import census_of_objects

    class CensusGarbage:
        pass

    class CensusLive:
        pass

    kept = [CensusLive(), CensusLive()]
    for _ in range(3):
        cycle = CensusGarbage()
        cycle.me = cycle
    del cycle
    census = {part: dict(rows) for part, rows in census_of_objects().items()}
    name = f"{__name__}.test_the_soak_launchers_census_tells_cyclic_garbage_from_live_objects.<locals>."
    assert census["garbage"].get(name + "CensusGarbage") == 3 and name + "CensusLive" not in census["garbage"]
    assert census["live"].get(name + "CensusLive") == 2 and name + "CensusGarbage" not in census["live"]
    assert kept
