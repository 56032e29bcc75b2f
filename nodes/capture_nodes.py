"""Generate an image and keep its feature memory: edit what you just made, without inversion.

``DragonDiff_CaptureSample`` samples a new image from the MODEL, prompts and seed with
deterministic DDIM (classifier-free guidance, ComfyUI's ``ddim_uniform`` timesteps)
and records the DRAGON_MEMORY in the same UNet passes (``dragon_core.capture``): the
same memory type the Inversion node outputs, so every edit node and the Guided
Sampler take it. No inversion pass, no inversion error: the Guided Sampler with no
edit, at the same cfg, gives this image back.

The starting noise is ComfyUI's for the seed (``comfy.sample.prepare_noise`` on an
empty latent of the size, scaled as ComfyUI's samplers scale it), so the image is
the one KSampler gives with sampler ``ddim``, scheduler ``ddim_uniform``, the same
seed, steps and cfg (for step counts that divide 1000: 10, 20, 25, 40, 50, ...;
ComfyUI's ddim_uniform runs one more step for most others).
"""

from __future__ import annotations

import logging
import math

import torch
from comfy_api.latest import io

from dragon_core.backend import min_latent_side
from dragon_core.capture import sample_with_memory
from dragon_core.memory import MAX_KV_LAYERS_PER_BLOCK, STORAGE, default_policy
from dragon_core.schedule import ddim_timesteps

from .comfy_backend import ComfyBackend
from .comfy_types import DragonMemory
from .convert import InputError, OutOfMemory, is_out_of_memory, named_errors
from .model_info import check_prompt, check_sd_unet, model_identity, pixels_per_latent
from .progress import progress_callback

SPACING = "comfy_uniform"  # ComfyUI's ddim_uniform timesteps (ends at sigma 0), as the Inversion node
NODE = "DragonDiffusion Generate with Memory"


def start_noise(model, backend: ComfyBackend, width: int, height: int, seed: int, steps: int) -> torch.Tensor:
    """z_T in the core's DDPM terms (process_latent_in space): ComfyUI's noise for ``seed`` on an
    empty latent, scaled at the first ddim_uniform sigma as KSampler scales it."""
    import comfy.sample

    px = pixels_per_latent(model)
    c = model.model.latent_format.latent_channels
    empty = torch.zeros(1, c, height // px, width // px)
    noise = comfy.sample.prepare_noise(empty, int(seed))
    ms = model.get_model_object("model_sampling")
    sigma = backend.sigma(int(ddim_timesteps(steps, len(backend.alphas_cumprod), SPACING)[0]))
    max_denoise = math.isclose(float(ms.sigma_max), sigma, rel_tol=1e-5) or sigma > float(ms.sigma_max)
    x_T = ms.noise_scaling(torch.tensor([sigma]), noise, model.model.process_latent_in(empty), max_denoise)
    return x_T / math.sqrt(1.0 + sigma * sigma)


class CaptureSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_CaptureSample",
            display_name="DragonDiffusion Generate with Memory",
            category="DragonDiffusion",
            description="Generate an image (DDIM, ddim_uniform: KSampler's image for the same seed, steps and cfg) "
                        "and keep its memory for DragonDiffusion edits, recorded in the same passes: no inversion "
                        "needed. Give the Guided Sampler the same cfg to keep what the edit does not touch.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (an SD1.x, SD2.x or SDXL UNet)."),
                io.Conditioning.Input("positive", tooltip="The prompt (usually the edit's prompt too)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt for classifier-free guidance."),
                io.Int.Input("width", default=512, min=8, max=8192, step=8,
                             tooltip="Image width in pixels (SD1.5: 512; the shapes demo model: 32)."),
                io.Int.Input("height", default=512, min=8, max=8192, step=8, tooltip="Image height in pixels."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="The noise seed (ComfyUI's noise: KSampler's image for this seed)."),
                io.Int.Input("steps", default=20, min=2, max=1000,
                             tooltip="DDIM steps; the edit samples over the same steps."),
                io.Float.Input("cfg", default=4.0, min=1.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance scale. The memory keeps both guidance branches: "
                                       "an edit at this cfg reproduces the image where it does not change it."),
                io.Int.Input("attention_per_block", default=MAX_KV_LAYERS_PER_BLOCK, min=0, max=64, optional=True,
                             tooltip="Self-attention layers remembered per decoder block, as in the Inversion "
                                     "node; 0 = all."),
                io.Combo.Input("storage", options=list(STORAGE), default="int8", optional=True,
                               tooltip="How the memory is kept, as in the Inversion node (recompute: rerun each "
                                       "step's generation passes during the edit instead of storing them)."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The generated image (VAE Decode it)."),
                DragonMemory.Output(display_name="memory", tooltip="Its memory, for edits (like the Inversion "
                                                                   "node's)."),
            ],
        )

    @classmethod
    @named_errors(NODE)
    def execute(cls, model, positive, negative, width, height, seed, steps, cfg,
                attention_per_block=MAX_KV_LAYERS_PER_BLOCK, storage="int8") -> io.NodeOutput:
        import comfy.model_management as mm

        check_sd_unet(model, NODE)
        if storage not in STORAGE:
            raise InputError(f"storage: {storage!r} is not one of {', '.join(STORAGE)}")
        if not math.isfinite(cfg) or cfg < 1.0:
            raise InputError(f"cfg: {cfg} is not a guidance scale (1 or more)")
        px = pixels_per_latent(model)
        if width % px or height % px:
            raise InputError(f"width/height: {width}x{height} is not a multiple of {px} pixels (one latent cell of "
                             f"this model): use e.g. {width // px * px}x{height // px * px}")
        check_prompt(model, positive, "positive", NODE)
        check_prompt(model, negative, "negative", NODE)
        try:  # outside inference mode: the memory's tensors enter the edit's autograd graph
            with torch.inference_mode(False), torch.no_grad(), ComfyBackend(model) as backend:
                need = min_latent_side(backend) * px
                if min(width, height) < need:
                    raise InputError(f"width/height: {width}x{height} pixels; this model needs at least {need}x{need} "
                                     f"(its UNet halves the latent {min_latent_side(backend).bit_length() - 1} times)")
                z_T = start_noise(model, backend, width, height, seed, steps)
                policy = default_policy(backend, int(attention_per_block) or None, device=mm.unet_offload_device(),
                                        **STORAGE[storage])
                memory = sample_with_memory(backend, z_T.to(backend.device), positive, negative, steps=steps, cfg=cfg,
                                            spacing=SPACING, policy=policy, model_id=model_identity(model),
                                            seed=int(seed), callback=progress_callback(steps))
                memory.info["feature_block_ids"] = {lv: backend.feature_block_ids()[lv]
                                                    for lv in policy.feature_levels}
                latent = model.model.process_latent_out(memory.trajectory.z_0.to("cpu", torch.float32))
                logging.info("%s: %s", NODE, memory.describe())
        except Exception as e:
            if not is_out_of_memory(e) or isinstance(e, OutOfMemory):
                raise
            raise OutOfMemory(
                f"{NODE}: out of memory generating {width}x{height} with {steps} steps. The memory keeps the decoder "
                f"self-attention inputs (both guidance branches) and two feature maps of each step: use fewer steps, "
                f"a smaller image, storage 'recompute', or free memory. ({str(e).splitlines()[0] if str(e) else ''})"
            ) from e
        return io.NodeOutput({"samples": latent}, memory)


NODES = [CaptureSample]
