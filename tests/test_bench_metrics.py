"""`python -m bench.metrics` on the tiny models: the scrape it prints parses, and counts the jobs it ran."""

from prometheus_client.parser import text_string_to_metric_families


def test_bench_metrics_prints_a_scrape_of_its_jobs(capsys):
    from bench.metrics import main

    assert main(["--jobs", "2", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "GET /readyz  -> 200" in out
    scrape = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
    }
    assert samples["imagine_jobs_total", (("kind", "new"), ("state", "done"))] == 2
    assert samples["imagine_steps_total", (("generator", "vqgan"),)] == 6
    assert samples["imagine_job_duration_seconds_count", (("generator", "vqgan"), ("size", "256x256"))] == 2
