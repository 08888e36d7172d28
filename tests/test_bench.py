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
