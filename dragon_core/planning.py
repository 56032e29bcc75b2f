"""Plans: what the sampler needs for one edit, made by one small planner per edit kind.

:func:`plan_edit` checks the memory, works out the grids, and hands the edit to the
planner for its kind (:data:`PLANNERS`). A planner returns the start latent, the
cross-branch attention, the energy (features of the current pass -> edit and
content energies) and the masks that route the energy gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from . import energies as en
from .attention import CrossBranchAttention
from .backend import UNetHooks
from .edits import Appearance, Drag, Edit, Move, Paste
from .memory import FeatureMemory
from .regions import (RegionError, Transform, erode, grid_mask, moved_mask, on_grid, point_patch, points_box,
                      region_mean, warp)
from .settings import DEFAULT_ATTENTION, EditSettings

Energy = Callable[[list[torch.Tensor], int], tuple[torch.Tensor, torch.Tensor]]


class Copy:
    """Latent cells under ``mask`` (1, 1, h, w) taken from another inversion trajectory
    (the base moved by the edit, or a pasted source): ``at(i)`` is that trajectory's
    latent ``i`` (the input of sampling step ``i``) moved into place."""

    def __init__(self, latents: torch.Tensor, mask: torch.Tensor, move: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.latents, self.mask, self.move = latents, mask, move

    def at(self, i: int) -> torch.Tensor:
        return self.move(self.latents[i].float())

    def apply(self, z: torch.Tensor, i: int) -> torch.Tensor:
        return torch.where(self.mask.to(z.device), self.at(i).to(z.device, z.dtype), z)


@dataclass
class Plan:
    """What the sampler needs for one edit."""

    kind: str
    start_latent: torch.Tensor
    attention: UNetHooks | None
    grad_mask: torch.Tensor  # (1, 1, h, w) latent grid: where the edit gradient applies
    sde_mask: torch.Tensor  # (1, 1, h, w): where flexibility noise goes and the background lock does not
    energy: Energy
    grid: tuple[int, int]  # the energy grid the features are compared on
    copy: Copy | None = None  # the start-latent copy, for copy_start / copy_until
    memories: tuple[FeatureMemory, ...] = ()  # every memory the edit reads (prepared per step if recomputed)


class Features:
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


@dataclass
class Context:
    """What every planner shares: the base memory, its start latent, the grids, the settings."""

    memory: FeatureMemory
    settings: EditSettings
    image_size: tuple[int, int]
    latent: tuple[int, int]  # (lh, lw)
    grid: tuple[int, int]  # (gh, gw) energy grid
    ref: Features  # the base image's own features

    @property
    def z_T(self) -> torch.Tensor:
        return self.memory.trajectory.z_T

    def attention(self, kind: str, **masked: Any) -> CrossBranchAttention | None:
        s = self.settings
        if not s.attention:
            return None
        mode = s.attention_mode or DEFAULT_ATTENTION[kind]
        return CrossBranchAttention(self.memory, mode, s.attention_start, s.attention_end, **masked)

    def features(self, memory: FeatureMemory, transform: Transform | None = None) -> Features:
        return Features(memory, self.memory.policy.feature_levels, self.grid, transform, self.image_size)


# The vacated-area noise's random stream is ``seed + VACATED_STREAM``: the sampler's regional-SDE
# noise draws from ``seed`` itself, and the two must not be the same numbers.
VACATED_STREAM = 0x5DEECE66D


def fresh_noise(z: torch.Tensor, where: torch.Tensor, seed: int) -> torch.Tensor:
    """``z`` with unit Gaussian noise (seeded, a stream of its own) in the cells ``where`` (h, w):
    the marginal of the last timestep's latent, carrying nothing of what the inversion saw there."""
    gen = torch.Generator().manual_seed((int(seed) + VACATED_STREAM) % 2**63)
    noise = torch.randn(z.shape, generator=gen, dtype=torch.float32)
    return torch.where(where.to(z.device)[None, None], noise.to(z.device, z.dtype), z)


