"""Noise schedules and DDIM timestep selection, in DDPM terms.

Everything here works with ``alphas_cumprod`` (abar_t, t = 0..T-1), the training
schedule a backend exposes (diffusers: ``scheduler.alphas_cumprod``; ComfyUI:
``1 / (1 + sigma_t^2)``).

Timestep spacings (``ddim_timesteps``):

* ``"leading"`` (the default): diffusers' DDIMScheduler with ``steps_offset=1``,
  as Stable Diffusion and the official DragonDiffusion code use it:
  ``t_i = i * (T // n) + 1``. The final step lands on abar of the "previous
  timestep" ``t - T//n``, i.e. on abar[0] (``set_alpha_to_one=False``).
* ``"comfy_uniform"``: ComfyUI's ``ddim_uniform`` scheduler, ``t_i = i * (T // n) + 1``
  on the same grid, but whose last step ends at sigma 0 (abar = 1, a clean image).

Both give the same grid of timesteps here; they differ only in where the last
step lands, which :func:`final_alpha` reports.
"""

from __future__ import annotations

import torch

SPACINGS = ("leading", "comfy_uniform")


def scaled_linear_alphas_cumprod(
    beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000
) -> torch.Tensor:
    """SD's ``scaled_linear`` schedule: betas linear in sqrt space; returns abar (T,) float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def alphas_cumprod_from_config(schedule: dict) -> torch.Tensor:
    """abar (T,) float64 from a schedule dict like the shapes model's config ``schedule``."""
    kind = schedule.get("beta_schedule", "scaled_linear")
    if kind != "scaled_linear":
        raise ValueError(f"schedule: only 'scaled_linear' is supported here, got {kind!r}")
    return scaled_linear_alphas_cumprod(
        float(schedule.get("beta_start", 0.00085)),
        float(schedule.get("beta_end", 0.012)),
        int(schedule.get("num_train_timesteps", 1000)),
    )


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000, spacing: str = "leading") -> torch.Tensor:
    """The DDIM timesteps in sampling order (descending), long (num_steps,)."""
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if not isinstance(num_steps, int) or not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"steps must be an integer in 1..{num_train_timesteps}, got {num_steps!r}")
    stride = num_train_timesteps // num_steps
    ts = torch.arange(num_steps, dtype=torch.long) * stride + 1
    ts = ts.clamp(max=num_train_timesteps - 1)
    return ts.flip(0)


def final_alpha(alphas_cumprod: torch.Tensor, spacing: str = "leading") -> float:
    """abar that the last sampling step lands on: abar[0] (leading) or 1.0 (comfy_uniform)."""
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return float(alphas_cumprod[0]) if spacing == "leading" else 1.0


def alpha_pairs(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, spacing: str = "leading"
) -> list[tuple[float, float]]:
    """For each sampling step i: (abar at t_i, abar at the next, less noisy, point)."""
    ab = [float(alphas_cumprod[int(t)]) for t in timesteps]
    return [(ab[i], ab[i + 1] if i + 1 < len(ab) else final_alpha(alphas_cumprod, spacing)) for i in range(len(ab))]
