"""Measure the agreement table of docs/official-agreement.md (more cases than the test runs),
and the effect of each known deviation (measurement flags: official-side patches in the
harness, project-side flags in deviations.py; dragon_core itself is never changed).

    OFFICIAL_DRAGON_PATH=/work/official-dragon OMP_NUM_THREADS=1 \\
      .venv/bin/python tests/official/measure.py --python /work/official-venv/bin/python \\
      --kinds move,appearance --n 5 [--variants default,token_area,ref_feats,cur_feats,all]
      [--steps 50] [--out m.json]

Prints one line per case and variant, then min / median / mean per kind and variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import official_cases as oc  # noqa: E402
from conftest import OfficialRunner  # noqa: E402
from deviations import official_reference_features, plain_current_features  # noqa: E402

CASES = {
    "move_off": lambda n: oc.move_cases(n, guidance=False),
    "move_nosde": lambda n: [dataclasses.replace(c, name=c.name + "_nosde", params=dict(c.params, sde=0.0))
                             for c in oc.move_cases(n)],
    "move": oc.move_cases,
    "appearance": oc.appearance_cases,
    "drag": oc.drag_cases,
    "paste": oc.paste_cases,
    "resize": oc.resize_cases,
    "landmark": lambda n: oc.drag_cases(n, landmark=True),
    # the tiny SD1.5-topology model (128 px images, 16x16 latents; moves by whole latent cells)
    "sd_move_off": lambda n: oc.move_cases(n, guidance=False, size=128, snap=8),
    "sd_move": lambda n: oc.move_cases(n, size=128, snap=8),
}
# variant -> (official-side flags, project-side flags)
VARIANTS = {
    "default": ({}, {}),
    "token_area": ({"token_masks": "area"}, {}),
    "ref_feats": ({}, {"ref": True}),
    "cur_feats": ({}, {"cur": True}),
    "all": ({"token_masks": "area"}, {"ref": True, "cur": True}),
    "all_clone": ({"token_masks": "area", "drag_copy": "clone"}, {"ref": True, "cur": True}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=os.environ.get("OFFICIAL_DRAGON_PYTHON", ""))
    ap.add_argument("--kinds", default="move_off,move,appearance,drag,paste,resize,landmark")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--variants", default="default")
    ap.add_argument("--out", default="")
    ap.add_argument("--steps", type=int, default=oc.STEPS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from dragon_core.diffusers_backend import load_shapes_backend
    from dragon_demo.shapes_model import ASSET_DIR, load_config

    shapes = load_shapes_backend()
    shapes_spec = {"unet_config": load_config(ASSET_DIR)["unet"], "vae": "pixel", "vae_factor": 1,
                   "unet_weights": str(Path(ASSET_DIR) / "unet.safetensors")}
    tmp = Path(tempfile.mkdtemp())
    sd_spec, sd_backend, sd_enc = oc.sd15_tiny(tmp)
    runner = OfficialRunner(Path(os.environ["OFFICIAL_DRAGON_PATH"]), Path(args.python), tmp)
    rows = []
    for kind in args.kinds.split(","):
        sd = kind.startswith("sd_")
        backend, enc = (sd_backend, sd_enc) if sd else shapes
        spec = sd_spec if sd else shapes_spec
        encode = oc.latent_encode if sd else None
        base = CASES[kind](args.n)
        for variant in args.variants.split(","):
            theirs_flags, ours_flags = VARIANTS[variant]
            cases = [dataclasses.replace(c, flags=dict(theirs_flags), steps=args.steps) for c in base]
            t0 = time.time()
            theirs = runner.run(cases, enc, spec)
            t_off = time.time() - t0
            for c in cases:
                t0 = time.time()
                z = oc.run_ours(c, backend, enc, encode=encode,
                                memory_hook=official_reference_features(backend) if ours_flags.get("ref") else None,
                                plan_hook=plain_current_features if ours_flags.get("cur") else None)
                v = oc.agreement(z, theirs[c.name][0])
                row = {"kind": kind, "variant": variant, "case": c.name, "psnr_db": round(v, 2),
                       "official": theirs[c.name][1], "ours_s": round(time.time() - t0, 1),
                       "official_batch_s": round(t_off, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\nkind variant: min / median / mean dB (n)")
    for kind in args.kinds.split(","):
        for variant in args.variants.split(","):
            vs = [r["psnr_db"] for r in rows if r["kind"] == kind and r["variant"] == variant]
            print(f"{kind} {variant}: {min(vs):.1f} / {statistics.median(vs):.1f} / {statistics.mean(vs):.1f} ({len(vs)})")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
