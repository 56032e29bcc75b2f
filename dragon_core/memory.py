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
    """The two decoder levels whose outputs the energies read, chosen from the UNet's structure.

    ``n_levels`` is the decoder's number of resolution levels (diffusers
    ``up_blocks``, numbered from the lowest resolution; ComfyUI: the output blocks
    split at their ``Upsample`` layers). Rule: **the two levels before the last
    (full-resolution) one**, i.e. levels ``n - 3`` and ``n - 2``. Each level's output
    includes its upsampler, so these are the decoder features at 1/2 and 1/1 of the
    latent's resolution, the last two maps before the full-resolution level
    (ComfyUI: ``h`` entering the first output block of levels ``n - 2`` and ``n - 1``).

    * SD1.x / SD2.x (4 levels, 3 output blocks each): levels 1 and 2, exactly the
      reference method's ``up_blocks[1]`` and ``up_blocks[2]`` (ComfyUI output
      blocks 6 and 9; 1280 and 640 channels).
    * SDXL (3 levels): levels 0 and 1 (ComfyUI output blocks 3 and 6): the same
      latent-relative resolutions and the same channels (1280, 640) as SD1.5's
      pair, and both levels contain transformer blocks (depth 10 and 2), as SD1.5's do.
    * the shapes demo model (4 levels): levels 1 and 2, as calibrated.
    """
    if n_levels < 3:
        raise ValueError(f"the energies need a decoder with at least 3 levels, this one has {n_levels}")
    return (n_levels - 3, n_levels - 2)


# Default K/V memory budget: at most this many self-attention layers per decoder block.
MAX_KV_LAYERS_PER_BLOCK = 2


def default_kv_layers(layers: Iterable[LayerKey],
                      max_per_block: int | None = MAX_KV_LAYERS_PER_BLOCK) -> frozenset[LayerKey] | None:
    """The decoder self-attention layers the memory keeps by default; ``None`` means all.

    Rule: every decoder block (a ComfyUI output block, one ``SpatialTransformer``)
    keeps all of its transformer blocks' self-attention inputs if it has at most
    ``max_per_block`` of them, else ``max_per_block`` spread evenly from the first
    to the last (for 2: the first and the last transformer block). SD1.x/SD2.x and
    the shapes model have one transformer block per decoder block, so they keep
    every decoder self-attention (the reference method's memory). SDXL's
    10-deep blocks (output blocks 0-2) keep transformer indices 0 and 9, its 2-deep
    blocks (3-5) both: 12 of 36 layers, 45 MiB instead of 105 MiB per step at
    1024x1024 (see the README's memory figures). Layers not kept run as plain
    self-attention in the edit. ``max_per_block=None`` keeps all.
    """
    layers = sorted(layers)
    if max_per_block is None:
        return None
    if max_per_block < 1:
        raise ValueError(f"max_per_block must be >= 1 or None, got {max_per_block}")
    by_block: dict[tuple[str, int], list[LayerKey]] = {}
    for k in layers:
        by_block.setdefault((k.kind, k.block), []).append(k)
    keep: set[LayerKey] = set()
    for keys in by_block.values():
        keys = sorted(keys, key=lambda k: k.index)
        if len(keys) <= max_per_block:
            keep.update(keys)
        elif max_per_block == 1:
            keep.add(keys[-1])
        else:
            n = len(keys) - 1
            keep.update(keys[round(i * n / (max_per_block - 1))] for i in range(max_per_block))
    return None if keep == set(layers) else frozenset(keep)


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

    def layer_report(self) -> list[dict[str, Any]]:
        """What the memory holds per layer: K/V layers (``kind`` "kv", ``name`` the layer key)
        and feature levels (``kind`` "feature", ``name`` "level L"), each with its tensor shape
        per step, bytes per step, number of steps and total bytes."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        items = [("kv", str(k), t) for (s, k), t in sorted(self.kv.items(), key=lambda i: (i[0][1], i[0][0]))]
        items += [("feature", f"level {lv}", t) for (s, lv), t in sorted(self.features.items(),
                                                                           key=lambda i: (i[0][1], i[0][0]))]
        for kind, name, t in items:
            b = t.numel() * t.element_size()
            r = rows.setdefault((kind, name), {"kind": kind, "name": name, "shape": tuple(t.shape),
                                               "bytes_per_step": b, "steps": 0, "bytes": 0})
            r["steps"] += 1
            r["bytes"] += b
        return list(rows.values())

    def describe(self) -> str:
        """One paragraph: steps, latent, which K/V layers and feature levels with their
        per-step shapes and bytes, and the totals."""
        b = self.nbytes()
        mib = 2**20
        parts = [f"{r['name']} {r['shape']} {r['bytes_per_step'] / mib:.2f} MiB/step" for r in self.layer_report()]
        return (f"FeatureMemory: {self.steps} steps, latent {self.latent_shape}, {len(self.layers())} K/V layers, "
                f"feature levels {self.policy.feature_levels}: {'; '.join(parts)}. "
                f"Total {b['total'] / mib:.2f} MiB (K/V {b['kv'] / mib:.2f}, features {b['features'] / mib:.2f}, "
                f"trajectory {b['trajectory'] / mib:.2f})")


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
        policy = MemoryPolicy(kv_layers=default_kv_layers(backend.decoder_self_attention_layers()),
                              feature_levels=default_feature_levels(backend.decoder_levels()))
    rec = MemoryRecorder(policy, backend.decoder_self_attention_layers())
    t0, c0 = time.time(), time.process_time()
    traj = ddim.invert(backend, z_0, cond, steps=steps, spacing=spacing, hooks=rec, callback=callback)
    # cost: one no-grad UNet pass per step and image (recording needs no extra pass)
    return FeatureMemory(traj, rec.kv, rec.features, policy, model_id,
                         {"spacing": spacing, "cond_batch": int(z_0.shape[0]),
                          "forward": steps * int(z_0.shape[0]), "seconds": round(time.time() - t0, 3),
                          "cpu_seconds": round(time.process_time() - c0, 3)})
