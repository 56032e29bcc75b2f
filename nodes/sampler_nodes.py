"""The correspondence-guidance sampler and the cross-branch attention model patch.

* ``DragonDiff_GuidedSampler`` runs a DRAGON_EDIT on the image of a
  DRAGON_MEMORY: DDIM over the memory's steps with classifier-free guidance,
  energy gradients from the decoder features on the guided steps, and
  decoder self-attention reading the memory (cross-branch attention).
* ``DragonDiff_CrossBranchAttention`` patches a MODEL (a clone) so that ComfyUI's
  own samplers read the memory's self-attention keys/values: regeneration that
  keeps the original's content, without guidance.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from comfy_api.latest import io

from dragon_core.attention import CrossBranchAttention
from dragon_core.backend import AttnCall, LayerKey
from dragon_core.planning import plan_edit
from dragon_core.sampler import run_edit
from dragon_core.settings import PRESETS, default_settings, describe, setting_warnings, with_overrides
from dragon_core.memory import FeatureMemory

from .comfy_backend import ComfyBackend, kv_inputs, row_branches
from .comfy_types import DragonEdit, DragonMemory
from .convert import InputError, OutOfMemory, check_frame, is_out_of_memory, named_errors
from .model_info import check_prompt, check_sd_unet, edit_defaults, model_identity, pixels_per_latent
from .peak_memory import PeakMemory
from .progress import progress_callback

AUTO = -1.0
DEFAULT_NOTE = ("-1 = the preset's default for this edit: with preset model, the paper's for Stable Diffusion and "
                "calibrated values for the shapes demo model; with preset paper, the paper's for every model. The "
                "values used are printed in the console.")
PRESET_NOTE = ("Where the -1 defaults come from. model: the paper's settings, then the model's calibrated ones (the "
               "shapes demo model carries them; Stable Diffusion has none, so it gets the paper's). paper: the "
               "official demo's values for every model (regional SDE, time travel, CFG, energy weights, guided "
               "steps).")
SAMPLER = "DragonDiffusion Guided Sampler"
ATTENTION_PATCH = "DragonDiffusion Cross-Branch Attention"
# the edit node input that holds each kind of second memory
SECOND_MEMORY = {"reference": "reference_memory", "source": "source_memory"}


def _auto(v: float) -> float | None:
    return None if v < 0 else float(v)


def check_memory_for(model: Any, memory: Any, name: str, node: str) -> FeatureMemory:
    """The memory, if it was made by this model (and its weight patches)."""
    if not isinstance(memory, FeatureMemory):
        raise InputError(f"{node}: {name} is not a DragonDiffusion memory ({type(memory).__name__})")
    if memory.model_id and memory.model_id != model_identity(model):
        raise InputError(f"{node}: {name} was inverted with another model (or other LoRA/weight or sampling "
                         f"patches); invert the image again with this MODEL")
    return memory


class GuidedSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_GuidedSampler",
            display_name="DragonDiffusion Guided Sampler",
            category="DragonDiffusion",
            description="Run a DragonDiffusion edit: DDIM sampling over the memory's steps with "
                        "feature-correspondence guidance and cross-branch self-attention. -1 on a setting means "
                        "the preset's default for this edit (preset model: calibrated values for the shapes demo "
                        "model, the paper's for Stable Diffusion; preset paper: the paper's for every model).",
            inputs=[
                io.Model.Input("model", tooltip="The model the memory was inverted with."),
                io.Conditioning.Input("positive", tooltip="The prompt for the edited image (usually the inversion's)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt for classifier-free guidance."),
                DragonMemory.Input("memory", tooltip="The base image's memory (DragonDiffusion Inversion)."),
                DragonEdit.Input("edit", tooltip="What to do (Move / Drag / Point-Set / Appearance / Paste)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the regional noise (used when flexibility > 0)."),
                io.Float.Input("cfg", default=AUTO, min=AUTO, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance scale. " + DEFAULT_NOTE),
                io.Float.Input("energy_scale", default=AUTO, min=AUTO, max=100000.0, step=1.0,
                               tooltip="Strength of the feature-correspondence guidance (0: none; far above the "
                                       "default the result turns to noise). " + DEFAULT_NOTE),
                io.Float.Input("guidance_end", default=AUTO, min=AUTO, max=1.0, step=0.01,
                               tooltip="Guide the steps before this fraction of the schedule (every step in the "
                                       "first 20%, then every other step; 0.6 in the paper). " + DEFAULT_NOTE),
                io.Float.Input("flexibility", default=AUTO, min=AUTO, max=1.0, step=0.05,
                               tooltip="Regional SDE noise in the edit region in the middle steps (DiffEditor); "
                                       "more lets the content change more. " + DEFAULT_NOTE),
                io.Boolean.Input("cross_attention", default=True,
                                 tooltip="Self-attention reads the memory's keys/values (keeps the original's look)."),
                # optional, so that API prompts written before it existed still run (with "model")
                io.Combo.Input("preset", options=list(PRESETS), default="model", optional=True, tooltip=PRESET_NOTE),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The edited image's latent (VAE Decode it).")],
        )

    @classmethod
    @named_errors(SAMPLER)
    def execute(cls, model, positive, negative, memory, edit, seed, cfg, energy_scale, guidance_end, flexibility,
                cross_attention, preset="model") -> io.NodeOutput:
        node = SAMPLER
        check_sd_unet(model, node)
        memory = check_memory_for(model, memory, "memory", node)
        kind = getattr(edit, "kind", None)
        if kind is None:
            raise InputError(f"{node}: edit is not a DragonDiffusion edit ({type(edit).__name__})")
        for name, value in (("cfg", cfg), ("energy_scale", energy_scale), ("guidance_end", guidance_end),
                            ("flexibility", flexibility)):
            if not math.isfinite(value):  # NaN passes ComfyUI's min/max validation
                raise InputError(f"{name}: {value} is not a number; -1 means the default")
        check_prompt(model, positive, "positive", node)
        check_prompt(model, negative, "negative", node)
        check_edit_for(edit, memory, model)
        default = default_settings(kind, edit_defaults(model), preset=preset)
        settings = with_overrides(default, cfg=_auto(cfg), energy_scale=_auto(energy_scale),
                                  guide_until=_auto(guidance_end), flexibility=_auto(flexibility), seed=int(seed),
                                  attention=bool(cross_attention))
        for line in setting_warnings(settings, default, memory.steps):
            logging.warning("%s: %s", SAMPLER, line)
        done = [-1]  # the last finished step, for the out-of-memory message
        progress = progress_callback(memory.steps)

        def step(s: int, z: torch.Tensor) -> None:
            done[0] = s
            progress(s, z)

        t0 = time.perf_counter()
        with torch.inference_mode(False):
            plan = plan_edit(edit, memory, settings)
            try:
                with ComfyBackend(model) as backend:
                    peak = PeakMemory(backend.device)
                    result = run_edit(backend, memory, plan, positive, negative, settings, step)
            except Exception as e:
                if not is_out_of_memory(e) or isinstance(e, OutOfMemory):
                    raise
                raise OutOfMemory(_oom_message(memory, settings, done[0] + 1, e)) from e
            samples = model.model.process_latent_out(result.latent.detach().to("cpu", torch.float32))
        note = peak.describe()
        logging.info("%s: %s edit, %s steps (%s guided passes), %s; %.1f s%s", SAMPLER, kind, memory.steps,
                     result.stats["guided_steps"], describe(settings, memory.steps, preset), time.perf_counter() - t0,
                     f"; {note}" if note else "")
        return io.NodeOutput({"samples": samples})


def _oom_message(memory: FeatureMemory, settings: Any, step: int, e: BaseException) -> str:
    n = memory.steps
    h, w = memory.latent_shape[-2:]
    guided = sum(settings.guided(s, n) for s in range(n))
    where = "a guided step" if step < n and settings.guided(step, n) else "an unguided step"
    cause = str(e).splitlines()[0] if str(e) else type(e).__name__
    return (f"{SAMPLER}: out of memory at step {step + 1} of {n} ({where}; {guided} of the {n} steps are guided) on a "
            f"{w}x{h} latent. Each guided step runs the UNet with gradients (activations kept for a backward pass), "
            f"several times the memory of a plain step: use a lower resolution "
            f"(a smaller image, inverted again) or fewer guided steps (guidance_end 0 runs none: cross-branch "
            f"attention only), or free memory (unload other models). ({cause})")


def _frame(edit: Any) -> tuple[tuple[int, int], str]:
    """The pixel size an edit's masks/points are given in, and what gave it."""
    if getattr(edit, "image_size", None) is not None:
        return tuple(edit.image_size), "its image"
    return tuple(edit.mask.shape), "its mask"


