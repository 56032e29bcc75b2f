"""ComfyUI values <-> the core's tensors, with errors that name the node input.

Pure torch (no ComfyUI import), so these are unit-tested in the plain suite.
Copies are made outside inference mode: ComfyUI runs nodes under
``torch.inference_mode()``, and an inference tensor that reaches the guidance's
autograd graph fails the backward pass. ComfyUI's MASK is (B, H, W) or (H, W) in [0, 1]; IMAGE is (B, H, W, C) in
[0, 1]; a LATENT is a dict whose "samples" is (B, C, h, w). Nothing here
modifies its inputs (ComfyUI caches node outputs and hands the same tensors to
other nodes).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from dragon_core.regions import RegionError


class InputError(ValueError):
    """A node input is unusable; the message names the input and the fix."""


def single_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    """A ComfyUI MASK as one (H, W) float32 map in [0, 1] (a copy)."""
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"{name}: expected a MASK, got {type(mask).__name__}")
    m = mask
    if m.ndim == 3:
        if m.shape[0] != 1:
            raise InputError(f"{name}: a batch of {m.shape[0]} masks; these edits take one mask (use one image)")
        m = m[0]
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise InputError(f"{name}: expected a (H, W) or (1, H, W) mask, got shape {tuple(mask.shape)}")
    with torch.inference_mode(False):
        m = m.detach().to("cpu", torch.float32).clone()
        if not torch.isfinite(m).all():
            raise InputError(f"{name} contains NaN or infinite values: check the node that made it")
        return m.clamp(0, 1)


def image_size(image: torch.Tensor, name: str) -> tuple[int, int]:
    """(H, W) of a ComfyUI IMAGE of one picture."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise InputError(f"{name}: expected an IMAGE (B, H, W, C), got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    if image.shape[0] != 1:
        raise InputError(f"{name}: a batch of {image.shape[0]} images; these edits take one image")
    return int(image.shape[1]), int(image.shape[2])


def latent_samples(latent: dict, name: str) -> torch.Tensor:
    """The (1, C, h, w) tensor of a ComfyUI LATENT of one picture."""
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise InputError(f"{name}: expected a LATENT (a dict with 'samples'), got {type(latent).__name__}")
    z = latent["samples"]
    if z.ndim != 4:
        raise InputError(f"{name}: expected latents (B, C, h, w), got shape {tuple(z.shape)} (video latents are "
                         f"not supported)")
    if z.shape[0] != 1:
        raise InputError(f"{name}: a batch of {z.shape[0]} latents; DragonDiffusion edits one image at a time "
                         f"(split the batch, e.g. with LatentFromBatch)")
    if not torch.isfinite(z).all():
        raise InputError(f"{name}: the latent contains NaN or infinity")
    return z


def named_errors(node: str, aliases: dict[str, str] | None = None) -> Callable:
    """Decorator for a node's ``execute``: every ValueError it raises (InputError, the
    core's RegionError and validation errors) reaches ComfyUI as an InputError whose
    message starts with the node's name, then the input. ``aliases`` renames a
    message's first word to the node input it came from (the core says "handles",
    the node's input is "points").

    Validation errors are raised ``from None`` (no traceback from inside the core);
    any other ValueError keeps its cause for the server log."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def execute(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ValueError as e:
                msg = str(e)
                for word, name in (aliases or {}).items():
                    if msg.startswith(word):
                        msg = f"{name}: {msg}"
                if not msg.startswith(node):
                    msg = f"{node}: {msg}"
                if isinstance(e, (InputError, RegionError)):
                    raise InputError(msg) from None
                raise InputError(msg) from e

        return execute

    return decorate


def check_frame(size: tuple[int, int], latent_hw: tuple[int, int], factor: int, what: str, image: str) -> None:
    """An edit's pixel frame ``size`` (H, W) must be the inverted image: the latent's
    (h, w) times the model's pixels per latent cell ``factor``.

    ``what`` names the edit's mask or image, ``image`` the memory whose image it must
    match. A size that VAE Encode would have cropped to the latent gets that fix."""
    H, W = size
    h, w = latent_hw
    if (H, W) == (h * factor, w * factor):
        return
    word = what.split()[-1]
    fix = "use the image that was inverted" if word == "image" else f"make the {word} on the image that was inverted"
    if factor > 1 and (H // factor, W // factor) == (h, w):
        fix = (f"VAE Encode cropped that image to {w * factor}x{h * factor} (a multiple of {factor}): crop or "
               f"resize the image to a multiple of {factor} before VAE Encode and make the mask/points on it")
    raise InputError(f"{what} is {W}x{H} pixels, but {image} is {w * factor}x{h * factor} (its latent is {w}x{h}, "
                     f"{factor} pixel{'s' if factor > 1 else ''} per cell): {fix}")


class OutOfMemory(torch.OutOfMemoryError):
    """Out of memory in a node, with what to change. A ``torch.OutOfMemoryError``, so
    ComfyUI's executor treats it as one (it unloads models and adds its own tips)."""


