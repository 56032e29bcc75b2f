"""Feature memory recorded while generating: edit an image you just sampled, without inversion.

:func:`sample_with_memory` runs deterministic DDIM with classifier-free guidance
(:func:`dragon_core.ddim.sample`) from ``z_T`` and records, in the generation's own
UNet passes, what an edit reads: at step ``s`` the conditional pass on
``latents[s]`` at ``t_s`` (decoder self-attention inputs and decoder features) and,
with CFG, the unconditional pass (its self-attention inputs only). The trajectory
keeps every step's input, ``latents[0] = z_T`` to ``latents[N] = z_0``, with the
inversion's indexing.

So an edit sampler run with no edit evaluates exactly the UNet calls of the
generation: the cross-branch attention of each branch reads the K/V that branch
computed itself (:meth:`CapturedMemory.kv_input` takes the branch), the content
energy compares features with themselves (zero gradient), and the image comes back
to float noise (with lossless storage, ``dtype=torch.float32``). An inversion's
memory is recorded one DDIM step away from where the edit evaluates (see
``dragon_core.memory``) and carries the inversion's reconstruction error.

Costs: recording adds no UNet pass to the generation the user runs anyway; an
inversion of the same image costs ``steps`` more passes. A memory made with CFG
keeps the unconditional K/V too (twice the K/V bytes of an inversion's memory).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Iterable

import torch

from . import ddim
from .backend import AttnCall, Backend, FeatureCall, HookList, LayerKey, StopAfter, UNetHooks, check_latent_size
from .memory import FeatureMemory, MemoryPolicy, MemoryRecorder, default_policy
from .schedule import ddim_timesteps


class BranchRecorder(UNetHooks):
    """Records each CFG branch apart: the conditional pass's K/V inputs and decoder
    features (``cond``), the unconditional pass's K/V inputs (``uncond``)."""

    def __init__(self, policy: MemoryPolicy, layers: Iterable[LayerKey]) -> None:
        layers = list(layers)
        self.cond = MemoryRecorder(policy, layers)
        self.uncond = MemoryRecorder(policy, layers)

    def self_attention(self, call: AttnCall, n: torch.Tensor) -> None:
        (self.uncond if call.branch == "uncond" else self.cond).self_attention(call, n)
        return None

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.branch == "cond":
            self.cond.decoder_feature(call, h)


@dataclass
class CapturedMemory(FeatureMemory):
    """A memory recorded while generating, with what it was made with: ``cond`` and
    ``uncond`` (the prompts), ``cfg``, ``seed`` (None if the caller gave ``z_T``),
    steps and spacing (the trajectory), ``model_id``. ``uncond_kv`` holds the
    unconditional pass's K/V inputs (None when the generation ran no such pass)."""

    uncond: Any = None
    cfg: float = 1.0
    seed: int | None = None
    uncond_kv: FeatureMemory | None = None

    def kv_input(self, step: int, layer: LayerKey, device: torch.device, dtype: torch.dtype,
                 branch: str = "cond") -> torch.Tensor | None:
        """``step``'s K/V input of ``layer`` recorded in ``branch``'s pass (the conditional
        one's when the generation ran no unconditional pass)."""
        if branch == "uncond" and self.uncond_kv is not None:
            self._check_loaded(step)
            return self.uncond_kv.kv_input(step, layer, device, dtype)
        return super().kv_input(step, layer, device, dtype)

    def _record_step(self, step: int, backend: Backend, kv: bool) -> None:
        """Recompute memory: rerun the generation's passes of ``step`` (``latents[step]``,
        cond, and uncond when its K/V are asked for)."""
        rec = BranchRecorder(replace(self.policy, recompute=False), backend.decoder_self_attention_layers())
        if not kv:  # features only: no K/V, and the pass can stop after the last feature level
            rec.cond.layers = frozenset()
        hooks: UNetHooks = rec if kv else HookList(rec, StopAfter(max(self.policy.feature_levels)))
        z, t = self.trajectory.latents[step].to(backend.device), int(self.trajectory.timesteps[step])
        backend.predict_eps(z, t, self.cond, step=step, branch="cond", hooks=hooks)
        if kv and self.uncond_kv is not None:
            backend.predict_eps(z, t, self.uncond, step=step, branch="uncond", hooks=rec)
            self.uncond_kv.keep(rec.uncond)
        self.keep(rec.cond)

    def release(self) -> None:
        super().release()
        if self.policy.recompute and self.uncond_kv is not None:  # it holds the same step's uncond K/V
            self.uncond_kv.kv.clear()
            self.uncond_kv.scales.clear()

    def nbytes(self) -> dict[str, int]:
        """As :meth:`FeatureMemory.nbytes`; ``kv`` counts both branches' K/V inputs."""
        b = super().nbytes()
        extra = 0 if self.uncond_kv is None else self.uncond_kv.nbytes()["kv"]
        return {**b, "kv": b["kv"] + extra, "total": b["total"] + extra}

    def made_with(self) -> dict[str, Any]:
        """The generation's settings: steps, spacing, cfg, seed, model id."""
        return {"steps": self.steps, "spacing": self.trajectory.spacing, "cfg": self.cfg, "seed": self.seed,
                "model_id": self.model_id}

    def describe(self) -> str:
        w = self.made_with()
        return (f"{super().describe()}. Captured while generating (seed {w['seed']}, cfg {w['cfg']:g}, "
                f"{w['spacing']} spacing; K/V of {'both CFG branches' if self.uncond_kv else 'the cond branch'})")


