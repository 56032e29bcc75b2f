"""GPU check: wall time, peak memory and UNet work of DragonDiffusion edits on a random-weight SD1.5 UNet.

Needs only this repository and pip packages (torch, diffusers, safetensors, numpy, pillow): no
ComfyUI, no download. It builds diffusers' ``UNet2DConditionModel`` with Stable Diffusion 1.5's
configuration (written out below; 860 M parameters) from a fixed seed, casts it to ``--dtype``,
and with a random 77x768 text embedding (no CLIP) and a random latent runs

* the DDIM inversion with the feature memory (``--steps`` steps), then
* a move and a drag edit on the paper's schedule (CFG 4, guidance on the first 60 % of the steps,
  time travel x3, regional SDE 0.4, cross-branch attention from 10 % of the steps: step 5 of 50),
  each under the product's schedule (``efficient``) and the official implementation's
  (``reference``, ``dragon_lab.instrument.measured_edit(..., schedule="reference")``).

Per phase it writes wall seconds (CUDA synchronised), peak memory (CUDA:
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; always the process's peak
RSS) and forward-equivalents (UNet work: ``docs/performance.md``) to JSON, with the
efficient/reference ratios and the largest latent difference between the two schedules.

On a GPU (the acceptance run: about a minute of GPU time is expected, the target is under 5):
``python scripts/gpu_check.py --json benchmarks/gpu_check_sd15_512_fp16.json``
On the CPU at a tiny size (CI; SD1.5's topology with 32 base channels instead of 320):
``OMP_NUM_THREADS=1 python scripts/gpu_check.py --device cpu --size 64 --steps 4 --channels 32 --dtype fp32 --json out.json``
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CAST = {"fp32": "float", "fp16": "half", "bf16": "bfloat16"}  # nn.Module casts (diffusers' .to() warns)
KINDS = ("move", "drag")
SCHEDULES = ("efficient", "reference")


def sd15_config(channels: int = 320) -> dict[str, Any]:
    """Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5, unet/config.json); ``channels``
    scales the widths (320 = SD1.5) and nothing else."""
    return {
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
        "flip_sin_to_cos": True, "freq_shift": 0, "layers_per_block": 2, "downsample_padding": 1,
        "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
        "cross_attention_dim": 768, "attention_head_dim": 8,
        "block_out_channels": tuple(channels * m for m in (1, 2, 4, 4)),
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    }


def build_unet(channels: int, dtype: str, device: str, seed: int) -> Any:
    """The seeded random-weight UNet in ``dtype`` on ``device`` (initialised there: fast on a GPU)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**sd15_config(channels))
    return getattr(unet, CAST[dtype])().eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paper_settings(kind: str, steps: int) -> Any:
    """The official demo's schedule for ``kind`` at ``steps`` steps (cross-branch attention from
    step 5 of 50, i.e. 10 % of the steps)."""
    from dragon_core.settings import default_settings

    return default_settings(kind, None, time_travel=3, flexibility=0.4, attention_start=round(0.1 * steps))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dragon_core.diffusers_backend import DiffusersBackend
    from dragon_core.memory import invert_with_memory
    from dragon_core.schedule import scaled_linear_alphas_cumprod
    from dragon_lab.instrument import measured_edit, peak_stats, reset_peak
    from dragon_lab.perf import sd_edit

    device = torch.device(args.device)
    t_start = time.perf_counter()
    unet = build_unet(args.channels, args.dtype, args.device, args.seed)
    backend = DiffusersBackend(unet, scaled_linear_alphas_cumprod(), device, DTYPES[args.dtype])
    sync(device)
    lat = args.size // 8
    g = torch.Generator().manual_seed(args.seed + 1)
    z0 = torch.randn(1, 4, lat, lat, generator=g).to(device)
    cond, uncond = torch.randn(1, 77, 768, generator=g).to(device), torch.randn(1, 77, 768, generator=g).to(device)
    out: dict[str, Any] = {"config": _config(args, unet, device), "build_seconds": round(time.perf_counter() - t_start, 3)}

    t0 = time.perf_counter()  # one pass for lazy initialisation (cuDNN, kernels), outside the phases
    with torch.no_grad():
        backend.predict_eps(z0, 999, cond, step=0)
    sync(device)
    out["warmup_seconds"] = round(time.perf_counter() - t0, 3)

    reset_peak(device)
    t0 = time.perf_counter()
    memory = invert_with_memory(backend, z0, cond, steps=args.steps, spacing="leading", model_id="sd15-random")
    sync(device)
    out["inversion"] = {"seconds": round(time.perf_counter() - t0, 3), "forward_equiv": float(args.steps),
                        "memory_bytes": memory.nbytes()["total"], **_peaks(peak_stats(device))}

    latents: dict[tuple[str, str], torch.Tensor] = {}
    out["edits"] = []
    for kind in args.kinds:
        for schedule in args.schedules:
            sync(device)
            t0 = time.perf_counter()
            res = measured_edit(backend, memory, sd_edit(kind, lat), cond, uncond, paper_settings(kind, args.steps),
                                schedule)
            sync(device)
            latents[(kind, schedule)] = res.latent.float().cpu()
            s = res.stats
            out["edits"].append({"kind": kind, "schedule": schedule, "seconds": round(time.perf_counter() - t0, 3),
                                 "forward_equiv": s["forward_equiv"], **_peaks(s),
                                 "finite": bool(torch.isfinite(res.latent).all()), "stats": s})
            print(f"{kind:5s} {schedule:9s} {out['edits'][-1]['seconds']:8.2f} s  forward-equivalents "
                  f"{s['forward_equiv']:7.1f}  peak {_peak_mib(out['edits'][-1]):8.0f} MiB", flush=True)
    out["comparison"] = _compare(out["edits"], latents)
    backend.close()
    out["total_seconds"] = round(time.perf_counter() - t_start, 3)
    return out


