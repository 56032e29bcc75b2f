"""How far above its default the energy scale can go before the edit breaks (shapes demo model).

    OMP_NUM_THREADS=1 python scripts/energy_scale_sweep.py --json energy_sweep.json

For move, drag and appearance, bench cases 100 and 101 (outside the bench's own 0-11) at 20 steps,
the model's calibrated settings with the energy scale at 1, 2, 4, 8, 16 and 64 times its default:
PSNR to the ground-truth target, background PSNR and roughness (mean absolute difference of
neighbouring pixels; about 0.02-0.05 for clean results, above 0.1 for noise). It sets
``dragon_core.settings.ENERGY_WARN_FACTOR``, above which the node and the CLI warn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dragon_core.diffusers_backend import load_shapes_backend  # noqa: E402
from dragon_core.settings import default_settings  # noqa: E402
from dragon_demo.shapes_model import load_config  # noqa: E402
from dragon_lab.bench import make_case, run_case  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    backend, enc = load_shapes_backend()
    defaults = load_config()["edit_defaults"]
    rows = []
    for kind in ("move", "drag", "appearance"):
        base = default_settings(kind, defaults)
        for mult in (1, 2, 4, 8, 16, 64):
            for k in (100, 101):
                settings = default_settings(kind, defaults, energy_scale=base.energy_scale * mult)
                r = run_case(backend, enc, kind, make_case(kind, k).edit_case, settings, "comfy_uniform", 20)
                img, sc = r["images"]["dragon"], r["scores"]["dragon"]
                rough = float(np.abs(np.diff(img, axis=0)).mean() + np.abs(np.diff(img, axis=1)).mean())
                rows.append({"kind": kind, "factor": mult, "case": k, "psnr": round(sc["psnr"], 2),
                             "bg_psnr": round(sc["bg_psnr"], 2), "roughness": round(rough, 3)})
                print(rows[-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
