"""Shapes-world benchmark: every edit scored against its re-rendered ground truth.

    python -m dragon_lab bench --quick --json bench_out/bench.json --sheet bench_out/sheet.png

A fixed, seeded suite of scenes per edit type. Each case runs DragonDiffusion
and two baselines on the same inversion: "no guidance" (start-latent
preparation, then plain sampling) and "naive" (pixel cut-and-paste, the hole
filled with the mean colour of its border). Metrics (see :func:`score`):

* ``psnr``: PSNR against the target image.
* ``bg_psnr``: PSNR outside the edit regions (object before/after, grown by 3 px
  to cover the shadows).
* ``iou`` / ``centroid_err``: the found object (colour segmentation, the object's
  colour, nearest the target) against the target's object mask / centroid (px).
* ``vacated``: share of the vacated pixels no longer showing the object's colour.
* ``area_ratio``: found area / (source area x scale^2) (resize, and points: a
  landmark-style resize with four points around the object's centre), per case;
  ``area_err`` = |area_ratio - 1| is what the table summarises.
* ``colour_err``: mean RGB distance to the target inside the object (appearance);
  ``colour_gap_left``: that distance over the input's (the share of the gap left).
* ``colour_drift``: share of the target object's pixels showing another palette colour
  (every kind but appearance; above 0.5 the case counts as a colour failure).
* ``drag_ratio``: remaining / initial distance of the object centroid (drag).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import shapes_eval as ev
from dragon_core.edits import Appearance, Drag, Edit, Move, Paste, Points
from dragon_core.images import array_to_tensor, grid, save_png
from dragon_core.memory import STORAGE, FeatureMemory, default_policy, invert_with_memory
from dragon_core.sampler import edit_image
from dragon_core.settings import EditSettings, default_settings, with_overrides
from dragon_demo import shapes_world as sw

from . import edit_cases as ec
from .bench_stats import area_error, summarise_cases
from .instrument import measured_edit

BENCH_SEED = 7
KINDS = ("move", "resize", "drag", "points", "appearance", "paste")
# each kind's seed stream: fixed per name, so adding a kind never changes another's cases
KIND_SEED = {"move": 0, "resize": 1, "drag": 2, "appearance": 3, "paste": 4, "points": 5}
# what the table summarises per kind (every metric is an error or a score, never a signed ratio)
METRICS = {
    "move": ("psnr", "bg_psnr", "iou", "centroid_err", "vacated", "colour_drift"),
    "resize": ("psnr", "bg_psnr", "iou", "area_err", "colour_drift"),
    "points": ("psnr", "bg_psnr", "iou", "area_err", "colour_drift"),
    "drag": ("psnr", "bg_psnr", "iou", "drag_ratio", "colour_drift"),
    "appearance": ("psnr", "bg_psnr", "iou", "colour_err", "colour_gap_left"),
    "paste": ("psnr", "bg_psnr", "iou", "centroid_err", "colour_drift"),
}
METHODS = ("dragon", "no_guidance", "naive")


@dataclass
class Case:
    kind: str
    edit_case: ec.EditCase


def make_case(kind: str, k: int, size: int = 32) -> Case:
    """Case ``k`` of an edit kind: moves of 6-25% of the side, scales 0.7-1.4."""
    rng = np.random.default_rng([BENCH_SEED, KIND_SEED[kind], k])
    for _ in range(500):
        seed = [BENCH_SEED, KIND_SEED[kind], k, int(rng.integers(1 << 30))]
        if kind in ("move", "drag"):
            base = ec.random_edit_case(seed, "move", size)
            obj = base.scene.objects[base.index]
            ang = rng.uniform(0, 2 * math.pi)
            dist = rng.uniform(0.06, 0.25) * size
            dx, dy = round(dist * math.cos(ang)), round(dist * math.sin(ang))
            moved = sw.ShapeObject(obj.shape, obj.colour, obj.cx + dx, obj.cy + dy, obj.size)
            if (dx or dy) and ec.fits(moved, size, 1) and editable(base.scene.masks()[base.index], dx, dy, 1.0):
                return Case(kind, ec.random_edit_case(seed, "move", size, base.index, float(dx), float(dy)))
        elif kind in ("resize", "points"):
            base = ec.random_edit_case(seed, "resize", size)
            m = base.scene.masks()[base.index]
            if 0.7 <= base.scale <= 1.4 and m.sum() >= 20 and editable(m, 0, 0, base.scale):
                return Case(kind, base)
        else:
            c = ec.random_edit_case(seed, kind, size)
            if kind == "paste" and len(c.target.objects) > 4:
                continue
            if c.scene.masks()[c.index if kind != "paste" else 0].sum() >= 1:
                return Case(kind, c)
    raise RuntimeError(f"no {kind} case found")


def editable(mask: np.ndarray, dx: float, dy: float, scale: float) -> bool:
    try:
        Move(torch.from_numpy(mask.astype(np.float32)), dx, dy, scale)
        return True
    except ValueError:
        return False


# -- baselines ------------------------------------------------------------------------------------------


def _border_mean(img: np.ndarray, hole: np.ndarray) -> np.ndarray:
    border = grow(hole, 1) & ~hole
    return img[border].mean(axis=0) if border.any() else img.reshape(-1, 3).mean(axis=0)


def _shift_nearest(arr: np.ndarray, mask: np.ndarray, dx: float, dy: float, scale: float, cx: float, cy: float):
    """Nearest-neighbour copy of masked pixels under scale-about-(cx, cy)-then-shift."""
    h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    sx = ((xs + 0.5 - dx - cx) / scale + cx - 0.5).round().astype(int)
    sy = ((ys + 0.5 - dy - cy) / scale + cy - 0.5).round().astype(int)
    ok = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    out_mask = np.zeros_like(mask)
    out_mask[ok] = mask[sy[ok], sx[ok]]
    out = np.zeros_like(arr)
    out[ok] = arr[sy[ok], sx[ok]]
    return out, out_mask


def naive(case: ec.EditCase) -> np.ndarray:
    """Cut-and-paste in pixels; the hole gets the mean colour of its border."""
    img = case.scene.render().copy()
    if case.kind in ("move", "resize"):
        m = case.scene.masks()[case.index]
        ys, xs = np.nonzero(m)
        cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
        obj, om = _shift_nearest(img, m, case.dx, case.dy, case.scale, cx, cy)
        img[m] = _border_mean(img, m)
        img[om] = obj[om]
        return img
    ref = case.reference.render()
    rm = case.reference.masks()[case.ref_index]
    if case.kind == "appearance":
        m = case.scene.masks()[case.index]
        img[m] = ref[rm].mean(axis=0)
        return img
    ys, xs = np.nonzero(rm)
    obj, om = _shift_nearest(ref, rm, case.dx, case.dy, case.scale, xs.mean() + 0.5, ys.mean() + 0.5)
    img[om] = obj[om]
    return img


# -- scoring ----------------------------------------------------------------------------------------------


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    d = (a - b) ** 2
    mse = float(d[where].mean()) if where is not None else float(d.mean())
    return 99.0 if mse <= 1e-10 else 10 * math.log10(1.0 / mse)


def grow(m: np.ndarray, r: int) -> np.ndarray:
    out = m.copy()
    for _ in range(r):
        g = out.copy()
        g[1:] |= out[:-1]
        g[:-1] |= out[1:]
        g[:, 1:] |= out[:, :-1]
        g[:, :-1] |= out[:, 1:]
        out = g
    return out


def score(kind: str, case: ec.EditCase, result: np.ndarray) -> dict[str, float]:
    """Metrics of one result (H, W, 3) in [0, 1] against the case's ground truth."""
    target = case.target.render()
    t_mask = case.target.masks()[case.index]
    s_mask = case.scene.masks()[case.index] if case.kind != "paste" else np.zeros_like(t_mask)
    edit_region = grow(s_mask | t_mask, 3)
    out = {"psnr": _psnr(result, target), "bg_psnr": _psnr(result, target, ~edit_region)}
    colour = case.target.objects[case.index].colour
    ty, tx = np.nonzero(t_mask)
    tc = (tx.mean() + 0.5, ty.mean() + 0.5)
    # the reference object is what the same colour segmentation finds in the target
    # (shadows of later objects darken parts of an object beyond the colour tolerance)
    in_target = [o for o in ev.palette_objects(target, min_area=3) if o.colour == colour]
    if in_target:
        t_obj = min(in_target, key=lambda o: math.hypot(o.centroid[0] - tc[0], o.centroid[1] - tc[1]))
        t_mask, tc = t_obj.mask, t_obj.centroid
    found = [o for o in ev.palette_objects(result, min_area=3) if o.colour == colour]
    if found:
        o = min(found, key=lambda o: math.hypot(o.centroid[0] - tc[0], o.centroid[1] - tc[1]))
        out["iou"] = float((o.mask & t_mask).sum() / max(1, (o.mask | t_mask).sum()))
        out["centroid_err"] = float(math.hypot(o.centroid[0] - tc[0], o.centroid[1] - tc[1]))
        area = float(o.area)
    else:
        out["iou"], out["centroid_err"], area = 0.0, float(case.scene.size), 0.0
    if kind in ("move", "drag"):
        others = np.zeros_like(t_mask)
        for j, m in enumerate(case.target.masks()):
            if j != case.index:
                others |= m
        vac = s_mask & ~t_mask & ~others
        if vac.any():
            near = ev.colour_distance(result, sw.PALETTE[colour]) <= ev.COLOUR_TOLERANCE
            out["vacated"] = float((~near[vac]).mean())
        init = math.hypot(case.dx, case.dy)
        out["drag_ratio"] = out["centroid_err"] / init if init else 0.0
    if kind in ("resize", "points"):
        src_area = float(s_mask.sum())
        out["area_ratio"] = area / (src_area * case.scale**2) if src_area else 0.0
        out["area_err"] = area_error(out["area_ratio"])
    if kind == "appearance":  # the colour gap to the target inside the object, and the share of it left
        out["colour_err"] = float(np.linalg.norm(result[t_mask] - target[t_mask], axis=-1).mean())
        gap = float(np.linalg.norm(case.scene.render()[t_mask] - target[t_mask], axis=-1).mean())
        out["colour_gap_left"] = out["colour_err"] / gap if gap > 0 else 0.0
    else:
        out["colour_drift"] = colour_drift(result, t_mask, colour)
    return out


