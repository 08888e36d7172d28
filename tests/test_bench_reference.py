"""bench.reference: the harness that runs nerdyrodent's generate.py beside the engine on the same files.

The script itself cannot be fetched here; a stand-in written the way it is (module-level code, taming's VQModel
from the yaml, a tqdm loop) checks the harness, and the real script runs when IMAGINE_REFERENCE_SCRIPT names it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import reference
from tests.engine.realformats import tiny_taming_yaml

TINY_CLIP = {"embed": 32, "image": 32, "patch": 8, "width": 64, "layers": 1, "text_width": 64, "text_layers": 1}
ROOT = Path(__file__).resolve().parents[1]

STAND_IN = """
import argparse, sys
from omegaconf import OmegaConf
from taming.models import vqgan            # the import that Lightning 2 breaks without the harness's alias
from tqdm import tqdm
import torch
p = argparse.ArgumentParser()
p.add_argument("-i", type=int); p.add_argument("-conf"); p.add_argument("-ckpt")
args, _ = p.parse_known_args()
config = OmegaConf.load(args.conf)
model = vqgan.VQModel(**config.model.params)
model.init_from_ckpt(args.ckpt)
del model.loss
z = torch.randn(1, model.quantize.e_dim, 2, 2, requires_grad=True)
with tqdm() as bar:
    for i in range(args.i):
        model.decode(z).square().mean().backward()
        bar.update()
print("steps", args.i)
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    doc = tiny_taming_yaml()
    doc["model"]["params"]["lossconfig"] = {"target": "torch.nn.Identity"}
    return reference.write_models(tmp_path_factory.mktemp("reference"), doc, TINY_CLIP)


def test_per_step_is_the_median_gap_after_the_warm_up():
    stamps = [0.0, 10.0, 11.0, 13.0, 14.0, 20.0]  # gaps 10, 1, 2, 1, 6
    assert reference.per_step(stamps, warmup=2) == 1.5  # gaps after the second step: 1, 2, 1, 6
    assert reference.per_step(stamps, warmup=1) == 2.0
    with pytest.raises(ValueError, match="too few"):
        reference.per_step([1.0, 2.0], warmup=3)


def test_the_harness_runs_a_script_on_the_released_formats_and_times_each_step(files, tmp_path):
    script, times = tmp_path / "generate.py", tmp_path / "times.json"
    script.write_text(STAND_IN)
    argv = ["-i", "4", "-conf", str(files["config"]), "-ckpt", str(files["checkpoint"])]
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.reference", "--drive", str(script), "--times", str(times), "--", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "steps 4" in done.stdout
    stamps = json.loads(times.read_text())
    assert len(stamps) == 4 and stamps == sorted(stamps)


def test_the_engine_reads_the_files_the_script_reads(files):
    seconds, precision = reference.ours(files, 32, 2, steps=2, warmup=1, precision="fp32", clip_model="tiny")
    assert seconds > 0 and precision == "float32"


@pytest.mark.skipif(
    not os.environ.get("IMAGINE_REFERENCE_SCRIPT"),
    reason="set IMAGINE_REFERENCE_SCRIPT to a checkout's generate.py (github.com/nerdyrodent/VQGAN-CLIP) to run it",
)
def test_the_real_script_runs_on_the_same_files(files):
    pytest.importorskip("clip", reason="pip install -e '.[reference]'")
    seconds = reference.reference(Path(os.environ["IMAGINE_REFERENCE_SCRIPT"]), files, 64, 4, steps=2, warmup=1)
    assert seconds > 0
