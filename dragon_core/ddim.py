"""Deterministic DDIM sampling with classifier-free guidance, and DDIM inversion.

Indexing: ``timesteps`` are in sampling order (descending), step ``s`` maps
``z`` at ``timesteps[s]`` to the next, less noisy point. An inversion returns a
:class:`Trajectory` whose ``latents[s]`` is the input of sampling step ``s``
(``latents[0]`` = z_T) and ``latents[N]`` is the clean latent it started from,
so the memory of an inversion and the editing sampler share one step index.

Inversion (as in DragonDiffusion and null-text inversion): step ``s`` predicts
eps at the less noisy latent with the noisier timestep ``timesteps[s]`` and
moves it up the DDIM trajectory. It runs without CFG and reports ``step=s`` to
the hooks, so a recorder stores exactly what the editing step ``s`` will read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .backend import Backend, UNetHooks
from .schedule import alpha_pairs, ddim_timesteps

StepCallback = Callable[[int, torch.Tensor], None]


@dataclass
class Trajectory:
    """An inversion: ``latents`` (N+1, B, C, H, W) in sampling order, its timesteps and spacing."""

    latents: torch.Tensor
    timesteps: torch.Tensor
    spacing: str

    @property
    def steps(self) -> int:
        return int(self.timesteps.numel())

    @property
    def z_T(self) -> torch.Tensor:
        return self.latents[0]

    @property
    def z_0(self) -> torch.Tensor:
        return self.latents[-1]


def ddim_x0(z: torch.Tensor, eps: torch.Tensor, ab_t: float) -> torch.Tensor:
    """The clean-latent estimate x0 = (z - sqrt(1 - abar) eps) / sqrt(abar)."""
    return (z - math.sqrt(1.0 - ab_t) * eps) / math.sqrt(ab_t)


def ddim_step(
    z: torch.Tensor,
    eps: torch.Tensor,
    ab_t: float,
    ab_prev: float,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM step from abar ``ab_t`` to the less noisy ``ab_prev``; ``eta`` > 0 adds
    fresh noise (``noise`` required then) with DDIM's sigma."""
    x0 = ddim_x0(z, eps, ab_t)
    sigma = 0.0
    if eta > 0:
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(max(0.0, 1 - ab_t / ab_prev))
    out = math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev - sigma**2)) * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs a noise tensor")
        out = out + sigma * noise
    return out


def ddim_inversion_step(z: torch.Tensor, eps: torch.Tensor, ab_from: float, ab_to: float) -> torch.Tensor:
    """One inversion step from the less noisy ``ab_from`` up to the noisier ``ab_to``."""
    return ddim_step(z, eps, ab_from, ab_to)


def cfg_eps(
    backend: Backend,
    z: torch.Tensor,
    t: int,
    cond: Any,
    uncond: Any | None,
    cfg: float,
    step: int,
    hooks: UNetHooks | None = None,
) -> torch.Tensor:
    """Classifier-free guided eps: uncond + cfg * (cond - uncond); cond only if cfg == 1 or no uncond."""
    e_c = backend.predict_eps(z, t, cond, step=step, branch="cond", hooks=hooks)
    if uncond is None or cfg == 1.0:
        return e_c
    e_u = backend.predict_eps(z, t, uncond, step=step, branch="uncond", hooks=hooks)
    return e_u + cfg * (e_c - e_u)


def sample(
    backend: Backend,
    z_T: torch.Tensor,
    cond: Any,
    uncond: Any | None = None,
    steps: int = 50,
    cfg: float = 1.0,
    spacing: str = "leading",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    hooks: UNetHooks | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DDIM from ``z_T`` to the clean end of the schedule; deterministic when ``eta == 0``."""
    ts = ddim_timesteps(steps, len(backend.alphas_cumprod), spacing)
    pairs = alpha_pairs(backend.alphas_cumprod, ts, spacing)
    z = z_T
    for s, t in enumerate(ts.tolist()):
        eps = cfg_eps(backend, z, t, cond, uncond, cfg, s, hooks)
        noise = None
        if eta > 0:
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
        z = ddim_step(z, eps, *pairs[s], eta=eta, noise=noise)
        if callback is not None:
            callback(s, z)
    return z


def invert(
    backend: Backend,
    z_0: torch.Tensor,
    cond: Any,
    steps: int = 50,
    spacing: str = "leading",
    hooks: UNetHooks | None = None,
    callback: StepCallback | None = None,
) -> Trajectory:
    """Deterministic DDIM inversion (no CFG) of ``z_0``; returns the whole trajectory."""
    ts = ddim_timesteps(steps, len(backend.alphas_cumprod), spacing)
    pairs = alpha_pairs(backend.alphas_cumprod, ts, spacing)
    latents = [z_0]
    z = z_0
    for s in range(steps - 1, -1, -1):
        ab_t, ab_prev = pairs[s]
        eps = backend.predict_eps(z, int(ts[s]), cond, step=s, branch="cond", hooks=hooks)
        z = ddim_inversion_step(z, eps, ab_prev, ab_t)
        latents.append(z)
        if callback is not None:
            callback(steps - 1 - s, z)
    return Trajectory(torch.stack(latents[::-1]), ts, spacing)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two images with values in [0, data_range]."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