def colour_drift(result: np.ndarray, mask: np.ndarray, colour: str) -> float:
    """Share of ``mask``'s pixels that show another palette colour than ``colour`` in ``result``
    (the edited object turned into something else; background pixels count as neither)."""
    if not mask.any():
        return 0.0
    names = list(sw.PALETTE)
    dist = np.stack([ev.colour_distance(result[mask], sw.PALETTE[c]) for c in names])
    nearest = dist.argmin(axis=0)
    coloured = dist.min(axis=0) <= ev.COLOUR_TOLERANCE
    other = coloured & (nearest != names.index(colour))
    return float(other.mean())


# -- running ------------------------------------------------------------------------------------------------


def to_image(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).cpu().numpy()


def mask_tensor(m: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(m.astype(np.float32))


def case_edit(kind: str, case: ec.EditCase, encoder, backend, policy, steps: int, spacing: str
              ) -> tuple[Edit, FeatureMemory | None]:
    """The edit the bench makes of ``case`` and, for appearance and paste, the memory of the second
    image it inverts for it (under that image's own prompt); None otherwise."""
    if kind in ("move", "resize"):
        return Move(mask_tensor(case.scene.masks()[case.index]), case.dx, case.dy, case.scale), None
    if kind == "points":  # landmark-style resize: 4 points around the centre move outward/inward
        obj = case.scene.objects[case.index]
        off = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]]) * 0.6 * obj.size
        centre = torch.tensor([[obj.cx, obj.cy]], dtype=torch.float32)
        return Points(centre + off, (centre + off * case.scale).clamp(0, case.scene.size - 0.01),
                      (case.scene.size, case.scene.size)), None
    if kind == "drag":
        m = case.scene.masks()[case.index]
        ys, xs = np.nonzero(m)
        h = torch.tensor([[xs.mean() + 0.5, ys.mean() + 0.5]], dtype=torch.float32)
        t = h + torch.tensor([[case.dx, case.dy]], dtype=torch.float32)
        region = grow(m | case.target.masks()[case.index], 2)
        return Drag(h, t, (case.scene.size, case.scene.size), mask_tensor(region)), None
    ref = case.reference
    rmem = invert_with_memory(backend, array_to_tensor(ref.render()), encoder.encode(ref.prompt()), steps=steps,
                              spacing=spacing, policy=policy)
    rmask = mask_tensor(ref.masks()[case.ref_index])
    if kind == "appearance":
        return Appearance(mask_tensor(case.scene.masks()[case.index]), rmem, rmask), rmem
    return Paste(rmem, rmask, case.dx, case.dy, case.scale), rmem


