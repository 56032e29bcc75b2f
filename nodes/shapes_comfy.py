"""The bundled shapes model as a ComfyUI MODEL, and shapes prompts as CONDITIONING.

The shapes UNet (``dragon_core/assets/shapes32``) is a diffusers
``UNet2DConditionModel`` in SD1.5's topology, in miniature and in pixel space
(3 channels, 32x32). ComfyUI's ``UNetModel`` represents it exactly; what
ComfyUI cannot guess from the weights is supplied by a model config class:

* the attention heads (``num_heads = 1``; the weights do not show them, and
  ``comfy.supported_models.SD15`` would force 8),
* the latent format: ``comfy.latent_formats.ChromaRadiance`` (3 channels,
  identity ``process_in``/``process_out``), so the built-in ``pixel_space`` VAE
  and the stock VAEEncode/VAEDecode nodes work with it,
* the schedule, set explicitly from ``config.json``: diffusers'
  ``scaled_linear`` (betas linear in sqrt space) is what ComfyUI calls
  ``"linear"``; the bundled 0.00085..0.012 over 1000 steps happens to be
  ComfyUI's default too, but other values in a model folder are honoured,
* the prediction type (epsilon or v_prediction).

Weights are converted from diffusers keys with ``comfy.utils.unet_to_diffusers``
and the ComfyUI config derived from ``config.json`` is checked against what
``comfy.model_detection`` reads from the converted weights, so a folder in
another layout fails with a clear error instead of loading garbage.

Loading follows ComfyUI's own ``load_diffusion_model_state_dict`` (dtype choice,
manual cast, offload device), so called inside ComfyUI's executor (inference
mode) the weights are inference tensors exactly as with the stock loaders.

ComfyUI is imported inside the functions: this module imports without it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from dragon_demo.shapes_model import ASSET_DIR, load_config, load_text_encoder

# diffusers block types -> whether the block has a transformer (attention) per res block
_DOWN_BLOCKS = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
_UP_BLOCKS = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}
_PREDICTION_TYPES = ("epsilon", "v_prediction")


def comfy_unet_config(unet: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's ``unet_config`` (with heads) for a diffusers SD-style UNet config.

    ``unet`` is the ``"unet"`` section of the shapes ``config.json`` (the
    arguments of ``UNet2DConditionModel``). Only what ComfyUI's ``UNetModel``
    can represent is accepted; anything else raises ``ValueError`` naming the field.
    """
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(f"shapes model config: {msg}")

    down, up = list(unet["down_block_types"]), list(unet["up_block_types"])
    chans = list(unet["block_out_channels"])
    need(all(b in _DOWN_BLOCKS for b in down), f"down_block_types must be from {sorted(_DOWN_BLOCKS)}, got {down}")
    need(all(b in _UP_BLOCKS for b in up), f"up_block_types must be from {sorted(_UP_BLOCKS)}, got {up}")
    need(len(down) == len(up) == len(chans), "down/up block types and block_out_channels differ in length")
    need([_DOWN_BLOCKS[b] for b in down] == [_UP_BLOCKS[b] for b in reversed(up)],
         "the decoder's attention levels must mirror the encoder's")
    need(unet.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn",
         "mid_block_type must be UNetMidBlock2DCrossAttn")
    need(unet.get("norm_num_groups", 32) == 32, "norm_num_groups must be 32 (ComfyUI's GroupNorm)")
    need(unet.get("flip_sin_to_cos", True) is True and unet.get("freq_shift", 0) == 0,
         "timestep embedding must be flip_sin_to_cos=True, freq_shift=0 (ComfyUI's)")
    need(unet.get("num_attention_heads") is None, "num_attention_heads is not supported (use attention_head_dim)")
    heads = unet.get("attention_head_dim", 8)  # diffusers' legacy name: the number of heads
    need(isinstance(heads, int), f"attention_head_dim must be one int, got {heads!r}")
    need(unet.get("transformer_layers_per_block", 1) == 1, "transformer_layers_per_block must be 1")
    lpb = unet.get("layers_per_block", 2)
    need(isinstance(lpb, int), f"layers_per_block must be one int, got {lpb!r}")
    base = chans[0]
    need(all(c % base == 0 for c in chans), f"block_out_channels must be multiples of {base}")

    attn = [_DOWN_BLOCKS[b] for b in down]
    # transformer_depth_output is consumed with pop(): the LAST entry belongs to output_blocks[0]
    depth_out = [int(a) for a in reversed(attn) for _ in range(lpb + 1)]
    return {
        "use_checkpoint": False,
        "image_size": int(unet.get("sample_size", 32)),
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": int(unet["in_channels"]),
        "out_channels": int(unet["out_channels"]),
        "model_channels": base,
        "num_res_blocks": [lpb] * len(chans),
        "transformer_depth": [int(a) for a in attn for _ in range(lpb)],
        "transformer_depth_output": depth_out[::-1],
        "channel_mult": [c // base for c in chans],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": bool(unet.get("use_linear_projection", False)),
        "context_dim": int(unet["cross_attention_dim"]),
        "use_temporal_resblock": False,
        "use_temporal_attention": False,
        "num_heads": heads,
        "num_head_channels": -1,
    }


@functools.cache
def model_config_class() -> type:
    """The ComfyUI model config class (a ``comfy.supported_models_base.BASE``) for
    shapes-world UNets: 3-channel pixel-space latents, one attention head.

    Its ``unet_config`` names the fields a stock loader would match on, so
    appending it to ``comfy.supported_models.models`` lets ``UNETLoader`` load
    converted shapes weights; :func:`load_shapes_model` needs no registration.
    """
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models_base

    class DragonShapesUNet(comfy.supported_models_base.BASE):
        unet_config = {
            "model_channels": 32,
            "context_dim": 32,
            "in_channels": 3,
            "out_channels": 3,
            "use_linear_in_transformer": False,
            "adm_in_channels": None,
            "use_temporal_attention": False,
        }
        unet_extra_config = {"num_heads": 1, "num_head_channels": -1}
        latent_format = comfy.latent_formats.ChromaRadiance
        supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]
        memory_usage_factor = 1.0
        prediction_type = "epsilon"

        def model_type(self, state_dict, prefix=""):
            if self.prediction_type == "v_prediction":
                return comfy.model_base.ModelType.V_PREDICTION
            return comfy.model_base.ModelType.EPS

    return DragonShapesUNet


