"""Held-out bench cases, stratified: seeds that calibration never touches, and the situations
a user's picture brings that the mixed bench rarely draws.

The tuning cases (:func:`dragon_lab.bench.make_case`, seed ``BENCH_SEED`` = 7, indices 0-999)
are the only ones any setting was calibrated on. Held-out cases come from ``HELD_OUT_SEED``
(9001) and are for reporting only. Each belongs to a stratum it was drawn for:

* ``plain``: flat or gradient background, the edited object overlaps nothing, moves of 6-15 %
  of the side;
* ``occluded``: an object drawn later covers part of the edited one (before or after the edit);
* ``occluding``: the edited object covers part of an earlier one;
* ``small``: the edited object is under 6 px across (the model was trained on 8-17 px);
* ``textured``: a textured background;
* ``far``: moves of 15-25 % of the side (move, drag, paste);
* ``outside``: moves that take 10-50 % of the object past the frame (move, paste): the part
  outside is cropped away.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from dragon_demo import shapes_world as sw

from . import edit_cases as ec
from .bench import KIND_SEED, METHODS, METRICS, editable, run_case
from .bench_stats import summarise_cases

HELD_OUT_SEED = 9001
STRATA = ("plain", "occluded", "occluding", "small", "textured", "far", "outside")
OFFSET_KINDS = ("move", "drag", "paste")
OUTSIDE_KINDS = ("move", "paste")
SMALL = 6.0  # px across
# the one error per kind the summary table shows beside PSNR and IoU
KEY_ERROR = {"move": "centroid_err", "resize": "area_err", "drag": "drag_ratio", "points": "area_err",
             "appearance": "colour_gap_left", "paste": "centroid_err"}


def strata_of(kind: str, case: ec.EditCase) -> set[str]:
    """Every stratum ``case`` belongs to (``plain`` only when it is in no other)."""
    obj = case.target.objects[case.index]
    out = set()
    if case.scene.background.kind == "texture":
        out.add("textured")
    for scene in (case.scene, case.target) if kind != "paste" else (case.target,):
        i = case.index
        full = [sw.coverage(o, scene.size) >= sw.MASK_THRESHOLD for o in scene.objects]
        if any((full[i] & full[j]).any() for j in range(i + 1, len(full))):
            out.add("occluded")
        if any((full[i] & full[j]).any() for j in range(i)):
            out.add("occluding")
    if 2 * obj.size < SMALL:
        out.add("small")
    if kind in OFFSET_KINDS and math.hypot(case.dx, case.dy) >= 0.15 * case.scene.size:
        out.add("far")
    if not ec.fits(obj, case.scene.size):
        out.add("outside")
    return out or {"plain"}


def applies(kind: str, stratum: str) -> bool:
    """Whether ``kind`` has cases in ``stratum`` (far: edits with an offset; a pasted object is drawn
    last, so nothing occludes it)."""
    return not ((stratum == "far" and kind not in OFFSET_KINDS) or (stratum == "outside" and kind not in OUTSIDE_KINDS)
                or (stratum == "occluded" and kind == "paste"))


def held_out_case(kind: str, stratum: str, k: int, size: int = 32) -> ec.EditCase:
    """Held-out case ``k`` of ``kind`` in ``stratum`` (seeded by kind, stratum and ``k`` only)."""
    if stratum not in STRATA:
        raise ValueError(f"stratum must be one of {STRATA}, got {stratum!r}")
    if not applies(kind, stratum):
        raise ValueError(f"{kind} has no cases in the {stratum} stratum")
    rng = np.random.default_rng([HELD_OUT_SEED, KIND_SEED[kind], STRATA.index(stratum), k])
    lo, hi = {"far": (0.15, 0.25), "outside": (0.15, 0.45)}.get(stratum, (0.06, 0.15))
    for _ in range(3000):
        case = _candidate(kind, rng, size, lo, hi)
        if case is not None and stratum == "small":
            case = _shrunk(case, float(rng.uniform(4.0, SMALL - 0.5)))
        if case is not None and stratum in strata_of(kind, case) and _usable(kind, case, stratum == "outside"):
            return case
    raise RuntimeError(f"no held-out {kind} case in stratum {stratum}")


def _candidate(kind: str, rng: np.random.Generator, size: int, lo: float, hi: float) -> ec.EditCase | None:
    seed = [HELD_OUT_SEED, int(rng.integers(1 << 30))]
    if kind in ("move", "drag", "paste"):
        ang, dist = rng.uniform(0, 2 * math.pi), rng.uniform(lo, hi) * size
        dx, dy = float(round(dist * math.cos(ang))), float(round(dist * math.sin(ang)))
        if not (dx or dy):
            return None
        if kind == "paste":
            return ec.random_edit_case(seed, "paste", size, dx=dx, dy=dy)
        base = ec.random_edit_case(seed, "move", size)
        return ec.random_edit_case(seed, "move", size, base.index, dx, dy)
    if kind in ("resize", "points"):
        return ec.random_edit_case(seed, "resize", size)
    return ec.random_edit_case(seed, "appearance", size)


def _shrunk(case: ec.EditCase, extent: float) -> ec.EditCase:
    """The same edit on a scene whose edited object (for paste: the pasted one) is ``extent`` px across."""
    if case.kind == "paste":
        j = case.ref_index
        ref = case.reference.resized(j, extent / (2 * case.reference.objects[j].size))
        src = ref.objects[j]
        target = case.scene.pasted(src, src.cx + case.dx, src.cy + case.dy, case.scale)
        return dataclasses.replace(case, reference=ref, target=target)
    i = case.index
    scene = case.scene.resized(i, extent / (2 * case.scene.objects[i].size))
    if case.kind == "move":
        target = scene.moved(i, case.dx, case.dy)
    elif case.kind == "resize":
        target = scene.resized(i, case.scale)
    else:
        target = scene.recoloured(i, case.reference.objects[case.ref_index].colour)
    return dataclasses.replace(case, scene=scene, target=target)


def _usable(kind: str, case: ec.EditCase, outside: bool = False) -> bool:
    """Inside the image (``outside``: 10-50 % of it past the frame), visible, and an edit the method
    accepts."""
    obj = case.target.objects[case.index]
    if outside:
        if not 0.1 <= _outside_share(obj, case.scene.size) <= 0.5:
            return False
    elif not ec.fits(obj, case.scene.size, 1):
        return False
    if kind == "paste":
        return len(case.target.objects) <= 4 and case.target.masks()[case.index].sum() >= 1
    m = case.scene.masks()[case.index]
    if m.sum() < 3 or case.target.masks()[case.index].sum() < 3:
        return False
    if kind in ("resize", "points") and not 0.7 <= case.scale <= 1.4:
        return False
    return kind == "appearance" or editable(m, case.dx, case.dy, case.scale)


def _outside_share(obj: sw.ShapeObject, size: int) -> float:
    """The share of the object's area outside a ``size`` image (rendered on a canvas 3x as large)."""
    big = sw.ShapeObject(obj.shape, obj.colour, obj.cx + size, obj.cy + size, obj.size)
    cov = sw.coverage(big, 3 * size) >= sw.MASK_THRESHOLD
    total = cov.sum()
    return float(1 - cov[size:2 * size, size:2 * size].sum() / total) if total else 1.0


