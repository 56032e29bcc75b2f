"""Bad input, as a careless user gives it, through ComfyUI's real executor.

Every case in ``CASES`` is one prompt that differs from a good move edit of a
shapes scene by the bad input. It must either fail with a message that names
the node and the input and says what to do (checked word for word against the
table in docs/reliability.md, so the docs show what a user
really sees), be refused by ComfyUI's own validation before anything runs, or
run and give a finite picture (documented behaviour, such as soft masks).
Between cases the executor keeps its cache, as a server does; the last test
runs the good edit again and gets the same picture as before every failure.

``UPDATE_README_TABLE=1`` rewrites that table from a full run.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q
tests/integration/test_bad_input.py`` (skipped without ``COMFYUI_PATH``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from graphs import guided_sampler, shapes_scene

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "docs" / "reliability.md"  # the page that holds the bad-input table
TABLE_START, TABLE_END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"
STEPS = 4


# ----------------------------------------------------------------------------------------------
# test-only nodes: models and values no stock node makes
# ----------------------------------------------------------------------------------------------
def _tiny_model(kind: str):
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm

    if kind == "shapes":  # the demo model loaded once more: equal weights, another model object
        import sys

        loaded = sys.modules[f"{ROOT}.nodes.shapes_comfy"].load_shapes_model()
        loaded.model_options.update(sys.modules[f"{ROOT}.nodes.demo_nodes"].ShapesModelLoader.execute().args[0]
                                    .model_options)
        return loaded
    if kind == "flux":  # a DiT / flow-matching model, as Flux is, a few thousand parameters
        cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=8, context_in_dim=16,
                   hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6],
                   theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False)
        model = sm.FluxSchnell(cfg).get_model({})
    else:  # an SD1.5-topology UNet in miniature: 4-channel latents, 8 pixels per latent cell
        cfg = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
               "adm_in_channels": None, "in_channels": 4, "out_channels": 4, "model_channels": 32,
               "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
               "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1][::-1], "channel_mult": [1, 2, 2, 2],
               "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 32,
               "use_temporal_resblock": False, "use_temporal_attention": False}
        model = sm.SD15(cfg).get_model({})
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():  # comfy ops leave weights uninitialised
        p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


class _TinyModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (["flux", "sd15", "shapes"],)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, kind):
        return (_tiny_model(kind),)


class _Value:
    """A CONDITIONING of another text encoder's width, or a MASK with NaN in it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (["conditioning", "conditioning_batch", "nan_mask"],),
                             "size": ("INT", {"default": 768, "min": 1})}}

    RETURN_TYPES = ("CONDITIONING", "MASK")
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, kind, size):
        gen = torch.Generator().manual_seed(0)
        mask = torch.zeros(1, 32, 32)
        mask[0, 10:20, 10:20] = float("nan")
        batch = 2 if kind == "conditioning_batch" else 1
        return ([[torch.randn(batch, 4, size, generator=gen), {}]], mask)


# ----------------------------------------------------------------------------------------------
# the good edit and the cases
# ----------------------------------------------------------------------------------------------
def _base() -> dict:
    """A move edit of shapes scene 4's orange square (box x 8..25, y 13..30 of 32x32) by 2 pixels."""
    return {
        **shapes_scene(4, STEPS, reference=8),
        "edit": {"class_type": "DragonDiff_MoveEdit",
                 "inputs": {"mask": ["scene", 1], "dx": 2, "dy": 0, "scale": 1.0}},
        "out": guided_sampler("edit", flexibility=0.0),
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["out", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "bad_input"}},
    }


