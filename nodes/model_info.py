"""Facts about a ComfyUI MODEL that the nodes need (no tensors are changed here).

* :func:`model_identity`: which model (and which weight patches) made a memory,
  so an edit refuses a memory inverted with another model.
* :func:`edit_defaults`: the calibrated per-edit settings a model carries in its
  ``model_options`` (the shapes demo loader puts its config's there); models
  without them use the paper's Stable Diffusion settings.
* :func:`pixels_per_latent`: image pixels per latent cell (8 for Stable
  Diffusion's VAEs, 1 for a pixel-space model), to check that masks and points
  are at the inverted image's size.
* :func:`is_sd_unet`, :func:`schedule_problem`, :func:`check_conditioning`: whether
  the method (and the backend, ``comfy_backend``) can serve a diffusion model, a
  noise schedule and a CONDITIONING.
* :func:`check_sd_unet`, :func:`check_prompt`: refuse models and conditioning the
  method cannot serve, with messages naming the node and the input.
"""

from __future__ import annotations

from typing import Any

import torch

from .convert import InputError

DEFAULTS_KEY = "dragon_edit_defaults"
SD_UNET_PARTS = ("input_blocks", "middle_block", "output_blocks")
UNSUPPORTED_COND_KEYS = ("area", "mask", "control", "gligen", "hooks")


def model_identity(model: Any) -> str:
    """The base model object, its weight-patch state (LoRAs etc.) and its noise schedule
    object (sampling patches such as ModelSamplingDiscrete replace it) as a string."""
    sampling = model.get_model_object("model_sampling") if hasattr(model, "get_model_object") else None
    return (f"{type(model.model).__name__}@{id(model.model):x}/{getattr(model, 'patches_uuid', '')}"
            f"/{id(sampling):x}")


def edit_defaults(model: Any) -> dict[str, dict[str, Any]] | None:
    """Per-edit setting overrides carried by the MODEL, or None (paper defaults)."""
    return model.model_options.get(DEFAULTS_KEY)


def is_sd_unet(unet: Any) -> bool:
    """Whether a MODEL's diffusion model (``model.model.diffusion_model``, None when it has
    none) is an SD-style UNet: input, middle and output blocks (not a DiT / flow model)."""
    return unet is not None and all(hasattr(unet, a) for a in SD_UNET_PARTS)


def check_sd_unet(model: Any, node: str) -> None:
    """Refuse models the method does not fit (DiT / flow models) with a clear message."""
    unet = getattr(model.model, "diffusion_model", None)
    if not is_sd_unet(unet):
        raise InputError(
            f"{node}: model: DragonDiffusion needs a UNet diffusion model (Stable Diffusion 1.x/2.x/XL style); this "
            f"MODEL is {type(model.model).__name__}, whose diffusion model is a {type(unet).__name__}: DiT/flow "
            f"models such as SD3 or Flux are not supported")
    problem = schedule_problem(model)
    if problem:
        raise InputError(f"{node}: model: {problem}")


# DDIM inversion ends at the schedule's last timestep: with alpha_bar(T) below this (sigma above
# ~1000) the inverted latent keeps no trace of the image and the first sampling step divides by ~0.
MIN_TERMINAL_ALPHA_BAR = 1e-6


def schedule_problem(model: Any) -> str | None:
    """Why this MODEL's noise schedule does not fit DDIM inversion, or None.

    Needs ComfyUI's discrete DDPM sampling (``ModelSamplingDiscrete``) with an
    epsilon-parameterised k-diffusion prediction (eps, v-prediction or x0: ComfyUI turns
    each into the denoised output, from which the backend computes eps); refuses
    flow/CONST sampling, continuous EDM schedules and zero-terminal-SNR schedules
    (``zsnr`` checkpoints, ModelSamplingDiscrete's zsnr option), whose last timestep
    has alpha_bar ~ 0."""
    import comfy.model_sampling as ms_mod

    ms = model.get_model_object("model_sampling")
    kind = type(ms).__name__
    bases = ", ".join(b.__name__ for b in type(ms).__mro__[1:3])
    if not isinstance(ms, ms_mod.ModelSamplingDiscrete) or not isinstance(ms, ms_mod.EPS) or \
            isinstance(ms, ms_mod.StableCascadeSampling):
        return (f"DragonDiffusion needs a discrete DDPM noise schedule with eps, v or x0 prediction (SD1.x, SD2.x, "
                f"SDXL); this model samples with {kind} ({bases})")
    sigma_max = float(ms.sigmas[-1])
    if getattr(ms, "zsnr", False) or 1.0 / (1.0 + sigma_max**2) < MIN_TERMINAL_ALPHA_BAR:
        return (f"this model's noise schedule has zero terminal SNR (sigma_max {sigma_max:.0f}): DDIM inversion to "
                f"its last timestep loses the image (alpha_bar ~ 0), so DragonDiffusion refuses it; use a model "
                f"(or a ModelSamplingDiscrete node) without zsnr")
    return None


def pixels_per_latent(model: Any) -> int:
    """Image pixels per latent cell along each side: 1 for a pixel-space model (3-channel
    RGB "latents", like the shapes demo model's ChromaRadiance format), else 8 (the VAEs of
    every SD-style UNet model ComfyUI loads: SD1.x, SD2.x, SDXL)."""
    return 1 if model.model.latent_format.latent_channels == 3 else 8


def check_conditioning(cond: Any) -> None:
    """Refuse a CONDITIONING the backend cannot honour exactly (see ``comfy_backend``'s module
    doc): TypeError if it is not one, ValueError naming what is unsupported."""
    if not isinstance(cond, (list, tuple)) or not cond or not all(
            isinstance(e, (list, tuple)) and len(e) == 2 and isinstance(e[0], torch.Tensor) and isinstance(e[1], dict)
            for e in cond):
        raise TypeError("cond must be a ComfyUI CONDITIONING ([[tensor, dict], ...]) or a context tensor")
    if len(cond) != 1:
        raise ValueError(f"DragonDiffusion takes one conditioning entry per prompt, got {len(cond)} "
                         f"(combined/concatenated conditioning is not supported)")
    opts = cond[0][1]
    bad = [k for k in UNSUPPORTED_COND_KEYS if opts.get(k) is not None]
    if opts.get("start_percent", 0.0) > 0.0 or opts.get("end_percent", 1.0) < 1.0:
        bad.append("a timestep range")  # outside it ComfyUI's batch would return no prediction at all
    if bad:
        raise ValueError(f"DragonDiffusion does not support conditioning with {', '.join(bad)} yet")


def check_prompt(model: Any, cond: Any, name: str, node: str) -> None:
    """A CONDITIONING this model's cross-attention takes, as one entry the method supports."""
    try:
        check_conditioning(cond)
    except (TypeError, ValueError) as e:
        raise InputError(f"{node}: {name}: {e}") from None
    if cond[0][0].ndim == 3 and cond[0][0].shape[0] != 1:  # ComfyUI would silently use the first one
        raise InputError(f"{node}: {name}: a batch of {cond[0][0].shape[0]} prompts; DragonDiffusion edits one image "
                         f"with one prompt")
    width = int(cond[0][0].shape[-1])
    want = getattr(model.model, "model_config", None)
    want = None if want is None else want.unet_config.get("context_dim")
    if want is not None and width != int(want):
        raise InputError(f"{node}: {name}: this prompt was encoded into {width}-wide tokens, this model's "
                         f"cross-attention takes {want}: encode the prompt with this model's own text encoder (the "
                         f"CLIP of the same checkpoint)")