def is_out_of_memory(e: BaseException) -> bool:
    """True for torch's OOM error and the CPU allocator's failure (a plain RuntimeError)."""
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


# -- selections drawn in the canvas editor --------------------------------------------------------------
# The Move / Resize and Paste nodes' ``selection`` and the Drag node's ``region``: shapes in image
# pixels, one per ';' or line, applied in order ('-' removes): "box x0,y0,x1,y1" (between pixel
# edges), "poly x,y x,y x,y ..." (a lasso: pixels whose centre is inside, nonzero winding),
# "brush r x,y x,y ..." (pixels whose centre is within r of the stroke). web/selection.js reads
# and rasterises the same strings to the same pixels (tests/test_web_selection.py holds them to it).

MAX_SELECTION_SHAPES = 500
MAX_SELECTION_POINTS = 20000  # x,y points in all shapes together
MAX_SELECTION_COORD = 1e6  # |value| in pixels


def _quote(text: str, limit: int = 20) -> str:
    return f"'{text[:limit]}...'" if len(text) > limit else f"'{text}'"


def _selection_values(tokens: list[str], name: str, where: str) -> list[float]:
    import math
    import re

    number = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)  # = web/selection.js NUMBER
    values = []
    for tok in tokens:
        if not number.fullmatch(tok):
            raise InputError(f"{name}: {where} value {_quote(tok)} is not a number")
        v = float(tok)
        if not (math.isfinite(v) and abs(v) <= MAX_SELECTION_COORD):
            raise InputError(f"{name}: {where} value {_quote(tok)} is out of range (-1000000..1000000)")
        values.append(v)
    return values


def parse_selection(text: str, name: str = "selection") -> list[tuple[str, bool, tuple[float, ...]]]:
    """A selection string -> [(kind, subtract, values), ...]; empty text is no shapes.

    Parsed, never evaluated; InputError naming ``name`` (the node input) and the shape for
    anything else."""
    import re

    if not isinstance(text, str):
        raise InputError(f"{name}: expected a string, got {type(text).__name__}")
    shapes, points = [], 0
    for seg in re.split(r"[;\n]", text):
        tokens = [t for t in re.split(r"[ \t\r,]+", seg) if t]
        if not tokens:
            continue
        where = f"shape {len(shapes) + 1}"
        head = re.fullmatch(r"([+-]?)(box|poly|brush)", tokens[0])
        if head is None:
            raise InputError(f"{name}: {where} starts with {_quote(tokens[0])}, expected box, poly or brush "
                             f"(e.g. 'box 10,20,110,90')")
        kind, n = head.group(2), len(tokens) - 1
        where = f"{where} ({kind})"
        if kind == "box" and n != 4:
            raise InputError(f"{name}: {where} has {n} numbers, expected 4: box x0,y0,x1,y1")
        if kind == "poly" and (n < 6 or n % 2):
            raise InputError(f"{name}: {where} has {n} numbers, expected x,y of 3 or more points: poly x,y x,y x,y ...")
        if kind == "brush" and (n < 3 or n % 2 == 0):
            raise InputError(f"{name}: {where} has {n} numbers, expected the radius, then x,y of 1 or more points: "
                             f"brush r x,y x,y ...")
        values = _selection_values(tokens[1:], name, where)
        if kind == "brush" and values[0] <= 0:
            raise InputError(f"{name}: {where} radius {_quote(tokens[1])} must be above 0")
        shapes.append((kind, head.group(1) == "-", tuple(values)))
        points += n // 2
        if len(shapes) > MAX_SELECTION_SHAPES:
            raise InputError(f"{name}: more than {MAX_SELECTION_SHAPES} shapes: clear the selection and draw it again")
        if points > MAX_SELECTION_POINTS:
            raise InputError(f"{name}: more than {MAX_SELECTION_POINTS} points in all: clear the selection and draw "
                             f"it with fewer strokes")
    return shapes