def run_held_out(backend, encoder, kinds: tuple[str, ...], strata: tuple[str, ...] = STRATA, n: int = 4,
                 steps: int = 20, prompts: tuple[str, ...] = ("input", "empty"), defaults: dict | None = None,
                 spacing: str = "comfy_uniform", memory: str = "int8", log=print, preset: str = "model"
                 ) -> dict[str, Any]:
    """Every kind x stratum x prompt on ``n`` held-out cases with ``preset``'s settings: per-case rows
    and their summaries."""
    from dragon_core.settings import default_settings

    rows: list[dict[str, Any]] = []
    for kind in kinds:
        settings = default_settings("move" if kind == "resize" else kind, defaults, preset=preset)
        for stratum in strata:
            if not applies(kind, stratum):
                continue
            for k in range(n):
                case = held_out_case(kind, stratum, k)
                for prompt in prompts:
                    r = run_case(backend, encoder, kind, case, settings, spacing, steps, prompt, memory)
                    rows.append({"kind": kind, "stratum": stratum, "prompt": prompt, "k": k,
                                 "strata": sorted(strata_of(kind, case)), "edit": case.params(), "scores": r["scores"]})
                    log(f"{kind} {stratum} {prompt} {k}: " + ", ".join(
                        f"{m} {r['scores']['dragon'].get(m, math.nan):.3f}" for m in ("psnr", "iou", KEY_ERROR[kind])))
    return {"held_out_seed": HELD_OUT_SEED, "cases_per_stratum": n, "steps": steps, "prompts": list(prompts),
            "preset": preset, "summary": summarise_held_out(rows), "cases": rows}