def _config(args: argparse.Namespace, unet: Any, device: torch.device) -> dict[str, Any]:
    cfg = {k: getattr(args, k) for k in ("device", "dtype", "size", "steps", "channels", "seed")}
    cfg.update(latent=args.size // 8, kinds=list(args.kinds), schedules=list(args.schedules),
               parameters=sum(p.numel() for p in unet.parameters()), torch=torch.__version__,
               machine=platform.machine(), torch_threads=torch.get_num_threads())
    try:
        import diffusers

        cfg["diffusers"] = diffusers.__version__
    except ImportError:  # pragma: no cover - build_unet needed it already
        pass
    if device.type == "cuda":
        cfg["gpu"] = torch.cuda.get_device_name(device)
        cfg["weights_cuda_bytes"] = int(torch.cuda.memory_allocated(device))
    return cfg


def _peaks(stats: dict[str, Any]) -> dict[str, Any]:
    return {"cuda_max_allocated_bytes": stats.get("cuda_max_allocated_bytes"), "peak_rss_bytes": stats["peak_rss_bytes"]}


def _peak_mib(row: dict[str, Any]) -> float:
    b = row["cuda_max_allocated_bytes"]
    return (b if b is not None else row["peak_rss_bytes"]) / 2**20


def _compare(edits: list[dict[str, Any]], latents: dict[tuple[str, str], torch.Tensor]) -> dict[str, Any]:
    """Per kind: efficient / reference ratios and the largest latent difference between the two."""
    out: dict[str, Any] = {}
    rows = {(e["kind"], e["schedule"]): e for e in edits}
    for kind in {e["kind"] for e in edits}:
        eff, ref = rows.get((kind, "efficient")), rows.get((kind, "reference"))
        if eff is None or ref is None:
            continue
        ratios = {k: eff[k] / ref[k] for k in ("seconds", "forward_equiv", "cuda_max_allocated_bytes", "peak_rss_bytes")
                  if eff[k] is not None and ref[k]}
        diff = float((latents[(kind, "efficient")] - latents[(kind, "reference")]).abs().max())
        out[kind] = {"efficient_over_reference": ratios, "max_latent_diff": diff}
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp16", help="the UNet's weights (default fp16)")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--channels", type=int, default=320, help="base width (320 = SD1.5; 32 for a tiny CI run)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: move, drag")
    ap.add_argument("--schedules", default=",".join(SCHEDULES), help="comma-separated: efficient, reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="where to write the results")
    args = ap.parse_args(argv)
    args.kinds = tuple(k for k in args.kinds.split(",") if k)
    args.schedules = tuple(s for s in args.schedules.split(",") if s)
    if set(args.kinds) - set(KINDS) or set(args.schedules) - set(SCHEDULES) or not args.kinds or not args.schedules:
        ap.error(f"--kinds from {KINDS}, --schedules from {SCHEDULES}")
    if args.size % 64:
        ap.error("--size must be a multiple of 64 (the UNet halves the latent three times)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    inv = result["inversion"]
    print(f"inversion {inv['seconds']:.2f} s; total {result['total_seconds']:.1f} s; wrote {args.json}")
    if not all(math.isfinite(e["forward_equiv"]) and e["finite"] for e in result["edits"]):
        raise SystemExit("an edit produced non-finite values")
    return result


if __name__ == "__main__":
    main()
