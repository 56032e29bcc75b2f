"""What each deviation from the official DragonDiffusion maths does to the bundled bench (issue 16
item 2): every case with the project's default and with one deviation aligned to the official code.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/deviation_study.py --json benchmarks/deviation_study.json
    [--n 4] [--kinds move,resize,drag,appearance,paste]

The bench's tuning cases (``dragon_lab.bench.make_case``, k = 0..n-1: the cases the model's settings
were calibrated on; the held-out range, seed 9001, is never touched), the bundled shapes model with
its calibrated settings (preset "model"), 20 steps, the input's prompt, the bench's edits. Each case
is inverted once, into a float32 memory (the bench's layers; float32 so that the reference-feature
flag, which records float32 features, changes nothing but the deviation), and edited once per
variant; the variants are the measurement flags of ``tests/official/deviations.py`` (imported by
path; docs/official-agreement.md has their agreement effects), for the kinds each one touches:

* ``cur_feats``: current features from a plain pass (the official estimator), ``plain_current_features``;
* ``ref_feats``: reference features recomputed the official way, ``official_reference_features``
  (on ``latents[s]`` at t_s, the second image's too under the base image's prompt);
* ``ref_step`` (appearance, paste): the same with the second image under its own prompt: the
  step part of ``ref_feats`` alone (move, resize, drag have no second image: ``ref_feats`` is that);
* ``token_masks`` (appearance, paste): masked attention's token masks sampled one pixel per token,
  ``official_token_masks``;
* ``resampling`` (resize, paste): the energy's moved features and mask by nearest sampling,
  ``nearest_resampling`` (the bench's pastes shift by fractions of a pixel; its moves by whole
  pixels, where the two resamplings agree);
* ``all``: every flag of the kind at once;
* ``reseed``: no flag, the sampler's seed + 1 (the regional SDE's and the vacated area's noise):
  how far a change that is not a method change moves the same scores (paste samples without noise
  in this preset, so its reseed changes nothing).

The official drag's in-place copy (its start-latent patch copy leaking into the step-0 reference)
cannot act here: it needs the official reference features and a start-latent copy, and the model
preset's drag copies nothing (``copy_start`` False). Scores are the bench's (``score``): PSNR to
the target, IoU, and the kind's key error (move, paste: centroid_err px; resize: area_err; drag:
drag_ratio; appearance: colour_gap_left). Prints one row per case and variant, then per kind and
variant mean / median / worst and, against the default on the same cases, the mean difference and
how many cases got better / worse; ``--json`` writes both.

``--agreement`` measures the same variants' agreement with the official code instead (the
differential test's cases and harness, ``tests/official``; PSNR dB of the two result latents, every
variant against the official run without measurement flags; the official checkout and its venv's
Python from the environment, as for the test), e.g.

    OFFICIAL_DRAGON_PATH=/work/official-dragon OFFICIAL_DRAGON_PYTHON=/work/official-venv/bin/python \
      OMP_NUM_THREADS=1 .venv/bin/python scripts/deviation_study.py --agreement --kinds resize,appearance --n 3

(move, resize, appearance, paste; 50 steps, the demo's, unless ``--steps``). There ``all_own_prompt``
is ``all`` with ``ref_step`` for ``ref_feats``: everything aligned but the second image's prompt.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dragon_core.diffusers_backend import load_shapes_backend  # noqa: E402
from dragon_core.edits import Appearance, Move, Paste  # noqa: E402
from dragon_core.images import array_to_tensor  # noqa: E402
from dragon_core.memory import default_policy, invert_with_memory  # noqa: E402
from dragon_core.planning import plan_edit  # noqa: E402
from dragon_core.sampler import run_edit  # noqa: E402
from dragon_core.settings import default_settings, with_overrides  # noqa: E402
from dragon_demo.shapes_model import ASSET_DIR, load_config  # noqa: E402
from dragon_lab.bench import case_edit, make_case, score, to_image  # noqa: E402
from dragon_lab.bench_stats import HIGHER_IS_BETTER, summarise  # noqa: E402


def _deviations():
    spec = importlib.util.spec_from_file_location("deviations", ROOT / "tests" / "official" / "deviations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dv = _deviations()
KINDS = ("move", "resize", "drag", "appearance", "paste")
KEY_ERROR = {"move": "centroid_err", "resize": "area_err", "drag": "drag_ratio", "appearance": "colour_gap_left",
             "paste": "centroid_err"}
METRICS = ("psnr", "iou")
# the flags that touch each kind; "all" switches every one of them
FLAGS = {"move": ("cur_feats", "ref_feats"), "resize": ("cur_feats", "ref_feats", "resampling"),
         "drag": ("cur_feats", "ref_feats"), "appearance": ("cur_feats", "ref_feats", "token_masks"),
         "paste": ("cur_feats", "ref_feats", "token_masks", "resampling")}
STEPS = 20
AGREEMENT_KINDS = ("move", "resize", "appearance", "paste")

PlanHook = Callable[[Any, Any], tuple[Any, Any]]


def variants(kind: str) -> dict[str, tuple[str, ...]]:
    """Variant name -> the flags it switches on: the default, each flag alone (and ref_step where
    there is a second image), all of them, and the reseeded default."""
    parts = {"ref_step": ("ref_step",)} if kind in ("appearance", "paste") else {}
    return {"default": (), **{f: (f,) for f in FLAGS[kind]}, **parts, "all": FLAGS[kind], "reseed": ("reseed",)}


def with_flags(edit, memory, second, flags: tuple[str, ...], backend, cond,
               second_cond) -> tuple[Any, Any, list[PlanHook]]:
    """(edit, memory, plan hooks) with ``flags`` switched on; the memory flag replaces the base
    and any second memory, that one under the base prompt (``ref_feats``, the official) or its
    own ``second_cond`` (``ref_step``)."""
    if "ref_feats" in flags or "ref_step" in flags:
        hook = dv.official_reference_features(backend)
        memory = hook(memory, cond)
        c2 = cond if "ref_feats" in flags else second_cond
        if isinstance(edit, Appearance):
            edit = dataclasses.replace(edit, reference=hook(second, c2))
        elif isinstance(edit, Paste):
            edit = dataclasses.replace(edit, source=hook(second, c2))
    hooks: list[PlanHook] = []
    if "resampling" in flags:
        hooks.append(dv.nearest_resampling(edit))
    if "token_masks" in flags:
        hooks.append(dv.official_token_masks)
    if "cur_feats" in flags:  # last: it wraps the plan's attention as the other hooks left it
        hooks.append(dv.plain_current_features)
    return edit, memory, hooks


def run_variant(backend, edit, memory, second, flags: tuple[str, ...], conds, settings) -> torch.Tensor:
    """The result latent of one variant; ``conds``: the base prompt's, the empty prompt's and the
    second image's (or None) conditioning."""
    cond, uncond, second_cond = conds
    if "reseed" in flags:
        settings = with_overrides(settings, seed=settings.seed + 1)
    edit, memory, hooks = with_flags(edit, memory, second, flags, backend, cond, second_cond)
    plan = plan_edit(edit, memory, settings)
    for hook in hooks:
        plan, settings = hook(plan, settings)
    return run_edit(backend, memory, plan, cond, uncond, settings).latent


