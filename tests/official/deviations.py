"""Measurement flags on the project's side of the differential test: each makes one step of
``dragon_core`` compute what the official code computes, from the outside (public API only:
a memory whose features are replaced, hooks wrapped around the plan's attention),
so the agreement with and without the flag measures that deviation's effect.

* :func:`official_reference_features` (memory_hook): reference features recomputed the official
  way: a plain UNet pass on the inverted latent of step s itself (``latents[s]``, at t_s) with
  the *base* image's prompt, for the base and any second (appearance/paste) image. The
  project's memory keeps the features of the inversion's own pass (``latents[s + 1]`` at t_s,
  one DDIM step less noisy, with each image's own prompt).
* :func:`plain_current_features` (plan_hook): current features from a pass without the
  cross-branch attention (the official code runs a separate plain UNet, its "estimator"), the
  eps from a no-grad pass with it; the project's default takes both from one pass with it.
* :data:`OFFICIAL_FLAGS`: per official mode, the harness's flags on the official side.
"""

from __future__ import annotations

import dataclasses

import torch

from dragon_core.backend import HookList, StopForward, UNetHooks
from dragon_core.memory import MemoryRecorder


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
