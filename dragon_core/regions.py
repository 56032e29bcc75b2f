"""Region maths for edits, as pure functions on torch tensors.

Masks are float tensors (H, W) in [0, 1] (soft masks allowed) in *image*
pixels; :func:`to_grid` brings them to a latent or feature grid. A geometric
edit is a :class:`Transform`: scale about a centre, then shift, in image pixels.
:func:`warp` moves a map (mask, feature, latent) by a transform on any grid,
so the same edit applies at every resolution.

Coordinates: x to the right, y down, pixel (x, y) covers [x, x+1) x [y, y+1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MASK_THRESHOLD = 0.5  # a soft mask value >= this counts as inside


class RegionError(ValueError):
    """An edit's region is unusable (empty, or leaves the image)."""


@dataclass(frozen=True)
class Transform:
    """Scale by ``scale`` about ``(cx, cy)``, then shift by ``(dx, dy)``; image pixels."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    cx: float = 0.0
    cy: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dx", "dy", "scale", "cx", "cy"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale!r}")

    def apply(self, x: float, y: float) -> tuple[float, float]:
        """Where the point (x, y) goes."""
        return (self.cx + (x - self.cx) * self.scale + self.dx, self.cy + (y - self.cy) * self.scale + self.dy)

    @property
    def is_identity(self) -> bool:
        return self.dx == 0 and self.dy == 0 and self.scale == 1


def check_mask(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A (H, W) float mask in [0, 1] with at least one pixel inside; raises RegionError naming ``name``."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
        raise RegionError(f"{name} must be a 2-D (H, W) tensor, got {getattr(mask, 'shape', type(mask))}")
    m = mask.detach().float()
    if not torch.isfinite(m).all():
        raise RegionError(f"{name} contains NaN or infinite values")
    if m.min() < 0 or m.max() > 1:
        raise RegionError(f"{name} values must lie in [0, 1], got [{float(m.min()):.3g}, {float(m.max()):.3g}]")
    if not (m >= MASK_THRESHOLD).any():
        soft = f" (its largest value is {float(m.max()):.2g})" if m.max() > 0 else ""
        raise RegionError(f"{name} is empty: no pixel is >= {MASK_THRESHOLD}{soft}; paint the object to edit")
    return m


def centroid(mask: torch.Tensor) -> tuple[float, float]:
    """Centre of mass (x, y) of a (H, W) mask in pixel coordinates (pixel centres at +0.5)."""
    m = mask.float()
    total = float(m.sum())
    if total <= 0:
        raise RegionError("centroid of an empty mask")
    ys = torch.arange(m.shape[0], dtype=torch.float32) + 0.5
    xs = torch.arange(m.shape[1], dtype=torch.float32) + 0.5
    return float((m.sum(0) * xs).sum() / total), float((m.sum(1) * ys).sum() / total)


def bbox(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive end, of the pixels >= the threshold."""
    ys, xs = torch.nonzero(mask >= MASK_THRESHOLD, as_tuple=True)
    if ys.numel() == 0:
        raise RegionError("bounding box of an empty mask")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def to_grid(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A (H, W) image mask averaged onto an (h, w) grid (area-weighted, stays in [0, 1])."""
    m = mask.float()[None, None]
    if m.shape[-2:] == (h, w):
        return m[0, 0].clone()
    if m.shape[-2] % h == 0 and m.shape[-1] % w == 0:
        return F.adaptive_avg_pool2d(m, (h, w))[0, 0]
    return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)[0, 0]


def warp(x: torch.Tensor, t: Transform, image_size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Move map ``x`` ((..., h, w) on a grid covering an image of ``image_size`` = (H, W)
    pixels) by transform ``t``: out(p) = x(t^-1(p)); zero where nothing maps."""
    if t.is_identity:
        return x.clone()
    H, W = image_size
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w).float()  # every leading dim as a batch of 1-channel maps
    # output cell centres in image pixels, mapped back through the inverse transform
    ys = (torch.arange(h, dtype=torch.float32, device=x.device) + 0.5) * (H / h)
    xs = (torch.arange(w, dtype=torch.float32, device=x.device) + 0.5) * (W / w)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    sx = (gx - t.dx - t.cx) / t.scale + t.cx
    sy = (gy - t.dy - t.cy) / t.scale + t.cy
    grid = torch.stack([sx / W * 2 - 1, sy / H * 2 - 1], dim=-1)[None].expand(flat.shape[0], -1, -1, -1)
    out = F.grid_sample(flat, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.reshape(x.shape).to(x.dtype)


def transform_about_mask(mask: torch.Tensor, dx: float, dy: float, scale: float = 1.0) -> Transform:
    """The move/resize of a masked object: scale about the centre of the mask's
    bounding box (the object's centre, whatever its shape), then shift."""
    x0, y0, x1, y1 = bbox(mask)
    return Transform(dx=float(dx), dy=float(dy), scale=float(scale), cx=(x0 + x1) / 2, cy=(y0 + y1) / 2)


def outside_fraction(mask: torch.Tensor, t: Transform) -> float:
    """The fraction of the mask's weight that transform ``t`` moves outside the image.

    Exact for the mask read as constant on each pixel: pixel [x, x+1) lands on
    [t(x), t(x) + scale), and the part of it inside [0, W) counts as kept (separably in x, y).
    Independent of resampling, so a shrunk object is never reported as leaving."""
    m = mask.float()
    total = float(m.sum())
    if total <= 0:
        return 0.0
    H, W = m.shape

    def inside(n: int, d: float, c: float) -> torch.Tensor:
        a = c + (torch.arange(n, dtype=torch.float64) - c) * t.scale + d
        return ((a + t.scale).clamp(max=n) - a.clamp(min=0)).clamp(min=0) / t.scale

    kept = float((m.double() * inside(H, t.dy, t.cy)[:, None] * inside(W, t.dx, t.cx)[None, :]).sum())
    return max(0.0, 1.0 - kept / total)


MIN_KEPT = 0.01  # a move or resize that keeps less than this share of the object inside is refused


def moved_mask(mask: torch.Tensor, t: Transform, name: str = "mask") -> torch.Tensor:
    """The mask after transform ``t`` (image grid); the part that leaves the image is cropped
    away, as a user expects of a move past the frame. Raises RegionError only when (almost)
    nothing of the object would remain: under ``MIN_KEPT`` of it inside the image."""
    out = warp(mask.float(), t, tuple(mask.shape), mode="bilinear").clamp(0, 1)
    if 1.0 - outside_fraction(mask, t) < MIN_KEPT:
        x0, y0, x1, y1 = bbox(mask)
        nx0, ny0 = t.apply(x0, y0)
        nx1, ny1 = t.apply(x1, y1)
        raise RegionError(
            f"{name}: the edited object would leave the image entirely (its box would span x {nx0:.0f}..{nx1:.0f}, "
            f"y {ny0:.0f}..{ny1:.0f} in a {mask.shape[1]}x{mask.shape[0]} image): reduce dx/dy or scale")
    return out


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow a (h, w) mask by ``radius`` cells (max filter)."""
    if radius <= 0:
        return mask.clone()
    k = 2 * radius + 1
    return F.max_pool2d(mask.float()[None, None], k, stride=1, padding=radius)[0, 0]


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Shrink a (h, w) mask by ``radius`` cells (min filter; the image border does not erode)."""
    if radius <= 0:
        return mask.clone()
    k = 2 * radius + 1
    return -F.max_pool2d(-mask.float()[None, None], k, stride=1, padding=radius)[0, 0]


def point_patch(points: torch.Tensor, h: int, w: int, image_size: tuple[int, int], radius: int = 1) -> torch.Tensor:
    """Grid indices of the (2r+1)^2 patches around ``points`` ((P, 2) x, y in image
    pixels) on an (h, w) grid, clipped to the grid: long (P, (2r+1)^2, 2) as (row, col)."""
    H, W = image_size
    cols = (points[:, 0].float() * w / W).floor().long()
    rows = (points[:, 1].float() * h / H).floor().long()
    off = torch.arange(-radius, radius + 1)
    dy, dx = torch.meshgrid(off, off, indexing="ij")
    r = (rows[:, None] + dy.reshape(1, -1)).clamp(0, h - 1)
    c = (cols[:, None] + dx.reshape(1, -1)).clamp(0, w - 1)
    return torch.stack([r, c], dim=-1)


def grid_mask(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bool (h, w): cells at least half covered by ``mask``; any-coverage if that is empty."""
    g = to_grid(mask.float(), h, w)
    m = g >= MASK_THRESHOLD
    return m if m.any() else g > 0


def on_grid(h: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A (1, C, h, w) feature map resized (nearest) to the energy grid -> (C, gh, gw)."""
    if h.ndim != 4 or h.shape[0] != 1:
        raise ValueError(f"features must be (1, C, h, w), got {tuple(h.shape)}")
    if tuple(h.shape[-2:]) != tuple(grid):
        h = F.interpolate(h, size=grid, mode="nearest")
    return h[0]


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


def region_mean(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel mean of ``z`` (1, C, h, w) under ``mask`` (1, 1, h, w) -> (1, C, 1, 1)."""
    m = mask.to(z.dtype)
    return (z * m).sum(dim=(2, 3), keepdim=True) / m.sum().clamp_min(1.0)


def check_points(points: torch.Tensor, image_size: tuple[int, int], name: str = "points") -> torch.Tensor:
    """(P, 2) finite points inside the image; raises RegionError naming ``name``."""
    if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != 2:
        raise RegionError(f"{name} must be a (P, 2) tensor of x, y pixel coordinates")
    if points.shape[0] == 0:
        raise RegionError(f"{name}: no points given")
    p = points.float()
    if not torch.isfinite(p).all():
        raise RegionError(f"{name} contains NaN or infinite coordinates")
    H, W = image_size
    bad = (p[:, 0] < 0) | (p[:, 0] >= W) | (p[:, 1] < 0) | (p[:, 1] >= H)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise RegionError(f"{name}[{i}] = ({float(p[i, 0]):g}, {float(p[i, 1]):g}) is outside the {W}x{H} image "
                          f"(points are its pixels: 0 <= x < {W}, 0 <= y < {H})")
    return p


MAX_POINT_PAIRS = 1000


def _number(v: object, name: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise RegionError(f"{name}: {where} {v!r} is not a number")
    try:
        x = float(v)
    except ValueError:
        raise RegionError(f"{name}: {where} {v!r} is not a number") from None
    if not math.isfinite(x):
        raise RegionError(f"{name}: {where} {v!r} is NaN or infinity")
    return x


def _json_points(text: str, name: str) -> list[list[float]]:
    """A JSON list of points ({"x": .., "y": ..} as KJNodes' PointsEditor writes, or
    [x, y]), read as consecutive handle, target pairs."""
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RegionError(f"{name}: looks like JSON but does not parse ({e.msg} at character {e.pos})") from None
    if not isinstance(data, list):
        raise RegionError(f"{name}: JSON points must be a list of {{\"x\": .., \"y\": ..}} or [x, y] items")
    pts = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and "x" in item and "y" in item:
            xy = (item["x"], item["y"])
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            xy = tuple(item)
        else:
            raise RegionError(f"{name}: JSON point {i + 1} {item!r} is neither {{\"x\": .., \"y\": ..}} nor [x, y]")
        pts.append([_number(v, name, f"JSON point {i + 1} coordinate") for v in xy])
    if len(pts) % 2:
        raise RegionError(f"{name}: {len(pts)} JSON points is an odd count; points pair up as handle, target, "
                          f"handle, target, ...")
    return [pts[i] + pts[i + 1] for i in range(0, len(pts), 2)]


def parse_points(text: str, name: str = "points") -> tuple[torch.Tensor, torch.Tensor]:
    """Handle/target pairs in image pixels -> (handles, targets), each (P, 2).

    Accepts ``"x1,y1,x2,y2;..."`` (one pair per ``;`` or line) or a JSON list of
    points (``[{"x": 10, "y": 12}, ...]`` as KJNodes' PointsEditor writes, or
    ``[[10, 12], ...]``) read as consecutive handle, target pairs. At most
    ``MAX_POINT_PAIRS`` pairs. Raises RegionError naming ``name`` for anything else;
    the string is parsed, never evaluated.
    """
    if not isinstance(text, str):
        raise RegionError(f"{name}: expected a string of points, got {type(text).__name__}")
    if text.lstrip().startswith(("[", "{")):
        rows = _json_points(text, name)
    else:
        pairs = [p.strip() for p in text.replace("\n", ";").split(";") if p.strip()]
        rows = []
        for i, p in enumerate(pairs):
            parts = [v.strip() for v in p.split(",")]
            if len(parts) != 4:
                raise RegionError(f"{name}: pair {i + 1} {p!r} has {len(parts)} numbers, expected 4 (x1,y1,x2,y2)")
            rows.append([_number(v, name, f"pair {i + 1} value") for v in parts])
    if not rows:
        raise RegionError(f"{name}: no points given; write 'x1,y1,x2,y2' per handle/target pair, ';' between pairs")
    if len(rows) > MAX_POINT_PAIRS:
        raise RegionError(f"{name}: {len(rows)} handle/target pairs ({2 * len(rows)} points), at most "
                          f"{MAX_POINT_PAIRS} pairs are supported: drag fewer points")
    t = torch.tensor(rows, dtype=torch.float32)
    return t[:, :2].contiguous(), t[:, 2:].contiguous()
