"""DDIM inversion with feature-memory capture: LATENT -> inverted LATENT + DRAGON_MEMORY.

The memory (the core's :class:`FeatureMemory`) is recorded in the inversion's
own UNet passes: the latent trajectory, the decoder self-attention inputs
(``norm1(x)``, half the size of K and V; all of them for SD1.x/2.x, a budgeted
subset of SDXL's 10-deep blocks) and the two mid-decoder feature maps, layers
chosen by the structural rules of ``dragon_core.memory`` (docs/model-families.md, "Layer selection"),
fp16 on ComfyUI's offload device. One memory serves any number of edits
(the edit nodes and the sampler only read it), so there is no separate
"capture" node: capturing from an existing trajectory would need the same
UNet passes again.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from comfy_api.latest import io

from dragon_core.backend import min_latent_side
from dragon_core.memory import MAX_KV_LAYERS_PER_BLOCK, STORAGE, default_policy, invert_with_memory

from .comfy_backend import ComfyBackend
from .comfy_types import DragonMemory
from .convert import InputError, OutOfMemory, is_out_of_memory, latent_samples, named_errors
from .model_info import check_prompt, check_sd_unet, model_identity, pixels_per_latent
from .progress import progress_callback

SPACING = "comfy_uniform"  # ComfyUI's ddim_uniform timesteps (ends at sigma 0)
NODE = "DragonDiffusion Inversion"


class Inversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_Inversion",
            display_name="DragonDiffusion Inversion",
            category="DragonDiffusion",
            description="DDIM-invert an image and keep its memory (latent trajectory, decoder self-attention "
                        "inputs, decoder features) for DragonDiffusion edits. One memory can feed several edits.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (an SD1.x, SD2.x or SDXL UNet)."),
                io.Latent.Input("latent", tooltip="The image to edit, encoded with VAE Encode (one image)."),
                io.Conditioning.Input("positive", tooltip="A prompt describing the image (used for the inversion "
                                                          "and usually for the edit too)."),
                io.Int.Input("steps", default=50, min=2, max=1000,
                             tooltip="DDIM steps; the edit samples over the same steps (50 as in the paper)."),
                io.Int.Input("attention_per_block", default=MAX_KV_LAYERS_PER_BLOCK, min=0, max=64, optional=True,
                             tooltip="Self-attention layers remembered per decoder block (spread from first to "
                                     "last); 0 = all. SD1.x/2.x have one per block (all are kept); SDXL's 10-deep "
                                     "blocks make a full memory 1.8x larger (docs/model-families.md: SDXL memory)."),
                io.Combo.Input("storage", options=list(STORAGE), default="int8", optional=True,
                               tooltip="How the memory is kept. int8: per-channel int8, half of fp16 (changes "
                                       "edits far less than the seed does; docs/performance.md). fp16. "
                                       "recompute: keep only the latents and rerun each step's inversion pass "
                                       "during the edit (one more UNet pass per step, a few MiB instead of "
                                       "hundreds; not usable by the Cross-Branch Attention patch)."),
            ],
            outputs=[
                io.Latent.Output(display_name="inverted",
                                 tooltip="The inverted noise; KSamplerAdvanced (add_noise off, ddim, ddim_uniform, "
                                         "the same steps, CFG 1) turns it back into the image."),
                DragonMemory.Output(display_name="memory", tooltip="The inversion's memory, for edits."),
            ],
        )

    @classmethod
    @named_errors(NODE)
    def execute(cls, model, latent, positive, steps, attention_per_block=MAX_KV_LAYERS_PER_BLOCK,
                storage="int8") -> io.NodeOutput:
        import comfy.model_management as mm

        check_sd_unet(model, NODE)
        if storage not in STORAGE:
            raise InputError(f"storage: {storage!r} is not one of {', '.join(STORAGE)}")
        z = latent_samples(latent, "latent")
        channels = model.model.latent_format.latent_channels
        if z.shape[1] != channels:
            raise InputError(f"latent: {z.shape[1]} channels, this model's latents have {channels}; encode the "
                             f"image with this model's VAE")
        check_prompt(model, positive, "positive", NODE)
        # outside inference mode: the memory's tensors must be usable in the guidance's autograd graph
        try:
            with torch.inference_mode(False), torch.no_grad(), ComfyBackend(model) as backend:
                _check_size(model, backend, z)
                z0 = model.model.process_latent_in(z.detach().to(torch.float32).clone())
                # layers by the core's structural rules (dragon_core.memory): SD1.x/2.x every decoder
                # self-attention and output blocks 6, 9; SDXL a budgeted subset and output blocks 3, 6
                per_block = int(attention_per_block) or None  # 0: every decoder self-attention
                policy = default_policy(backend, per_block, device=mm.unet_offload_device(), **STORAGE[storage])
                memory = invert_with_memory(backend, z0.to(backend.device), positive, steps=steps, spacing=SPACING,
                                            policy=policy, model_id=model_identity(model),
                                            callback=progress_callback(steps))
                t_first = int(memory.trajectory.timesteps[0])
                sigma = backend.sigma(t_first)
                x_T = memory.trajectory.z_T.to(torch.float32).cpu() * math.sqrt(1 + sigma * sigma)
                inverted = model.model.process_latent_out(x_T)
                memory.info["feature_block_ids"] = {lv: backend.feature_block_ids()[lv]
                                                    for lv in policy.feature_levels}
                logging.info("%s: %s", NODE, memory.describe())
        except Exception as e:
            if not is_out_of_memory(e) or isinstance(e, OutOfMemory):
                raise
            h, w = z.shape[-2:]
            raise OutOfMemory(
                f"{NODE}: out of memory inverting a {w}x{h} latent with {steps} steps. The memory keeps the "
                f"decoder self-attention inputs and two feature maps of each step (on the offload device, "
                f"normally system RAM): use fewer steps or a smaller image, or free memory (unload other "
                f"models). ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
        return io.NodeOutput({"samples": inverted}, memory)


def _check_size(model: Any, backend: ComfyBackend, z: torch.Tensor) -> None:
    """InputError naming the image's pixel size when the latent is too small for the UNet."""
    need, (h, w) = min_latent_side(backend), z.shape[-2:]
    if min(h, w) < need:
        px = pixels_per_latent(model)
        raise InputError(f"latent: the image is {w * px}x{h * px} pixels; this model needs at least "
                         f"{need * px}x{need * px} (its UNet halves the latent {need.bit_length() - 1} times): "
                         f"use a larger image")


NODES = [Inversion]
