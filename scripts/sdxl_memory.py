"""Measure the DragonDiffusion memory of a full-size SDXL UNet at 1024x1024 (latent 128x128).

Builds SDXL's UNet from ComfyUI's own model config (``comfy.supported_models.SDXL``,
2.6 B parameters, random weights, fp32 on the CPU), runs the pack's Inversion node
(a short inversion, ``--steps``) with **every** decoder self-attention recorded, and
prints per layer and per feature level the shape, bytes per step, the totals per
step for the full memory and for the default subset (``default_kv_layers``), the
figures for a 50-step edit, the inversion's wall time and the process's peak RSS.

With ``--edit`` it then runs one short guided move edit through the pack's
Guided Sampler node on a memory with the **default** layer subset (every step
guided, ``guidance_end 1``) and reports the edit's cost and the process's peak
RSS: the weights, the memory and a gradient pass's activations at 1024x1024.
``--dtype fp16`` builds the UNet in fp16 (as ComfyUI runs SDXL on a GPU);
``--pytorch-attention`` is ComfyUI's ``--use-pytorch-cross-attention`` (on a GPU
ComfyUI picks PyTorch's attention by default; on the CPU it otherwise uses
sub-quadratic attention, whose backward keeps the attention weights).

Run (a few minutes on one CPU thread, ~11 GB of RAM):
``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python scripts/sdxl_memory.py --steps 2``
The guided edit (2 steps, about 25 min on two threads, ~15 GB):
``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=2 python scripts/sdxl_memory.py --steps 2 --edit
--dtype fp16 --pytorch-attention --json sdxl_edit.json``
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--edit", action="store_true", help="also run a short guided move edit (default layer subset)")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="the UNet's weight dtype")
    ap.add_argument("--pytorch-attention", action="store_true", help="ComfyUI's --use-pytorch-cross-attention")
    args = ap.parse_args()

    comfy_path = Path(os.environ["COMFYUI_PATH"]).resolve()
    sys.path.insert(0, str(comfy_path))
    sys.path.insert(1, str(ROOT))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.use_pytorch_cross_attention = args.pytorch_attention
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm

    spec = importlib.util.spec_from_file_location("dragon_nodes", ROOT / "nodes" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "nodes")])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["dragon_nodes"] = pkg
    spec.loader.exec_module(pkg)
    memory_nodes = importlib.import_module("dragon_nodes.memory_nodes")
    from dragon_core import memory as core_memory

    # SDXL base's unet_config as ComfyUI detects it from the checkpoint
    cfg = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
           "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
           "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
           "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
           "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
           "use_temporal_attention": False, "use_temporal_resblock": False}
    t0 = time.perf_counter()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    with torch.inference_mode():
        model_config = sm.SDXL(cfg)
        model_config.set_inference_dtype(dtype, None)
        model = model_config.get_model({})
        gen = torch.Generator().manual_seed(0)
        n_params = 0
        for name, p in model.named_parameters():  # comfy ops leave weights uninitialised
            n_params += p.numel()
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=gen)
            else:
                p.fill_(1.0 if "norm" in name else 0.0)
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                   offload_device=mm.unet_offload_device())
    t_build = time.perf_counter() - t0

    lat = args.size // 8
    gen = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 77, 2048, generator=gen), {"pooled_output": torch.randn(1, 1280, generator=gen),
                                                        "width": args.size, "height": args.size}]]
    latent = {"samples": torch.randn(1, 4, lat, lat, generator=gen)}
    # record every decoder self-attention (attention_per_block 0); the default subset's figures are
    # read off the same memory. --edit: the default subset, as the node records it for an edit
    per_block = {} if args.edit else {"attention_per_block": 0}
    t0 = time.perf_counter()
    with torch.inference_mode():
        _, mem = memory_nodes.Inversion.execute(patcher, latent, cond, args.steps, **per_block).args
    t_inv = time.perf_counter() - t0
    rss_inversion = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    edit = _guided_move(patcher, mem, cond, args.size) if args.edit else None
    real_default = core_memory.default_kv_layers

    rows = mem.layer_report()
    subset = real_default(mem.layers())
    keep = {str(k) for k in (subset if subset is not None else mem.layers())}
    mib = 2**20
    kv_all = sum(r["bytes_per_step"] for r in rows if r["kind"] == "kv")
    kv_def = sum(r["bytes_per_step"] for r in rows if r["kind"] == "kv" and r["name"] in keep)
    feats = sum(r["bytes_per_step"] for r in rows if r["kind"] == "feature")
    traj = mem.trajectory.latents[0].numel() * mem.trajectory.latents.element_size()
    per_block: dict[str, dict] = {}
    for r in rows:
        key = r["name"].rsplit(".", 1)[0] if r["kind"] == "kv" else r["name"]
        b = per_block.setdefault(key, {"shape": r["shape"], "layers": 0, "kept": 0, "mib_per_layer_step": 0.0})
        b["layers"] += 1
        b["kept"] += int(r["kind"] == "feature" or r["name"] in keep)
        b["mib_per_layer_step"] = r["bytes_per_step"] / mib
    out = {
        "image": f"{args.size}x{args.size}", "latent": [lat, lat], "parameters": n_params, "steps": args.steps,
        "dtype": str(mem.policy.dtype), "blocks": per_block,
        "feature_block_ids": mem.info.get("feature_block_ids"),
        "mib_per_step": {"kv_all": kv_all / mib, "kv_default": kv_def / mib, "features": feats / mib,
                         "trajectory": traj / mib},
        "gib_50_steps": {"all_layers": 50 * (kv_all + feats + traj) / 2**30,
                         "default": 50 * (kv_def + feats + traj) / 2**30},
        "default_layers": sorted(keep), "n_layers": {"all": len(mem.layers()), "default": len(keep)},
        "weights_dtype": args.dtype, "pytorch_attention": args.pytorch_attention,
        "seconds": {"build": round(t_build, 1), "inversion": round(t_inv, 1)},
        "peak_rss_gib_after_inversion": rss_inversion,
        "edit": edit,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads(),
    }
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def _guided_move(patcher, memory, cond, size: int) -> dict:
    """A move edit of a centred square by 1/8 of the side, every step guided, through the
    Guided Sampler node; returns the edit's stats and the peak RSS after it."""
    import torch

    sampler_nodes = importlib.import_module("dragon_nodes.sampler_nodes")
    from dragon_core.edits import Move

    mask = torch.zeros(size, size)
    mask[size * 3 // 8:size * 5 // 8, size * 3 // 8:size * 5 // 8] = 1.0
    negative = [[torch.zeros_like(cond[0][0]), dict(cond[0][1])]]
    stats: dict = {}
    logging = importlib.import_module("logging")

    class Grab(logging.Handler):  # the node logs the edit's cost line; keep it
        def emit(self, record):
            if "forward-equivalents" in record.getMessage():
                stats["log"] = record.getMessage()

    handler = Grab(level=logging.INFO)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    t0 = time.perf_counter()
    with torch.inference_mode():
        (out,) = sampler_nodes.GuidedSampler.execute(patcher, cond, negative, memory, Move(mask, size / 8, 0.0),
                                                     seed=0, cfg=-1.0, energy_scale=-1.0, guidance_end=1.0,
                                                     flexibility=-1.0, cross_attention=True).args
    logging.getLogger().removeHandler(handler)
    finite = bool(torch.isfinite(out["samples"]).all())
    return {"kind": "move", "steps": memory.steps, "guidance_end": 1.0, "seconds": round(time.perf_counter() - t0, 1),
            "finite": finite, "node_log": stats.get("log"),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


if __name__ == "__main__":
    main()
