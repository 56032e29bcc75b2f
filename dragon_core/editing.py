"""Edits as plain data, their plans, and the guided DDIM sampler that runs them.

An edit (:class:`Move`, :class:`Drag`, :class:`Points`, :class:`Appearance`,
:class:`Paste`) holds masks in image pixels, points, offsets and scales, plus
any second memory it needs; it is validated on construction. :func:`plan_edit`
turns an edit and the base image's :class:`FeatureMemory` into everything the
sampler needs: the start latent, the cross-branch attention, the energy, and
the masks that route the energy gradients. :func:`run_edit` samples.

Guided step ``s`` (DragonDiffusion, with the reference method's schedule):
the conditional pass runs with autograd and the feature hooks, so the
conditional eps and the current features come from the same forward pass; the
reference features come from the memory. The edit energy's gradient acts
inside the edit region, the content energy's outside, and the guidance enters
the x0 estimate only (the DDIM direction keeps the unguided eps).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import energies as en
from .attention import CrossBranchAttention
from . import cost
from .backend import Backend, FeatureCall, HookList, UNetHooks
from .ddim import ddim_inversion_step, ddim_x0
from .memory import FeatureMemory, MemoryPolicy
from .regions import (
    MASK_THRESHOLD,
    RegionError,
    Transform,
    check_mask,
    check_points,
    moved_mask,
    point_patch,
    to_grid,
    transform_about_mask,
    warp,
)
from .schedule import alpha_pairs

EDIT_KINDS = ("move", "drag", "points", "appearance", "paste")
SCHEDULES = ("efficient", "reference")


def _object_transform(mask: torch.Tensor, dx: float, dy: float, scale: float) -> Transform:
    """Scale about the object's box centre, then shift; RegionError if it leaves the image."""
    t = transform_about_mask(mask.float(), dx, dy, scale)
    moved_mask(mask.float(), t, "mask")
    return t


def _check_scale(scale: float) -> None:
    if not 0.1 <= scale <= 10:
        raise ValueError(f"scale must be in 0.1..10, got {scale!r}")


