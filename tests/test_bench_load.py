"""`python -m bench.load`, small: the real bot process against the loopback Discord with its limits enforced, a
few members for a few seconds. The figures are printed, not asserted as timings; the books must balance."""

import json


def test_bench_load_measures_a_short_busy_run(tmp_path, capsys):
    from bench.load import main

    out = tmp_path / "load.json"
    argv = ["--members", "6", "--rate", "2", "--duration", "12", "--drain", "120", "--heartbeat", "5"]
    assert main([*argv, "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["interactions"] >= 10 and row["actions"].get("imagine", 0) >= 1
    assert set(row["answer_ms"]) == {"p50", "p95", "p99", "max"} and row["answer_ms"]["max"] > 0
    assert row["loop_lag_ms"]["max"] > 0  # the bot's own monitor reported
    assert row["gateway"]["heartbeats"] >= 1
    assert row["posts"]["done"] >= 1
    assert row["posts"]["lost"] == [] and row["posts"]["duplicated"] == [] and row["posts"]["posted_not_done"] == []
    assert "answer time: p50" in capsys.readouterr().out
