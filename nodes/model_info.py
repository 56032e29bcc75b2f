"""Facts about a ComfyUI MODEL that the nodes need (no tensors are changed here).

* :func:`model_identity`: which model (and which weight patches) made a memory,
  so an edit refuses a memory inverted with another model.
* :func:`edit_defaults`: the calibrated per-edit settings a model carries in its
  ``model_options`` (the shapes demo loader puts its config's there); models
  without them use the paper's Stable Diffusion settings.
"""

from __future__ import annotations

from typing import Any

DEFAULTS_KEY = "dragon_edit_defaults"


def model_identity(model: Any) -> str:
    """The base model object and its weight-patch state (LoRAs etc.) as a string."""
    return f"{type(model.model).__name__}@{id(model.model):x}/{getattr(model, 'patches_uuid', '')}"


def edit_defaults(model: Any) -> dict[str, dict[str, Any]] | None:
    """Per-edit setting overrides carried by the MODEL, or None (paper defaults)."""
    return model.model_options.get(DEFAULTS_KEY)


def check_sd_unet(model: Any, node: str) -> None:
    """Refuse models the method does not fit (DiT / flow models) with a clear message."""
    unet = getattr(model.model, "diffusion_model", None)
    if unet is None or not all(hasattr(unet, a) for a in ("input_blocks", "middle_block", "output_blocks")):
        raise ValueError(
            f"{node}: DragonDiffusion needs a UNet diffusion model (Stable Diffusion 1.x/2.x style); this MODEL is "
            f"{type(model.model).__name__} with a {type(unet).__name__} (DiT/flow models such as SD3 or Flux are "
            f"not supported)")