# -- edits --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """Move (dx, dy image pixels) and/or resize (``scale`` about the mask's centroid)
    the object under ``mask`` ((H, W) in [0, 1]). ``inpaint_region`` optionally
    names the surroundings the vacated area should look like."""

    mask: torch.Tensor
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    inpaint_region: torch.Tensor | None = None
    kind: str = field(default="move", init=False)

    def __post_init__(self) -> None:
        check_mask(self.mask, "mask")
        for name in ("dx", "dy", "scale"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        _check_scale(self.scale)
        if self.dx == 0 and self.dy == 0 and self.scale == 1:
            raise ValueError("move: dx, dy and scale describe no change (dx = dy = 0, scale = 1)")
        if self.inpaint_region is not None:
            check_mask(self.inpaint_region, "inpaint_region")
        self.transform()  # raises RegionError if the object leaves the image

    def transform(self) -> Transform:
        return _object_transform(self.mask, self.dx, self.dy, self.scale)


@dataclass(frozen=True)
class Drag:
    """Drag content from ``handles`` to ``targets`` ((P, 2) x, y image pixels). Only
    the region under ``mask`` may change (None: the whole image may)."""

    handles: torch.Tensor
    targets: torch.Tensor
    image_size: tuple[int, int]  # (H, W)
    mask: torch.Tensor | None = None
    kind: str = field(default="drag", init=False)

    def __post_init__(self) -> None:
        h = check_points(self.handles, self.image_size, "handles")
        t = check_points(self.targets, self.image_size, "targets")
        if h.shape != t.shape:
            raise RegionError(f"handles and targets must pair up: {h.shape[0]} handles, {t.shape[0]} targets")
        if self.mask is not None:
            check_mask(self.mask, "mask")
            if tuple(self.mask.shape) != tuple(self.image_size):
                raise RegionError(f"mask is {self.mask.shape[1]}x{self.mask.shape[0]}, image is "
                                  f"{self.image_size[1]}x{self.image_size[0]}")


@dataclass(frozen=True)
class Points(Drag):
    """Point-set (landmark) dragging: many pairs, no mask; guidance over the whole image."""

    kind: str = field(default="points", init=False)


@dataclass(frozen=True)
class Appearance:
    """Give the object under ``mask`` the appearance of the object under
    ``reference_mask`` in the image whose memory is ``reference``."""

    mask: torch.Tensor
    reference: FeatureMemory
    reference_mask: torch.Tensor
    kind: str = field(default="appearance", init=False)

    def __post_init__(self) -> None:
        check_mask(self.mask, "mask")
        check_mask(self.reference_mask, "reference_mask")


@dataclass(frozen=True)
class Paste:
    """Paste the object under ``mask`` of the image whose memory is ``source`` into the
    base image, moved by (dx, dy) and scaled by ``scale`` about its centroid."""

    source: FeatureMemory
    mask: torch.Tensor
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    kind: str = field(default="paste", init=False)

    def __post_init__(self) -> None:
        check_mask(self.mask, "mask")
        _check_scale(self.scale)
        self.transform()

    def transform(self) -> Transform:
        return _object_transform(self.mask, self.dx, self.dy, self.scale)


Edit = Move | Drag | Points | Appearance | Paste


# -- settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditSettings:
    """How an edit is sampled. ``energy_scale`` multiplies the energy gradients
    (the reference method's slider x 1e3 x 0.08 for move, x 0.04 otherwise)."""

    cfg: float = 4.0
    energy_scale: float = 40.0
    w_edit: float = 4.0
    w_content: float = 6.0
    w_contrast: float = 0.2
    w_inpaint: float = 0.8
    guide_until: float = 0.6  # guided steps: s < guide_until * N ...
    guide_every_until: float = 0.2  # ... every step before this fraction, even steps after
    attention: bool = True
    attention_mode: str | None = None  # None: the edit's default (move: replace, drag/points: concat, ...)
    attention_start: int = 5
    attention_end: int | None = None
    flexibility: float = 0.0  # regional SDE eta inside the edit region (DiffEditor), middle steps
    flexibility_window: tuple[float, float] = (0.2, 0.4)  # fraction of steps: 10 < s < 20 of 50
    time_travel: int = 1  # passes per step in the window (3 in DiffEditor)
    time_travel_window: tuple[float, float] = (0.4, 0.6)  # even steps 20 < s < 30 of 50
    feature_scale: float = 1.0  # energy grid = latent size x this (SD: 2)
    copy_start: bool = True  # start latent: copy the inverted object region to its destination
    copy_until: float = 0.0  # ... and keep following the source's moved inversion there for this fraction of steps
    background_lock: float = 0.0  # outside the (grown) edit region, follow the inversion for this fraction of steps
    lock_margin: float = 0.1  # growth of the edit region for the lock, as a fraction of the image side
    point_region: float = 0.0  # drag/points without a mask: the points' box grown by this fraction of the side
    reference_interior: bool = False  # appearance: the reference's mean feature over its mask eroded by one cell
    # appearance: shift the start latent's per-channel mean inside the mask by this fraction of the way to
    # the reference object's (its inverted latent under its mask); 0 = the reference method's start
    appearance_start: float = 0.0
    seed: int = 0
    # "efficient" (default) or "reference": the official implementation's evaluation schedule
    # (for cost comparisons; see run_edit and README "Performance")
    schedule: str = "efficient"
    # "two": d(E_edit)/dz inside the edit region, d(E_con)/dz outside (two backward passes, as the
    # reference method); "one": one backward pass of E_edit + E_con, applied everywhere (an
    # approximation: each gradient leaks across the mask through the UNet's receptive field)
    energy_backward: str = "two"
    # efficient schedule: run cond and uncond of unguided steps as one batch of 2 (same maths,
    # float-level differences; faster where the device has spare parallelism, e.g. a GPU)
    batch_cfg: bool = False
    # efficient schedule, guided steps: "full" takes the conditional eps from the grad pass (fewest
    # passes); "partial" stops the grad pass after the last feature level and adds a no-grad full pass
    # for eps (more FLOPs, less autograd memory: the decoder's last level keeps no activations)
    grad_pass: str = "full"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.grad_pass not in ("full", "partial"):
            raise ValueError(f"grad_pass must be 'full' or 'partial', got {self.grad_pass!r}")
        if self.energy_backward not in ("one", "two"):
            raise ValueError(f"energy_backward must be 'one' or 'two', got {self.energy_backward!r}")

    def guided(self, s: int, n: int) -> bool:
        return self.energy_scale != 0 and s < round(self.guide_until * n) and (
            s < round(self.guide_every_until * n) or s % 2 == 0)

    def flexible(self, s: int, n: int) -> bool:
        lo, hi = self.flexibility_window
        return self.flexibility > 0 and lo * n < s < hi * n

    def repeats(self, s: int, n: int) -> int:
        lo, hi = self.time_travel_window
        return self.time_travel if (self.time_travel > 1 and self.energy_scale != 0 and lo * n < s < hi * n
                                    and s % 2 == 0) else 1


# Starting points from the official DragonDiffusion demo for Stable Diffusion 1.5
# (energy slider x 1e3 x 0.08 (move) or 0.04 (others); CFG per edit; flexibility 0.4); features
# compared on a grid of twice the latent size (image / 4), as the reference code resizes them.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "move": dict(cfg=4.0, energy_scale=40.0, w_edit=4.0, w_content=6.0, w_contrast=0.2, w_inpaint=0.8,
                 feature_scale=2.0),
    "drag": dict(cfg=4.0, energy_scale=80.0, w_edit=4.0, w_content=6.0, w_contrast=0.2, feature_scale=2.0),
    "points": dict(cfg=4.0, energy_scale=120.0, w_edit=12.0, w_content=0.0, w_contrast=0.0, feature_scale=2.0),
    "appearance": dict(cfg=5.0, energy_scale=80.0, w_edit=3.5, w_content=5.0, feature_scale=2.0),
    "paste": dict(cfg=4.0, energy_scale=60.0, w_edit=4.0, w_content=6.0, feature_scale=2.0),
}
DEFAULT_ATTENTION = {"move": "replace", "drag": "concat", "points": "concat", "appearance": "masked",
                     "paste": "masked"}


