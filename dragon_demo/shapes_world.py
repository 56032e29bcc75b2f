"""The shapes world: a seeded procedural scene generator with exact ground truth.

Why it exists: no Stable Diffusion weights can be downloaded here, so the project
trains its own small SD-architecture model on these scenes and scores every edit
against a re-rendered target. It ships with the demo model (numpy only, no
torch): the model's prompt vocabulary is this world's, and the ComfyUI demo
loader draws its input scene from it. Edits with their ground truth, which only
the lab needs, are in ``dragon_lab.edit_cases``.

A scene is plain data (:class:`Scene`): a background and 1-3 objects painted in
order. Objects carry a little shading (lit from the top-left) and cast a soft
shadow toward the bottom-right, so copying an object's mask alone is not a
correct edit: the shadow stays behind and the hole needs the background.
Editing the *data* (``moved``, ``resized``, ``recoloured``, ``pasted``) and
rendering again gives the ground-truth target of an edit.

Coordinates are in output pixels, x to the right, y down; pixel (x, y) covers
[x, x+1) x [y, y+1), so its centre is (x + 0.5, y + 0.5).
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "diamond")
BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "texture")
# Saturated, clearly distinct colours (linear-ish RGB in [0, 1]); backgrounds are
# kept at low saturation so an object's colour never appears in its background.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.14, 0.12),
    "green": (0.16, 0.68, 0.22),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.94, 0.84, 0.14),
    "magenta": (0.84, 0.18, 0.80),
    "cyan": (0.12, 0.78, 0.84),
    "orange": (0.96, 0.50, 0.08),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

SUPERSAMPLE = 4  # sub-pixel samples per axis for anti-aliased coverage
SHADING = 0.14  # brightness change across an object, lit from the top-left
SHADOW_OFFSET = 1.0 / 16.0  # shadow offset as a fraction of the image side (down-right)
SHADOW_BLUR = 1.0 / 32.0  # shadow blur sigma as a fraction of the image side
SHADOW_STRENGTH = 0.5  # fraction of light removed under a full shadow
MASK_THRESHOLD = 0.5  # a pixel belongs to an object when its coverage is >= this


@dataclass(frozen=True)
class ShapeObject:
    """One object: its shape, palette colour, centre (pixels) and half-extent (pixels)."""

    shape: str
    colour: str
    cx: float
    cy: float
    size: float

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.colour not in PALETTE:
            raise ValueError(f"colour must be one of {COLOURS}, got {self.colour!r}")
        if not (self.size > 0 and math.isfinite(self.size)):
            raise ValueError(f"size must be a positive finite number, got {self.size!r}")
        if not (math.isfinite(self.cx) and math.isfinite(self.cy)):
            raise ValueError(f"centre must be finite, got ({self.cx!r}, {self.cy!r})")

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the shape's extent in pixels (unclipped)."""
        return (self.cx - self.size, self.cy - self.size, self.cx + self.size, self.cy + self.size)


