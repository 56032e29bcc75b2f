"""The differential test's cases, the mapping from the official demo's parameters to the
project's settings, and the project's side of each case.

A case is one edit as the official demo (``src/demo/model.py``'s ``run_*``) takes it: a
uint8 image, masks, points, prompts, the demo's sliders. :func:`job_case` writes it for
the official harness (``official_harness.py``, run in the official venv), :func:`run_ours`
runs the same edit through ``dragon_core`` with the paper preset (``PAPER_DEFAULTS``: the
demo's sliders, mapped by :func:`mapped`, and its step windows) and the case's own sliders
where they differ from the demo's (:func:`our_settings`; the table is in
docs/official-agreement.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dragon_core import Appearance, Drag, Move, Paste, Points, default_settings, edit_image, invert_with_memory
from dragon_core.ddim import psnr
from dragon_core.memory import default_policy

STEPS = 50  # the official demo's NUM_DDIM_STEPS

# The official demo's defaults per kind (src/demo/demo.py sliders): CFG, energy (x1e3), weights,
# SDE strength. "landmark" is its face (point-set) mode; w_inpaint there is unused by its energy.
DEMO = {
    "move": dict(cfg=4.0, energy=0.5, w_edit=4.0, w_content=6.0, w_contrast=0.2, w_inpaint=0.8, sde=0.4),
    "appearance": dict(cfg=5.0, energy=2.0, w_edit=3.5, w_content=5.0, sde=0.4),
    "drag": dict(cfg=4.0, energy=2.0, w_edit=4.0, w_content=6.0, w_inpaint=0.2, sde=0.4),
    "paste": dict(cfg=4.0, energy=1.5, w_edit=4.0, w_content=6.0, sde=0.4),
    "landmark": dict(cfg=4.0, energy=3.0, w_edit=12.0, w_inpaint=0.4, sde=0.2),
}
OUR_KIND = {"move": "move", "appearance": "appearance", "drag": "drag", "paste": "paste", "landmark": "points"}
# the official guidance multiplies the energy gradient by energy x 1e3 x this factor
GRAD_FACTOR = {"move": 0.08, "appearance": 0.04, "drag": 0.04, "paste": 0.04, "landmark": 0.04}
SEED = 42  # the demo's default seed


@dataclass
class Case:
    """One edit on both sides. Images uint8 (H, W, 3); masks bool (H, W); points (x, y) pixels."""

    name: str
    kind: str  # official mode: move, appearance, drag, paste, landmark
    image: np.ndarray
    prompt: str
    params: dict[str, Any]
    mask: np.ndarray | None = None
    reference: np.ndarray | None = None
    reference_mask: np.ndarray | None = None
    reference_prompt: str = ""
    seed: int = SEED
    steps: int = STEPS
    flags: dict[str, Any] = field(default_factory=dict)  # official-side measurement flags


def mapped(kind: str, sliders: dict[str, Any]) -> dict[str, Any]:
    """Our settings for the official demo's ``sliders`` of mode ``kind`` (DEMO's names)."""
    out: dict[str, Any] = {}
    for name, value in sliders.items():
        if name == "energy":  # energy_scale x 1e3 x 8e-2 / 4e-2
            out["energy_scale"] = value * 1e3 * GRAD_FACTOR[kind]
        elif name == "sde":  # SDE_strength (regional SDE, 10 < i < 20)
            out["flexibility"] = value
        elif name == "w_inpaint":
            if kind == "move":
                out["w_inpaint"] = value
            elif kind == "drag":  # the official drag's "w_inpaint" weighs the handle-patch contrast
                out["w_contrast"] = value
            # landmark: unused by its energy
        else:  # cfg (guidance_scale), w_edit, w_content, w_contrast
            out[name] = value
    return out


def our_settings(case: Case):
    """The paper preset for the kind (the official demo's sliders and step windows at its 50
    steps: test_official_agreement checks it against DEMO), with the case's sliders where they
    differ from the demo's (guidance turned off) and the case's seed.

    The official step windows are step numbers (guided i < 30, every step before 10 and even
    ones after; SDE 10 < i < 20; time travel on even 20 < i < 30); ours are fractions of the
    steps, so they are set to those numbers over ``case.steps`` (at 50 steps the preset's 0.6,
    0.2, (0.2, 0.4), (0.4, 0.6); half-step margins keep the strict bounds off float ties)."""
    p, kind, n = case.params, case.kind, case.steps
    changed = {k: v for k, v in p.items() if k in DEMO[kind] and v != DEMO[kind][k]}
    kw: dict[str, Any] = dict(
        guide_until=30 / n, guide_every_until=10 / n, flexibility_window=(10.5 / n, 19.5 / n),
        time_travel_window=(20.5 / n, 29.5 / n), seed=case.seed, **mapped(kind, changed))
    return default_settings(OUR_KIND[kind], preset="paper", **kw)


def image_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H, W) in [-1, 1], as the official demo reads an image."""
    return (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0 - 0.5) * 2