def _mask_op(src: list, op: str, **kw) -> dict:
    """Nodes that turn MASK ``src`` into a MASK named 'm': resized (via an image), batched or cropped."""
    if op == "scale":
        return {"m_img": {"class_type": "MaskToImage", "inputs": {"mask": src}},
                "m_scaled": {"class_type": "ImageScale", "inputs": {"image": ["m_img", 0], "upscale_method":
                                                                    "nearest-exact", "crop": "disabled", **kw}},
                "m": {"class_type": "ImageToMask", "inputs": {"image": ["m_scaled", 0], "channel": "red"}}}
    if op == "batch":
        return {"m_img": {"class_type": "MaskToImage", "inputs": {"mask": src}},
                "m_batch": {"class_type": "ImageBatch", "inputs": {"image1": ["m_img", 0], "image2": ["m_img", 0]}},
                "m": {"class_type": "ImageToMask", "inputs": {"image": ["m_batch", 0], "channel": "red"}}}
    if op == "feather":
        return {"m": {"class_type": "FeatherMask", "inputs": {"mask": src, "left": 4, "top": 4, "right": 4,
                                                              "bottom": 4}}}
    raise ValueError(op)


def _solid(value: float, w: int = 32, h: int = 32) -> dict:
    return {"m": {"class_type": "SolidMask", "inputs": {"value": value, "width": w, "height": h}}}


def _move(mask: list | None = None, **kw) -> dict:
    inputs = {"mask": mask or ["scene", 1], "dx": 2, "dy": 0, "scale": 1.0}
    inputs.update(kw)
    return {"edit": {"class_type": "DragonDiff_MoveEdit", "inputs": inputs}}


def _drag(points: str, image: list | None = None, kind: str = "drag") -> dict:
    node = "DragonDiff_DragEdit" if kind == "drag" else "DragonDiff_PointSetEdit"
    return {"edit": {"class_type": node, "inputs": {"image": image or ["scene", 0], "points": points}}}


def _ref(steps: int = STEPS, size: int | None = None, model: str = "model") -> dict:
    """A second inversion 'rinv' of shapes scene 8 (optionally resized, other steps or model)."""
    nodes = {"rlat": {"class_type": "VAEEncode", "inputs": {"pixels": ["ref", 0], "vae": ["vae", 0]}},
             "rinv": {"class_type": "DragonDiff_Inversion",
                      "inputs": {"model": [model, 0], "latent": ["rlat", 0], "positive": ["ref", 2], "steps": steps}}}
    if size:
        nodes["rsmall"] = {"class_type": "ImageScale", "inputs": {"image": ["ref", 0], "upscale_method":
                                                                  "nearest-exact", "width": size, "height": size,
                                                                  "crop": "disabled"}}
        nodes["rlat"]["inputs"]["pixels"] = ["rsmall", 0]
    if model != "model":
        nodes[model] = {"class_type": "DragonTest_TinyModel", "inputs": {"kind": "shapes"}}
    return nodes


def _appearance(ref_mask: list | None = None) -> dict:
    return {"edit": {"class_type": "DragonDiff_AppearanceEdit",
                     "inputs": {"mask": ["scene", 1], "reference_memory": ["rinv", 1],
                                "reference_mask": ref_mask or ["ref", 1]}}}


def _paste(mask: list | None = None) -> dict:
    return {"edit": {"class_type": "DragonDiff_PasteEdit",
                     "inputs": {"source_memory": ["rinv", 1], "mask": mask or ["ref", 1], "dx": 0, "dy": 0,
                                "scale": 1.0}}}


def _set(node: str, **inputs) -> Callable[[dict], None]:
    def change(g: dict) -> None:
        g[node]["inputs"].update(inputs)
    return change