def sample_with_memory(
    backend: Backend,
    z_T: torch.Tensor,
    cond: Any,
    uncond: Any | None = None,
    steps: int = 50,
    cfg: float = 1.0,
    spacing: str = "leading",
    policy: MemoryPolicy | None = None,
    model_id: str = "",
    seed: int | None = None,
    callback: ddim.StepCallback | None = None,
) -> CapturedMemory:
    """Generate from ``z_T`` by deterministic DDIM with CFG and record the memory in the same
    passes (``policy`` default: :func:`~dragon_core.memory.default_policy`). The image's latent
    is ``memory.trajectory.z_0``; ``seed`` is only kept (how ``z_T`` was drawn)."""
    check_latent_size(backend, tuple(z_T.shape[-2:]))
    if policy is None:
        policy = default_policy(backend)
    layers = backend.decoder_self_attention_layers()
    rec = None if policy.recompute else BranchRecorder(policy, layers)
    two = uncond is not None and cfg != 1.0  # the generation runs an unconditional pass
    latents = [z_T]

    def step(s: int, z: torch.Tensor) -> None:
        latents.append(z)
        if callback is not None:
            callback(s, z)

    t0, c0 = time.time(), time.process_time()
    ddim.sample(backend, z_T, cond, uncond, steps=steps, cfg=cfg, spacing=spacing, hooks=rec, callback=step)
    traj = ddim.Trajectory(torch.stack(latents), ddim_timesteps(steps, len(backend.alphas_cumprod), spacing), spacing)
    # cost: the generation's own passes; recording adds none
    info = {"spacing": spacing, "cond_batch": int(z_T.shape[0]), "extra_forward": 0,
            "forward": steps * int(z_T.shape[0]) * (2 if two else 1), "seconds": round(time.time() - t0, 3), "cpu_seconds": round(time.process_time() - c0, 3)}
    kept = replace(policy, recompute=False)
    if policy.recompute:
        info["kv_layers"] = tuple(sorted(policy.kv_layers if policy.kv_layers is not None else layers))
        unc = FeatureMemory(traj, policy=kept) if two else None
        return CapturedMemory(traj, {}, {}, policy, model_id, info, cond=cond, uncond=uncond, cfg=float(cfg),
                              seed=seed, uncond_kv=unc)
    unc = FeatureMemory(traj, rec.uncond.kv, {}, kept, model_id, scales=rec.uncond.scales) if two else None
    return CapturedMemory(traj, rec.cond.kv, rec.cond.features, policy, model_id, info, rec.cond.scales, cond=cond,
                          uncond=uncond, cfg=float(cfg), seed=seed, uncond_kv=unc)
