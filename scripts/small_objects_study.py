"""Can the bundled shapes model draw the held-out "small" objects at all? (issue 15: the evidence
behind the small stratum's misses.)

    OMP_NUM_THREADS=1 python scripts/small_objects_study.py --n 4 --json small_objects.json

Reporting only: no setting is chosen here. For held-out resize and appearance cases (seed 9001) in
the small stratum (objects 4-5.5 px across; the model was trained on 8.3-17.3 px) and, for
comparison, the plain stratum, it scores the edited object in the *target* scene (the result a
perfect edit would give) after:

* ``reconstruction``: DDIM inversion of the target and sampling back (20 steps, its own prompt,
  CFG 1): what the method's starting point can hold;
* ``denoise@t``: the model's one-step prediction of the clean image from the target noised to
  ``t`` (30 %, 50 %, 70 % of the schedule; seeded noise): whether the model's prior keeps such an
  object when it has to redraw it, as the guided sampling does.

Score: IoU of the palette object of the target's colour nearest its centre with the target's mask
(0 when the object is gone), per case, with the mean and worst per stratum.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dragon_core.ddim import ddim_x0, invert, sample  # noqa: E402
from dragon_core.diffusers_backend import load_shapes_backend  # noqa: E402
from dragon_core.images import array_to_tensor  # noqa: E402
from dragon_core.schedule import ddim_timesteps  # noqa: E402
from dragon_lab import shapes_eval as ev  # noqa: E402
from dragon_lab.bench import to_image  # noqa: E402
from dragon_lab.held_out import held_out_case  # noqa: E402

STEPS = 20
NOISE_LEVELS = (0.3, 0.5, 0.7)


def object_iou(img: np.ndarray, mask: np.ndarray, colour: str) -> float:
    ys, xs = np.nonzero(mask)
    c = (xs.mean() + 0.5, ys.mean() + 0.5)
    found = [o for o in ev.palette_objects(img, min_area=1) if o.colour == colour]
    if not found:
        return 0.0
    o = min(found, key=lambda o: math.hypot(o.centroid[0] - c[0], o.centroid[1] - c[1]))
    return float((o.mask & mask).sum() / max(1, (o.mask | mask).sum()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    backend, enc = load_shapes_backend()
    n_train = len(backend.alphas_cumprod)
    rows = []
    for kind in ("resize", "appearance"):
        for stratum in ("plain", "small"):
            for k in range(args.n):
                case = held_out_case(kind, stratum, k)
                scene = case.target
                obj = scene.objects[case.index]
                mask = scene.masks()[case.index]
                cond = enc.encode(scene.prompt())
                x = array_to_tensor(scene.render())
                traj = invert(backend, x, cond, steps=STEPS, spacing="comfy_uniform")
                with torch.no_grad():
                    rec = sample(backend, traj.latents[0], cond, steps=STEPS, spacing="comfy_uniform")
                row = {"kind": kind, "stratum": stratum, "k": k, "extent_px": round(2 * obj.size, 2),
                       "colour": obj.colour, "reconstruction": round(object_iou(to_image(rec), mask, obj.colour), 3)}
                g = torch.Generator().manual_seed(k)
                noise = torch.randn(x.shape, generator=g)
                for level in NOISE_LEVELS:
                    t = int(ddim_timesteps(STEPS, n_train, "comfy_uniform")[round((1 - level) * (STEPS - 1))])
                    ab = float(backend.alphas_cumprod[t])
                    z = math.sqrt(ab) * x + math.sqrt(1 - ab) * noise
                    with torch.no_grad():
                        eps = backend.predict_eps(z, t, cond, step=0, branch="cond")
                    row[f"denoise@{level}"] = round(object_iou(to_image(ddim_x0(z, eps, ab)), mask, obj.colour), 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    keys = ["reconstruction"] + [f"denoise@{lv}" for lv in NOISE_LEVELS]
    for kind in ("resize", "appearance"):
        for stratum in ("plain", "small"):
            sel = [r for r in rows if r["kind"] == kind and r["stratum"] == stratum]
            summary[f"{kind}/{stratum}"] = {k: {"mean": round(float(np.mean([r[k] for r in sel])), 3),
                                                "worst": round(float(np.min([r[k] for r in sel])), 3)} for k in keys}
            print(f"{kind:>10} {stratum:>5}: " + "; ".join(
                f"{k} IoU mean {v['mean']:.2f} worst {v['worst']:.2f}" for k, v in summary[f"{kind}/{stratum}"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": STEPS, "cases": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
