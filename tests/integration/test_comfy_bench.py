"""The shapes-world benchmark through ComfyUI's backend scores as through diffusers'.

One seeded case per edit kind, 20 steps, the bundled model loaded as a ComfyUI
MODEL (inside inference mode, as ComfyUI's executor runs nodes) against the same
model in diffusers: every metric agrees within noise."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

STEPS = 20


def test_bench_scores_match_the_diffusers_backend(dragon_nodes):
    from dragon_lab.bench import KINDS, make_case, run_case
    from dragon_core.diffusers_backend import load_shapes_backend
    from dragon_core.settings import default_settings
    from dragon_demo.shapes_model import load_config

    defaults = load_config()["edit_defaults"]
    diff_backend, enc = load_shapes_backend()
    with torch.inference_mode():
        model = dragon_nodes.shapes_comfy.load_shapes_model()
    worst = {}
    for kind in KINDS:
        case = make_case(kind, 0).edit_case
        settings = default_settings("move" if kind == "resize" else kind, defaults)
        want = run_case(diff_backend, enc, kind, case, settings, "comfy_uniform", STEPS)["scores"]["dragon"]
        with torch.inference_mode(), dragon_nodes.comfy_backend.ComfyBackend(model) as backend:
            got = run_case(backend, enc, kind, case, settings, "comfy_uniform", STEPS)["scores"]["dragon"]
        for metric, v in want.items():
            tol = 0.05 if metric.endswith("psnr") else 0.01  # dB / fractions and pixels
            assert abs(got[metric] - v) <= tol * max(1.0, abs(v)), (kind, metric, got[metric], v)
            worst[(kind, metric)] = abs(got[metric] - v)
    print("largest score difference:", max(worst.items(), key=lambda kv: kv[1]))