def default_settings(kind: str, overrides: dict[str, dict[str, Any]] | None = None, **kw: Any) -> EditSettings:
    """Settings for an edit kind: the paper's, then a model's calibrated ``overrides``, then ``kw``."""
    if kind not in EDIT_KINDS:
        raise ValueError(f"edit kind must be one of {EDIT_KINDS}, got {kind!r}")
    values: dict[str, Any] = dict(PAPER_DEFAULTS[kind])
    if kind in ("appearance", "paste"):
        values.update(attention_start=0, attention_end=35)
    values.update((overrides or {}).get(kind, {}))
    values.update({k: v for k, v in kw.items() if v is not None})
    if isinstance(values.get("flexibility_window"), list):
        values["flexibility_window"] = tuple(values["flexibility_window"])
    if isinstance(values.get("time_travel_window"), list):
        values["time_travel_window"] = tuple(values["time_travel_window"])
    return EditSettings(**values)


def used_steps_policy(settings: list[EditSettings] | EditSettings, steps: int, feature_levels: tuple[int, ...],
                      base: MemoryPolicy | None = None) -> MemoryPolicy:
    """A memory policy that keeps only what edits with these ``settings`` read at ``steps``:
    K/V inputs from the attention's first step to its last, features on guided steps only.
    (The default policy keeps every step: one memory then serves any edit settings.)"""
    from dataclasses import replace as _replace

    group = [settings] if isinstance(settings, EditSettings) else list(settings)
    kv = {s for st in group if st.attention for s in range(steps)
          if s >= st.attention_start and (st.attention_end is None or s <= st.attention_end)}
    feats = {s for st in group for s in range(steps) if st.guided(s, steps)}
    return _replace(base or MemoryPolicy(), steps=frozenset(kv), feature_steps=frozenset(feats),
                    feature_levels=feature_levels)


# -- plan ----------------------------------------------------------------------------------------------


def points_box(points: torch.Tensor, image_size: tuple[int, int], margin: float) -> torch.Tensor:
    """(H, W) mask of the box around ``points`` ((P, 2) x, y pixels) grown by ``margin`` x the
    longer image side, clipped to the image."""
    H, W = image_size
    pad = margin * max(H, W)
    x0, y0 = (points.min(dim=0).values - pad).floor().clamp(min=0).long().tolist()
    x1, y1 = (points.max(dim=0).values + pad).ceil().long().tolist()
    m = torch.zeros(H, W)
    m[y0:min(y1 + 1, H), x0:min(x1 + 1, W)] = 1
    return m


