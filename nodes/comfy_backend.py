"""The core's backend on a ComfyUI MODEL: :class:`ComfyBackend`.

:class:`ComfyBackend` implements ``dragon_core.backend.Backend`` on a
``ModelPatcher`` **clone** of the user's MODEL. Everything it adds (patches)
lives on the clone; the user's patcher, its model options and its weights are
never modified (a gradient forward swaps zero-copy aliases of the weights in and
back, see below), and other nodes keep using them unchanged.

Prediction
    The core works in DDPM terms: ``z_t`` at timestep ``t`` (latents already
    ``process_latent_in``'d). ComfyUI's models work in k-diffusion space: with
    ``sigma = model_sampling.sigmas[t]`` and ``abar = 1 / (1 + sigma^2)`` the
    model sees ``x = z_t / sqrt(abar)`` and returns the denoised ``x0``; for any
    prediction type ``eps = (x - x0) / sigma``. ``alphas_cumprod`` is
    ``1 / (1 + sigmas^2)`` of the model's (possibly object-patched)
    ``model_sampling``, float64 on the CPU.

Conditioning
    ``cond`` is a ComfyUI CONDITIONING (``[[tensor, dict]]``; a bare context
    tensor is accepted as ``[[tensor, {}]]``). It goes the way ComfyUI's own
    samplers send it: ``comfy.sampler_helpers.convert_cond`` ->
    ``comfy.samplers.process_conds`` (the model's ``extra_conds``: SDXL's pooled
    ``y``, timestep ranges, masks, ...) -> ``comfy.samplers.calc_cond_batch``
    (``model_function_wrapper``, CALC_COND_BATCH / APPLY_MODEL / DIFFUSION_MODEL
    wrappers, the patcher's wrappers merged in as ``prepare_model_patcher``
    does). That route is autograd-friendly (its in-place accumulation happens on
    fresh tensors), so gradients use it too. Processed conditioning is cached
    per CONDITIONING object and latent shape. Refused with a clear error
    (``model_info.check_conditioning``), since one hooked forward must see
    exactly the caller's batch and no untested model: more than one entry,
    ``area`` (the forward would see a crop), ``mask`` and timestep ranges
    (outside them a single entry predicts nothing), ``control`` / ``gligen``
    (extra models, not loaded or tested here) and ``hooks`` (per-cond weight
    patching).

Hooks
    Self-attention: ``set_model_attn1_patch`` on the clone; the patch gets
    ``n = norm1(x)`` and returns ``(n, k_in, v_in)`` when the core's hook supplies
    K/V inputs. Decoder features: ``set_model_output_block_patch``; the core's
    decoder level ``L`` (diffusers ``up_blocks[L]``) is ``h`` entering the first
    output block of level ``L + 1``, found from the model's structure (the block
    after each ``Upsample``; SD1.5: levels 0, 1, 2 -> ids 3, 6, 9; the shapes
    model: 2, 4, 6; SDXL: levels 0, 1 -> ids 3, 6). The last level's output never
    enters an output block and is not reported; ``decoder_levels()`` counts it
    (diffusers' count: SD1.5 4, SDXL 3), so the core's layer rule
    (``dragon_core.memory.default_feature_levels``: the two levels before the
    last) reads SD1.5's ids 6 and 9 and SDXL's ids 3 and 6. Step, branch and hooks travel per call in
    ``transformer_options[TRANSFORMER_OPTIONS_KEY]``; the layer key is
    ``LayerKey(kind, block id, block_index)`` from ``extra_options``. A
    ``StopForward`` raised by a hook ends the forward; ``predict_eps`` returns None.

Gradients under ComfyUI's executor (the choice made here)
    ComfyUI runs nodes inside ``torch.inference_mode()`` and its loaders make the
    weights inference tensors, which autograd refuses to save for backward
    ("Inference tensors cannot be saved for backward"), whatever mode the call
    runs in. This backend makes, for the duration of a gradient forward only,
    **zero-copy aliases** of the inference parameters and buffers: a normal tensor
    made outside inference mode on the same storage (``Tensor.set_``), swapped
    into the modules' ``_parameters``/``_buffers`` the way
    ``torch.func.functional_call`` swaps parameters, and swapped back in a
    ``finally`` as soon as the forward returns (ComfyUI runs one prompt at a time
    on one thread, so nothing else sees the swap). Autograd keeps the aliases for
    backward; they share the user's storage, so a gradient pass holds no copy of
    the weights and LoRA-patched or low-VRAM-cast weights are used as loaded.
    (An earlier version used identity weight wrappers, which made ComfyUI's
    ``cast_bias_weight`` copy every weight per gradient pass: one extra copy of the
    UNet alive until backward, 10 GB for SDXL in fp32.) Gradients reach
    ``z_t`` whether it is a normal tensor or an inference tensor that requires
    grad; the computation that uses the features' graph (the energy) must run
    outside inference mode or inside a hook.

Devices and dtypes
    ``comfy.model_management.load_models_gpu`` loads the clone before every call
    (a no-op when it is loaded); inputs go to ``patcher.load_device`` in float32
    and the model casts to its dtype (fp16 models work with the core's fp32).
    eps comes back in ``z_t``'s dtype and device. Decoder features and
    self-attention inputs reach the hooks in the model's compute dtype (fp16 as
    ComfyUI loads SD on GPUs, bf16, or the manual-cast dtype); the sampler takes
    the energies and their gradients in fp32 and loss-scales the fp16 backward
    (``tests/integration/test_half_precision_comfy.py``).

ComfyUI is imported lazily: this module imports without it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from dragon_core.backend import (BRANCHES, AttnCall, Branch, ExtraKV, FeatureCall, KVAnswer, LayerKey, StopForward,
                                 UNetHooks)

from .model_info import check_conditioning, is_sd_unet, schedule_problem

TRANSFORMER_OPTIONS_KEY = "dragon_diffusion"


@dataclass(frozen=True)
class _CallState:
    """What one predict_eps call hands its patches through transformer_options (``branch``
    None: a CFG batch, each row's branch read from ComfyUI's ``cond_or_uncond``)."""

    step: int
    branch: str | None
    hooks: UNetHooks | None

    def __deepcopy__(self, memo: dict) -> "_CallState":
        return self  # shared, never copied: the hooks may hold a whole feature memory


@contextlib.contextmanager
def _grad_aliases(model: torch.nn.Module):
    """Swap every inference-tensor parameter and buffer of ``model`` for a zero-copy
    normal alias while the block runs (see the module doc); always swap back."""
    swapped = []
    with torch.inference_mode(False):
        for m in model.modules():
            for table in (m._parameters, m._buffers):
                for name, t in table.items():
                    if t is not None and t.is_inference():
                        alias = torch.empty(0, dtype=t.dtype, device=t.device).set_(
                            t.untyped_storage(), t.storage_offset(), t.size(), t.stride())
                        swapped.append((table, name, t))
                        table[name] = alias
    try:
        yield
    finally:
        for table, name, t in reversed(swapped):
            table[name] = t


def row_branches(options: dict, rows: int) -> Branch:
    """Each batch row's branch in a ComfyUI pass: ``cond_or_uncond`` lists, per chunk of the batch,
    the index of its conditioning in the list given to ``calc_cond_batch`` ([positive, negative] in
    ComfyUI's samplers, [cond, uncond] in ours: the order of BRANCHES). One branch: a str."""
    chunks = options.get("cond_or_uncond") or [0]
    per_row = tuple(BRANCHES[i] for i in chunks for _ in range(rows // len(chunks)))
    return per_row[0] if len(set(per_row)) == 1 else per_row


def _branch(state: _CallState, options: dict, rows: int) -> Branch:
    """The call's branch, or each row's in a CFG batch (ComfyUI may also run the two separately)."""
    return state.branch if state.branch is not None else row_branches(options, rows)


def _attn1_patch(n, context_attn1, value_attn1, extra_options):
    state = extra_options.get(TRANSFORMER_OPTIONS_KEY)
    if state is None or state.hooks is None:
        return n, context_attn1, value_attn1
    kind, block = extra_options["block"]
    key = LayerKey(kind, int(block), int(extra_options.get("block_index", 0)))
    r = state.hooks.self_attention(AttnCall(key, state.step, _branch(state, extra_options, n.shape[0])), n)
    return n, *kv_inputs(r, n, context_attn1, value_attn1)


def kv_inputs(r: KVAnswer | None, n: torch.Tensor, context_attn1: torch.Tensor,
              value_attn1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An attn1 patch's K/V inputs after a hook's answer ``r``: extra tokens go after the K/V
    inputs the patch was given (an earlier pack's change kept), a replacement replaces them."""
    if r is None:
        return context_attn1, value_attn1
    if isinstance(r, ExtraKV):
        return r.after(context_attn1, value_attn1)
    return r[0].to(n.dtype), r[1].to(n.dtype)


def _output_block_patch(taps: dict[int, int]):
    def patch(h, hsp, transformer_options):
        state = transformer_options.get(TRANSFORMER_OPTIONS_KEY)
        if state is not None and state.hooks is not None:
            kind, block = transformer_options["block"]
            level = taps.get(int(block)) if kind == "output" else None
            if level is not None:
                branch = _branch(state, transformer_options, h.shape[0])
                state.hooks.decoder_feature(FeatureCall(level, state.step, branch), h)
        return h, hsp

    return patch


# -- model structure ----------------------------------------------------------------------------------


def _self_attention_layers(unet: Any) -> list[LayerKey]:
    """Every transformer self-attention of a ComfyUI UNetModel, in forward order."""
    from comfy.ldm.modules.attention import BasicTransformerBlock, SpatialTransformer

    def in_block(kind: str, block_id: int, module: Any) -> list[LayerKey]:
        keys = []
        for m in module.modules():
            if isinstance(m, SpatialTransformer):
                for i, tb in enumerate(m.transformer_blocks):
                    if isinstance(tb, BasicTransformerBlock) and not tb.disable_self_attn:
                        keys.append(LayerKey(kind, block_id, i))
        return keys

    keys = [k for i, b in enumerate(unet.input_blocks) for k in in_block("input", i, b)]
    if unet.middle_block is not None:
        keys += in_block("middle", 0, unet.middle_block)
    keys += [k for i, b in enumerate(unet.output_blocks) for k in in_block("output", i, b)]
    if len(set(keys)) != len(keys):
        raise ValueError("two self-attention layers share a (kind, block, index) key; this UNet is not SD-like")
    return keys


def _feature_taps(unet: Any) -> dict[int, int]:
    """{output block id: decoder level}: level L's output is h entering the block after
    the L-th Upsample (the first output block of level L + 1)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample

    ends = [i for i, blk in enumerate(unet.output_blocks) if any(isinstance(m, Upsample) for m in blk.modules())]
    return {i + 1: level for level, i in enumerate(ends) if i + 1 < len(unet.output_blocks)}


# -- the backend -------------------------------------------------------------------------------------------


class ComfyBackend:
    """dragon_core's Backend on a clone of a ComfyUI MODEL (``ModelPatcher``).

    ``model`` is the user's patcher; it is cloned and never modified. Use as a
    context manager or call :meth:`close` when done.
    """

    def __init__(self, model: Any) -> None:
        import comfy.model_patcher

        if not isinstance(model, comfy.model_patcher.ModelPatcher):
            raise TypeError(f"ComfyBackend needs a ComfyUI MODEL (ModelPatcher), got {type(model).__name__}")
        unet = getattr(model.model, "diffusion_model", None)
        if not is_sd_unet(unet):
            raise NotImplementedError(
                f"DragonDiffusion needs an SD-style UNet (input/middle/output blocks); this MODEL is "
                f"{type(model.model).__name__} with {type(unet).__name__}")
        self.patcher = model.clone()
        self._layers = _self_attention_layers(unet)
        self._taps = _feature_taps(unet)
        if not self._taps:
            raise NotImplementedError("this UNet has no upsampling output blocks to read decoder features from")
        self.patcher.set_model_attn1_patch(_attn1_patch)
        self.patcher.set_model_output_block_patch(_output_block_patch(dict(self._taps)))

        ms = self.patcher.get_model_object("model_sampling")
        if not hasattr(ms, "sigmas"):
            raise NotImplementedError(f"{type(ms).__name__}: DragonDiffusion needs a discrete DDPM schedule (sigmas)")
        problem = schedule_problem(self.patcher)
        if problem:
            raise NotImplementedError(problem)
        self._sigmas = ms.sigmas.detach().to("cpu", torch.float64).clone()
        self.alphas_cumprod = 1.0 / (1.0 + self._sigmas**2)
        self.device = torch.device(self.patcher.load_device)
        self.dtype = self.patcher.model_dtype()
        self._cond_cache: dict[tuple, tuple[Any, list]] = {}
        self._closed = False
        self._load((1, unet.in_channels, 8, 8), grad=False)

    # -- structure -----------------------------------------------------------------------------------
    def decoder_self_attention_layers(self) -> list[LayerKey]:
        return sorted(k for k in self._layers if k.kind == "output")

    def self_attention_layers(self) -> list[LayerKey]:
        """Every hooked self-attention layer (input, middle, output), in forward order."""
        return list(self._layers)

    def decoder_levels(self) -> int:
        """Decoder resolution levels (one more than the reported ones: see the module doc)."""
        return len(self._taps) + 1

    def feature_block_ids(self) -> dict[int, int]:
        """{decoder level: ComfyUI output block id whose input ``h`` is that level's output}."""
        return {level: block for block, level in self._taps.items()}

    # -- loading -----------------------------------------------------------------------------------------
    def _load(self, shape: tuple[int, ...], grad: bool) -> None:
        import comfy.model_management as mm

        # the sampler's estimate for one batch; a gradient pass keeps activations for backward (rough 3x)
        need = self.patcher.model.memory_required(list(shape)) * (3 if grad else 1)
        mm.load_models_gpu([self.patcher], memory_required=need)

    # -- conditioning ------------------------------------------------------------------------------------
    def _conds(self, cond: Any, x: torch.Tensor) -> list:
        import comfy.sampler_helpers
        import comfy.samplers

        key = (id(cond), tuple(x.shape), str(x.device))
        hit = self._cond_cache.get(key)
        if hit is not None and hit[0] is cond:
            return hit[1]
        entries = [[cond, {}]] if isinstance(cond, torch.Tensor) else cond
        check_conditioning(entries)
        converted = comfy.sampler_helpers.convert_cond(entries)
        conds = comfy.samplers.process_conds(self.patcher.model, x, {"positive": converted}, x.device)["positive"]
        self._cond_cache[key] = (cond, conds)
        return conds

    def _model_options(self, state: _CallState) -> dict:
        import comfy.model_patcher
        import comfy.patcher_extension as pe

        mo = comfy.model_patcher.create_model_options_clone(self.patcher.model_options)
        to = mo.setdefault("transformer_options", {})
        pe.merge_nested_dicts(to.setdefault("wrappers", {}), self.patcher.wrappers, copy_dict1=False)
        pe.merge_nested_dicts(to.setdefault("callbacks", {}), self.patcher.callbacks, copy_dict1=False)
        to[TRANSFORMER_OPTIONS_KEY] = state
        return mo

    # -- prediction --------------------------------------------------------------------------------------
    def sigma(self, t: int) -> float:
        """The model's sigma for DDPM timestep ``t``."""
        return float(self._sigmas[int(t)])

    def predict_eps(self, z_t: torch.Tensor, t: int, cond: Any, *, step: int, branch: str = "cond",
                    hooks: UNetHooks | None = None, grad: bool = False) -> torch.Tensor | None:
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
        # the conditioning at its branch's index, so that ComfyUI's cond_or_uncond (which other
        # packs' patches read, e.g. IP-Adapter's per-branch image tokens) says uncond for uncond
        conds = [cond] if branch == "cond" else [None, cond]
        out = self._predict(z_t, t, conds, _CallState(int(step), branch, hooks), grad)
        return None if out is None else out[BRANCHES.index(branch)]

    def predict_eps_cfg(self, z_t: torch.Tensor, t: int, cond: Any, uncond: Any, *, step: int,
                        hooks: UNetHooks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Both CFG branches through ``calc_cond_batch`` as ComfyUI's samplers send them: one
        batch when they fit in memory together (ComfyUI decides), each row's branch to the hooks."""
        out = self._predict(z_t, t, [cond, uncond], _CallState(int(step), None, hooks), grad=False)
        if out is None:
            raise RuntimeError("a hook ended a CFG pass early; only gradient passes may stop")
        return out[0], out[1]

    def _predict(self, z_t: torch.Tensor, t: int, conds: list[Any], state: _CallState,
                 grad: bool) -> list[torch.Tensor] | None:
        """eps of ``z_t`` under each conditioning in ``conds`` (None if a hook stopped the pass)."""
        import comfy.samplers

        if self._closed:
            raise RuntimeError("ComfyBackend is closed")
        if z_t.ndim != 4:
            raise ValueError(f"z_t must be (B, C, H, W), got shape {tuple(z_t.shape)}")
        if not 0 <= int(t) < len(self._sigmas):
            raise ValueError(f"t must be a DDPM timestep in 0..{len(self._sigmas) - 1}, got {t}")
        self._load((z_t.shape[0] * sum(c is not None for c in conds),) + tuple(z_t.shape[1:]), grad)
        s = self.sigma(t)
        mode = torch.inference_mode(False) if grad else contextlib.nullcontext()
        aliases = _grad_aliases(self.patcher.model) if grad else contextlib.nullcontext()
        self.patcher.pre_run()
        try:
            with mode, torch.set_grad_enabled(grad), aliases:
                z = z_t.to(self.device, torch.float32)
                if grad:
                    z = z.clone()  # a graph edge to z_t even when z_t is an inference tensor
                x = z * math.sqrt(1.0 + s * s)
                processed = [None if c is None else self._conds(c, x) for c in conds]
                sigma = torch.full((x.shape[0],), s, device=self.device, dtype=torch.float32)
                denoised = comfy.samplers.calc_cond_batch(self.patcher.model, processed, x, sigma,
                                                          self._model_options(state))
                eps = [(x - d) / s for d in denoised]
        except StopForward:
            return None
        finally:
            self.patcher.cleanup()
        return [e.to(device=z_t.device, dtype=z_t.dtype) for e in eps]

    # -- lifetime -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the caches. The clone stays in ComfyUI's loaded-model list like any
        sampled clone; the next load of the user's patcher re-loads its own state."""
        if self._closed:
            return
        self._closed = True
        self._cond_cache.clear()

    def __enter__(self) -> "ComfyBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