def _t(m: np.ndarray | None) -> torch.Tensor | None:
    return None if m is None else torch.from_numpy(m.astype(np.float32))


def _pts(points) -> torch.Tensor:
    return torch.tensor(points, dtype=torch.float32)


def run_ours(case: Case, backend, encoder, encode=None, memory_hook=None, plan_hook=None) -> torch.Tensor:
    """The project's result latent (C, H, W) for ``case``: invert with a float32 memory of every
    decoder layer (the official memory keeps fp32 K/V of every decoder self-attention), then
    ``edit_image`` with :func:`our_settings`. ``encode``: image tensor -> latent (default:
    the pixel-space identity). ``memory_hook(memory, cond)`` and ``plan_hook`` are
    measurement flags (see measure_deviations.py)."""
    from dragon_core.planning import plan_edit
    from dragon_core.sampler import run_edit

    encode = encode or (lambda x: x)
    settings = our_settings(case)
    policy = default_policy(backend, max_per_block=None, dtype=torch.float32)
    cond, uncond = encoder.encode(case.prompt), encoder.encode("")
    with torch.no_grad():
        mem = invert_with_memory(backend, encode(image_tensor(case.image)), cond, steps=case.steps, policy=policy)
        ref_cond = encoder.encode(case.reference_prompt)
        second = (None if case.reference is None else
                  invert_with_memory(backend, encode(image_tensor(case.reference)), ref_cond, steps=case.steps,
                                     policy=policy))
    if memory_hook is not None:
        mem = memory_hook(mem, cond)
        second = None if second is None else memory_hook(second, cond)
    p, size = case.params, tuple(case.image.shape[:2])
    if case.kind == "move":
        edit = Move(_t(case.mask), dx=p.get("our_dx", p["dx"]), dy=p.get("our_dy", p["dy"]), scale=p.get("resize", 1.0))
    elif case.kind == "drag":
        edit = Drag(_pts(p["handles"]), _pts(p["targets"]), size, _t(case.mask))
    elif case.kind == "landmark":
        edit = Points(_pts(p["handles"]), _pts(p["targets"]), size)
    elif case.kind == "appearance":
        edit = Appearance(_t(case.mask), second, _t(case.reference_mask))
    else:
        edit = Paste(second, _t(case.mask), dx=p["dx"], dy=p["dy"], scale=p.get("resize", 1.0))
    if plan_hook is None:
        res = edit_image(backend, mem, edit, cond, uncond, settings)
    else:
        plan, settings = plan_hook(plan_edit(edit, mem, settings), settings)
        res = run_edit(backend, mem, plan, cond, uncond, settings)
    return res.latent[0].detach().float()


def agreement(ours: torch.Tensor, official: np.ndarray, data_range: float = 2.0) -> float:
    """PSNR (dB) between the two result latents; for the pixel-space model the latent is the
    image in [-1, 1] (range 2), i.e. the PSNR of the two images in [0, 1]."""
    theirs = torch.from_numpy(official).float()
    if theirs.shape != ours.shape:
        raise AssertionError(f"result shapes differ: ours {tuple(ours.shape)}, official {tuple(theirs.shape)}")
    return psnr(ours / data_range, theirs / data_range)


