"""Edits as plain data: masks in image pixels, points, offsets, scales, and any second memory.

Each edit is validated on construction (a :class:`~dragon_core.regions.RegionError`
or ``ValueError`` that names the input); :mod:`dragon_core.planning` turns one into
what the sampler needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .memory import FeatureMemory
from .regions import RegionError, Transform, check_mask, check_points, moved_mask, transform_about_mask

EDIT_KINDS = ("move", "drag", "points", "appearance", "paste")


def _object_transform(mask: torch.Tensor, dx: float, dy: float, scale: float) -> Transform:
    """Scale about the object's box centre, then shift; RegionError if it leaves the image."""
    t = transform_about_mask(mask.float(), dx, dy, scale)
    moved_mask(mask.float(), t, "mask")
    return t


def _check_scale(scale: float) -> None:
    if not 0.1 <= scale <= 10:
        raise ValueError(f"scale must be in 0.1..10, got {scale!r}")


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
