"""Why resize keeps the object's size (issue 15 item 3): the evidence, on tuning cases only.

    OMP_NUM_THREADS=1 python scripts/resize_study.py --n 8 --trace --json resize_study.json
    OMP_NUM_THREADS=1 python scripts/resize_study.py --kind move --prompt empty --variants default,vacated_noise

Bench resize cases 0..n-1 (the tuning range; the held-out range, seed 9001, is never touched
here), shapes demo model, 20 steps, the input's prompt. For each case the object's area in the
result over the source area x scale^2 (``area_ratio``; 1 is right) and IoU with the target, for
the model's calibrated move settings and variants that switch one ingredient off or on:
cross-branch attention, the guidance, the start-latent copy, the background lock, the regional
SDE noise, the contrast / inpaint terms; ``oracle_target_features`` gives the energy the target
scene's own features where the object goes (ground truth, to test whether the warped target is
the cause; never a setting). With ``--trace`` the default's predicted x0 at every
step is segmented too: the object's area per step shows whether it ever had the target size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dragon_core import planning  # noqa: E402
from dragon_core.ddim import ddim_x0  # noqa: E402
from dragon_core.diffusers_backend import load_shapes_backend  # noqa: E402
from dragon_core.edits import Move  # noqa: E402
from dragon_core.images import array_to_tensor  # noqa: E402
from dragon_core.memory import default_policy, invert_with_memory  # noqa: E402
from dragon_core.sampler import edit_image  # noqa: E402
from dragon_core.schedule import alpha_pairs  # noqa: E402
from dragon_core.settings import default_settings, with_overrides  # noqa: E402
from dragon_demo.shapes_model import load_config  # noqa: E402
from dragon_lab import shapes_eval as ev  # noqa: E402
from dragon_lab.bench import make_case, mask_tensor, naive, score, to_image  # noqa: E402

VARIANTS = {
    "default": {},
    "no_attention": {"attention": False},
    "no_guidance": {"energy_scale": 0.0},
    "copy_start": {"copy_start": True},
    "no_lock": {"background_lock": 0.0},
    "no_sde": {"flexibility": 0.0},
    "no_contrast_inpaint": {"w_contrast": 0.0, "w_inpaint": 0.0},
    "energy_x2": {"energy_scale": 480.0},
    "copy_start_no_attention": {"copy_start": True, "attention": False},
    "vacated_noise": {"vacated_noise": True},
    "vacated_noise_copy_start": {"vacated_noise": True, "copy_start": True},
    "vacated_noise_energy_x2": {"vacated_noise": True, "energy_scale": 480.0},
    "time_travel_2": {"time_travel": 2},
    "time_travel_3": {"time_travel": 3},
    "time_travel_3_all_steps": {"time_travel": 3, "time_travel_window": (0.0, 1.0)},
    "oracle_target_features": {},  # the energy's target: the target scene's own features (below)
}
ORACLE = "oracle_target_features"


@contextlib.contextmanager
def oracle_target(target_memory):
    """While active, a move plan's moved reference features (the energy's target where the object
    goes) are the target scene's own inverted features instead of the original's warped to the new
    place and size: does the edit reach the target size when the target is exact?"""
    original = planning.Context.features

    def features(self, memory, transform=None):
        if transform is None:
            return original(self, memory, None)
        return original(self, target_memory, None)

    planning.Context.features = features
    try:
        yield
    finally:
        planning.Context.features = original
STEPS = 20


def object_area(img: np.ndarray, colour: str, near: tuple[float, float]) -> float:
    """Area of the palette object of ``colour`` nearest ``near`` (0 if none)."""
    found = [o for o in ev.palette_objects(img, min_area=3) if o.colour == colour]
    if not found:
        return 0.0
    return float(min(found, key=lambda o: math.hypot(o.centroid[0] - near[0], o.centroid[1] - near[1])).area)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--kind", default="resize", choices=("resize", "move"))
    p.add_argument("--prompt", default="input", choices=("input", "empty"), help="the prompt the edit samples with")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--trace", action="store_true", help="segment the default's predicted x0 at every step")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    backend, enc = load_shapes_backend()
    base = default_settings("move", load_config()["edit_defaults"])
    names = args.variants.split(",")
    rows = []
    for k in range(args.n):
        case = make_case(args.kind, k).edit_case
        obj = case.scene.objects[case.index]
        cond, uncond = enc.encode(case.scene.prompt()), enc.encode("")
        s_cond = cond if args.prompt == "input" else uncond
        mem = invert_with_memory(backend, array_to_tensor(case.scene.render()), cond, steps=STEPS,
                                 spacing="comfy_uniform", policy=default_policy(backend))
        edit = Move(mask_tensor(case.scene.masks()[case.index]), case.dx, case.dy, case.scale)
        src_area = float(case.scene.masks()[case.index].sum())
        row = {"k": k, "scale": round(case.scale, 3), "shape": obj.shape, "colour": obj.colour, "size": obj.size,
               "source_area": src_area, "target_area": round(src_area * case.scale ** 2, 1), "variants": {}}
        for name in names:
            trace: list[float] = []
            callback = None
            if args.trace and name == "default":
                ts = mem.trajectory.timesteps.tolist()
                pairs = alpha_pairs(backend.alphas_cumprod, mem.trajectory.timesteps, mem.trajectory.spacing)

                def callback(s, z, ts=ts, pairs=pairs, trace=trace):  # x0 predicted from z after step s
                    if s + 1 >= len(ts):
                        trace.append(object_area(to_image(z), obj.colour, (obj.cx, obj.cy)))
                        return
                    with torch.no_grad():
                        eps = backend.predict_eps(z, ts[s + 1], cond, step=s + 1, branch="cond")
                    x0 = ddim_x0(z, eps, pairs[s + 1][0])
                    trace.append(object_area(to_image(x0), obj.colour, (obj.cx, obj.cy)))

            oracle = contextlib.nullcontext()
            if name == ORACLE:
                target_mem = invert_with_memory(backend, array_to_tensor(case.target.render()), cond, steps=STEPS,
                                                spacing="comfy_uniform", policy=default_policy(backend))
                oracle = oracle_target(target_mem)
            with oracle:
                res = edit_image(backend, mem, edit, s_cond, uncond, with_overrides(base, **VARIANTS[name]), callback)
            sc = score(args.kind, case, to_image(res.latent))
            row["variants"][name] = {"area_ratio": round(sc.get("area_ratio", 1.0), 3), "iou": round(sc["iou"], 3),
                                     "centroid_err": round(sc["centroid_err"], 2), "psnr": round(sc["psnr"], 2),
                                     **({"x0_area": trace} if trace else {})}
        row["naive_psnr"] = round(score(args.kind, case, naive(case))["psnr"], 2)
        rows.append(row)
        print(f"case {k}: scale {row['scale']:.2f} {obj.colour} {obj.shape} size {obj.size:.1f} "
              f"(area {src_area:.0f} -> target {row['target_area']:.0f}): " +
              ", ".join(f"{n} {v['area_ratio']:.2f}/{v['iou']:.2f}/{v['psnr']:.1f}dB" for n, v in row["variants"].items())
              + f"; naive {row['naive_psnr']:.1f} dB", flush=True)
        if args.trace:
            print("   default x0 area per step: " + " ".join(f"{a:.0f}" for a in row["variants"]["default"]["x0_area"]))
    summary = {}
    for name in names:
        errs = [abs(r["variants"][name]["area_ratio"] - 1) for r in rows]
        ious = [r["variants"][name]["iou"] for r in rows]
        psnr_gain = [r["variants"][name]["psnr"] - r["naive_psnr"] for r in rows]
        cent = [r["variants"][name]["centroid_err"] for r in rows]
        summary[name] = {"psnr_minus_naive_median": round(float(np.median(psnr_gain)), 2),
                         "psnr_minus_naive_worst": round(float(np.min(psnr_gain)), 2),
                         "centroid_err_mean": round(float(np.mean(cent)), 2), "lost": sum(i == 0 for i in ious),"area_err_mean": round(float(np.mean(errs)), 3), "area_err_median": round(float(np.median(errs)), 3),
                         "area_err_worst": round(float(np.max(errs)), 3), "iou_mean": round(float(np.mean(ious)), 3),
                         "iou_worst": round(float(np.min(ious)), 3)}
        print(f"{name:>24}: |area ratio - 1| mean {summary[name]['area_err_mean']:.3f} median "
              f"{summary[name]['area_err_median']:.3f} worst {summary[name]['area_err_worst']:.3f}; IoU mean "
              f"{summary[name]['iou_mean']:.3f} worst {summary[name]['iou_worst']:.3f}; lost {summary[name]['lost']}; "
              f"centroid err mean {summary[name]['centroid_err_mean']:.2f} px; PSNR - naive median "
              f"{summary[name]['psnr_minus_naive_median']:+.2f} worst {summary[name]['psnr_minus_naive_worst']:+.2f} dB")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": STEPS, "cases": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
