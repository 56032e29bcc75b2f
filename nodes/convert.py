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
            raise InputError(f"{name}: the mask contains NaN or infinity")
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


def region_error(e: RegionError | ValueError, node: str) -> InputError:
    """A core validation error as a node input error."""
    return InputError(f"{node}: {e}")
