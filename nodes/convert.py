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
