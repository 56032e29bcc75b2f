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
remembering K and V, at half the size. Everything is kept in ``dtype`` (int8 by
default, see below) on ``device`` (the CPU, i.e. ComfyUI's offload device, by default), and
only for the steps, layers and feature levels asked for. ``dtype=torch.int8`` (the
default) keeps each tensor as int8 with one fp32 scale per channel (absmax / 127
over the tokens or positions): half of fp16, about 0.5% relative RMS error, which
changes edits far less than the seed does (docs/performance.md); a float
``dtype`` (e.g. ``torch.float16``) stores the tensors as they are. One memory serves any
number of edits: nothing in it changes after recording.

Low-memory mode (``MemoryPolicy(recompute=True)``): the memory keeps only the
latent trajectory and the inversion's conditioning; the editing sampler calls
:meth:`FeatureMemory.prepare` at each step, which reruns the inversion's forward
for that step (same latent, timestep and conditioning, so the same tensors) and
holds that one step's K/V inputs and features until the next step. It costs one
no-grad UNet pass per step that reads the memory and keeps a few MiB instead of
hundreds (docs/performance.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import torch

from . import ddim
from .backend import AttnCall, Backend, FeatureCall, HookList, LayerKey, StopAfter, UNetHooks, check_latent_size


@dataclass(frozen=True)
class MemoryPolicy:
    """What to keep. ``None`` for steps or layers means "all of them"."""

    steps: frozenset[int] | None = None
    kv_layers: frozenset[LayerKey] | None = None  # default: every decoder self-attention
    feature_levels: tuple[int, ...] = (1, 2)
    dtype: torch.dtype = torch.int8  # int8 (per-channel scales) or a float dtype such as torch.float16
    device: str | torch.device = "cpu"

    feature_steps: frozenset[int] | None = None  # default: the same steps as K/V
    # keep only the latent trajectory; recompute a step's K/V and features when an edit needs them
    recompute: bool = False

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
    1024x1024 (see docs/model-families.md's memory figures). Layers not kept run as plain
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
    # int8 memories: the per-channel scale of each kv / features entry (same keys)
    scales: dict[tuple, torch.Tensor] = field(default_factory=dict)
    cond: Any = None  # the inversion's conditioning, kept by a recompute memory
    # recompute: (step, whether its K/V were recorded too) of the tensors held
    _loaded: tuple[int, bool] | None = field(default=None, init=False, repr=False)

    def prepare(self, step: int, backend: Backend, kv: bool, features: bool) -> str | None:
        """Recompute memory: make ``step``'s K/V inputs (if ``kv``) and features (if
        ``features``) available, dropping the previous step's. Returns the pass it ran:
        "full", "partial" (features only: stopped after the last feature level) or None
        (nothing to do; a stored memory has every step already)."""
        if not self.policy.recompute or not (kv or features):
            return None
        if self._loaded is not None and self._loaded[0] == step and (self._loaded[1] or not kv):
            return None  # a full pass of this step holds its features too
        self.release()
        with torch.no_grad():
            self._record_step(step, backend, kv)
        self._loaded = (step, kv)
        return "full" if kv else "partial"

    def _record_step(self, step: int, backend: Backend, kv: bool) -> None:
        """Rerun the pass that recorded ``step`` (inversion: ``latents[step + 1]``, cond) and keep its tensors."""
        rec = MemoryRecorder(replace(self.policy, recompute=False), backend.decoder_self_attention_layers())
        if not kv:  # features only: no K/V, and the pass can stop after the last feature level
            rec.layers = frozenset()
        hooks: UNetHooks = rec if kv else HookList(rec, StopAfter(max(self.policy.feature_levels)))
        t = int(self.trajectory.timesteps[step])
        backend.predict_eps(self.trajectory.latents[step + 1].to(backend.device), t, self.cond, step=step,
                            branch="cond", hooks=hooks)
        self.keep(rec)

    def keep(self, rec: "MemoryRecorder") -> None:
        """Add what ``rec`` recorded to the memory."""
        self.kv.update(rec.kv)
        self.features.update(rec.features)
        self.scales.update(rec.scales)

    @property
    def steps(self) -> int:
        return self.trajectory.steps

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.trajectory.z_0.shape)

    def nbytes(self) -> dict[str, int]:
        """Bytes held: K/V inputs, features, trajectory, and their total."""
        def size(key: tuple, t: torch.Tensor) -> int:
            sc = self.scales.get(key)
            return t.numel() * t.element_size() + (0 if sc is None else sc.numel() * sc.element_size())

        kv = sum(size(k, t) for k, t in self.kv.items())
        feats = sum(size(k, t) for k, t in self.features.items())
        traj = self.trajectory.latents.numel() * self.trajectory.latents.element_size()
        return {"kv": kv, "features": feats, "trajectory": traj, "total": kv + feats + traj}

    def layers(self) -> list[LayerKey]:
        """The K/V layers the memory holds (a recompute memory: those its policy names)."""
        if self.policy.recompute:
            return sorted(self.policy.kv_layers or self.info.get("kv_layers", ()))
        return sorted({k for _, k in self.kv})

    def release(self) -> None:
        """Recompute memory: drop the held step's tensors (a stored memory keeps everything)."""
        if self.policy.recompute:
            self.kv.clear()
            self.features.clear()
            self.scales.clear()
            self._loaded = None

    def _check_loaded(self, step: int) -> None:
        if self.policy.recompute and (self._loaded is None or self._loaded[0] != step):
            raise RuntimeError(f"recompute memory: step {step} was not prepared (prepare(step, backend) first)")

    def kv_input(self, step: int, layer: LayerKey, device: torch.device, dtype: torch.dtype,
                 branch: str = "cond") -> torch.Tensor | None:
        """``step``'s K/V input of ``layer`` (None if not kept); an inversion has one for either ``branch``."""
        self._check_loaded(step)
        t = self.kv.get((step, layer))
        if t is None:
            return None
        if t.dtype == torch.int8:
            return dequantize(t, self.scales[(step, layer)], device, dtype)
        return t.to(device=device, dtype=dtype, non_blocking=True)

    def feature(self, step: int, level: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        self._check_loaded(step)
        t = self.features.get((step, level))
        if t is None:
            raise KeyError(f"memory has no level-{level} features for step {step} (recorded steps: "
                           f"{sorted({s for s, _ in self.features})[:8]}...)")
        if t.dtype == torch.int8:
            return dequantize(t, self.scales[(step, level)], device, dtype)
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
        per_channel = 4 if any(t.dtype == torch.int8 for _, _, t in items) else 0  # int8: fp32 scales
        for kind, name, t in items:
            b = t.numel() * t.element_size() + per_channel * t.shape[-1 if kind == "kv" else 1]
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


# named ways to keep a memory (CLI --memory, the Inversion node's storage) -> MemoryPolicy fields
STORAGE: dict[str, dict[str, Any]] = {
    "int8": {"dtype": torch.int8},
    "fp16": {"dtype": torch.float16},
    "recompute": {"dtype": torch.float16, "recompute": True},  # one step held at a time: no need to quantise
}


def default_policy(backend: Backend, max_per_block: int | None = MAX_KV_LAYERS_PER_BLOCK, **kw: Any) -> MemoryPolicy:
    """The layers and feature levels chosen by the structural rules above (``max_per_block``
    as in :func:`default_kv_layers`); ``kw`` sets the other fields (e.g. ``recompute=True``,
    ``device``)."""
    return MemoryPolicy(kv_layers=default_kv_layers(backend.decoder_self_attention_layers(), max_per_block),
                        feature_levels=default_feature_levels(backend.decoder_levels()), **kw)


class MemoryRecorder(UNetHooks):
    """Hooks that copy K/V inputs and decoder features into a memory during inversion."""

    def __init__(self, policy: MemoryPolicy, layers: Iterable[LayerKey]) -> None:
        self.policy = policy
        self.layers = frozenset(policy.kv_layers if policy.kv_layers is not None else layers)
        self.kv: dict[tuple[int, LayerKey], torch.Tensor] = {}
        self.features: dict[tuple[int, int], torch.Tensor] = {}
        self.scales: dict[tuple, torch.Tensor] = {}

    def _store(self, key: tuple, t: torch.Tensor, over: tuple[int, ...]) -> torch.Tensor:
        t = t.detach()
        if self.policy.dtype == torch.int8:
            q, scale = quantize(t, over)
            self.scales[key] = scale.to(self.policy.device)
            return q.to(self.policy.device)
        return t.to(device=self.policy.device, dtype=self.policy.dtype).clone()

    def self_attention(self, call: AttnCall, n: torch.Tensor) -> None:
        if call.layer in self.layers and self.policy.keeps_step(call.step):
            key = (call.step, call.layer)
            self.kv[key] = self._store(key, n, (1,))  # (B, N, C): one scale per channel, over the tokens
        return None

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.level in self.policy.feature_levels and self.policy.keeps_feature_step(call.step):
            key = (call.step, call.level)
            self.features[key] = self._store(key, h, (2, 3))  # (B, C, H, W): per channel, over positions


def quantize(t: torch.Tensor, over: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one fp32 scale per slice: ``scale = absmax / 127`` over the dims ``over``."""
    scale = t.float().abs().amax(dim=over, keepdim=True).clamp_min(1e-12) / 127.0
    q = torch.round(t.float() / scale).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of :func:`quantize` (a new tensor, never an inference tensor)."""
    # move the int8 values first (a quarter of the fp32 bytes), then widen them on the device
    return (q.to(device).float() * scale.to(device)).to(dtype)


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
    """DDIM-invert ``z_0`` (no CFG) and record the memory in the same passes
    (``policy`` default: :func:`default_policy`)."""
    check_latent_size(backend, tuple(z_0.shape[-2:]))
    if policy is None:
        policy = default_policy(backend)
    rec = None if policy.recompute else MemoryRecorder(policy, backend.decoder_self_attention_layers())
    t0, c0 = time.time(), time.process_time()
    traj = ddim.invert(backend, z_0, cond, steps=steps, spacing=spacing, hooks=rec, callback=callback)
    # cost: one no-grad UNet pass per step and image (recording needs no extra pass)
    info = {"spacing": spacing, "cond_batch": int(z_0.shape[0]), "forward": steps * int(z_0.shape[0]),
            "seconds": round(time.time() - t0, 3), "cpu_seconds": round(time.process_time() - c0, 3)}
    if policy.recompute:
        layers = policy.kv_layers if policy.kv_layers is not None else backend.decoder_self_attention_layers()
        info["kv_layers"] = tuple(sorted(layers))
        return FeatureMemory(traj, {}, {}, policy, model_id, info, cond=cond)
    return FeatureMemory(traj, rec.kv, rec.features, policy, model_id, info, scales=rec.scales)