def run_case(backend, encoder, kind: str, case: ec.EditCase, settings: EditSettings, spacing: str,
             steps: int = 50, sample_prompt: str = "input", memory: str = "int8") -> dict[str, Any]:
    """DragonDiffusion and the two baselines on one case; images and scores.

    The image is inverted under its own prompt; the edit samples under the input's
    prompt, the target scene's (``sample_prompt="target"``: a user who describes the
    result; the input's where the target has more objects than a prompt can name) or
    the empty prompt (``"empty"``)."""
    t0 = time.time()
    cond, uncond = encoder.encode(case.scene.prompt()), encoder.encode("")
    if sample_prompt == "input":
        s_cond = cond
    elif sample_prompt == "empty":
        s_cond = uncond
    elif sample_prompt == "target":
        try:
            s_cond = encoder.encode(case.target.prompt())
        except ValueError:  # e.g. a paste target with 4 objects
            s_cond = cond
    else:
        raise ValueError(f"sample_prompt must be input, target or empty, got {sample_prompt!r}")
    policy = default_policy(backend, **STORAGE[memory])
    mem = invert_with_memory(backend, array_to_tensor(case.scene.render()), cond, steps=steps, spacing=spacing,
                             policy=policy)
    edit, _ = case_edit(kind, case, encoder, backend, policy, steps, spacing)
    result = measured_edit(backend, mem, edit, s_cond, uncond, settings)
    plain = edit_image(backend, mem, edit, s_cond, uncond,
                       with_overrides(settings, energy_scale=0.0, attention=False, copy_start=True,
                                      flexibility=0.0, time_travel=1))
    imgs = {"input": case.scene.render(), "target": case.target.render(), "dragon": to_image(result.latent),
            "no_guidance": to_image(plain.latent), "naive": naive(case)}
    if case.reference is not None:
        imgs["reference"] = case.reference.render()
    scores = {m: score(kind, case, imgs[m]) for m in ("dragon", "no_guidance", "naive")}
    return {"images": imgs, "scores": scores, "stats": result.stats, "seconds": time.time() - t0,
            "memory_bytes": mem.nbytes()["total"], "memory": mem, "case": case}