def comfy_sampling_settings(schedule: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI ``sampling_settings`` for a shapes ``config.json`` schedule."""
    kind = schedule.get("beta_schedule", "scaled_linear")
    if kind != "scaled_linear":
        raise ValueError(f"shapes model schedule: only 'scaled_linear' is supported, got {kind!r}")
    return {
        "beta_schedule": "linear",  # ComfyUI's "linear" is diffusers' scaled_linear (sqrt-space linear)
        "linear_start": float(schedule.get("beta_start", 0.00085)),
        "linear_end": float(schedule.get("beta_end", 0.012)),
        "timesteps": int(schedule.get("num_train_timesteps", 1000)),
    }


def model_config(model_dir: str | Path | None = None) -> Any:
    """A model config instance for the shapes model in ``model_dir`` (default: bundled)."""
    cfg = load_config(model_dir or ASSET_DIR)
    unet_config = comfy_unet_config(cfg["unet"])
    schedule = cfg.get("schedule", {})
    prediction = schedule.get("prediction_type", "epsilon")
    if prediction not in _PREDICTION_TYPES:
        raise ValueError(f"shapes model schedule: prediction_type must be one of {_PREDICTION_TYPES}, got {prediction!r}")
    mc = model_config_class()(unet_config)
    mc.unet_config["num_heads"] = unet_config["num_heads"]  # the file's heads, not the class default
    mc.sampling_settings = comfy_sampling_settings(schedule)
    mc.prediction_type = prediction
    return mc


def convert_unet_weights(state_dict: dict[str, torch.Tensor], unet_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers UNet keys -> ComfyUI ``UNetModel`` keys; checks the result against
    what ComfyUI detects from it (``ValueError`` on unmapped keys or a mismatch)."""
    import comfy.model_detection
    import comfy.utils

    key_map = comfy.utils.unet_to_diffusers(unet_config)
    unmapped = sorted(k for k in state_dict if k not in key_map)
    if unmapped:
        raise ValueError(f"shapes model weights: {len(unmapped)} keys are not in the diffusers layout of the config, "
                         f"e.g. {unmapped[:5]}")
    out = {key_map[k]: v for k, v in state_dict.items()}
    detected = comfy.model_detection.detect_unet_config(out, "")
    expected = {k: v for k, v in unet_config.items() if k not in ("num_heads", "num_head_channels")}
    if detected != expected:
        diff = sorted(k for k in set(detected) | set(expected) if detected.get(k) != expected.get(k))
        raise ValueError(f"shapes model weights do not match config.json in {diff}")
    return out


def load_shapes_model(model_dir: str | Path | None = None, dtype: torch.dtype | None = None) -> Any:
    """The shapes UNet in ``model_dir`` (default: the bundled one) as a ComfyUI
    ``ModelPatcher`` (a MODEL), loaded the way ComfyUI's loaders load weights.

    ``dtype``: the weights' dtype; ``None`` lets ComfyUI choose for the device
    (fp32 on the CPU, usually fp16 on a GPU), with manual casting where needed.
    Call it inside ``torch.inference_mode()`` (as ComfyUI's executor does) to get
    inference-tensor weights, as the stock loaders give.
    """
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils

    model_dir = Path(model_dir or ASSET_DIR)
    mc = model_config(model_dir)
    path = model_dir / "unet.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"shapes model folder {model_dir} has no unet.safetensors")
    sd = convert_unet_weights(comfy.utils.load_torch_file(str(path), safe_load=True), mc.unet_config)

    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    if dtype is None:
        dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(sd),
                              supported_dtypes=list(mc.supported_inference_dtypes),
                              weight_dtype=comfy.utils.weight_dtype(sd))
    manual_cast = mm.unet_manual_cast(dtype, load_device, mc.supported_inference_dtypes)
    mc.set_inference_dtype(dtype, manual_cast)
    model = mc.get_model(sd, "").to(offload_device)
    model.load_model_weights(sd, "")
    if sd:
        raise ValueError(f"shapes model: weights left over after loading: {sorted(sd)[:5]}")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


@functools.cache
def _text_encoder(model_dir: str):
    return load_text_encoder(model_dir)


def encode_prompt(prompt: str, model_dir: str | Path | None = None) -> list:
    """A shapes-vocabulary prompt ("gradient, red disc, blue square"; "" for the
    unconditional) as ComfyUI CONDITIONING: ``[[context (1, 4, 32) float32, {}]]``.

    The text encoder of ``model_dir`` (default: bundled) is loaded once and
    cached. Unknown words raise ``ValueError`` listing the vocabulary.
    """
    enc = _text_encoder(str(Path(model_dir or ASSET_DIR).resolve()))
    return [[enc.encode(prompt), {}]]