def _ksampler(latent: list) -> dict:
    """ComfyUI's KSamplerAdvanced on the cross-branch-attention patched model, decoded to 'dec'."""
    return {"patched": {"class_type": "DragonDiff_CrossBranchAttention",
                        "inputs": {"model": ["model", 0], "memory": ["inv", 1], "mode": "concat", "start_step": 0,
                                   "end_step": -1}},
            "ks": {"class_type": "KSamplerAdvanced",
                   "inputs": {"model": ["patched", 0], "add_noise": "disable", "noise_seed": 0, "steps": STEPS,
                              "cfg": 1.0, "sampler_name": "ddim", "scheduler": "ddim_uniform",
                              "positive": ["scene", 2], "negative": ["neg", 0], "latent_image": latent,
                              "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}},
            "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}}}


@dataclass
class Case:
    id: str
    what: str  # what the careless user did (the table's second column)
    nodes: dict = field(default_factory=dict)  # added or replaced nodes
    change: Callable[[dict], None] | None = None
    runs: str = ""  # for inputs that are accepted: what happens (the table says "runs: ...")


SD15_INV = {"sd": {"class_type": "DragonTest_TinyModel", "inputs": {"kind": "sd15"}},
            "sd_lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "sd_cond": {"class_type": "DragonTest_Value", "inputs": {"kind": "conditioning", "size": 32}},
            "sd_inv": {"class_type": "DragonDiff_Inversion",
                       "inputs": {"model": ["sd", 0], "latent": ["sd_lat", 0], "positive": ["sd_cond", 0],
                                  "steps": 2}}}


def _sd15_mask_case(width: int) -> dict:
    nodes = dict(SD15_INV)
    nodes.update(_solid(1.0, width, width))
    nodes.update(_move(["m", 0], dx=0, scale=0.5))
    return nodes


def _on_sd15(g: dict) -> None:
    g["out"]["inputs"].update(model=["sd", 0], memory=["sd_inv", 1], positive=["sd_cond", 0],
                              negative=["sd_cond", 0])


CASES = [
    # -- masks
    Case("mask-empty", "an empty (all black) mask", _solid(0.0) | _move(["m", 0])),
    Case("mask-below-threshold", "a soft mask that is nowhere >= 0.5 (all 0.4)", _solid(0.4) | _move(["m", 0])),
    Case("mask-soft-edge", "a feathered, anti-aliased mask (FeatherMask 4 px)",
         _mask_op(["scene", 1], "feather") | _move(["m", 0]),
         runs="pixels >= 0.5 are the object (`MASK_THRESHOLD`); the soft values weight the moved mask"),
    Case("mask-nan", "a mask with NaN values", {"v": {"class_type": "DragonTest_Value",
                                                      "inputs": {"kind": "nan_mask", "size": 1}}} | _move(["v", 1])),
    Case("mask-all-white-move", "an all-white mask, moved by 3 px", _solid(1.0) | _move(["m", 0], dx=3),
         runs="the whole picture shifts by 3 px: the strip past the frame is cropped, the strip it leaves is generated"),
    Case("mask-all-white-shrink", "an all-white mask, scale 0.5", _solid(1.0) | _move(["m", 0], dx=0, scale=0.5),
         runs="the whole picture shrinks into the middle; the border is generated (nothing is left to keep)"),
    Case("mask-smaller", "a 30x30 mask for the 32x32 image", _mask_op(["scene", 1], "scale", width=30, height=30)
         | _move(["m", 0])),
    Case("mask-larger", "a 64x64 mask (upscaled) for the 32x32 image",
         _mask_op(["scene", 1], "scale", width=64, height=64) | _move(["m", 0])),
    Case("mask-batch", "a batch of 2 masks", _mask_op(["scene", 1], "batch") | _move(["m", 0])),
    Case("reference-mask-batch", "a batch of 2 masks as an Appearance reference_mask",
         _ref() | _mask_op(["ref", 1], "batch") | _appearance(["m", 0])),
    Case("paste-mask-batch", "a batch of 2 masks as a Paste mask", _ref() | _mask_op(["ref", 1], "batch") | _paste(["m", 0])),
    Case("inpaint-region-size", "an inpaint_region of another size than the mask",
         _mask_op(["scene", 1], "scale", width=30, height=30)
         | {"edit": _move(inpaint_region=["m", 0])["edit"]}),
    Case("reference-mask-size", "an Appearance reference_mask of another size than the reference image",
         _ref() | _mask_op(["ref", 1], "scale", width=30, height=30) | _appearance(["m", 0])),
    Case("paste-mask-size", "a Paste mask of another size than the source image",
         _ref() | _mask_op(["ref", 1], "scale", width=64, height=64) | _paste(["m", 0])),
    # -- points
    Case("points-outside", "a point outside the image", _drag("100,1,2,3")),
    Case("points-negative", "a negative coordinate", _drag("10,10,-1,10")),
    Case("points-odd", "3 numbers for a pair", _drag("1,2,3")),
    Case("points-not-numbers", "a word among the numbers", _drag("1,2,3,x")),
    Case("points-json-broken", "JSON that does not parse", _drag("[1, 2")),
    Case("points-json-odd", "an odd number of JSON points", _drag('[{"x": 1, "y": 2}]')),
    Case("points-json-shape", "JSON points without x/y", _drag('[{"x": 1}, {"x": 2, "y": 3}]')),
    Case("points-nan", "NaN as a coordinate", _drag("1,2,nan,4")),
    Case("points-inf", "infinity as a coordinate", _drag("1,2,3,inf")),
    Case("points-json-nan", "NaN in JSON points", _drag('[{"x": NaN, "y": 2}, {"x": 3, "y": 4}]')),
    Case("points-empty", "no points", _drag("")),
    Case("points-10000", "10,000 JSON points", _drag(json.dumps([{"x": 10, "y": 10}] * 10000))),
    Case("points-10000-pairs", "10,000 handle/target pairs", _drag(";".join(["10,10,12,10"] * 10000))),
    Case("points-1000-pairs", "1,000 pairs (the limit)", _drag(";".join(["10,10,12,10"] * 1000)),
         runs="the drag runs (1.2 s for 4 steps on the demo model)"),
    Case("points-code", "Python code as points", _drag("__import__('os').system('echo hacked')")),
    Case("points-image-batch", "a batch of 2 images to Drag",
         {"ib": {"class_type": "ImageBatch", "inputs": {"image1": ["scene", 0], "image2": ["scene", 0]}}}
         | _drag("10,10,12,10", ["ib", 0])),
    Case("pointset-image-batch", "a batch of 2 images to Point-Set Drag",
         {"ib": {"class_type": "ImageBatch", "inputs": {"image1": ["scene", 0], "image2": ["scene", 0]}}}
         | _drag("10,10,12,10", ["ib", 0], kind="points")),
    # -- offsets and scale
    Case("move-fully-outside", "dx = 40 (the object lands outside the image)", _move(dx=40)),
    Case("move-partly-outside", "dy = 3 (7% of the object would leave)", _move(dx=0, dy=3),
         runs="the part past the frame is cropped away"),
    Case("move-edge", "dy = 2 (the object touches the border, under 2% leaves)", _move(dx=0, dy=2),
         runs="the part past the frame is cropped away"),
    Case("move-nothing", "dx = dy = 0, scale 1", _move(dx=0)),
    Case("scale-zero", "scale 0", _move(scale=0.0)),
    Case("scale-negative", "scale -1", _move(scale=-1.0)),
    Case("scale-huge", "scale 11 (above the widget's 10)", _move(scale=11.0)),
    Case("scale-leaves", "scale 10 on a 17-pixel object", _move(dx=0, scale=10.0),
         runs="the object grows past the frame on every side; what is outside is cropped away"),
    Case("scale-tiny", "scale 0.1 on a 17-pixel object", _move(dx=0, scale=0.1),
         runs="the object shrinks to about 2 pixels"),
    Case("dx-huge", "dx = 100000", _move(dx=100000)),
    Case("scale-nan", "scale NaN (sent through the API: NaN passes ComfyUI's min/max check)",
         _move(scale=math.nan)),
    Case("sampler-nan", "cfg NaN on the Guided Sampler (through the API)", change=_set("out", cfg=math.nan)),
    Case("sampler-energy-huge", "energy_scale 5000 on the Guided Sampler (21x the move default)",
         change=_set("out", energy_scale=5000.0),
         runs="a console warning names energy_scale, says the result degrades and to lower it or use -1"),
    Case("image-tiny", "a 2x2 pixel image to the Inversion",
         {"tiny": {"class_type": "ImageScale", "inputs": {"image": ["scene", 0], "upscale_method": "nearest-exact",
                                                          "width": 2, "height": 2, "crop": "disabled"}},
          "tlat": {"class_type": "VAEEncode", "inputs": {"pixels": ["tiny", 0], "vae": ["vae", 0]}}},
         change=_set("inv", latent=["tlat", 0])),
    # -- steps
    Case("steps-zero", "Inversion steps 0", change=_set("inv", steps=0)),
    Case("steps-one", "Inversion steps 1", change=_set("inv", steps=1)),
    Case("steps-too-many", "Inversion steps 1001 (more than the 1000-step schedule)", change=_set("inv", steps=1001)),
    # -- memories
    Case("memory-other-model", "the sampler's MODEL is another load of the model than the memory's",
         {"model2": {"class_type": "DragonTest_TinyModel", "inputs": {"kind": "shapes"}}},
         change=_set("out", model=["model2", 0])),
    Case("memory-other-sampling", "the sampler's MODEL has another noise schedule (Model Sampling Discrete)",
         {"msd": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["model", 0],
                                                                   "sampling": "v_prediction", "zsnr": False}}},
         change=_set("out", model=["msd", 0])),
    Case("model-zsnr", "the Inversion's MODEL has a zero-terminal-SNR schedule (Model Sampling Discrete, zsnr)",
         {"msd": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["model", 0],
                                                                   "sampling": "v_prediction", "zsnr": True}}},
         change=_set("inv", model=["msd", 0])),
    Case("reference-other-model", "an Appearance reference inverted with another model load",
         _ref(model="model2") | _appearance()),
    Case("reference-other-size", "an Appearance reference inverted at 16x16, the image at 32x32",
         _ref(size=16) | _mask_op(["ref", 1], "scale", width=16, height=16) | _appearance(["m", 0])),
    Case("reference-other-steps", "an Appearance reference inverted with 5 steps, the image with 4",
         _ref(steps=5) | _appearance()),
    Case("source-other-steps", "a Paste source inverted with 5 steps, the image with 4", _ref(steps=5) | _paste()),
    Case("attention-other-size", "KSampler on the cross-attention-patched model with a 16x16 latent",
         {"small": {"class_type": "ImageScale", "inputs": {"image": ["scene", 0], "upscale_method": "nearest-exact",
                                                           "width": 16, "height": 16, "crop": "disabled"}},
          "slat": {"class_type": "VAEEncode", "inputs": {"pixels": ["small", 0], "vae": ["vae", 0]}}}
         | _ksampler(["slat", 0])),
    Case("attention-batch", "KSampler on the cross-attention-patched model with a batch of 2 latents",
         {"lat2": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["inv", 0], "amount": 2}}}
         | _ksampler(["lat2", 0]),
         runs="both pictures of the batch read the memory"),
    Case("attention-recompute-memory", "the Cross-Branch Attention patch given a memory kept as 'recompute'",
         _ksampler(["inv", 0]), change=_set("inv", storage="recompute")),
    # -- images, latents, models, prompts
    Case("image-not-multiple-of-8", "a 30x30 image on the pixel-space demo model",
         {"small": {"class_type": "ImageScale", "inputs": {"image": ["scene", 0], "upscale_method": "nearest-exact",
                                                           "width": 30, "height": 30, "crop": "disabled"}},
          "lat": {"class_type": "VAEEncode", "inputs": {"pixels": ["small", 0], "vae": ["vae", 0]}}}
         | _mask_op(["scene", 1], "scale", width=30, height=30) | _move(["m", 0]),
         runs="pixel space (1 pixel per latent cell): any size works"),
    Case("sd-image-cropped-by-vae-encode", "a 65x65 mask on an SD-style model (VAE Encode crops the image to 64)",
         _sd15_mask_case(65), change=_on_sd15),
    Case("latent-batch", "a batch of 2 latents", {"lat2": {"class_type": "RepeatLatentBatch",
                                                           "inputs": {"samples": ["lat", 0], "amount": 2}}},
         change=_set("inv", latent=["lat2", 0])),
    Case("latent-other-space", "a 4-channel SD latent (Empty Latent Image) for the 3-channel demo model",
         {"el": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}}},
         change=_set("inv", latent=["el", 0])),
    Case("latent-other-space-sd", "the demo model's 3-channel latent for an SD-style model",
         {"sd": SD15_INV["sd"], "sd_cond": SD15_INV["sd_cond"]},
         change=_set("inv", model=["sd", 0], positive=["sd_cond", 0])),
    Case("model-flux-inversion", "a Flux (DiT, flow) model into the Inversion",
         {"flux": {"class_type": "DragonTest_TinyModel", "inputs": {"kind": "flux"}}},
         change=_set("inv", model=["flux", 0])),
    Case("model-flux-sampler", "a Flux model into the Guided Sampler",
         {"flux": {"class_type": "DragonTest_TinyModel", "inputs": {"kind": "flux"}}},
         change=_set("out", model=["flux", 0])),
    Case("model-flux-attention", "a Flux model into the Cross-Branch Attention patch",
         {"flux": {"class_type": "DragonTest_TinyModel", "inputs": {"kind": "flux"}}} | _ksampler(["inv", 0]),
         change=_set("patched", model=["flux", 0])),
    Case("prompt-other-encoder", "a prompt encoded by another text encoder (768-wide, e.g. SD1.5's CLIP)",
         {"c768": {"class_type": "DragonTest_Value", "inputs": {"kind": "conditioning", "size": 768}}},
         change=_set("inv", positive=["c768", 0])),
    Case("prompt-batch", "a batch of 2 prompts (a (2, tokens, width) conditioning) as positive",
         {"cb": {"class_type": "DragonTest_Value", "inputs": {"kind": "conditioning_batch", "size": 32}}},
         change=_set("out", positive=["cb", 0])),
    Case("prompt-combined", "two prompts combined (Conditioning Combine) as positive",
         {"cc": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["scene", 2],
                                                                 "conditioning_2": ["neg", 0]}}},
         change=_set("out", positive=["cc", 0])),
    Case("prompt-area", "an area-restricted prompt (Conditioning Set Area) as negative",
         {"ca": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["neg", 0], "width": 64,
                                                                 "height": 64, "x": 0, "y": 0, "strength": 1.0}}},
         change=_set("out", negative=["ca", 0])),
]