def run_bench(backend, encoder, quick: bool = True, defaults: dict | None = None, spacing: str = "comfy_uniform",
              kinds: tuple[str, ...] = KINDS, n: int | None = None, steps: int = 50, sample_prompt: str = "input",
              sheet: str | Path | None = None, json_path: str | Path | None = None, memory: str = "int8",
              seed: int | None = None, preset: str = "model") -> dict[str, Any]:
    """Run the suite with ``preset``'s settings (``default_settings``); return per-case scores and, per
    kind and method, each metric's mean, median and worst (``bench_stats``)."""
    n = n or (2 if quick else 12)
    t0 = time.time()
    table: dict[str, Any] = {}
    sheet_rows: list[np.ndarray] = []
    for kind in kinds:
        ed_kind = "move" if kind == "resize" else kind
        settings = default_settings(ed_kind, defaults, preset=preset, seed=seed)
        rows = [run_case(backend, encoder, kind, make_case(kind, k).edit_case, settings, spacing, steps, sample_prompt,
                         memory) for k in range(n)]
        table[kind] = summarise_cases(rows, METRICS[kind], METHODS)
        table[kind]["cases"] = [{"k": k, "edit": r["case"].params(), "scores": r["scores"]} for k, r in enumerate(rows)]
        table[kind]["seconds_per_edit"] = float(np.mean([r["seconds"] for r in rows]))
        numeric = [k for k, v in rows[0]["stats"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        table[kind]["stats"] = {k: float(np.mean([r["stats"][k] for r in rows])) for k in numeric}
        for r in rows:
            blank = np.ones_like(r["images"]["input"])
            sheet_rows += [r["images"]["input"], r["images"].get("reference", blank), r["images"]["target"],
                           r["images"]["dragon"], r["images"]["no_guidance"], r["images"]["naive"]]
    result = {"quick": quick, "cases_per_kind": n, "steps": steps, "spacing": spacing, "sample_prompt": sample_prompt,
              "memory": memory, "seed": seed, "preset": preset,
              "seconds": round(time.time() - t0, 1), "table": table}
    if sheet is not None:
        save_png(grid(sheet_rows, 6), sheet, 4)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_table(result: dict[str, Any]) -> str:
    """Per kind and metric: DragonDiffusion's mean / median / worst, the baselines' means; then the
    cases whose edited object changed colour."""
    def f(v: float) -> str:
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"

    lines = [f"shapes-world bench: {result['cases_per_kind']} cases per edit, {result['steps']} steps, preset "
             f"{result['preset']}, {result['seconds']}s", "",
             "| edit | metric | DragonDiffusion mean / median / worst | no guidance mean | naive mean |",
             "|---|---|---|---|---|"]
    for kind, rows in result["table"].items():
        for m in METRICS[kind]:
            d = rows["dragon"][m]
            lines.append(f"| {kind} | {m} | {f(d['mean'])} / {f(d['median'])} / {f(d['worst'])} | "
                         f"{f(rows['no_guidance'][m]['mean'])} | {f(rows['naive'][m]['mean'])} |")
    drift = {k: rows["dragon"]["colour_failures"] for k, rows in result["table"].items()}
    lines.append("")
    lines.append("colour changed (DragonDiffusion, cases): " + ", ".join(f"{k} {v}" for k, v in drift.items()))
    lines.append("")
    lines.append("sheet columns: input | reference (appearance/paste) | target | DragonDiffusion | no guidance | naive")
    return "\n".join(lines)