def check_edit_for(edit: Any, memory: FeatureMemory, model: Any) -> None:
    """The edit's masks/points are at the size of the image each memory was inverted from,
    and its second memory (appearance reference, pasted source) matches the base memory."""
    f = pixels_per_latent(model)
    size, what = _frame(edit)
    second = next((n for n in SECOND_MEMORY if getattr(edit, n, None) is not None), None)
    if second is None or edit.kind == "appearance":  # a paste's mask is in the source image
        check_frame(size, memory.latent_shape[-2:], f, f"edit: {what}", "the memory's image")
    if second is None:
        return
    other, name = getattr(edit, second), SECOND_MEMORY[second]
    check_memory_for(model, other, f"the edit's {name}", SAMPLER)
    if tuple(other.latent_shape[-2:]) != tuple(memory.latent_shape[-2:]):
        (oh, ow), (mh, mw) = other.latent_shape[-2:], memory.latent_shape[-2:]
        raise InputError(f"edit: its {name} was inverted from a {ow * f}x{oh * f} image, the memory from "
                         f"{mw * f}x{mh * f}: invert both images at the same size (resize one of them)")
    if not torch.equal(other.trajectory.timesteps, memory.trajectory.timesteps):
        raise InputError(f"edit: its {name} was inverted with {other.steps} steps, the memory with {memory.steps}: "
                         f"give both Inversion nodes the same steps")
    if edit.kind == "appearance":
        check_frame(tuple(edit.reference_mask.shape), other.latent_shape[-2:], f, "edit: its reference_mask",
                    f"the {name}'s image")
    else:
        check_frame(size, other.latent_shape[-2:], f, f"edit: {what}", f"the {name}'s image")