def grid_mask(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bool (h, w): cells at least half covered by ``mask``; any-coverage if that is empty."""
    g = to_grid(mask.float(), h, w)
    m = g >= MASK_THRESHOLD
    return m if m.any() else g > 0


@dataclass
class Plan:
    """What the sampler needs for one edit."""

    kind: str
    start_latent: torch.Tensor
    attention: UNetHooks | None
    grad_mask: torch.Tensor  # (1, 1, h, w) latent grid: where the edit gradient applies
    sde_mask: torch.Tensor  # (1, 1, h, w): where flexibility noise goes and the background lock does not
    energy: Callable[[list[torch.Tensor], int], tuple[torch.Tensor, torch.Tensor]]
    grid: tuple[int, int]  # the energy grid the features are compared on
    copy: "_Copy | None" = None  # the start-latent copy, for copy_start / copy_until
    memories: tuple[FeatureMemory, ...] = ()  # every memory the edit reads (prepared per step if recomputed)


class _Copy:
    """Latent cells under ``mask`` (1, 1, h, w) taken from another inversion trajectory
    (the base moved by the edit, or a pasted source): ``at(i)`` is that trajectory's
    latent ``i`` (the input of sampling step ``i``) moved into place."""

    def __init__(self, latents: torch.Tensor, mask: torch.Tensor, move: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.latents, self.mask, self.move = latents, mask, move

    def at(self, i: int) -> torch.Tensor:
        return self.move(self.latents[i].float())

    def apply(self, z: torch.Tensor, i: int) -> torch.Tensor:
        return torch.where(self.mask.to(z.device), self.at(i).to(z.device, z.dtype), z)


class _Features:
    """A memory's features on the energy grid at one step, optionally moved by the
    edit's transform; the last step's are cached (time travel repeats a step)."""

    def __init__(self, memory: FeatureMemory, levels: tuple[int, ...], grid: tuple[int, int],
                 transform: Transform | None = None, image_size: tuple[int, int] | None = None) -> None:
        self.memory, self.levels, self.grid = memory, levels, grid
        self.transform, self.image_size = transform, image_size
        self._cache: dict[int, list[torch.Tensor]] = {}

    def at(self, step: int, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        if step not in self._cache:
            fs = [on_grid(self.memory.feature(step, lvl, device, torch.float32), self.grid) for lvl in self.levels]
            if self.transform is not None:
                fs = [warp(f, self.transform, self.image_size) for f in fs]
            self._cache = {step: fs}
        return [f.to(dtype) for f in self._cache[step]]


def _region_mean(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel mean of ``z`` (1, C, h, w) under ``mask`` (1, 1, h, w) -> (1, C, 1, 1)."""
    m = mask.to(z.dtype)
    return (z * m).sum(dim=(2, 3), keepdim=True) / m.sum().clamp_min(1.0)


def on_grid(h: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A (1, C, h, w) feature map resized (nearest) to the energy grid -> (C, gh, gw)."""
    if h.ndim != 4 or h.shape[0] != 1:
        raise ValueError(f"features must be (1, C, h, w), got {tuple(h.shape)}")
    if tuple(h.shape[-2:]) != tuple(grid):
        h = F.interpolate(h, size=grid, mode="nearest")
    return h[0]


def _check_memory(memory: FeatureMemory, name: str) -> None:
    if memory.trajectory.z_0.shape[0] != 1:
        raise ValueError(f"{name}: edits need a memory of one image (batch 1), got batch {memory.trajectory.z_0.shape[0]}")
    if not memory.features and not memory.policy.recompute:
        raise ValueError(f"{name}: the memory holds no decoder features; invert with feature levels recorded")


def _same_run(a: FeatureMemory, b: FeatureMemory, name: str) -> None:
    if a.latent_shape != b.latent_shape:
        raise ValueError(f"{name} was inverted at latent size {b.latent_shape[-2:]}, the base image at "
                         f"{a.latent_shape[-2:]}: resize the reference to the base image's size")
    if not torch.equal(a.trajectory.timesteps, b.trajectory.timesteps):
        raise ValueError(f"{name} was inverted with {b.steps} steps, the base image with {a.steps}: use the same steps")
    if a.model_id and b.model_id and a.model_id != b.model_id:
        raise ValueError(f"{name} was inverted with another model ({b.model_id!r} vs {a.model_id!r})")


@torch.inference_mode(False)
def plan_edit(edit: Edit, memory: FeatureMemory, settings: EditSettings) -> Plan:
    """Start latent, attention, energy and masks for ``edit`` on the image of ``memory``.

    Runs outside inference mode (ComfyUI calls nodes inside it): the plan's tensors
    enter the guidance's autograd graph, which inference tensors cannot."""
    plan = _plan(edit, memory, settings)
    second = getattr(edit, "reference", None) or getattr(edit, "source", None)
    return replace(plan, memories=(memory,) if second is None else (memory, second))


def _plan(edit: Edit, memory: FeatureMemory, settings: EditSettings) -> Plan:
    _check_memory(memory, "memory")
    z_T = memory.trajectory.z_T
    lh, lw = z_T.shape[-2:]
    levels = memory.policy.feature_levels
    grid = (max(1, round(lh * settings.feature_scale)), max(1, round(lw * settings.feature_scale)))
    gh, gw = grid
    mode = settings.attention_mode or DEFAULT_ATTENTION[edit.kind]
    image_size = tuple(edit.image_size) if isinstance(edit, Drag) else tuple(edit.mask.shape)
    if image_size[0] % lh or image_size[1] % lw or image_size[0] // lh != image_size[1] // lw:
        raise RegionError(f"the mask/image is {image_size[1]}x{image_size[0]} pixels but the latent is {lw}x{lh}: "
                          f"the image must be the one that was inverted")
    ref = _Features(memory, levels, grid)
    s_ = settings

    def attention(**masked: Any) -> CrossBranchAttention | None:
        if not s_.attention:
            return None
        return CrossBranchAttention(memory, mode, s_.attention_start, s_.attention_end, **masked)

    if isinstance(edit, Move):
        t = edit.transform()
        mask = edit.mask.float()
        new = moved_mask(mask, t)
        m_org, m_cur = grid_mask(mask, gh, gw), grid_mask(new, gh, gw)
        region = None if edit.inpaint_region is None else grid_mask(edit.inpaint_region, gh, gw)
        lat_new, lat_org = grid_mask(new, lh, lw), grid_mask(mask, lh, lw)
        copy = _Copy(memory.trajectory.latents, lat_new[None, None], lambda z: warp(z, t, image_size, mode="nearest"))
        start = copy.apply(z_T, 0) if s_.copy_start else z_T
        ref_moved = _Features(memory, levels, grid, t, image_size)

        def energy(cur: list[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
            dev, dt = cur[0].device, cur[0].dtype
            return en.move_energy(cur, ref.at(step, dev, dt), ref_moved.at(step, dev, dt), m_cur.to(dev),
                                  m_org.to(dev), None if region is None else region.to(dev),
                                  s_.w_edit, s_.w_content, s_.w_contrast, s_.w_inpaint)

        return Plan("move", start.clone(), attention(), lat_new[None, None], (lat_new | lat_org)[None, None],
                    energy, grid, copy)

    if isinstance(edit, Drag):  # Drag and Points
        hp = point_patch(edit.handles, gh, gw, image_size)
        tp = point_patch(edit.targets, gh, gw, image_size)
        mask = edit.mask
        if mask is None and s_.point_region > 0:  # no mask given: the points' box, grown, may change
            mask = points_box(torch.cat([edit.handles, edit.targets]), image_size, s_.point_region)
        keep = None if mask is None else ~grid_mask(mask, gh, gw)
        start = z_T.clone()
        if s_.copy_start:  # each target's latent patch starts as its handle's
            lhp = point_patch(edit.handles, lh, lw, image_size)
            ltp = point_patch(edit.targets, lh, lw, image_size)
            start[..., ltp[..., 0], ltp[..., 1]] = z_T[..., lhp[..., 0], lhp[..., 1]]
        region = torch.ones(1, 1, lh, lw, dtype=torch.bool) if mask is None \
            else grid_mask(mask, lh, lw)[None, None]

        def energy(cur: list[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
            dev = cur[0].device
            return en.drag_energy(cur, ref.at(step, dev, cur[0].dtype), hp.to(dev), tp.to(dev),
                                  None if keep is None else keep.to(dev), s_.w_edit, s_.w_content, s_.w_contrast)

        return Plan(edit.kind, start, attention(), region, region, energy, grid)

    if isinstance(edit, Appearance):
        _check_memory(edit.reference, "reference")
        _same_run(memory, edit.reference, "reference")
        m_base, m_ref = grid_mask(edit.mask, gh, gw), grid_mask(edit.reference_mask, gh, gw)
        if s_.reference_interior:  # the reference's mean feature without its boundary (its shape)
            inner = -F.max_pool2d(-m_ref.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0.5
            m_ref = inner if inner.any() else m_ref
        other = _Features(edit.reference, levels, grid)
        lat = grid_mask(edit.mask, lh, lw)[None, None]

        def energy(cur: list[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
            dev, dt = cur[0].device, cur[0].dtype
            return en.appearance_energy(cur, ref.at(step, dev, dt), other.at(step, dev, dt), m_base.to(dev),
                                        m_ref.to(dev), s_.w_edit, s_.w_content)

        attn = attention(region=edit.mask.float(), second=edit.reference, second_region=edit.reference_mask.float())
        start = z_T.clone()
        if s_.appearance_start:
            ref_lat = grid_mask(edit.reference_mask, lh, lw)[None, None]
            r_T = edit.reference.trajectory.z_T
            shift = _region_mean(r_T, ref_lat) - _region_mean(z_T, lat)
            start = start + s_.appearance_start * shift * lat
        return Plan("appearance", start, attn, lat, lat, energy, grid)

    if isinstance(edit, Paste):
        _check_memory(edit.source, "source")
        _same_run(memory, edit.source, "source")
        t = edit.transform()
        dest = moved_mask(edit.mask.float(), t)
        m_base = grid_mask(dest, gh, gw)
        lat = grid_mask(dest, lh, lw)[None, None]
        src_moved = _Features(edit.source, levels, grid, t, image_size)
        copy = _Copy(edit.source.trajectory.latents, lat, lambda z: warp(z, t, image_size, mode="nearest"))
        start = copy.apply(z_T, 0) if s_.copy_start else z_T

        def energy(cur: list[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
            dev, dt = cur[0].device, cur[0].dtype
            return en.paste_energy(cur, ref.at(step, dev, dt), src_moved.at(step, dev, dt), m_base.to(dev),
                                   s_.w_edit, s_.w_content)

        attn = attention(region=dest, second=edit.source, second_region=edit.mask.float())
        return Plan("paste", start.clone(), attn, lat, lat, energy, grid, copy)

    raise TypeError(f"not an edit: {type(edit).__name__}")


# -- sampler -----------------------------------------------------------------------------------------------


class _Capture(UNetHooks):
    def __init__(self, levels: tuple[int, ...]) -> None:
        self.levels = levels
        self.h: dict[int, torch.Tensor] = {}

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.level in self.levels:
            self.h[call.level] = h


@dataclass
class EditResult:
    """The edited latent and what it cost."""

    latent: torch.Tensor
    stats: dict[str, Any]


def _grad(e: torch.Tensor, z: torch.Tensor, retain: bool) -> torch.Tensor:
    """d e / d z; zero for an energy term that is identically zero (e.g. a weight of 0)."""
    if not e.requires_grad:
        if e.grad_fn is None and e.detach().abs().item() != 0:
            raise RuntimeError("the guidance energy has no autograd graph (was the sampler run inside "
                               "torch.inference_mode()?); the edit would silently lose its guidance")
        return torch.zeros_like(z)
    (g,) = torch.autograd.grad(e, z, retain_graph=retain, allow_unused=True)
    return torch.zeros_like(z) if g is None else g


def _cfg_batch(backend: Backend, z: torch.Tensor, t: int, cond: Any, uncond: Any, s: int,
               hooks: UNetHooks | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(eps_u, eps_c) from one batch-2 forward [uncond, cond], or None if the conditionings don't stack."""
    if not (isinstance(cond, torch.Tensor) and isinstance(uncond, torch.Tensor) and cond.shape == uncond.shape
            and cond.shape[0] == 1 and z.shape[0] == 1):
        return None
    eps = backend.predict_eps(torch.cat([z, z]), t, torch.cat([uncond, cond]), step=s, branch="cond", hooks=hooks)
    return eps[:1], eps[1:]


@torch.inference_mode(False)
def run_edit(backend: Backend, memory: FeatureMemory, plan: Plan, cond: Any, uncond: Any,
             settings: EditSettings, callback: Callable[[int, torch.Tensor], None] | None = None) -> EditResult:
    """Sample the edit: guided DDIM with CFG over the memory's timesteps.

    Runs outside inference mode, with autograd on the guided passes, whatever the
    caller's mode (ComfyUI runs nodes under torch.inference_mode()).

    ``settings.schedule == "reference"`` runs the official implementation's
    evaluation schedule for the same maths (README "Performance"): a CFG batch of
    2 on every step; on guided steps also a no-grad pass for the reference
    features (on the memory's input for the step, so that both schedules compare
    the same features) and a separate grad pass stopped after the last feature
    level; two backward passes; time-travel re-noising as in the default."""
    traj = memory.trajectory
    ts = traj.timesteps.tolist()
    n = len(ts)
    pairs = alpha_pairs(backend.alphas_cumprod, traj.timesteps, traj.spacing)
    levels = memory.policy.feature_levels
    grid = plan.grid
    dev = backend.device
    z = plan.start_latent.to(dev, torch.float32)
    gmask = plan.grad_mask.to(dev, torch.float32)
    smask = plan.sde_mask.to(dev, torch.float32)
    gen = torch.Generator().manual_seed(int(settings.seed))
    reference = settings.schedule == "reference"
    top = max(levels)
    stop = cost.StopAfter(top)
    one_backward = settings.energy_backward == "one" and not reference

    def full(run: Callable[[UNetHooks | None], Any], hooks: UNetHooks | None) -> Any:
        """A full pass; the edit's first one (per model and size) also measures the FLOP share up to
        the last feature level, for forward-equivalents (no extra pass)."""
        if cost.known_fraction(backend, z, top) is not None:
            return run(hooks)
        return cost.counted_pass(backend, z, top, run, hooks)
    stats: dict[str, Any] = {"schedule": settings.schedule, "forward": 0, "forward_partial": 0, "forward_grad": 0,
                             "forward_grad_partial": 0, "backward": 0, "guided_steps": 0, "renoise": 0,
                             "forward_memory": 0, "forward_memory_partial": 0}
    cost.reset_peak(dev)
    t0, c0 = time.time(), time.process_time()

    def reference_pass(s: int, t: int) -> None:
        """The reference method's no-grad reference pass, for its cost: on the memory's input for
        step s it computes exactly the features the inversion recorded, which the energy reads."""
        backend.predict_eps(traj.latents[s + 1].to(dev, torch.float32), t, cond, step=s, branch="cond",
                            hooks=HookList(_Capture(levels), stop))
        stats["forward_partial"] += 1

    def step_once(s: int, z: torch.Tensor) -> torch.Tensor:
        t = ts[s]
        ab_t, ab_prev = pairs[s]
        guidance = torch.zeros_like(z)
        eps_c = None
        if settings.guided(s, n):
            with torch.enable_grad():
                cap = _Capture(levels)
                z_in = z.detach().clone().requires_grad_(True)
                if reference or settings.grad_pass == "partial":
                    if reference:
                        reference_pass(s, t)
                    backend.predict_eps(z_in, t, cond, step=s, branch="cond",
                                        hooks=HookList(plan.attention, cap, stop), grad=True)
                    stats["forward_grad_partial"] += 1
                else:
                    eps_c = full(lambda h: backend.predict_eps(z_in, t, cond, step=s, branch="cond", hooks=h,
                                                               grad=True), HookList(plan.attention, cap))
                    stats["forward_grad"] += 1
                cur = [on_grid(cap.h[lvl].float(), grid) for lvl in levels]
                e_edit, e_con = plan.energy(cur, s)
                if one_backward:
                    g = _grad(e_edit + e_con, z_in, retain=False)
                else:  # the edit gradient inside the edit region, the content gradient outside
                    g = _grad(e_edit, z_in, retain=True) * gmask + _grad(e_con, z_in, retain=False) * (1 - gmask)
            stats["guided_steps"] += 1
            stats["backward"] += 1 if one_backward else 2
            guidance = settings.energy_scale * g
            if eps_c is not None:
                eps_c = eps_c.detach()
        cfg_on = uncond is not None and settings.cfg != 1.0
        batch = cfg_on and (reference or (settings.batch_cfg and eps_c is None))
        both = full(lambda h: _cfg_batch(backend, z, t, cond, uncond, s, h), plan.attention) if batch else None
        if both is not None:
            eps_u, eps_c = both
            stats["forward"] += 2
        else:
            if eps_c is None:
                eps_c = full(lambda h: backend.predict_eps(z, t, cond, step=s, branch="cond", hooks=h),
                             plan.attention)
                stats["forward"] += 1
            if cfg_on:
                eps_u = backend.predict_eps(z, t, uncond, step=s, branch="uncond", hooks=plan.attention)
                stats["forward"] += 1
        if cfg_on:
            eps = eps_u + settings.cfg * (eps_c - eps_u)
        else:
            eps = eps_c
        x0 = ddim_x0(z, eps + guidance, ab_t)
        if settings.flexible(s, n) and ab_prev < 1:
            var = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
            sigma = settings.flexibility * math.sqrt(max(var, 0.0))
            noise = torch.randn(z.shape, generator=gen).to(dev)
            inside = math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev - sigma**2)) * eps + sigma * noise
            outside = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
            return inside * smask + outside * (1 - smask)
        return math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev)) * eps

    lock = None
    if settings.background_lock > 0:
        cells = max(1, round(settings.lock_margin * max(z.shape[-2:])))
        free = F.max_pool2d(smask, 2 * cells + 1, stride=1, padding=cells)
        lock = (1 - free).clamp(0, 1)
    seconds = {"guided": 0.0, "plain": 0.0}
    attn = plan.attention if isinstance(plan.attention, CrossBranchAttention) else None
    for s in range(n):
        ts0 = time.time()
        for m in plan.memories:  # a recompute memory reruns the inversion's pass for this step
            ran = m.prepare(s, backend, kv=attn is not None and attn.active(s), features=settings.guided(s, n))
            if ran is not None:
                stats["forward_memory" if ran == "full" else "forward_memory_partial"] += 1
        reps = settings.repeats(s, n)
        for r in range(reps):
            z_prev = step_once(s, z)
            if r < reps - 1:  # time travel: back to t_s by one deterministic inversion step
                ab_t, ab_prev = pairs[s]
                t_prev = ts[s + 1] if s + 1 < n else 0
                e = backend.predict_eps(z_prev, t_prev, cond, step=-1, branch="cond")
                stats["forward"] += 1
                stats["renoise"] += 1
                z = ddim_inversion_step(z_prev, e, ab_prev, ab_t)
        z = z_prev.detach()
        if lock is not None and s < settings.background_lock * n:
            z = z * (1 - lock) + traj.latents[s + 1].to(dev, z.dtype) * lock
        if plan.copy is not None and s < settings.copy_until * n:
            z = plan.copy.apply(z, s + 1)
        seconds["guided" if settings.guided(s, n) else "plain"] += time.time() - ts0
        if callback is not None:
            callback(s, z)
    stats["seconds"] = round(time.time() - t0, 3)
    stats["cpu_seconds"] = round(time.process_time() - c0, 3)  # this process's CPU time: robust to a shared machine
    stats["seconds_guided"] = round(seconds["guided"], 3)
    stats["seconds_plain"] = round(seconds["plain"], 3)
    fraction = cost.known_fraction(backend, z, top) or 1.0
    stats["partial_fraction"] = round(fraction, 4)
    stats["forward_equiv"] = round(cost.forward_equivalents(stats, fraction), 3)
    stats["memory_bytes"] = memory.nbytes()["total"]  # a recompute memory: with the step it holds
    for m in plan.memories:
        m.release()
    inv = memory.info
    if "forward" in inv:
        stats["inversion_forward"] = inv["forward"]
        stats["seconds_inversion"] = inv.get("seconds", 0.0)
    stats.update(cost.peak_stats(dev))
    return EditResult(z, stats)


def edit_image(backend: Backend, memory: FeatureMemory, edit: Edit, cond: Any, uncond: Any,
               settings: EditSettings | None = None, callback: Callable[[int, torch.Tensor], None] | None = None
               ) -> EditResult:
    """Plan and run ``edit`` on the image whose inversion is ``memory``."""
    settings = settings or default_settings(edit.kind)
    plan = plan_edit(edit, memory, settings)
    res = run_edit(backend, memory, plan, cond, uncond, settings, callback)
    res.stats["kind"] = edit.kind
    return res


def with_overrides(settings: EditSettings, **kw: Any) -> EditSettings:
    """A copy of ``settings`` with the given non-None fields replaced."""
    return replace(settings, **{k: v for k, v in kw.items() if v is not None})
