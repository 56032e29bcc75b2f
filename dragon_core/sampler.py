"""The guided DDIM sampler that runs a plan: :func:`run_edit`, and :func:`edit_image`
(plan and run).

Guided step ``s`` (DragonDiffusion, with the reference method's schedule): the
conditional pass runs with autograd and the feature hooks, so the conditional eps
and the current features come from the same forward pass. Autograd records only up
to the last feature level, and the guidance gradient is taken right there, inside
the pass (:class:`_GuidanceGradient`): its graph is freed before the rest of the
decoder computes eps, so a guided pass holds no more than a pass stopped after the
features, then no more than a plain one. The reference features come from the memory. The edit energy's gradient acts inside the edit region, the
content energy's outside, and the guidance enters the x0 estimate only (the DDIM
direction keeps the unguided eps). Options from DiffEditor: regional SDE noise
(``flexibility``) and time travel (``time_travel``).

The loop counts nothing and times nothing: measurement wraps the backend
(``dragon_lab.instrument``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .attention import CrossBranchAttention
from .backend import Backend, FeatureCall, GradUntil, HookList, UNetHooks
from .ddim import ddim_inversion_step, ddim_x0
from .edits import Edit
from .memory import FeatureMemory
from .planning import Plan, plan_edit
from .regions import dilate, on_grid
from .schedule import alpha_pairs
from .settings import EditSettings, default_settings

Callback = Callable[[int, torch.Tensor], None]
HALF = (torch.float16, torch.bfloat16)  # feature dtypes whose energy gradient is loss-scaled


@dataclass
class EditResult:
    """The edited latent and facts about the run (steps, guided steps, memory bytes)."""

    latent: torch.Tensor
    stats: dict[str, Any]


class _GuidanceGradient(UNetHooks):
    """Takes the guidance gradient inside the guided pass, as soon as the last decoder level the
    energies read has run: the edit energy's gradient inside the plan's grad mask, the content
    energy's outside (two backward passes). The second backward frees the graph, so the rest of
    the decoder, which computes eps without autograd (:class:`GradUntil`, later in the hook
    list), never runs beside it."""

    def __init__(self, plan: Plan, levels: tuple[int, ...], z: torch.Tensor, step: int) -> None:
        self.plan, self.levels, self.z, self.step = plan, levels, z, step
        self.h: dict[int, torch.Tensor] = {}
        self.grad: torch.Tensor | None = None

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.level in self.levels:
            self.h[call.level] = h
        if self.grad is None and call.level >= max(self.levels):
            feats = [self.h[lvl] for lvl in self.levels]
            leaves = [f.detach().float().requires_grad_(True) for f in feats]  # energies in fp32 (no copy when fp32)
            e_edit, e_con = self.plan.energy([on_grid(f, self.plan.grid) for f in leaves], self.step)
            gmask = self.plan.grad_mask.to(self.z.device, torch.float32)
            self.grad = (energy_grad(e_edit, feats, leaves, self.z, retain=True) * gmask
                         + energy_grad(e_con, feats, leaves, self.z, retain=False) * (1 - gmask))
            self.h.clear()


def energy_grad(e: torch.Tensor, feats: list[torch.Tensor], leaves: list[torch.Tensor], z: torch.Tensor,
                retain: bool) -> torch.Tensor:
    """d e / d z through the UNet's features ``feats`` (``leaves``: their fp32 copies the energy
    read).

    The energy's gradient w.r.t. the features is taken in fp32, then sent back through the UNet
    in the features' dtype. For half-precision features it is first scaled by a power of two so
    that its largest value is about 1 (fp16's range; loss scaling, as in mixed-precision training):
    at SD scale the unscaled values sit near fp16's smallest numbers and would flush to zero. The
    scale is divided out in fp32; on an overflow the backward reruns with a smaller scale."""
    if not e.requires_grad:
        return torch.zeros_like(z)
    gs = torch.autograd.grad(e, leaves, retain_graph=retain, allow_unused=True)
    pairs = [(f, g) for f, g in zip(feats, gs) if g is not None]
    if not pairs:
        return torch.zeros_like(z)
    if not all(f.requires_grad for f, _ in pairs):
        raise RuntimeError("the decoder features have no autograd graph (was the sampler run inside "
                           "torch.inference_mode()?); the edit would silently lose its guidance")
    half = any(f.dtype in HALF for f, _ in pairs)
    gmax = max(float(g.abs().max()) for _, g in pairs) if half else 0.0
    scale = 2.0 ** -math.floor(math.log2(gmax)) if gmax > 0 else 1.0
    for attempt in range(4):
        (dz,) = torch.autograd.grad([f for f, _ in pairs], z, [(g * scale).to(f.dtype) for f, g in pairs],
                                    retain_graph=retain or half, allow_unused=True)
        if dz is None:
            return torch.zeros_like(z)
        if not half or bool(torch.isfinite(dz).all()):
            return dz / scale
        if attempt < 3:
            scale /= 2.0**8  # fp16 overflow in the backward: again with a smaller scale (graph retained)
    raise FloatingPointError(f"the guidance gradient is not finite in {pairs[0][0].dtype} even at a loss scale of "
                             f"{scale:g}: run the model in bf16 or fp32")


def _guidance(backend: Backend, plan: Plan, levels: tuple[int, ...], z: torch.Tensor, t: int, cond: Any, s: int,
              settings: EditSettings) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(energy gradient x scale, conditional eps or None) for guided step ``s``, from one pass
    of the conditional branch with autograd up to the last feature level. eps is None when a
    hook ended the pass after the features (``StopForward``)."""
    with torch.enable_grad():
        z_in = z.detach().clone().requires_grad_(True)
        guide = _GuidanceGradient(plan, levels, z_in, s)
        hooks = HookList(guide, plan.attention, GradUntil(max(levels)))  # the gradient before any plan hook
        eps_c = backend.predict_eps(z_in, t, cond, step=s, branch="cond", hooks=hooks, grad=True)
    if guide.grad is None:
        raise RuntimeError(f"the UNet never reported decoder level {max(levels)}: no guidance gradient")
    return settings.energy_scale * guide.grad, None if eps_c is None else eps_c.detach()


def _eps(backend: Backend, plan: Plan, z: torch.Tensor, t: int, cond: Any, uncond: Any, s: int,
         settings: EditSettings, eps_c: torch.Tensor | None) -> torch.Tensor:
    """The CFG-combined eps for step ``s``; ``eps_c``: the conditional eps if already computed."""
    hooks = plan.attention
    if uncond is None or settings.cfg == 1.0:
        return eps_c if eps_c is not None else backend.predict_eps(z, t, cond, step=s, branch="cond", hooks=hooks)
    if settings.batch_cfg and eps_c is None:  # both branches as one batch where the backend can
        eps_c, eps_u = backend.predict_eps_cfg(z, t, cond, uncond, step=s, hooks=hooks)
    else:
        if eps_c is None:
            eps_c = backend.predict_eps(z, t, cond, step=s, branch="cond", hooks=hooks)
        eps_u = backend.predict_eps(z, t, uncond, step=s, branch="uncond", hooks=hooks)
    return eps_u + settings.cfg * (eps_c - eps_u)


def _ddim_next(z: torch.Tensor, eps: torch.Tensor, guidance: torch.Tensor, ab_t: float, ab_prev: float,
               flexibility: float, sde_mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One DDIM step with guidance in the x0 estimate; regional SDE noise under ``sde_mask``
    when ``flexibility`` > 0 (DiffEditor)."""
    x0 = ddim_x0(z, eps + guidance, ab_t)
    if flexibility <= 0 or ab_prev >= 1:
        return math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev)) * eps
    sigma = flexibility * math.sqrt(max((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev), 0.0))
    noise = torch.randn(z.shape, generator=gen).to(z.device)
    inside = math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev - sigma**2)) * eps + sigma * noise
    outside = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
    return inside * sde_mask + outside * (1 - sde_mask)


def _lock_mask(sde_mask: torch.Tensor, settings: EditSettings) -> torch.Tensor | None:
    """Where the background lock holds: outside the SDE mask grown by ``lock_margin``."""
    if settings.background_lock <= 0:
        return None
    cells = max(1, round(settings.lock_margin * max(sde_mask.shape[-2:])))
    return (1 - dilate(sde_mask[0, 0], cells)[None, None]).clamp(0, 1)


@torch.inference_mode(False)
def run_edit(backend: Backend, memory: FeatureMemory, plan: Plan, cond: Any, uncond: Any,
             settings: EditSettings, callback: Callback | None = None) -> EditResult:
    """Sample the edit: guided DDIM with CFG over the memory's timesteps.

    Runs outside inference mode, with autograd on the guided passes, whatever the
    caller's mode (ComfyUI runs nodes under torch.inference_mode())."""
    traj = memory.trajectory
    ts = traj.timesteps.tolist()
    n = len(ts)
    pairs = alpha_pairs(backend.alphas_cumprod, traj.timesteps, traj.spacing)
    levels = memory.policy.feature_levels
    dev = backend.device
    z = plan.start_latent.to(dev, torch.float32)
    smask = plan.sde_mask.to(dev, torch.float32)
    lock = _lock_mask(smask, settings)
    gen = torch.Generator().manual_seed(int(settings.seed))
    attn = plan.attention if isinstance(plan.attention, CrossBranchAttention) else None
    for s in range(n):
        t, (ab_t, ab_prev) = ts[s], pairs[s]
        guided = settings.guided(s, n)
        for m in plan.memories:  # a recompute memory reruns the inversion's pass for this step
            m.prepare(s, backend, kv=attn is not None and attn.active(s), features=guided)
        flex = settings.flexibility if settings.flexible(s, n) else 0.0
        reps = settings.repeats(s, n)
        for r in range(reps):
            guidance, eps_c = (_guidance(backend, plan, levels, z, t, cond, s, settings) if guided
                               else (torch.zeros_like(z), None))
            eps = _eps(backend, plan, z, t, cond, uncond, s, settings, eps_c)
            z_prev = _ddim_next(z, eps, guidance, ab_t, ab_prev, flex, smask, gen)
            if r < reps - 1:  # time travel: back to t_s by one deterministic inversion step
                t_prev = ts[s + 1] if s + 1 < n else 0
                e = backend.predict_eps(z_prev, t_prev, cond, step=-1, branch="cond")
                z = ddim_inversion_step(z_prev, e, ab_prev, ab_t)
        z = z_prev.detach()
        if lock is not None and s < settings.background_lock * n:
            z = z * (1 - lock) + traj.latents[s + 1].to(dev, z.dtype) * lock
        if plan.copy is not None and s < settings.copy_until * n:
            z = plan.copy.apply(z, s + 1)
        if callback is not None:
            callback(s, z)
    stats = {"kind": plan.kind, "steps": n,  # guided_steps: guided passes, time-travel repeats included
             "guided_steps": sum(settings.repeats(s, n) for s in range(n) if settings.guided(s, n)),
             "renoise": sum(settings.repeats(s, n) - 1 for s in range(n)),
             "memory_bytes": memory.nbytes()["total"]}  # a recompute memory: with the step it holds
    for m in plan.memories:
        m.release()
    return EditResult(z, stats)


def edit_image(backend: Backend, memory: FeatureMemory, edit: Edit, cond: Any, uncond: Any,
               settings: EditSettings | None = None, callback: Callback | None = None) -> EditResult:
    """Plan and run ``edit`` on the image whose inversion is ``memory``."""
    settings = settings or default_settings(edit.kind)
    return run_edit(backend, memory, plan_edit(edit, memory, settings), cond, uncond, settings, callback)
