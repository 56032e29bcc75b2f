"""Random edits of shapes-world scenes with their ground truth: the re-rendered target.

The benchmark, the demo and the tests draw their cases here: moving, resizing,
recolouring (appearance) or pasting an object's *data* and rendering again gives
the exact target image of the edit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dragon_demo.shapes_world import COLOURS, Scene, ShapeObject, random_scene


def fits(obj: ShapeObject, size: int, margin: float = 0.0) -> bool:
    """Whether the object's extent lies inside the image (with ``margin`` pixels)."""
    x0, y0, x1, y1 = obj.bbox
    return x0 >= margin and y0 >= margin and x1 <= size - margin and y1 <= size - margin


def random_move(rng: np.random.Generator, scene: Scene, index: int, min_dist: float = 4.0) -> tuple[float, float]:
    """An integer (dx, dy) that keeps object ``index`` inside the image and moves it at least ``min_dist``."""
    o = scene._object(index)  # same IndexError as Scene.moved (also rejects negative indices)
    for _ in range(200):
        dx, dy = (float(v) for v in rng.integers(-scene.size // 2, scene.size // 2 + 1, size=2))
        if math.hypot(dx, dy) >= min_dist and fits(dataclasses.replace(o, cx=o.cx + dx, cy=o.cy + dy), scene.size, 1):
            return dx, dy
    raise ValueError(f"object {index} has no room to move by {min_dist} px or more")


EDIT_KINDS: tuple[str, ...] = ("move", "resize", "appearance", "paste")


@dataclass(frozen=True)
class EditCase:
    """An edit with its ground truth: the source scene, the edit's parameters,
    an optional reference scene (appearance, paste) and the target scene."""

    kind: str
    scene: Scene
    target: Scene
    index: int  # edited object in ``scene`` (for paste: the pasted object's index in ``target``)
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    reference: Scene | None = None
    ref_index: int = -1  # object of ``reference`` that gives the appearance / is pasted

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "object": self.index, "dx": self.dx, "dy": self.dy, "scale": self.scale,
                "reference_object": self.ref_index}


def random_edit_case(
    seed: int | Sequence[int],
    kind: str,
    size: int = 32,
    index: int | None = None,
    dx: float | None = None,
    dy: float | None = None,
    scale: float | None = None,
) -> EditCase:
    """A random edit of ``kind`` on the scene ``random_scene(seed)`` with its ground truth.

    Unset parameters are drawn from ``seed`` too: integer moves that keep the
    object inside, scales in [0.7, 1.4] that fit; for appearance and paste a
    reference scene is drawn from the same seed stream.
    """
    if kind not in EDIT_KINDS:
        raise ValueError(f"edit kind must be one of {EDIT_KINDS}, got {kind!r}")
    rng = np.random.default_rng(seed)
    scene = random_scene(rng, size)
    if index is None:
        index = int(rng.integers(len(scene.objects)))
    obj = scene._object(index)
    if kind == "move":
        if dx is None or dy is None:
            dx, dy = random_move(rng, scene, index)
        return EditCase(kind, scene, scene.moved(index, dx, dy), index, dx=float(dx), dy=float(dy))
    if kind == "resize":
        if scale is None:
            for _ in range(200):
                scale = float(rng.choice([rng.uniform(0.7, 0.85), rng.uniform(1.2, 1.4)]))
                if fits(dataclasses.replace(obj, size=obj.size * scale), size, 1):
                    break
            else:
                scale = 0.75
        return EditCase(kind, scene, scene.resized(index, scale), index, scale=float(scale))
    reference = random_scene(rng, size)
    if kind == "appearance":
        choices = [j for j, o in enumerate(reference.objects) if o.colour != obj.colour]
        if not choices:
            reference = dataclasses.replace(reference, objects=(dataclasses.replace(
                reference.objects[0], colour=next(c for c in COLOURS if c != obj.colour)),) + reference.objects[1:])
            choices = [0]
        j = int(choices[int(rng.integers(len(choices)))])
        return EditCase(kind, scene, scene.recoloured(index, reference.objects[j].colour), index,
                        reference=reference, ref_index=j)
    # paste: an object of the reference scene, placed where it fits in the base scene
    j = int(rng.integers(len(reference.objects)))
    src = reference.objects[j]
    scale = 1.0 if scale is None else float(scale)
    r = src.size * scale
    if dx is None or dy is None:
        cx = float(rng.uniform(r + 1, size - r - 1))
        cy = float(rng.uniform(r + 1, size - r - 1))
        dx, dy = cx - src.cx, cy - src.cy
    target = scene.pasted(src, src.cx + dx, src.cy + dy, scale)
    return EditCase(kind, scene, target, len(target.objects) - 1, dx=float(dx), dy=float(dy), scale=scale,
                    reference=reference, ref_index=j)
