"""The animation benchmark runs (on tiny models); its figures are printed, never asserted as timings."""

import json


def test_bench_animation_runs_on_tiny_models(tmp_path, capsys):
    from bench.animation import main

    out = tmp_path / "animation.json"
    argv = ["--tiny", "--tiny-dir", str(tmp_path / "m"), "--frames", "3", "--first-steps", "2", "--frame-steps", "1"]
    assert main([*argv, "--cutn", "2", "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert (row["size"], row["frames"], len(row["later_frame_s"])) == (64, 3, 2)
    assert row["s_per_frame"] > 0 and row["move_and_reencode_s"] > 0 and row["video_bytes"] > 0
    assert "s/frame" in capsys.readouterr().out
