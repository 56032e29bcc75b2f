"""Measure a shapes model against its acceptance checks and write a sample grid.

    python -m dragon_lab model-report --out demo_out/report

Prints and returns: sample rates by colour segmentation (objects found, clean
and not-noise backgrounds, prompt colours present) and DDIM inversion +
reconstruction PSNR on held-out scenes. Held-out scenes come from the seed
stream ``[HELD_OUT_SEED, k]``; training draws from ``[seed, step]`` with seed 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dragon_core import ddim
from dragon_core.images import array_to_tensor, grid, save_png
from dragon_demo import shapes_world as sw

from . import shapes_eval as ev

HELD_OUT_SEED = 2026


def held_out_scenes(n: int, size: int = 32, offset: int = 0) -> list[sw.Scene]:
    return [sw.random_scene(np.random.default_rng([HELD_OUT_SEED, offset + k]), size) for k in range(n)]


def sample_scenes(backend, encoder, scenes: list[sw.Scene], steps: int, cfg: float, spacing: str, seed: int = 0) -> np.ndarray:
    """One sample per scene prompt, as (N, H, W, 3) in [0, 1]."""
    n, size = len(scenes), scenes[0].size
    z = torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(seed))
    cond = encoder.encode([s.prompt() for s in scenes])
    uncond = encoder.encode([""] * n)
    x = ddim.sample(backend, z, cond, uncond, steps=steps, cfg=cfg, spacing=spacing)
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()


def prompt_colour_rate(images: np.ndarray, scenes: list[sw.Scene]) -> float:
    """Fraction of the prompts' objects whose colour is found as a palette object."""
    hit = total = 0
    for img, s in zip(images, scenes):
        found = {o.colour for o in ev.palette_objects(img)}
        for o in s.objects:
            total += 1
            hit += o.colour in found
    return hit / max(1, total)


def reconstruction_psnr(backend, encoder, scenes: list[sw.Scene], steps: int, spacing: str) -> list[float]:
    """DDIM inversion (source prompt, no CFG) then DDIM sampling; PSNR per scene in dB."""
    out = []
    for s in scenes:
        img = s.render()
        cond = encoder.encode(s.prompt())
        traj = ddim.invert(backend, array_to_tensor(img), cond, steps=steps, spacing=spacing)
        rec = ddim.sample(backend, traj.z_T, cond, None, steps=steps, spacing=spacing)
        out.append(ddim.psnr((rec.clamp(-1, 1) + 1) / 2, array_to_tensor(img).add(1).div(2)))
    return out


def report(backend, encoder, out: str | Path | None, n_samples: int = 64, n_recon: int = 20, steps: int = 50,
           cfg: float = 3.0, spacing: str = "comfy_uniform") -> dict[str, Any]:
    t0 = time.time()
    scenes = held_out_scenes(n_samples)
    samples = sample_scenes(backend, encoder, scenes, steps, cfg, spacing)
    rates = ev.sample_report(samples)
    rates["prompt_colour_rate"] = prompt_colour_rate(samples, scenes)
    real = np.stack([s.render() for s in scenes])
    rates_real = ev.sample_report(real)
    psnrs = reconstruction_psnr(backend, encoder, held_out_scenes(n_recon, offset=10_000), steps, spacing)
    result = {
        "steps": steps, "cfg": cfg, "spacing": spacing,
        "samples": rates, "real_scenes": rates_real,
        "reconstruction_psnr_db": {"n": n_recon, "mean": float(np.mean(psnrs)), "min": float(np.min(psnrs)),
                                   "max": float(np.max(psnrs)), "values": [round(p, 2) for p in psnrs]},
        "seconds": round(time.time() - t0, 1),
    }
    if out is not None:
        out = Path(out)
        save_png(grid(list(samples[:32]), 8), out / "samples.png", 4)
        save_png(grid(list(real[:32]), 8), out / "prompts_rendered.png", 4)
        (out / "model_report.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