# ----------------------------------------------------------------------------------------------
# running and the README table
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(comfy_env):
    nodes = comfy_env.nodes
    for node, module in (("SolidMask", "nodes_mask.py"), ("ModelSamplingDiscrete", "nodes_model_advanced.py")):
        if node not in nodes.NODE_CLASS_MAPPINGS:  # stock nodes from comfy_extras
            path = Path(nodes.__file__).parent / "comfy_extras" / module
            assert asyncio.run(nodes.load_custom_node(str(path), module_parent="comfy_extras")), module
    nodes.NODE_CLASS_MAPPINGS["DragonTest_TinyModel"] = _TinyModel
    nodes.NODE_CLASS_MAPPINGS["DragonTest_Value"] = _Value
    return comfy_env


def _saved(env, outputs: dict) -> np.ndarray:
    from PIL import Image

    info = outputs["save"]["images"][0]
    return np.asarray(Image.open(env.base / "output" / info["subfolder"] / info["filename"]), dtype=np.uint8)


def _outcome(env, case: Case) -> tuple[str, str]:
    """('error' | 'invalid' | 'runs', the first line the user reads)."""
    g = _base()
    g.update(json.loads(json.dumps(case.nodes)))  # the case's nodes, copied: a graph is changed below
    if case.change:
        case.change(g)
    pid = "bad-input"
    valid = asyncio.run(env.execution.validate_prompt(pid, g, None))
    if not valid[0]:
        errors = [e for node in valid[3].values() for e in node["errors"]] or [valid[1]]
        return "invalid", "; ".join(f"{e['message']}: {e['details']}" for e in errors)
    try:
        outputs = env.run(g)
    except RuntimeError as e:
        return "error", str(e).splitlines()[0]
    image = _saved(env, outputs)
    assert image.shape[-1] == 3 and image.size > 0
    return "runs", f"{image.shape[1]}x{image.shape[0]} picture"


