"""Moves on generated samples: the memory captured while generating vs the sample inverted.

    python -m dragon_lab capture-bench --n 16 --steps 20 --json bench_out/capture.json

Case ``k``: the prompt of a random shapes-world scene, seeded noise, and a sample generated
at the model's cfg with its memory captured (``dragon_core.capture.sample_with_memory``).
Colour segmentation of the sample (``shapes_eval.palette_objects``) finds the largest object
of a colour the prompt names; a move of 6-25 % of the side that keeps it in the frame. The
same Move, with the model's calibrated settings, then runs on

* ``captured``: the captured memory (no inversion);
* ``inverted``: the memory of the sample's DDIM inversion (same steps, the sample's prompt).

Scores against the sample's object shifted by the move (as the bench scores, ``bench.score``):
``iou`` and ``centroid_err`` of the result's object of that colour nearest the target
centroid; ``bg_psnr``, PSNR to the sample outside the object before and after (grown by 3
px); ``vacated``, the share of the vacated pixels no longer in the object's colour;
``colour_drift``. Cost: the inversion's UNet passes and seconds (what capture saves), the
generation's and each edit's seconds, and the memories' bytes; and the inversion's
reconstruction PSNR (DDIM from its z_T, no CFG) of the sample.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from dragon_core import ddim
from dragon_core.capture import sample_with_memory
from dragon_core.edits import Move
from dragon_core.memory import STORAGE, default_policy, invert_with_memory
from dragon_core.sampler import edit_image
from dragon_core.settings import EditSettings
from dragon_demo import shapes_world as sw

from . import shapes_eval as ev
from .bench import colour_drift, grow, mask_tensor, to_image
from .bench_stats import summarise_cases

SEED = 18
METHODS = ("captured", "inverted")
METRICS = ("iou", "centroid_err", "bg_psnr", "vacated", "colour_drift")


def pick_move(img: np.ndarray, prompt: str, rng: np.random.Generator) -> tuple[ev.FoundObject, int, int] | None:
    """The largest object of a prompted colour in ``img`` and a move (dx, dy) that keeps all of it
    in the frame; None when the sample shows no such object."""
    named = {part.split()[0] for part in prompt.split(", ")[1:]}
    found = [o for o in ev.palette_objects(img) if o.colour in named]
    if not found:
        return None
    obj = max(found, key=lambda o: o.area)
    ys, xs = np.nonzero(obj.mask)
    size = img.shape[0]
    for _ in range(200):
        ang, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.06, 0.25) * size
        dx, dy = round(dist * math.cos(ang)), round(dist * math.sin(ang))
        if (dx or dy) and 0 <= xs.min() + dx and xs.max() + dx < size and 0 <= ys.min() + dy and ys.max() + dy < size:
            return obj, dx, dy
    return None


def shifted(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    out[ys + dy, xs + dx] = True
    return out


def score_move(sample: np.ndarray, result: np.ndarray, obj: ev.FoundObject, dx: int, dy: int) -> dict[str, float]:
    target = shifted(obj.mask, dx, dy)
    tc = (obj.centroid[0] + dx, obj.centroid[1] + dy)
    keep = ~grow(obj.mask | target, 3)
    mse = float(((result[keep] - sample[keep]) ** 2).mean()) if keep.any() else 0.0
    out = {"bg_psnr": 99.0 if mse == 0 else 10 * math.log10(1 / mse)}
    found = [o for o in ev.palette_objects(result, min_area=3) if o.colour == obj.colour]
    if found:
        o = min(found, key=lambda o: math.hypot(o.centroid[0] - tc[0], o.centroid[1] - tc[1]))
        out["iou"] = float((o.mask & target).sum() / max(1, (o.mask | target).sum()))
        out["centroid_err"] = float(math.hypot(o.centroid[0] - tc[0], o.centroid[1] - tc[1]))
    else:
        out["iou"], out["centroid_err"] = 0.0, float(sample.shape[0])
    vac = obj.mask & ~target
    if vac.any():
        near = ev.colour_distance(result, sw.PALETTE[obj.colour]) <= ev.COLOUR_TOLERANCE
        out["vacated"] = float((~near[vac]).mean())
    out["colour_drift"] = colour_drift(result, target, obj.colour)
    return out


def run_case(backend, encoder, k: int, settings: EditSettings, steps: int, cfg: float, spacing: str,
             memory: str = "int8") -> dict[str, Any] | None:
    """Generate case ``k``, move its object with both memories; None when the sample shows no
    prompted object (counted, not scored)."""
    rng = np.random.default_rng([SEED, k])
    prompt = sw.random_scene(rng).prompt()
    cond, uncond = encoder.encode(prompt), encoder.encode("")
    size = int(backend.unet.config.sample_size)
    z_T = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(SEED * 1000 + k))
    policy = default_policy(backend, **STORAGE[memory])
    cap = sample_with_memory(backend, z_T, cond, uncond, steps=steps, cfg=cfg, spacing=spacing, policy=policy,
                             seed=SEED * 1000 + k)
    sample = to_image(cap.trajectory.z_0)
    picked = pick_move(sample, prompt, rng)
    if picked is None:
        return None
    obj, dx, dy = picked
    inv = invert_with_memory(backend, cap.trajectory.z_0, cond, steps=steps, spacing=spacing, policy=policy)
    edit = Move(mask_tensor(obj.mask), dx, dy)
    row: dict[str, Any] = {"k": k, "prompt": prompt, "colour": obj.colour, "dx": dx, "dy": dy, "scores": {},
                           "seconds": {}, "images": {"sample": sample}}
    for name, mem in (("captured", cap), ("inverted", inv)):
        t0 = time.time()
        result = to_image(edit_image(backend, mem, edit, cond, uncond, settings).latent)
        row["seconds"][name] = time.time() - t0
        row["scores"][name] = score_move(sample, result, obj, dx, dy)
        row["images"][name] = result
    recon = ddim.sample(backend, inv.trajectory.z_T, cond, None, steps=steps, cfg=1.0, spacing=spacing)
    # the captured memory's trajectory is the generation's own: exact by construction
    row["inverted_reconstruction_psnr"] = ddim.psnr(torch.from_numpy(to_image(recon)), torch.from_numpy(sample))
    row["cost"] = {"generate_seconds": cap.info["seconds"], "generate_forward": cap.info["forward"],
                   "invert_seconds": inv.info["seconds"], "invert_forward": inv.info["forward"],
                   "captured_bytes": cap.nbytes()["total"], "inverted_bytes": inv.nbytes()["total"]}
    return row


def run_capture_bench(backend, encoder, settings: EditSettings, n: int = 16, steps: int = 20, cfg: float = 3.0,
                      spacing: str = "comfy_uniform", memory: str = "int8") -> dict[str, Any]:
    """``n`` cases (those whose sample shows no prompted object are skipped and counted)."""
    rows = [r for r in (run_case(backend, encoder, k, settings, steps, cfg, spacing, memory) for k in range(n))
            if r is not None]
    cost = {key: float(np.mean([r["cost"][key] for r in rows])) for key in rows[0]["cost"]} if rows else {}
    cost.update({f"edit_seconds_{m}": float(np.mean([r["seconds"][m] for r in rows])) for m in METHODS} if rows else {})
    recon = [r["inverted_reconstruction_psnr"] for r in rows]
    fidelity = {"mean": float(np.mean(recon)), "min": float(np.min(recon))} if rows else {}
    return {"n": n, "scored": len(rows), "steps": steps, "cfg": cfg, "memory": memory,
            "summary": summarise_cases(rows, METRICS, METHODS), "cost": cost, "rows": rows,
            "inverted_reconstruction_psnr": fidelity}


def format_capture_bench(result: dict[str, Any]) -> str:
    """The summary table (mean / worst per metric and memory) and the cost line."""
    lines = [f"{result['scored']} of {result['n']} samples scored ({result['steps']} steps, generation cfg "
             f"{result['cfg']:g}, {result['memory']} memory)", "| memory | " + " | ".join(METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for m in METHODS:
        s = result["summary"][m]
        lines.append(f"| {m} | " + " | ".join(f"{s[k]['mean']:.3f} / {s[k]['worst']:.3f}" for k in METRICS) + " |")
    c = result["cost"]
    if c:
        lines.append(f"inversion saved: {c['invert_forward']:.0f} UNet passes, {c['invert_seconds']:.2f} s per image "
                     f"(generation {c['generate_forward']:.0f} passes, {c['generate_seconds']:.2f} s; edit "
                     f"{c['edit_seconds_captured']:.2f} s captured, {c['edit_seconds_inverted']:.2f} s inverted); "
                     f"memory {c['captured_bytes'] / 2**20:.2f} MiB captured, {c['inverted_bytes'] / 2**20:.2f} MiB "
                     f"inverted")
        r = result["inverted_reconstruction_psnr"]
        lines.append(f"the inversion reconstructs the samples at {r['mean']:.2f} dB mean PSNR (min {r['min']:.2f}); "
                     f"the captured memory holds the generation's own trajectory")
    return "\n".join(lines)
