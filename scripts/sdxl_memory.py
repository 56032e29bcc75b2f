"""Measure the DragonDiffusion memory of a full-size SDXL UNet at 1024x1024 (latent 128x128).

Builds SDXL's UNet from ComfyUI's own model config (``comfy.supported_models.SDXL``,
2.6 B parameters, random weights, fp32 on the CPU), runs the pack's Inversion node
(a short inversion, ``--steps``) with **every** decoder self-attention recorded, and
prints per layer and per feature level the shape, bytes per step, the totals per
step for the full memory and for the default subset (``default_kv_layers``), the
figures for a 50-step edit, the inversion's wall time and the process's peak RSS.

Run (a few minutes on one CPU thread, ~11 GB of RAM):
``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python scripts/sdxl_memory.py --steps 2``
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
    args = ap.parse_args()

    comfy_path = Path(os.environ["COMFYUI_PATH"]).resolve()
    sys.path.insert(0, str(comfy_path))
    sys.path.insert(1, str(ROOT))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
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
    with torch.inference_mode():
        model = sm.SDXL(cfg).get_model({})
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
    # read off the same memory
    t0 = time.perf_counter()
    with torch.inference_mode():
        _, mem = memory_nodes.Inversion.execute(patcher, latent, cond, args.steps, attention_per_block=0).args
    t_inv = time.perf_counter() - t0
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
        "seconds": {"build": round(t_build, 1), "inversion": round(t_inv, 1)},
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads(),
    }
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
