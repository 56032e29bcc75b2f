"""Measurement flags on the project's side of the differential test: each makes one step of
``dragon_core`` compute what the official code computes, from the outside (public API only:
a memory whose features are replaced, hooks wrapped around the plan's attention, a plan whose
energy is rebuilt from ``dragon_core.energies``), so the agreement with and without the flag
measures that deviation's effect.

* :func:`official_reference_features` (memory_hook): reference features recomputed the official
  way: a plain UNet pass on the inverted latent of step s itself (``latents[s]``, at t_s) with
  the *base* image's prompt, for the base and any second (appearance/paste) image. The
  project's memory keeps the features of the inversion's own pass (``latents[s + 1]`` at t_s,
  one DDIM step less noisy, with each image's own prompt).
* :func:`plain_current_features` (plan_hook): current features from a pass without the
  cross-branch attention (the official code runs a separate plain UNet, its "estimator"), the
  eps from a no-grad pass with it; the project's default takes both from one pass with it.
* :func:`official_token_masks` (plan_hook): the masked attention's (appearance, paste) token
  masks sampled one pixel per token, the token cell's top-left pixel (the official code's nearest
  ``F.interpolate``); the project's are the cells at least half covered.
* :func:`nearest_resampling` (plan_hook factory, a :class:`Move` or :class:`Paste`): the energy's
  moved reference (source) features and moved-object mask resampled by nearest sampling (the
  official code's ``F.interpolate`` and ``torch.roll``; on scale-2 resizes cell-centred nearest
  picks the same cells as the official's corner-aligned one), instead of the project's bilinear
  warp.
* :data:`OFFICIAL_FLAGS`: per official mode, the harness's flags on the official side.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from dragon_core import energies as en
from dragon_core.attention import CrossBranchAttention, token_grid
from dragon_core.backend import HookList, StopForward, UNetHooks
from dragon_core.edits import Move, Paste
from dragon_core.memory import MemoryRecorder
from dragon_core.planning import Features
from dragon_core.regions import grid_mask, warp


def official_reference_features(backend):
    def hook(memory, cond):
        policy = dataclasses.replace(memory.policy, kv_layers=frozenset(), dtype=torch.float32)
        rec = MemoryRecorder(policy, [])
        traj = memory.trajectory
        with torch.no_grad():
            for s, t in enumerate(traj.timesteps.tolist()):
                backend.predict_eps(traj.latents[s], int(t), cond, step=s, branch="cond", hooks=rec)
        return dataclasses.replace(memory, features=dict(rec.features), scales=dict(memory.scales))

    return hook


# official-side flags (official_harness.py) that align a mode: masked attention's token masks by
# area coverage; the drag's start-latent copy kept out of the inversion's last latent
OFFICIAL_FLAGS = {"appearance": {"token_masks": "area"}, "paste": {"token_masks": "area"},
                  "drag": {"drag_copy": "clone"}}


class _PlainWhenGrad(UNetHooks):
    """The plan's attention, except in the guidance's autograd pass (plain self-attention there)."""

    def __init__(self, inner: UNetHooks) -> None:
        self.inner = inner

    def self_attention(self, call, n):
        return None if torch.is_grad_enabled() else self.inner.self_attention(call, n)

    def decoder_feature(self, call, h):
        return self.inner.decoder_feature(call, h)


class _FeaturesOnlyWhenGrad(UNetHooks):
    """Ends a gradient pass after the last feature level (the features are recorded by then), so
    the sampler takes eps from a no-grad pass with the cross-branch attention."""

    def __init__(self, level: int) -> None:
        self.level = level

    def decoder_feature(self, call, h):
        if h.requires_grad and call.level >= self.level:  # the guidance pass, after its gradient was taken
            raise StopForward


def plain_current_features(plan, settings):
    level = max(plan.memories[0].policy.feature_levels)
    attention = HookList(_PlainWhenGrad(plan.attention) if plan.attention is not None else None,
                         _FeaturesOnlyWhenGrad(level))
    return dataclasses.replace(plan, attention=attention), settings


def _top_left(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``mask`` (H, W) sampled at each cell of an (h, w) grid's top-left pixel (nearest
    ``F.interpolate``), as whole blocks at the image size: its coverage of every cell is 0 or 1."""
    cells = F.interpolate((mask > 0.5).float()[None, None], size=(h, w))
    return F.interpolate(cells, size=tuple(mask.shape))[0, 0]


class _NearestTokenMasks(UNetHooks):
    """The plan's masked attention, with each token grid's masks sampled one pixel per token:
    one :class:`CrossBranchAttention` per token count, given masks whose coverage is exactly
    the sampled pixels."""

    def __init__(self, inner: CrossBranchAttention) -> None:
        self.inner = inner
        self.per_grid: dict[int, CrossBranchAttention] = {}

    def self_attention(self, call, n):
        k = n.shape[1]
        if k not in self.per_grid:
            a = self.inner
            h, w = token_grid(k, a.latent_hw)
            self.per_grid[k] = CrossBranchAttention(a.memory, a.mode, a.start, a.end, _top_left(a.region, h, w),
                                                    a.second, _top_left(a.second_region, h, w))
        return self.per_grid[k].self_attention(call, n)


def official_token_masks(plan, settings):
    a = plan.attention
    if not isinstance(a, CrossBranchAttention) or a.mode != "masked":
        return plan, settings
    return dataclasses.replace(plan, attention=_NearestTokenMasks(a)), settings


def nearest_resampling(edit: Move | Paste):
    """Plan hook for ``edit``'s plan: the move (paste) energy with the moved reference (source)
    features and the moved mask warped by nearest sampling (the rest of the plan as planned)."""
    t, size = edit.transform(), tuple(edit.mask.shape)
    moved_mask = warp(edit.mask.float(), t, size, mode="nearest")

    def hook(plan, settings):
        memory, (gh, gw), s = plan.memories[0], plan.grid, settings
        ref = Features(memory, memory.policy.feature_levels, plan.grid)
        m_cur = grid_mask(moved_mask, gh, gw)
        if isinstance(edit, Paste):
            src = Features(edit.source, memory.policy.feature_levels, plan.grid)

            def energy(cur, step):
                dev, dt = cur[0].device, cur[0].dtype
                moved = [warp(f, t, size, mode="nearest") for f in src.at(step, dev, dt)]
                return en.paste_energy(cur, ref.at(step, dev, dt), moved, m_cur.to(dev), s.w_edit, s.w_content)
        else:
            m_org = grid_mask(edit.mask, gh, gw)
            region = None if edit.inpaint_region is None else grid_mask(edit.inpaint_region, gh, gw)

            def energy(cur, step):
                dev, dt = cur[0].device, cur[0].dtype
                fr = ref.at(step, dev, dt)
                return en.move_energy(cur, fr, [warp(f, t, size, mode="nearest") for f in fr], m_cur.to(dev),
                                      m_org.to(dev), None if region is None else region.to(dev), s.w_edit,
                                      s.w_content, s.w_contrast, s.w_inpaint)

        return dataclasses.replace(plan, energy=energy), settings

    return hook
