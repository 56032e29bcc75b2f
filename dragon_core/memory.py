"""The feature memory of an inversion: latents, self-attention K/V inputs, decoder features.

Recorded in the inversion's own forward passes (no second pass) by
:class:`MemoryRecorder`. Inversion step ``s`` runs the UNet at the sampling
timestep ``t_s`` on the trajectory's less-noisy neighbour ``latents[s + 1]``;
what it records is keyed by ``s``, the step index the editing sampler uses at
``t_s``. (A separate reference forward on ``latents[s]`` would see the same
timestep on a latent one DDIM step away; the memory trades that difference for
half the UNet evaluations.)

K/V are stored as the self-attention's pre-projection input ``n = norm1(x)``
(B, N, C): SD attention has no k/v bias, so projecting remembered ``n`` equals
remembering K and V, at half the size. Everything is kept in ``dtype`` (fp16 by
default) on ``device`` (the CPU, i.e. ComfyUI's offload device, by default), and
only for the steps, layers and feature levels asked for. One memory serves any
number of edits: nothing in it changes after recording.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from . import ddim
from .backend import AttnCall, Backend, FeatureCall, LayerKey, UNetHooks


@dataclass(frozen=True)
class MemoryPolicy:
    """What to keep. ``None`` for steps or layers means "all of them"."""

    steps: frozenset[int] | None = None
    kv_layers: frozenset[LayerKey] | None = None  # default: every decoder self-attention
    feature_levels: tuple[int, ...] = (1, 2)
    dtype: torch.dtype = torch.float16
    device: str | torch.device = "cpu"

    feature_steps: frozenset[int] | None = None  # default: the same steps as K/V

    def keeps_step(self, step: int) -> bool:
        return self.steps is None or step in self.steps

    def keeps_feature_step(self, step: int) -> bool:
        return self.keeps_step(step) if self.feature_steps is None else step in self.feature_steps


def default_feature_levels(n_levels: int) -> tuple[int, int]:
    """The two mid-decoder levels the energies read.

    Rule: with the decoder's levels numbered from the lowest resolution (diffusers
    ``up_blocks`` order), take levels 1 and 2, the second and third. For SD1.5
    (4 levels) this is exactly the reference method's ``up_blocks[1]`` and
    ``up_blocks[2]`` (ComfyUI: ``h`` entering output blocks 6 and 9); for the
    shapes model the same positions (16x16 and 32x32 maps for a 32x32 input).
    """
    if n_levels < 3:
        raise ValueError(f"the energies need a decoder with at least 3 levels, this one has {n_levels}")
    return (1, 2)


@dataclass
class FeatureMemory:
    """One inversion's memory. ``kv[(step, layer)]`` and ``features[(step, level)]``
    hold the recorded tensors; ``trajectory`` the latents of every step."""

    trajectory: ddim.Trajectory
    kv: dict[tuple[int, LayerKey], torch.Tensor] = field(default_factory=dict)
    features: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    policy: MemoryPolicy = field(default_factory=MemoryPolicy)
    model_id: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.trajectory.steps

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.trajectory.z_0.shape)

    def nbytes(self) -> dict[str, int]:
        """Bytes held: K/V inputs, features, trajectory, and their total."""
        kv = sum(t.numel() * t.element_size() for t in self.kv.values())
        feats = sum(t.numel() * t.element_size() for t in self.features.values())
        traj = self.trajectory.latents.numel() * self.trajectory.latents.element_size()
        return {"kv": kv, "features": feats, "trajectory": traj, "total": kv + feats + traj}

    def layers(self) -> list[LayerKey]:
        return sorted({k for _, k in self.kv})

    def kv_input(self, step: int, layer: LayerKey, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        t = self.kv.get((step, layer))
        return None if t is None else t.to(device=device, dtype=dtype, non_blocking=True)

    def feature(self, step: int, level: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        t = self.features.get((step, level))
        if t is None:
            raise KeyError(f"memory has no level-{level} features for step {step} (recorded steps: "
                           f"{sorted({s for s, _ in self.features})[:8]}...)")
        # a copy: the caller's autograd graph may save it, and the stored tensor may be an
        # inference tensor (a memory recorded under torch.inference_mode())
        return t.to(device=device, dtype=dtype, copy=True)

    def describe(self) -> str:
        b = self.nbytes()
        first = min((s for s, _ in self.kv), default=None)
        shapes = {str(k): tuple(v.shape) for (s, k), v in self.kv.items() if s == first}
        return (f"FeatureMemory: {self.steps} steps, latent {self.latent_shape}, {len(self.layers())} K/V layers "
                f"{shapes}, feature levels {self.policy.feature_levels}; "
                f"{b['total'] / 2**20:.2f} MiB (K/V {b['kv'] / 2**20:.2f}, features {b['features'] / 2**20:.2f}, "
                f"trajectory {b['trajectory'] / 2**20:.2f})")


class MemoryRecorder(UNetHooks):
    """Hooks that copy K/V inputs and decoder features into a memory during inversion."""

    def __init__(self, policy: MemoryPolicy, layers: Iterable[LayerKey]) -> None:
        self.policy = policy
        self.layers = frozenset(policy.kv_layers if policy.kv_layers is not None else layers)
        self.kv: dict[tuple[int, LayerKey], torch.Tensor] = {}
        self.features: dict[tuple[int, int], torch.Tensor] = {}

    def _store(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=self.policy.device, dtype=self.policy.dtype).clone()

    def self_attention(self, call: AttnCall, n: torch.Tensor) -> None:
        if call.layer in self.layers and self.policy.keeps_step(call.step):
            self.kv[(call.step, call.layer)] = self._store(n)
        return None

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.level in self.policy.feature_levels and self.policy.keeps_feature_step(call.step):
            self.features[(call.step, call.level)] = self._store(h)


def invert_with_memory(
    backend: Backend,
    z_0: torch.Tensor,
    cond: Any,
    steps: int = 50,
    spacing: str = "leading",
    policy: MemoryPolicy | None = None,
    model_id: str = "",
    callback: ddim.StepCallback | None = None,
) -> FeatureMemory:
    """DDIM-invert ``z_0`` (no CFG) and record the memory in the same passes."""
    if policy is None:
        policy = MemoryPolicy(feature_levels=default_feature_levels(backend.decoder_levels()))
    rec = MemoryRecorder(policy, backend.decoder_self_attention_layers())
    t0, c0 = time.time(), time.process_time()
    traj = ddim.invert(backend, z_0, cond, steps=steps, spacing=spacing, hooks=rec, callback=callback)
    # cost: one no-grad UNet pass per step and image (recording needs no extra pass)
    return FeatureMemory(traj, rec.kv, rec.features, policy, model_id,
                         {"spacing": spacing, "cond_batch": int(z_0.shape[0]),
                          "forward": steps * int(z_0.shape[0]), "seconds": round(time.time() - t0, 3),
                          "cpu_seconds": round(time.process_time() - c0, 3)})