def summarise_held_out(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind, stratum and prompt (and per kind and prompt over every stratum, "all"): the summaries
    of the case rows."""
    groups: dict[str, Any] = {}
    for row in rows:
        groups.setdefault(f"{row['kind']}|{row['stratum']}|{row['prompt']}", []).append(row)
        groups.setdefault(f"{row['kind']}|all|{row['prompt']}", []).append(row)
    return {key: summarise_cases(g, METRICS[key.split("|")[0]], METHODS) for key, g in groups.items()}


def merge_held_out(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with every row of the kinds ``new`` ran replaced by ``new``'s, summaries recomputed: after a
    settings change for some kinds, the other kinds' rows (deterministic, unchanged) need not rerun."""
    for key in ("held_out_seed", "cases_per_stratum", "steps", "prompts"):
        if old[key] != new[key]:
            raise ValueError(f"cannot merge held-out runs with different {key}: {old[key]} vs {new[key]}")
    presets = [r.get("preset", "model") for r in (old, new)]  # runs written before presets used the model's
    if presets[0] != presets[1]:
        raise ValueError(f"cannot merge held-out runs with different presets: {presets[0]} vs {presets[1]}")
    kinds = {r["kind"] for r in new["cases"]}
    rows = [r for r in old["cases"] if r["kind"] not in kinds] + new["cases"]
    return {**old, "summary": summarise_held_out(rows), "cases": rows}


def format_held_out(result: dict[str, Any]) -> str:
    """One row per kind, stratum and prompt: DragonDiffusion's PSNR, IoU and key error (mean / worst),
    naive cut-and-paste's PSNR, and the cases whose object changed colour."""
    lines = [f"held-out bench (seed {result['held_out_seed']}): {result['cases_per_stratum']} cases per stratum, "
             f"{result['steps']} steps", "",
             "| edit | stratum | prompt | PSNR mean / worst | naive PSNR | IoU mean / worst | error | "
             "error mean / median / worst | colour changed |", "|---|---|---|---|---|---|---|---|---|"]
    order = {name: i for i, name in enumerate(STRATA + ("all",))}
    keys = sorted(result["summary"], key=lambda k: (k.split("|")[0], order[k.split("|")[1]], k.split("|")[2]))
    for key in keys:
        s = result["summary"][key]
        kind, stratum, prompt = key.split("|")
        d, e = s["dragon"], KEY_ERROR[kind]
        lines.append(f"| {kind} | {stratum} | {prompt} | {d['psnr']['mean']:.2f} / {d['psnr']['worst']:.2f} | "
                     f"{s['naive']['psnr']['mean']:.2f} | {d['iou']['mean']:.2f} / {d['iou']['worst']:.2f} | {e} | "
                     f"{d[e]['mean']:.3f} / {d[e]['median']:.3f} / {d[e]['worst']:.3f} | "
                     f"{d['colour_failures']} of {d['psnr']['n']} |")
    return "\n".join(lines)
