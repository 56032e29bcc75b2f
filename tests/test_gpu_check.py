"""scripts/gpu_check.py at a tiny size on the CPU (what CI can run of the GPU check): SD1.5's
topology with 32 base channels, 64x64 pixels, 4 steps, fp16 weights, move and drag under both
schedules; the JSON has every phase's time, peak memory and forward-equivalents as finite numbers."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_gpu_check_runs_tiny_on_the_cpu_and_writes_finite_numbers(tmp_path):
    gpu_check = _script()
    out = tmp_path / "check.json"
    gpu_check.main(["--device", "cpu", "--size", "64", "--steps", "4", "--channels", "32", "--dtype", "fp16",
                    "--json", str(out)])
    data = json.loads(out.read_text())
    cfg = data["config"]
    assert (cfg["device"], cfg["dtype"], cfg["size"], cfg["latent"], cfg["steps"], cfg["seed"]) == \
        ("cpu", "fp16", 64, 8, 4, 0)
    assert cfg["parameters"] > 0
    for key in ("build_seconds", "warmup_seconds", "total_seconds"):
        assert _finite(data[key]) and data[key] >= 0
    inv = data["inversion"]
    assert inv["forward_equiv"] == 4 and _finite(inv["seconds"]) and inv["memory_bytes"] > 0
    assert inv["peak_rss_bytes"] > 0 and inv["cuda_max_allocated_bytes"] is None  # CPU: no CUDA peak
    assert {(e["kind"], e["schedule"]) for e in data["edits"]} == {(k, s) for k in ("move", "drag")
                                                                  for s in ("efficient", "reference")}
    for e in data["edits"]:
        assert e["finite"] and all(_finite(e[k]) and e[k] > 0 for k in ("seconds", "forward_equiv", "peak_rss_bytes"))
        assert e["stats"]["steps"] == 4 and e["stats"]["guided_steps"] >= 1
    for kind in ("move", "drag"):
        cmp = data["comparison"][kind]
        assert _finite(cmp["max_latent_diff"]) and cmp["max_latent_diff"] < 1e-2  # the same edit
        ratios = cmp["efficient_over_reference"]
        assert 0 < ratios["forward_equiv"] < 1 and all(_finite(v) for v in ratios.values())


def test_gpu_check_defaults_are_the_acceptance_run():
    """No flags on a CUDA machine: SD1.5 (320 base channels) in fp16 at 512x512, 50 steps, both kinds
    and schedules, seed 0."""
    gpu_check = _script()
    args = gpu_check.parse(["--device", "cuda"])
    assert (args.dtype, args.size, args.steps, args.channels, args.seed) == ("fp16", 512, 50, 320, 0)
    assert args.kinds == ("move", "drag") and args.schedules == ("efficient", "reference")
    cfg = gpu_check.sd15_config()
    assert cfg["block_out_channels"] == (320, 640, 1280, 1280) and cfg["cross_attention_dim"] == 768
    assert gpu_check.paper_settings("move", 50).attention_start == 5
    with pytest.raises(SystemExit):
        gpu_check.parse(["--size", "100"])