def _cell(kind: str, message: str, case: Case) -> str:
    if kind == "runs":
        return f"runs: {case.runs}"
    assert "`" not in message and "|" not in message, message  # a table cell in backticks
    prefix = "refused by ComfyUI before running: " if kind == "invalid" else ""
    return f"{prefix}`{message}`"


def _readme_rows() -> dict[str, tuple[str, str]]:
    text = README.read_text()
    assert TABLE_START in text and TABLE_END in text, "docs/reliability.md lacks the bad-input table markers"
    table = text[text.index(TABLE_START) + len(TABLE_START):text.index(TABLE_END)]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


SEEN: dict[str, str] = {}


def test_the_good_edit_runs(env):
    SEEN["before"] = _saved(env, env.run(_base()))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(env, case):
    kind, message = _outcome(env, case)
    if case.runs:
        assert kind == "runs", message
    else:
        assert kind in ("error", "invalid"), f"{case.id} was accepted"
        # the message names the node (ComfyUI's validation names the input) and no deep frame
        assert kind == "invalid" or message.startswith("DragonDiffusion "), message
        assert "Traceback" not in message and "torch" not in message.lower()
    SEEN[case.id] = _cell(kind, message, case)
    if os.environ.get("UPDATE_README_TABLE"):
        return
    rows = _readme_rows()
    assert case.id in rows, f"docs/reliability.md's bad-input table has no row for {case.id}; run with UPDATE_README_TABLE=1"
    assert rows[case.id] == (case.what, SEEN[case.id])


