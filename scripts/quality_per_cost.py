"""Quality per cost on the held-out bench (issue 17 item 3): edit quality against UNet work for
20 / 30 / 50 steps and schedules with fewer guided passes.

    OMP_NUM_THREADS=1 python scripts/quality_per_cost.py --json benchmarks/quality_per_cost.json

The bundled shapes model, its calibrated settings (the model preset), the held-out cases (seed
9001; never used for calibration) of move and drag with the scene's prompt, ``--n`` per stratum.
Each variant changes the step count (the Inversion's steps, so the memory too) or the guidance
schedule; ``seed 1`` changes only the edit's random numbers (regional SDE and vacated-area
noise) and so shows the bench's seed-to-seed spread, the yardstick for "within the spread".

Cost: forward-equivalents of one edit (``dragon_lab.instrument``: UNet passes, a backward
counting twice the part it walks) plus the inversion's passes, measured on the first move and
drag case of each variant; per-case quality: IoU, the key error (move: centroid error in px;
drag: share of the distance left), PSNR to the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dragon_core.diffusers_backend import load_shapes_backend  # noqa: E402
from dragon_core.settings import default_settings  # noqa: E402
from dragon_demo.shapes_model import load_config  # noqa: E402
from dragon_lab.bench import run_case  # noqa: E402
from dragon_lab.held_out import KEY_ERROR, STRATA, held_out_case, run_held_out  # noqa: E402

KINDS = ("move", "drag")
# name: (steps, setting overrides for every kind)
VARIANTS: dict[str, tuple[int, dict]] = {
    "20 steps (bench default)": (20, {}),
    "20 steps, seed 1": (20, {"seed": 1}),
    "30 steps": (30, {}),
    "50 steps": (50, {}),
    "10 steps": (10, {}),
    "20 steps, guided on even steps only": (20, {"guide_every_until": 0.0}),
    "20 steps, guidance until half": (20, {"guide_until": 0.5}),
    "20 steps, no time travel": (20, {"time_travel": 1}),
}


def overrides_for(defaults: dict, extra: dict) -> dict:
    """The model's calibrated settings per kind with ``extra`` on top."""
    return {kind: {**defaults.get(kind, {}), **extra} for kind in set(defaults) | set(KINDS)}


def edit_cost(backend, encoder, kind: str, steps: int, overrides: dict) -> dict:
    """Forward-equivalents of the inversion and of one edit of ``kind`` (its first held-out case;
    the cost depends on the settings and the step count, not on the case)."""
    case = held_out_case(kind, STRATA[0], 0)
    r = run_case(backend, encoder, kind, case, default_settings(kind, overrides), "comfy_uniform", steps)
    edit = r["stats"]["forward_equiv"]
    return {"inversion": steps, "edit": edit, "total": steps + edit, "guided_passes": r["stats"]["guided_steps"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2, help="held-out cases per stratum (default 2)")
    ap.add_argument("--variants", default=None, help="comma-separated subset of the variant names")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    backend, encoder = load_shapes_backend()
    defaults = load_config()["edit_defaults"]
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    rows, t0 = [], time.time()
    for name in names:
        steps, extra = VARIANTS[name]
        overrides = overrides_for(defaults, extra)
        cost = {kind: edit_cost(backend, encoder, kind, steps, overrides) for kind in KINDS}
        result = run_held_out(backend, encoder, KINDS, STRATA, args.n, steps, ("input",), overrides, log=lambda _: None)
        quality = {}
        for kind in KINDS:
            d = result["summary"][f"{kind}|all|input"]["dragon"]
            quality[kind] = {m: d[m] for m in ("iou", KEY_ERROR[kind], "psnr")}
        rows.append({"variant": name, "steps": steps, "overrides": extra, "cost": cost, "quality": quality,
                     "cases": result["cases"]})
        print(format_row(rows[-1], rows[0]), flush=True)
    out = {"held_out_cases_per_stratum": args.n, "kinds": list(KINDS), "prompt": "input",
           "seconds": round(time.time() - t0, 1), "rows": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def format_row(row: dict, base: dict) -> str:
    """| variant | forward-equivalents move / drag (x the first variant's) | move IoU, centroid px | drag IoU, left |"""
    parts = [row["variant"]]
    for kind in KINDS:
        c, b = row["cost"][kind]["total"], base["cost"][kind]["total"]
        parts.append(f"{c:.1f} ({c / b:.2f}x)")
    for kind in KINDS:
        q = row["quality"][kind]
        e = KEY_ERROR[kind]
        parts.append(f"IoU {q['iou']['mean']:.2f} / {q['iou']['worst']:.2f}, {e} {q[e]['mean']:.3f} / "
                     f"{q[e]['median']:.3f} / {q[e]['worst']:.3f}")
    return "| " + " | ".join(parts) + " |"


if __name__ == "__main__":
    sys.exit(main())