def study(kinds: tuple[str, ...], n: int) -> dict[str, Any]:
    """Per-case rows and per kind and variant summaries (see the module doc)."""
    backend, encoder = load_shapes_backend()
    overrides = load_config()["edit_defaults"]
    policy = default_policy(backend, dtype=torch.float32)
    rows, summary = [], {}
    for kind in kinds:
        settings = default_settings("move" if kind == "resize" else kind, overrides, preset="model")
        metrics = METRICS + (KEY_ERROR[kind],)
        for k in range(n):
            case = make_case(kind, k).edit_case
            cond, uncond = encoder.encode(case.scene.prompt()), encoder.encode("")
            conds = (cond, uncond, None if case.reference is None else encoder.encode(case.reference.prompt()))
            with torch.no_grad():
                memory = invert_with_memory(backend, array_to_tensor(case.scene.render()), cond, steps=STEPS,
                                            spacing="comfy_uniform", policy=policy)
                edit, second = case_edit(kind, case, encoder, backend, policy, STEPS, "comfy_uniform")
            for name, flags in variants(kind).items():
                t0 = time.time()
                img = to_image(run_variant(backend, edit, memory, second, flags, conds, settings))
                s = score(kind, case, img)
                row = {"kind": kind, "k": k, "variant": name, "edit": case.params(),
                       **{m: round(float(s[m]), 4) for m in metrics}, "seconds": round(time.time() - t0, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        summary[kind] = {name: {m: summarise_variant(rows, kind, name, m) for m in metrics} for name in variants(kind)}
    return {"steps": STEPS, "cases_per_kind": n, "preset": "model", "memory": "float32", "sample_prompt": "input",
            "summary": summary, "cases": rows}


def agreement_study(kinds: tuple[str, ...], n: int, steps: int) -> dict[str, Any]:
    """Per case and variant, the PSNR (dB) between our result and the official one, and per kind and
    variant its min / median (printed too; see the module doc)."""
    sys.path.insert(0, str(ROOT / "tests" / "official"))
    import official_cases as oc
    from conftest import OfficialRunner

    backend, encoder = load_shapes_backend()
    spec = {"unet_config": load_config()["unet"], "unet_weights": str(Path(ASSET_DIR) / "unet.safetensors"),
            "vae": "pixel", "vae_factor": 1}
    runner = OfficialRunner(Path(os.environ["OFFICIAL_DRAGON_PATH"]), Path(os.environ["OFFICIAL_DRAGON_PYTHON"]),
                            Path(tempfile.mkdtemp()))
    policy = default_policy(backend, max_per_block=None, dtype=torch.float32)  # the test's memory
    make = {"move": oc.move_cases, "resize": oc.resize_cases, "appearance": oc.appearance_cases,
            "paste": oc.paste_cases}
    rows = []
    for kind in kinds:
        cases = [dataclasses.replace(c, steps=steps) for c in make[kind](n)]
        theirs = runner.run(cases, encoder, spec)
        named = {k: v for k, v in variants(kind).items() if k != "reseed"}
        if kind in ("appearance", "paste"):
            named["all_own_prompt"] = tuple("ref_step" if f == "ref_feats" else f for f in FLAGS[kind])
        for c in cases:
            edit, memory, second, conds = official_edit(c, oc, backend, encoder, policy)
            for name, flags in named.items():
                z = run_variant(backend, edit, memory, second, flags, conds, oc.our_settings(c))
                rows.append({"kind": kind, "case": c.name, "variant": name,
                             "psnr_db": round(oc.agreement(z[0].detach().float(), theirs[c.name][0]), 2)})
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for kind in kinds:
        by_variant: dict[str, list[float]] = {}
        for r in rows:
            if r["kind"] == kind:
                by_variant.setdefault(r["variant"], []).append(r["psnr_db"])
        summary[kind] = {v: {"min": min(x), "median": statistics.median(x)} for v, x in by_variant.items()}
        print(kind, "; ".join(f"{v} {d['min']:.1f} / {d['median']:.1f}" for v, d in summary[kind].items()), flush=True)
    return {"steps": steps, "cases_per_kind": n, "summary": summary, "cases": rows}


def official_edit(case, oc, backend, encoder, policy) -> tuple[Any, Any, Any, tuple]:
    """(edit, memory, second memory, conds) of a differential-test case, as
    ``official_cases.run_ours`` makes them."""
    cond, uncond = encoder.encode(case.prompt), encoder.encode("")
    second_cond = encoder.encode(case.reference_prompt)
    with torch.no_grad():
        memory = invert_with_memory(backend, oc.image_tensor(case.image), cond, steps=case.steps, policy=policy)
        second = (None if case.reference is None else
                  invert_with_memory(backend, oc.image_tensor(case.reference), second_cond, steps=case.steps,
                                     policy=policy))
    p, mask = case.params, torch.from_numpy(case.mask.astype(np.float32))
    if case.kind == "move":
        edit = Move(mask, dx=p.get("our_dx", p["dx"]), dy=p.get("our_dy", p["dy"]), scale=p.get("resize", 1.0))
    elif case.kind == "appearance":
        edit = Appearance(mask, second, torch.from_numpy(case.reference_mask.astype(np.float32)))
    else:
        edit = Paste(second, mask, dx=p["dx"], dy=p["dy"], scale=p.get("resize", 1.0))
    return edit, memory, second, (cond, uncond, second_cond)


def summarise_variant(rows: list[dict[str, Any]], kind: str, name: str, metric: str) -> dict[str, Any]:
    """``summarise`` of one variant's metric, with the paired comparison against the default:
    ``delta`` (mean of variant - default) and the cases it made ``better`` / ``worse``."""
    mine = {r["k"]: r[metric] for r in rows if r["kind"] == kind and r["variant"] == name}
    base = {r["k"]: r[metric] for r in rows if r["kind"] == kind and r["variant"] == "default"}
    out: dict[str, Any] = summarise(list(mine.values()), metric)
    if name != "default":
        d = [mine[k] - base[k] for k in mine]
        up = 1 if HIGHER_IS_BETTER[metric] else -1
        out.update(delta=float(np.mean(d)), better=sum(up * x > 1e-6 for x in d), worse=sum(up * x < -1e-6 for x in d))
    return out


def format_table(result: dict[str, Any]) -> str:
    """Per kind and variant: mean / median / worst of PSNR, IoU and the key error; for a flag,
    its mean difference from the default and the cases it made better / worse."""
    lines = [f"deviation study: {result['cases_per_kind']} tuning cases per kind, {result['steps']} steps, "
             f"preset {result['preset']}", "",
             "| kind | variant | PSNR dB mean / median / worst (delta, better/worse) | IoU | key error |",
             "|---|---|---|---|---|"]

    def cell(v: dict[str, Any]) -> str:
        paired = f" ({v['delta']:+.3g}, {v['better']}/{v['worse']})" if "delta" in v else ""
        return f"{v['mean']:.3g} / {v['median']:.3g} / {v['worst']:.3g}{paired}"

    for kind, by_variant in result["summary"].items():
        for name, s in by_variant.items():
            cells = [cell(s[m]) for m in METRICS + (KEY_ERROR[kind],)]
            lines.append(f"| {kind} | {name} | {cells[0]} | {cells[1]} | {KEY_ERROR[kind]} {cells[2]} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4, help="tuning cases per kind (bench cases 0..n-1)")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--json", default=None)
    p.add_argument("--agreement", action="store_true", help="agreement with the official code instead (module doc)")
    p.add_argument("--steps", type=int, default=50, help="--agreement: steps (default 50, the official demo's)")
    args = p.parse_args()
    torch.set_num_threads(1)
    kinds = tuple(args.kinds.split(","))
    allowed = AGREEMENT_KINDS if args.agreement else KINDS
    unknown = set(kinds) - set(allowed)
    if unknown:
        p.error(f"unknown kinds {sorted(unknown)}; choose from {allowed}")
    if args.agreement and not (os.environ.get("OFFICIAL_DRAGON_PATH") and os.environ.get("OFFICIAL_DRAGON_PYTHON")):
        p.error("--agreement needs OFFICIAL_DRAGON_PATH and OFFICIAL_DRAGON_PYTHON (docs/official-agreement.md)")
    t0 = time.time()
    result = agreement_study(kinds, args.n, args.steps) if args.agreement else study(kinds, args.n)
    result["seconds"] = round(time.time() - t0, 1)
    if not args.agreement:
        print()
        print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
