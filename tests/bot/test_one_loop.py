"""One loop: the CLI, the bot's embedded backend, a loop of one and `Engine.generate` make the same bytes."""

from __future__ import annotations

from bot.backends.embedded import EmbeddedBackend
from engine.events import Finished
from engine.loop import run_to_end
from engine.spec import JobSpec


async def test_every_way_of_running_a_spec_makes_the_same_png(tiny_models, pool, tmp_path):
    from engine.cli import main

    spec = JobSpec(
        "a lighthouse", width=64, height=48, steps=5, seed=7, cutn=4, model="tiny_f16", clip_model="tiny-clip"
    )
    out = tmp_path / "cli.png"
    argv = ["a lighthouse", "--models-dir", str(tiny_models), "--model", "tiny_f16", "--clip", "tiny-clip"]
    argv += ["-s", "64x48", "--steps", "5", "--seed", "7", "--cutn", "4", "-q", "--device", "cpu", "-o", str(out)]
    assert main(argv) == 0

    backend = EmbeddedBackend(pool)
    try:
        events = [event async for event in backend.submit(1, spec, None, 0).events()]
    finally:
        await backend.close()
    assert isinstance(events[-1], Finished)

    engine = pool.engine_for(spec)
    alone = run_to_end(engine, engine.start(spec)).image
    assert out.read_bytes() == events[-1].result.image == alone == engine.generate(spec).image