@dataclass(frozen=True)
class Background:
    """Background: ``flat`` (colour a), ``gradient`` (a to b along ``angle``) or
    ``texture`` (a/b mixed by a sum of low-frequency waves given in ``waves`` as
    (fx, fy, phase) triples, frequencies in cycles per image)."""

    kind: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    angle: float = 0.0
    waves: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in BACKGROUNDS:
            raise ValueError(f"background kind must be one of {BACKGROUNDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Scene:
    """A background and objects painted in order (later objects on top)."""

    size: int
    background: Background
    objects: tuple[ShapeObject, ...]

    # -- edits: each returns a new scene, the ground truth of that edit --------
    def moved(self, index: int, dx: float, dy: float) -> "Scene":
        """The scene with object ``index`` moved by (dx, dy) pixels."""
        o = self._object(index)
        return self._replace(index, dataclasses.replace(o, cx=o.cx + dx, cy=o.cy + dy))

    def resized(self, index: int, scale: float) -> "Scene":
        """The scene with object ``index`` scaled by ``scale`` about its centre."""
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        o = self._object(index)
        return self._replace(index, dataclasses.replace(o, size=o.size * scale))

    def recoloured(self, index: int, colour: str) -> "Scene":
        """The scene with object ``index`` given another palette colour (appearance edit)."""
        o = self._object(index)
        return self._replace(index, dataclasses.replace(o, colour=colour))

    def pasted(self, obj: ShapeObject, cx: float, cy: float, scale: float = 1.0) -> "Scene":
        """The scene with ``obj`` (e.g. from another scene) painted on top at (cx, cy)."""
        new = dataclasses.replace(obj, cx=cx, cy=cy, size=obj.size * scale)
        return dataclasses.replace(self, objects=self.objects + (new,))

    def _object(self, index: int) -> ShapeObject:
        if not 0 <= index < len(self.objects):
            raise IndexError(f"object index {index} out of range: scene has {len(self.objects)} objects")
        return self.objects[index]

    def _replace(self, index: int, obj: ShapeObject) -> "Scene":
        objs = list(self.objects)
        objs[index] = obj
        return dataclasses.replace(self, objects=tuple(objs))

    # -- rendering --------------------------------------------------------------
    def render(self) -> np.ndarray:
        """The image as float32 (H, W, 3) in [0, 1]."""
        return render(self)

    def masks(self) -> list[np.ndarray]:
        """Visible mask of every object (bool (H, W)), occlusion by later objects removed."""
        return visible_masks(self)

    def shape_mask(self, index: int) -> np.ndarray:
        """Full (unoccluded) mask of object ``index`` as bool (H, W)."""
        return coverage(self._object(index), self.size) >= MASK_THRESHOLD

    def prompt(self) -> str:
        """The scene's prompt in the shapes vocabulary, e.g. ``"gradient, red disc, blue square"``."""
        return ", ".join([self.background.kind] + [f"{o.colour} {o.shape}" for o in self.objects])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: background, and per object shape/colour/centre/size/bbox."""
        return {
            "size": self.size,
            "prompt": self.prompt(),
            "background": dataclasses.asdict(self.background),
            "objects": [
                {
                    "shape": o.shape,
                    "colour": o.colour,
                    "centre": [o.cx, o.cy],
                    "size": o.size,
                    "bbox": list(o.bbox),
                }
                for o in self.objects
            ],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Scene":
        """Inverse of :meth:`to_dict`."""
        bg = d["background"]
        background = Background(
            kind=bg["kind"],
            a=tuple(bg["a"]),
            b=tuple(bg["b"]),
            angle=float(bg.get("angle", 0.0)),
            waves=tuple(tuple(w) for w in bg.get("waves", ())),
        )
        objects = tuple(
            ShapeObject(o["shape"], o["colour"], float(o["centre"][0]), float(o["centre"][1]), float(o["size"]))
            for o in d["objects"]
        )
        return Scene(int(d["size"]), background, objects)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# -- geometry -------------------------------------------------------------------


def _grid(size: int, ss: int) -> tuple[np.ndarray, np.ndarray]:
    # float64 so that X - cx is not computed against a float32-rounded centre: with
    # float32, a sample lying exactly on an edge could fall either side after a move.
    c = (np.arange(size * ss, dtype=np.float64) + 0.5) / ss
    return c[None, :], c[:, None]  # X (1, N), Y (N, 1): broadcast to (N, N)


def _inside(obj: ShapeObject, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    u, v, r = X - obj.cx, Y - obj.cy, obj.size
    if obj.shape == "disc":
        return u * u + v * v <= r * r
    if obj.shape == "square":
        return (np.abs(u) <= r) & (np.abs(v) <= r)
    if obj.shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    # triangle, apex up: base at cy + r, apex at cy - r, base width 2r
    return (v <= r) & (np.abs(u) <= (v + r) / 2.0)


def coverage(obj: ShapeObject, size: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel covered by ``obj`` (float32 (size, size)), by supersampling."""
    X, Y = _grid(size, ss)
    inside = _inside(obj, X, Y).astype(np.float32)
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def _shift_blur(a: np.ndarray, dx: float, dy: float, sigma: float) -> np.ndarray:
    """``a`` shifted by (dx, dy) pixels and blurred by a Gaussian, zero outside.

    Separable: out = My @ a @ Mx.T with M[i, j] = g(i - j - shift), g a Gaussian
    normalised over all integer offsets, so nothing is lost except past the border.
    """
    n = a.shape[0]
    d = np.arange(n, dtype=np.float32)[:, None] - np.arange(n, dtype=np.float32)[None, :]
    k = np.arange(-4 * n, 4 * n + 1, dtype=np.float32)

    def matrix(shift: float) -> np.ndarray:
        norm = np.exp(-0.5 * ((k - shift) / sigma) ** 2).sum()
        return np.exp(-0.5 * ((d - shift) / sigma) ** 2) / norm

    return matrix(dy) @ a @ matrix(dx).T


def _background(bg: Background, size: int) -> np.ndarray:
    x = (np.arange(size, dtype=np.float32) + 0.5) / size
    X, Y = np.meshgrid(x, x)
    if bg.kind == "flat":
        t = np.zeros_like(X)
    elif bg.kind == "gradient":
        t = (X - 0.5) * math.cos(bg.angle) + (Y - 0.5) * math.sin(bg.angle)
        t = np.clip(t / 0.75 + 0.5, 0.0, 1.0)
    else:
        s = np.zeros_like(X)
        for fx, fy, ph in bg.waves:
            s += np.sin(2 * math.pi * (fx * X + fy * Y) + ph)
        t = 0.5 + 0.5 * s / max(1, len(bg.waves))
    a, b = np.asarray(bg.a, np.float32), np.asarray(bg.b, np.float32)
    return a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]