def plan_move(edit: Move, c: Context) -> Plan:
    s, (gh, gw), (lh, lw) = c.settings, c.grid, c.latent
    t = edit.transform()
    mask = edit.mask.float()
    new = moved_mask(mask, t)
    m_org, m_cur = grid_mask(mask, gh, gw), grid_mask(new, gh, gw)
    region = None if edit.inpaint_region is None else grid_mask(edit.inpaint_region, gh, gw)
    lat_new, lat_org = grid_mask(new, lh, lw), grid_mask(mask, lh, lw)
    copy = Copy(c.memory.trajectory.latents, lat_new[None, None], lambda z: warp(z, t, c.image_size, mode="nearest"))
    start = copy.apply(c.z_T, 0) if s.copy_start else c.z_T
    if s.vacated_noise:
        start = fresh_noise(start, lat_org & ~lat_new, s.seed)
    ref_moved = c.features(c.memory, t)

    def energy(cur: list[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        dev, dt = cur[0].device, cur[0].dtype
        return en.move_energy(cur, c.ref.at(step, dev, dt), ref_moved.at(step, dev, dt), m_cur.to(dev),
                              m_org.to(dev), None if region is None else region.to(dev),
                              s.w_edit, s.w_content, s.w_contrast, s.w_inpaint)

    return Plan("move", start.clone(), c.attention("move"), lat_new[None, None], (lat_new | lat_org)[None, None],
                energy, c.grid, copy)


def plan_drag(edit: Drag, c: Context) -> Plan:
    """Drag and point sets: patches at the targets match the handles' patches."""
    s, (gh, gw), (lh, lw), size = c.settings, c.grid, c.latent, c.image_size
    hp = point_patch(edit.handles, gh, gw, size)
    tp = point_patch(edit.targets, gh, gw, size)
    mask = edit.mask
    if mask is None and s.point_region > 0:  # no mask given: the points' box, grown, may change
        mask = points_box(torch.cat([edit.handles, edit.targets]), size, s.point_region)
    keep = None if mask is None else ~grid_mask(mask, gh, gw)
    z_T = c.z_T
    start = z_T.clone()
    if s.copy_start:  # each target's latent patch starts as its handle's
        lhp = point_patch(edit.handles, lh, lw, size)
        ltp = point_patch(edit.targets, lh, lw, size)
        start[..., ltp[..., 0], ltp[..., 1]] = z_T[..., lhp[..., 0], lhp[..., 1]]
    region = torch.ones(1, 1, lh, lw, dtype=torch.bool) if mask is None else grid_mask(mask, lh, lw)[None, None]

    def energy(cur: list[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        dev = cur[0].device
        return en.drag_energy(cur, c.ref.at(step, dev, cur[0].dtype), hp.to(dev), tp.to(dev),
                              None if keep is None else keep.to(dev), s.w_edit, s.w_content, s.w_contrast)

    return Plan(edit.kind, start, c.attention(edit.kind), region, region, energy, c.grid)


def plan_appearance(edit: Appearance, c: Context) -> Plan:
    s, (gh, gw), (lh, lw) = c.settings, c.grid, c.latent
    check_memory(edit.reference, "reference")
    same_run(c.memory, edit.reference, "reference")
    m_base, m_ref = grid_mask(edit.mask, gh, gw), grid_mask(edit.reference_mask, gh, gw)
    if s.reference_interior:  # the reference's mean feature without its boundary (its shape)
        inner = erode(m_ref.float(), 1) > 0.5
        m_ref = inner if inner.any() else m_ref
    other = c.features(edit.reference)
    lat = grid_mask(edit.mask, lh, lw)[None, None]

    def energy(cur: list[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        dev, dt = cur[0].device, cur[0].dtype
        return en.appearance_energy(cur, c.ref.at(step, dev, dt), other.at(step, dev, dt), m_base.to(dev),
                                    m_ref.to(dev), s.w_edit, s.w_content)

    attn = c.attention("appearance", region=edit.mask.float(), second=edit.reference,
                       second_region=edit.reference_mask.float())
    start = c.z_T.clone()
    if s.appearance_start:  # the region's latent mean moved towards the reference object's
        ref_lat = grid_mask(edit.reference_mask, lh, lw)[None, None]
        shift = region_mean(edit.reference.trajectory.z_T, ref_lat) - region_mean(c.z_T, lat)
        start = start + s.appearance_start * shift * lat
    return Plan("appearance", start, attn, lat, lat, energy, c.grid)


def plan_paste(edit: Paste, c: Context) -> Plan:
    s, (gh, gw), (lh, lw) = c.settings, c.grid, c.latent
    check_memory(edit.source, "source")
    same_run(c.memory, edit.source, "source")
    t = edit.transform()
    dest = moved_mask(edit.mask.float(), t)
    m_base = grid_mask(dest, gh, gw)
    lat = grid_mask(dest, lh, lw)[None, None]
    src_moved = c.features(edit.source, t)
    copy = Copy(edit.source.trajectory.latents, lat, lambda z: warp(z, t, c.image_size, mode="nearest"))
    start = copy.apply(c.z_T, 0) if s.copy_start else c.z_T

    def energy(cur: list[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        dev, dt = cur[0].device, cur[0].dtype
        return en.paste_energy(cur, c.ref.at(step, dev, dt), src_moved.at(step, dev, dt), m_base.to(dev),
                               s.w_edit, s.w_content)

    attn = c.attention("paste", region=dest, second=edit.source, second_region=edit.mask.float())
    return Plan("paste", start.clone(), attn, lat, lat, energy, c.grid, copy)


PLANNERS: dict[str, Callable[[Any, Context], Plan]] = {
    "move": plan_move, "drag": plan_drag, "points": plan_drag, "appearance": plan_appearance, "paste": plan_paste,
}


def check_memory(memory: FeatureMemory, name: str) -> None:
    if memory.trajectory.z_0.shape[0] != 1:
        raise ValueError(f"{name}: edits need a memory of one image (batch 1), got batch {memory.trajectory.z_0.shape[0]}")
    if not memory.features and not memory.policy.recompute:
        raise ValueError(f"{name}: the memory holds no decoder features; invert with feature levels recorded")


def same_run(a: FeatureMemory, b: FeatureMemory, name: str) -> None:
    """``b`` (a reference or source memory) was made like the base memory ``a``."""
    if a.latent_shape != b.latent_shape:
        raise ValueError(f"{name} was inverted at latent size {b.latent_shape[-2:]}, the base image at "
                         f"{a.latent_shape[-2:]}: resize the reference to the base image's size")
    if not torch.equal(a.trajectory.timesteps, b.trajectory.timesteps):
        raise ValueError(f"{name} was inverted with {b.steps} steps, the base image with {a.steps}: use the same steps")
    if a.trajectory.spacing != b.trajectory.spacing:  # same grid, another last step
        raise ValueError(f"{name} was made with {b.trajectory.spacing!r} step spacing, the base image with "
                         f"{a.trajectory.spacing!r}: use the same sampling schedule")
    if a.model_id and b.model_id and a.model_id != b.model_id:
        raise ValueError(f"{name} was inverted with another model ({b.model_id!r} vs {a.model_id!r})")


@torch.inference_mode(False)
def plan_edit(edit: Edit, memory: FeatureMemory, settings: EditSettings) -> Plan:
    """Start latent, attention, energy and masks for ``edit`` on the image of ``memory``.

    Runs outside inference mode (ComfyUI calls nodes inside it): the plan's tensors
    enter the guidance's autograd graph, which inference tensors cannot."""
    planner = PLANNERS.get(getattr(edit, "kind", None))
    if planner is None:
        raise TypeError(f"not an edit: {type(edit).__name__}")
    check_memory(memory, "memory")
    lh, lw = memory.trajectory.z_T.shape[-2:]
    size = tuple(edit.image_size) if isinstance(edit, Drag) else tuple(edit.mask.shape)
    if size[0] % lh or size[1] % lw or size[0] // lh != size[1] // lw:
        raise RegionError(f"the mask/image is {size[1]}x{size[0]} pixels but the latent is {lw}x{lh}: "
                          f"the image must be the one that was inverted")
    grid = (max(1, round(lh * settings.feature_scale)), max(1, round(lw * settings.feature_scale)))
    ref = Features(memory, memory.policy.feature_levels, grid)
    plan = planner(edit, Context(memory, settings, size, (lh, lw), grid, ref))
    second = getattr(edit, "reference", None) or getattr(edit, "source", None)
    return replace(plan, memories=(memory,) if second is None else (memory, second))