def test_the_values_used_and_a_far_too_strong_energy_reach_the_console(env, caplog):
    g = _base()
    g["out"]["inputs"]["energy_scale"] = 5000.0
    g["save"]["inputs"]["filename_prefix"] = "bad_input_energy"
    with caplog.at_level("INFO"):
        env.run(g)
    text = caplog.text
    assert "energy_scale 5000 is 21x this edit's default (240)" in text and "noise" in text
    assert "move edit, 4 steps" in text and "energy_scale 5000, guidance_end 1" in text


def test_after_every_failure_the_good_edit_gives_the_same_picture(env):
    if "before" not in SEEN:
        pytest.skip("runs after test_the_good_edit_runs")
    g = _base()
    g["save"]["inputs"]["filename_prefix"] = "bad_input_after"
    # the model's default energy scale spelled out instead of -1: a new sampler run (not the cached output)
    # with the same settings (not another seed: the move's fresh noise where the object leaves is seeded)
    g["out"]["inputs"]["energy_scale"] = 240.0
    assert np.array_equal(_saved(env, env.run(g)), SEEN["before"])


def test_readme_table_lists_exactly_these_cases(env):
    if os.environ.get("UPDATE_README_TABLE"):
        missing = [c.id for c in CASES if c.id not in SEEN]
        assert not missing, f"run every case to rewrite the table: {missing}"
        lines = ["| input | what the user did | what the user sees |", "|---|---|---|"]
        lines += [f"| `{c.id}` | {c.what} | {SEEN[c.id]} |" for c in CASES]
        text = README.read_text()
        head, tail = text.split(TABLE_START)[0], text.split(TABLE_END)[1]
        README.write_text(f"{head}{TABLE_START}\n" + "\n".join(lines) + f"\n{TABLE_END}{tail}")
    assert list(_readme_rows()) == [c.id for c in CASES]


def test_vae_encode_crops_images_to_a_multiple_of_8_centred(env):
    """What the README says VAE Encode does to an SD image whose side is not a multiple of 8
    (checked on ComfyUI's own VAE cropping code, with an SD VAE's factor of 8)."""
    import copy

    vae = copy.copy(env.nodes.VAELoader().load_vae("pixel_space")[0])
    vae.downscale_ratio, vae.crop_input = 8, True  # as an SD VAE has them
    pixels = torch.arange(70, dtype=torch.float32)[None, None, :, None].expand(1, 65, 70, 3)
    out = vae.vae_encode_crop_pixels(pixels)
    assert out.shape == (1, 64, 64, 3)
    assert out[0, 0, 0, 0] == (70 % 8) // 2  # (W mod 8) // 2 pixels dropped on the left (and top)