# --------------------------------------------------------------------------- the cases
def _u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _cells(mask: np.ndarray, cell: int) -> np.ndarray:
    """The mask made of whole ``cell`` x ``cell`` blocks: those it covers at least half."""
    if cell == 1:
        return mask
    h, w = mask.shape
    cover = mask.reshape(h // cell, cell, w // cell, cell).mean(axis=(1, 3)) >= 0.5
    return np.kron(cover, np.ones((cell, cell), dtype=bool)).astype(bool)


def _inside(mask: np.ndarray, dx: int, dy: int, margin: int = 1) -> bool:
    """The mask moved by (dx, dy) stays ``margin`` pixels inside the image (the official code
    rolls masks and latents, which would wrap around the border)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (xs.min() + dx >= margin and ys.min() + dy >= margin and xs.max() + dx < w - margin
            and ys.max() + dy < h - margin)


def _draw(kind: str, n: int, first_seed: int, make, size: int = 32) -> list[Case]:
    """The first ``n`` cases ``make(edit_case, seed)`` accepts (None: rejected) among the seeded
    ``dragon_lab`` edit cases of ``kind`` from ``first_seed`` on."""
    from dragon_lab.edit_cases import random_edit_case

    out, seed = [], first_seed
    while len(out) < n:
        case = make(random_edit_case(seed, kind, size=size), seed)
        seed += 1
        if case is not None:
            out.append(case)
    return out


def move_cases(n: int, guidance: bool = True, first_seed: int = 0, size: int = 32, snap: int = 1) -> list[Case]:
    """Random integer moves of a shapes-world object (``size`` pixels; moves rounded to
    multiples of ``snap``: the latent's cell size, as the official code rolls the latent by
    whole cells). With ``snap`` > 1 the mask is the object's latent cells (those it covers at
    least half): the official code puts masks on the latent grid by sampling one pixel per
    cell, ours by coverage; on cell-aligned masks the two agree (docs/official-agreement.md)."""
    def make(c, seed):
        mask = _cells(c.scene.masks()[c.index], snap)
        dx, dy = int(round(c.dx / snap)) * snap, int(round(c.dy / snap)) * snap
        if not mask.any() or not _inside(mask, dx, dy) or (dx, dy) == (0, 0):
            return None
        o = c.scene.objects[c.index]
        params = dict(DEMO["move"], dx=dx, dy=dy, point=[int(o.cx), int(o.cy)])
        if not guidance:
            params.update(energy=0.0, sde=0.0)
        return Case(f"move{'' if guidance else '_off'}_{size}_{seed}", "move", _u8(c.scene.render()),
                    c.scene.prompt(), params, mask)

    return _draw("move", n, first_seed, make, size)


def appearance_cases(n: int, first_seed: int = 0) -> list[Case]:
    def make(c, seed):
        mask, ref_mask = c.scene.masks()[c.index], c.reference.masks()[c.ref_index]
        if not mask.any() or not ref_mask.any():
            return None
        return Case(f"appearance_{seed}", "appearance", _u8(c.scene.render()), c.scene.prompt(),
                    dict(DEMO["appearance"]), mask, _u8(c.reference.render()), ref_mask, c.reference.prompt())

    return _draw("appearance", n, first_seed, make)


def paste_cases(n: int, first_seed: int = 0) -> list[Case]:
    def make(c, seed):
        mask = c.reference.masks()[c.ref_index]
        dx, dy = int(round(c.dx)), int(round(c.dy))
        if not mask.any() or not _inside(mask, dx, dy) or (dx, dy) == (0, 0):
            return None
        return Case(f"paste_{seed}", "paste", _u8(c.scene.render()), c.scene.prompt(),
                    dict(DEMO["paste"], dx=dx, dy=dy), mask, _u8(c.reference.render()), None, c.reference.prompt())

    return _draw("paste", n, first_seed, make)


def _patch_clear(points: list[tuple[int, int]]) -> bool:
    """Every point's 3x3 patch on the latent grid is inside and apart from the others (the
    official code copies them in place one after another; our core copies them at once)."""
    for i, (x, y) in enumerate(points):
        if not (2 <= x <= 29 and 2 <= y <= 29):
            return False
        if any(max(abs(x - a), abs(y - b)) < 3 for a, b in points[:i]):
            return False
    return True


def drag_cases(n: int, landmark: bool = False, first_seed: int = 0) -> list[Case]:
    """Drags of points on an object by that object's random move: one handle at the object's
    centre (drag; its mask: the object and its moved copy) or two to three handles on the
    objects (landmark / point-set, no mask)."""
    def make(c, seed):
        step = 1 if landmark else 2  # landmark: small moves, several pairs
        dx, dy = int(c.dx) // step, int(c.dy) // step
        if landmark:
            handles = [(int(o.cx), int(o.cy)) for o in c.scene.objects]
            handles += [(int(o.cx) + 4, int(o.cy)) for o in c.scene.objects][: max(0, 2 - len(handles))]
        else:
            o = c.scene.objects[c.index]
            handles = [(int(o.cx), int(o.cy))]
        targets = [(x + dx, y + dy) for x, y in handles]
        if (dx, dy) == (0, 0) or not _patch_clear(handles + targets):
            return None
        params = dict(DEMO["landmark" if landmark else "drag"], handles=handles, targets=targets)
        mask = None
        if not landmark:
            m = c.scene.masks()[c.index]
            mask = m | np.roll(m, (dy, dx), (0, 1))
        return Case(f"{'landmark' if landmark else 'drag'}_{seed}", "landmark" if landmark else "drag",
                    _u8(c.scene.render()), c.scene.prompt(), params, mask)

    return _draw("move", n, first_seed, make)


def resize_cases(n: int, scale: float = 2.0, first_seed: int = 0) -> list[Case]:
    """Resizes by ``scale`` with a shift. The official demo scales the whole latent (and masks,
    features) about the image centre c, then rolls by its (dx, dy) x scale; our Move scales
    about the mask's box centre b, then shifts: our shift = (c - b)(1 - s) + s * its shift
    gives the same geometry. ``scale`` 2 keeps every resampling on whole cells (nearest
    upsampling by 2 picks the same cells whatever the phase convention)."""
    def make(c, seed):
        mask = c.scene.masks()[c.index]
        if not mask.any():
            return None
        h, w = mask.shape
        ys, xs = np.nonzero(mask)
        cx, cy = w / 2, h / 2
        # the official shift that puts the scaled object's box centre where the case's move does
        bx, by = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
        dx_off = int(round(((bx + c.dx / 2 - cx) - (bx - cx) * scale) / scale))
        dy_off = int(round(((by + c.dy / 2 - cy) - (by - cy) * scale) / scale))
        x0, x1 = (xs.min() - cx + dx_off) * scale + cx, (xs.max() + 1 - cx + dx_off) * scale + cx
        y0, y1 = (ys.min() - cy + dy_off) * scale + cy, (ys.max() + 1 - cy + dy_off) * scale + cy
        if not (x0 >= 1 and y0 >= 1 and x1 <= w - 1 and y1 <= h - 1) or (x1 - x0) * (y1 - y0) > 0.3 * h * w:
            return None
        o = c.scene.objects[c.index]
        params = dict(DEMO["move"], dx=dx_off, dy=dy_off, point=[int(o.cx), int(o.cy)], resize=scale,
                      our_dx=(cx - bx) * (1 - scale) + scale * dx_off, our_dy=(cy - by) * (1 - scale) + scale * dy_off)
        return Case(f"resize_{seed}", "move", _u8(c.scene.render()), c.scene.prompt(), params, mask)

    return _draw("move", n, first_seed, make)


# --------------------------------------------------------------------------- the SD-topology model
# SD1.5's UNet topology (4 levels of 2 res blocks, cross-attention on the first three, 8 heads)
# with small channels and seeded random weights; 4-channel latents at 1/8 of the image.
SD15_TINY = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[32, 64, 64, 64],
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, mid_block_type="UNetMidBlock2DCrossAttn",
                 cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0)


def latent_encode(image: torch.Tensor) -> torch.Tensor:
    """The SD-topology model's latent of an image: the test's stand-in VAE (latent_vae.py)."""
    from latent_vae import encode

    return encode(image)


class RandomPrompts:
    """The SD-topology model's prompt encoder stand-in: a fixed random (1, 4, 32) context per prompt."""

    def encode(self, prompt: str) -> torch.Tensor:
        import zlib

        g = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
        return torch.randn(1, 4, SD15_TINY["cross_attention_dim"], generator=g)