class _MemoryAttentionPatch:
    """An attn1 patch for ComfyUI's samplers: decoder self-attention reads the memory's
    K/V inputs of the step nearest to the current noise level, each batch row its own
    branch's (``cond_or_uncond``: a captured memory's negative-prompt K/V for those rows).

    Shared by reference between ModelPatcher clones (``__deepcopy__`` returns self),
    so the memory is never copied."""

    def __init__(self, memory: FeatureMemory, mode: str, start: int, end: int | None, model_sampling: Any) -> None:
        self.attention = CrossBranchAttention(memory, mode, start, end)
        self.timesteps = memory.trajectory.timesteps.to(torch.float64)
        self.model_sampling = model_sampling

    def __deepcopy__(self, memo: dict) -> "_MemoryAttentionPatch":
        return self

    def step_for(self, sigma: torch.Tensor) -> int:
        t = float(self.model_sampling.timestep(sigma.reshape(-1)[:1].float()).item())
        return int(torch.argmin((self.timesteps - t).abs()))

    def __call__(self, n, context_attn1, value_attn1, extra_options):
        kind, block = extra_options["block"]
        if kind != "output":
            return n, context_attn1, value_attn1
        key = LayerKey(kind, int(block), int(extra_options.get("block_index", 0)))
        step = self.step_for(extra_options["sigmas"])
        ref = self.attention.memory.kv.get((step, key))
        if ref is not None and ref.shape[1] != n.shape[1]:
            h, w = self.attention.latent_hw
            raise ValueError(f"{ATTENTION_PATCH}: the memory was inverted from a {w}x{h} latent, the sampler's latent "
                             f"has another size ({n.shape[1]} tokens in output block {key.block} where the memory has "
                             f"{ref.shape[1]}): sample a latent of the inverted image's size")
        r = self.attention.self_attention(AttnCall(key, step, row_branches(extra_options, n.shape[0])), n)
        return n, *kv_inputs(r, n, context_attn1, value_attn1)


class CrossBranchAttentionPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_CrossBranchAttention",
            display_name="DragonDiffusion Cross-Branch Attention",
            category="DragonDiffusion",
            description="Patch a MODEL so its decoder self-attention reads the memory's keys/values: ComfyUI's own "
                        "KSampler / SamplerCustom then regenerate while keeping the original's content. The memory "
                        "step nearest to the sampler's noise level is used; sampling with ddim_uniform and the "
                        "memory's step count matches them exactly.",
            inputs=[
                io.Model.Input("model", tooltip="The model the memory was inverted with (it is cloned, not changed)."),
                DragonMemory.Input("memory", tooltip="The original image's memory."),
                io.Combo.Input("mode", options=["concat", "replace"], default="concat",
                               tooltip="concat: attend to the sample's own and the memory's keys/values; replace: "
                                       "only the memory's."),
                io.Int.Input("start_step", default=5, min=0, max=1000,
                             tooltip="First memory step (of the memory's steps) at which attention reads it."),
                io.Int.Input("end_step", default=-1, min=-1, max=1000,
                             tooltip="Last memory step at which attention reads it (-1: to the end)."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The patched model clone.")],
        )

    @classmethod
    @named_errors(ATTENTION_PATCH)
    def execute(cls, model, memory, mode, start_step, end_step) -> io.NodeOutput:
        node = ATTENTION_PATCH
        check_sd_unet(model, node)
        memory = check_memory_for(model, memory, "memory", node)
        if memory.policy.recompute:
            raise InputError(f"memory: it keeps only the latents (Inversion storage 'recompute'); this patch reads "
                             f"stored keys/values: invert with storage int8 or fp16")
        patched = model.clone()
        patch = _MemoryAttentionPatch(memory, mode, start_step, None if end_step < 0 else end_step,
                                      model.get_model_object("model_sampling"))
        patched.set_model_attn1_patch(patch)
        return io.NodeOutput(patched)


NODES = [GuidedSampler, CrossBranchAttentionPatch]