def _span(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Pixels i in [0, n) whose centre i + 0.5 lies in [lo, hi): (first, end)."""
    import math

    first = max(0, math.ceil(lo - 0.5))
    return first, max(first, min(n, math.ceil(hi - 0.5)))


def _fill_poly(out, v: tuple[float, ...], value: bool) -> None:
    """Scanline fill, nonzero winding, of pixel centres (same arithmetic as web/selection.js)."""
    import numpy as np

    h, w = out.shape
    xs, ys = np.array(v[0::2]), np.array(v[1::2])
    xa, ya, xb, yb = xs, ys, np.roll(xs, -1), np.roll(ys, -1)
    y_first, y_end = _span(float(ys.min()), float(ys.max()), h)
    for y in range(y_first, y_end):
        yc = y + 0.5
        cut = (ya <= yc) != (yb <= yc)
        if not cut.any():
            continue
        cx = xa[cut] + (yc - ya[cut]) * (xb[cut] - xa[cut]) / (yb[cut] - ya[cut])
        up = np.where(yb[cut] > ya[cut], 1, -1)
        order = np.argsort(cx, kind="stable")
        cx, up = cx[order], up[order]
        winding = 0
        for i in range(len(cx) - 1):
            winding += int(up[i])
            if winding:
                x0, x1 = _span(float(cx[i]), float(cx[i + 1]), w)
                out[y, x0:x1] = value


def _fill_brush(out, v: tuple[float, ...], value: bool) -> None:
    """Pixel centres within r of the polyline (same arithmetic as web/selection.js)."""
    import math

    import numpy as np

    h, w = out.shape
    r, pts = v[0], list(zip(v[1::2], v[2::2]))
    segments = list(zip(pts, pts[1:])) or [(pts[0], pts[0])]
    for (xa, ya), (xb, yb) in segments:
        x0, x1 = max(0, math.floor(min(xa, xb) - r - 0.5)), min(w, math.ceil(max(xa, xb) + r - 0.5) + 1)
        y0, y1 = max(0, math.floor(min(ya, yb) - r - 0.5)), min(h, math.ceil(max(ya, yb) + r - 0.5) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        xc = (np.arange(x0, x1) + 0.5)[None, :]
        yc = (np.arange(y0, y1) + 0.5)[:, None]
        dx, dy = xb - xa, yb - ya
        length2 = dx * dx + dy * dy
        t = np.clip(((xc - xa) * dx + (yc - ya) * dy) / length2, 0, 1) if length2 > 0 else np.zeros((1, 1))
        ex, ey = xc - (xa + t * dx), yc - (ya + t * dy)
        inside = ex * ex + ey * ey <= r * r
        region = out[y0:y1, x0:x1]
        region[inside] = value


def selection_mask(shapes: list, size: tuple[int, int], name: str = "selection") -> torch.Tensor:
    """Shapes from ``parse_selection`` -> an (H, W) float32 mask of 0 / 1 at ``size`` (H, W);
    InputError when they select no pixel."""
    import numpy as np

    h, w = size
    out = np.zeros((h, w), dtype=bool)
    for kind, subtract, v in shapes:
        if kind == "box":
            x0, x1 = _span(min(v[0], v[2]), max(v[0], v[2]), w)
            y0, y1 = _span(min(v[1], v[3]), max(v[1], v[3]), h)
            out[y0:y1, x0:x1] = not subtract
        elif kind == "poly":
            _fill_poly(out, v, not subtract)
        else:
            _fill_brush(out, v, not subtract)
    if not out.any():
        raise InputError(f"{name} selects no pixel of the {w}x{h} image: draw it on the picture in the node's editor")
    return torch.from_numpy(out.astype(np.float32))