def sd15_tiny(folder: Path, seed: int = 1234):
    """(harness model spec, project backend, prompt encoder) of the tiny SD1.5-topology model;
    its weights written to ``folder`` as safetensors."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from dragon_core.diffusers_backend import DiffusersBackend
    from dragon_core.schedule import scaled_linear_alphas_cumprod

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_TINY).eval()
    path = Path(folder) / "sd15_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(path))
    spec = {"unet_config": dict(SD15_TINY), "unet_weights": str(path), "vae": "latent", "vae_factor": 8}
    return spec, DiffusersBackend(unet, scaled_linear_alphas_cumprod()), RandomPrompts()


# --------------------------------------------------------------------------- the official job
def job_case(case: Case, job_dir: Path) -> dict[str, Any]:
    """Write ``case``'s arrays under ``job_dir`` and return its entry for the harness's job."""
    def save(tag: str, a: np.ndarray | None) -> str | None:
        if a is None:
            return None
        name = f"{case.name}.{tag}.npy"
        np.save(job_dir / name, a.astype(np.uint8) * (255 if a.dtype == bool else 1))
        return name

    return {"name": case.name, "kind": case.kind, "prompt": case.prompt, "reference_prompt": case.reference_prompt,
            "seed": case.seed, "steps": case.steps, "params": case.params, "flags": case.flags, "image": save("image", case.image),
            "mask": save("mask", case.mask), "reference": save("reference", case.reference),
            "reference_mask": save("reference_mask", case.reference_mask)}


def prompt_table(cases: list[Case], encoder) -> tuple[list[str], np.ndarray]:
    """Every prompt the cases use (and "" for CFG), with the project's prompt encoder's output."""
    prompts = sorted({""} | {c.prompt for c in cases} | {c.reference_prompt for c in cases})
    with torch.no_grad():
        emb = torch.cat([encoder.encode(p) for p in prompts]).float().numpy()
    return prompts, emb


__all__ = ["Case", "DEMO", "STEPS", "agreement", "appearance_cases", "drag_cases", "job_case", "mapped", "move_cases",
           "our_settings", "paste_cases", "prompt_table", "run_ours"]