def _object_colour(obj: ShapeObject, size: int) -> np.ndarray:
    # float64 here, float32 out: in float32, obj.cx - X rounds differently once the
    # object is moved, so a moved object's pixels were 1 ulp off its shifted pixels.
    x = np.arange(size, dtype=np.float64) + 0.5
    X, Y = np.meshgrid(x, x)
    # lit from the top-left: brighter toward (-x, -y)
    shade = 1.0 + SHADING * ((obj.cx - X) + (obj.cy - Y)) / (2.0 * obj.size)
    shade = np.clip(shade, 1.0 - SHADING, 1.0 + SHADING)
    colour = np.asarray(PALETTE[obj.colour], np.float64)[None, None, :] * shade[..., None]
    return np.clip(colour, 0.0, 1.0).astype(np.float32)


def render(scene: Scene) -> np.ndarray:
    """Paint the background, then each object: first its shadow darkens what is
    already painted, then the object is composited with its anti-aliased coverage."""
    n = scene.size
    img = _background(scene.background, n)
    off, sigma = SHADOW_OFFSET * n, SHADOW_BLUR * n
    for obj in scene.objects:
        cov = coverage(obj, n)
        shadow = _shift_blur(cov, off, off, sigma)
        img = img * (1.0 - SHADOW_STRENGTH * np.clip(shadow, 0, 1))[..., None]
        img = img * (1.0 - cov[..., None]) + _object_colour(obj, n) * cov[..., None]
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def visible_masks(scene: Scene) -> list[np.ndarray]:
    """Per object, the pixels where it is the top-most object with coverage >= 0.5."""
    full = [coverage(o, scene.size) >= MASK_THRESHOLD for o in scene.objects]
    out = []
    for i, m in enumerate(full):
        vis = m.copy()
        for later in full[i + 1 :]:
            vis &= ~later
        out.append(vis)
    return out


# -- random scenes ---------------------------------------------------------------


def _muted(rng: np.random.Generator) -> tuple[float, float, float]:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.03, 0.28), rng.uniform(0.30, 0.85)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def random_background(rng: np.random.Generator) -> Background:
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    a, b = _muted(rng), _muted(rng)
    if kind == "flat":
        return Background("flat", a, a)
    if kind == "gradient":
        return Background("gradient", a, b, angle=float(rng.uniform(0, 2 * math.pi)))
    waves = tuple(
        (float(rng.uniform(-2.5, 2.5)), float(rng.uniform(-2.5, 2.5)), float(rng.uniform(0, 2 * math.pi)))
        for _ in range(3)
    )
    return Background("texture", a, b, waves=waves)


def random_object(
    rng: np.random.Generator, size: int, colour: str | None = None, min_frac: float = 0.13, max_frac: float = 0.27
) -> ShapeObject:
    """A random object fully inside the image (1 px margin), half-extent in [min_frac, max_frac] * size."""
    r = float(rng.uniform(min_frac, max_frac) * size)
    lo, hi = r + 1.0, size - r - 1.0
    return ShapeObject(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=colour if colour is not None else COLOURS[int(rng.integers(len(COLOURS)))],
        cx=float(rng.uniform(lo, hi)),
        cy=float(rng.uniform(lo, hi)),
        size=r,
    )


def random_scene(
    rng: np.random.Generator | int, size: int = 32, n_objects: int | None = None, max_tries: int = 100
) -> Scene:
    """A random scene: 1-3 objects in distinct colours, overlapping at most partly
    (centres at least 0.6 x the sum of half-extents apart), all inside the image."""
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if n_objects is None:
        n_objects = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    if not 1 <= n_objects <= 3:
        raise ValueError(f"n_objects must be 1..3, got {n_objects}")
    colours = rng.permutation(len(COLOURS))[:n_objects]
    objects: list[ShapeObject] = []
    for c in colours:
        for _ in range(max_tries):
            o = random_object(rng, size, COLOURS[int(c)])
            if all(math.hypot(o.cx - p.cx, o.cy - p.cy) >= 0.6 * (o.size + p.size) for p in objects):
                objects.append(o)
                break
    return Scene(size, random_background(rng), tuple(objects))


def random_batch(seed: Sequence[int] | int, n: int, size: int = 32) -> tuple[np.ndarray, list[Scene]]:
    """``n`` scenes from one seed: images float32 (n, H, W, 3) and the scenes."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, size) for _ in range(n)]
    return np.stack([s.render() for s in scenes]), scenes
