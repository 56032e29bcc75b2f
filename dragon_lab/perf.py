"""``python -m dragon_lab perf``: the reference schedule and the efficient default side by side.

In one process, alternating per edit (reference, then efficient, on the same
memory, weights and seeds), on

* (a) the bundled shapes model (shapes-world bench cases; the output images of the
  two schedules are compared: max pixel difference), and
* (b) a full-size SD1.5-architecture diffusers ``UNet2DConditionModel`` with random
  weights (diffusers' default config with cross-attention 768; built locally, no
  download), a random 77-token context and a random "image" latent, at 64x64
  latents (512x512 images) and optionally 96x96 (768x768).

Per edit it prints forward-equivalents, memory bytes (ours, and what the
reference implementation would keep: projected K and V of every decoder
self-attention at every step, fp16, plus the latent trajectory), peak RSS and
wall time, with the efficient/reference ratios, and writes everything to JSON.
It also extrapolates the memory of an SD1.5 512x512 50-step edit from the
per-step bytes it measured.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dragon_core.edits import Drag, Move
from dragon_core.memory import default_policy, invert_with_memory
from dragon_core.settings import default_settings, with_overrides

from .instrument import measured_edit, peak_rss_bytes, reset_peak

COST_KEYS = ("forward_equiv", "peak_rss_bytes", "peak_tensor_bytes", "seconds", "cpu_seconds")


def _ratios(res: Any, base: Any, keys: tuple[str, ...] = COST_KEYS) -> dict[str, float]:
    """``res.stats[k] / base.stats[k]`` for the keys both have (``base``'s non-zero), rounded."""
    return {k: round(res.stats[k] / base.stats[k], 4) for k in keys if base.stats.get(k) and k in res.stats}


def _row(model: str, kind: str, res_ref: Any, res_eff: Any, extra: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "kind": kind, "reference": res_ref.stats, "efficient": res_eff.stats}
    row["ratio"] = _ratios(res_eff, res_ref)
    row.update(extra)
    return row


def _pair(backend: Any, mem: Any, edit: Any, cond: Any, uncond: Any, settings: Any, tensor_peak: bool = False
          ) -> tuple[Any, Any]:
    ref = measured_edit(backend, mem, edit, cond, uncond, settings, "reference", tensor_peak=tensor_peak)
    eff = measured_edit(backend, mem, edit, cond, uncond, settings, tensor_peak=tensor_peak)
    for r in (ref, eff):
        r.stats["memory_bytes_reference_impl"] = reference_memory_bytes(mem)
    return ref, eff


def _low_memory(backend: Any, lean: Any, edit: Any, cond: Any, uncond: Any, settings: Any, eff: Any,
                tensor_peak: bool = False) -> dict:
    """The efficient schedule on a recompute memory (latents only) against the default memory."""
    res = measured_edit(backend, lean, edit, cond, uncond, settings, tensor_peak=tensor_peak)
    return {"stats": res.stats, "max_latent_diff_to_default": float((res.latent - eff.latent).abs().max()),
            "ratio_to_default": _ratios(res, eff, ("memory_bytes",) + COST_KEYS)}


def reference_memory_bytes(mem: Any) -> int:
    """What the official code keeps for this inversion: projected K and V (each the size of
    our pre-projection input for SD attention) of every decoder self-attention at every
    step in fp16, and the latent trajectory (fp16); no decoder features."""
    per = {}
    for (s, layer), t in mem.kv.items():
        per[layer] = t.numel()
    kv = 2 * sum(per.values()) * mem.steps * 2
    traj = mem.trajectory.latents.numel() * 2
    return kv + traj


# -- (a) shapes model ------------------------------------------------------------------------------


def run_shapes(kinds: tuple[str, ...], n: int, steps: int, paper_schedule: bool, log: Any) -> list[dict[str, Any]]:
    from dragon_core.diffusers_backend import load_shapes_backend
    from dragon_core.images import array_to_tensor
    from dragon_demo.shapes_model import ASSET_DIR, load_config

    from .bench import grow, make_case, mask_tensor, to_image

    backend, enc = load_shapes_backend()
    cfg = load_config(ASSET_DIR)
    spacing = cfg.get("sampling", {}).get("spacing", "comfy_uniform")
    rows = []
    for kind in kinds:
        for k in range(n):
            case = make_case(kind, k).edit_case
            cond, uncond = enc.encode(case.scene.prompt()), enc.encode("")
            mem = invert_with_memory(backend, array_to_tensor(case.scene.render()), cond, steps=steps, spacing=spacing)
            m = case.scene.masks()[case.index]
            if kind == "move":
                edit: Any = Move(mask_tensor(m), case.dx, case.dy, case.scale)
            else:
                ys, xs = np.nonzero(m)
                h = torch.tensor([[xs.mean() + 0.5, ys.mean() + 0.5]], dtype=torch.float32)
                t = h + torch.tensor([[case.dx, case.dy]], dtype=torch.float32)
                region = grow(m | case.target.masks()[case.index], 2)
                edit = Drag(h, t, (case.scene.size, case.scene.size), mask_tensor(region))
            if paper_schedule:  # the official demo's schedule (CFG 4, time travel 3, regional SDE 0.4)
                settings = default_settings(kind, None, feature_scale=1.0, time_travel=3, flexibility=0.4)
                label = f"shapes32 paper-schedule {steps} steps"
            else:  # the model's calibrated edit defaults, CFG set to its sampling CFG (3) so both schedules run CFG
                settings = default_settings(kind, cfg.get("edit_defaults"), cfg=float(cfg["sampling"]["cfg"]))
                label = f"shapes32 model defaults cfg {cfg['sampling']['cfg']} {steps} steps"
            ref, eff = _pair(backend, mem, edit, cond, uncond, settings)
            diff = float(np.abs(to_image(ref.latent) - to_image(eff.latent)).max())
            extra = {"case": k, "max_pixel_diff": diff}
            if paper_schedule:  # the low-memory option's cost on a full 50-step schedule
                lean = invert_with_memory(backend, mem.trajectory.z_0, cond, steps=steps, spacing=spacing,
                                          policy=default_policy(backend, recompute=True))
                extra["low_memory"] = _low_memory(backend, lean, edit, cond, uncond, settings, eff)
            row = _row(label, kind, ref, eff, extra)
            rows.append(row)
            log(row)
    backend.close()
    return rows


# -- (b) SD1.5-architecture random UNet --------------------------------------------------------------


def build_sd15(size: int, seed: int = 0) -> Any:
    """diffusers' default UNet2DConditionModel config = SD1.5's, with cross-attention 768; random weights."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=size, cross_attention_dim=768, attention_head_dim=8).eval()


def sd_edit(kind: str, lat: int) -> Any:
    img = lat * 8
    if kind == "move":
        mask = torch.zeros(img, img)
        a, b = img * 3 // 8, img * 5 // 8
        mask[a:b, a:b] = 1
        return Move(mask, dx=img / 8, dy=0.0)
    mask = torch.zeros(img, img)
    a, b = img // 4, img * 3 // 4
    mask[a:b, a:b] = 1
    h = torch.tensor([[img / 2, img / 2]])
    return Drag(h, h + torch.tensor([[img / 16, img / 32]]), (img, img), mask)


def sd_settings(kind: str, steps: int, guided: int) -> Any:
    """The paper's SD1.5 settings (CFG 4, energy scale, features at 2x latent) on a short schedule:
    the first ``guided`` steps guided, cross-branch attention from step 1."""
    f = guided / steps
    return default_settings(kind, None, guide_until=f, guide_every_until=f, attention_start=1, time_travel=1)


def run_sd(kinds: tuple[str, ...], sizes: tuple[int, ...], steps: int, guided: int, log: Any,
           tensor_peak: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from dragon_core.diffusers_backend import DiffusersBackend
    from dragon_core.schedule import scaled_linear_alphas_cumprod

    rows, extra = [], {}
    for lat in sizes:
        t0 = time.time()
        unet = build_sd15(lat)
        backend = DiffusersBackend(unet, scaled_linear_alphas_cumprod())
        build_s = time.time() - t0
        g = torch.Generator().manual_seed(1)
        z0 = torch.randn(1, 4, lat, lat, generator=g)
        cond, uncond = torch.randn(1, 77, 768, generator=g), torch.randn(1, 77, 768, generator=g)
        reset_peak()
        mem = invert_with_memory(backend, z0, cond, steps=steps, spacing="leading", model_id="sd15-random")
        inv_peak = peak_rss_bytes()
        lean = invert_with_memory(backend, z0, cond, steps=steps, spacing="leading", model_id="sd15-random",
                                  policy=default_policy(backend, recompute=True))
        for kind in kinds:
            settings = sd_settings(kind, steps, guided)
            ref, eff = _pair(backend, mem, sd_edit(kind, lat), cond, uncond, settings, tensor_peak)
            diff = float((ref.latent - eff.latent).abs().max())
            low = _low_memory(backend, lean, sd_edit(kind, lat), cond, uncond, settings, eff, tensor_peak)
            row = _row(f"sd15-random {lat * 8}x{lat * 8} {steps} steps, {guided} guided", kind, ref, eff,
                       {"max_latent_diff": diff, "inversion_peak_rss_bytes": inv_peak,
                        "build_seconds": round(build_s, 1), "low_memory": low})
            rows.append(row)
            log(row)
        if lat == 64:
            extra["sd15_512_50_steps_memory"] = extrapolate_memory(mem, 50)
        backend.close()
        del backend, unet, mem
    return rows, extra


SAVINGS = {
    "efficient (default)": {},
    "cond and uncond as two passes": {"batch_cfg": False},
}


def run_savings(kind: str, lat: int, steps: int, guided: int, log: Any) -> list[dict[str, Any]]:
    """Each saving on its own against the efficient default, on the SD1.5-architecture random UNet."""
    from dragon_core.diffusers_backend import DiffusersBackend
    from dragon_core.schedule import scaled_linear_alphas_cumprod

    backend = DiffusersBackend(build_sd15(lat), scaled_linear_alphas_cumprod())
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(1, 4, lat, lat, generator=g)
    cond, uncond = torch.randn(1, 77, 768, generator=g), torch.randn(1, 77, 768, generator=g)
    mem = invert_with_memory(backend, z0, cond, steps=steps, spacing="leading", model_id="sd15-random")
    settings = sd_settings(kind, steps, guided)
    rows, base = [], None
    for name, kw in SAVINGS.items():
        res = measured_edit(backend, mem, sd_edit(kind, lat), cond, uncond, with_overrides(settings, **kw))
        base = base or res
        row = {"model": f"sd15-random {lat * 8}x{lat * 8} {steps} steps, {guided} guided", "kind": kind,
               "variant": name, "stats": res.stats,
               "max_latent_diff_to_default": float((res.latent - base.latent).abs().max()),
               "ratio_to_default": _ratios(res, base)}
        rows.append(row)
        log(row)
    backend.close()
    return rows


def format_saving(row: dict[str, Any]) -> str:
    s, q = row["stats"], row["ratio_to_default"]
    return (f"| {row['kind']} | {row['variant']} | {s['forward_equiv']:.2f} ({q['forward_equiv']:.2f}) | "
            f"{s['cpu_seconds']:.1f} ({q['cpu_seconds']:.2f}) | {s['peak_rss_bytes'] / 2**20:.0f} "
            f"({q['peak_rss_bytes']:.2f}) | {row['max_latent_diff_to_default']:.2g} |")


def run_savings_report(out: str | Path, kinds: tuple[str, ...], lat: int, steps: int, guided: int,
                       threads: int = 1, tensor_peak: bool = False) -> dict[str, Any]:
    """The table (module doc); ``tensor_peak``: the SD1.5 edits also report their exact peak
    tensor bytes (:mod:`dragon_lab.tensor_peak`; their timings then include its overhead)."""
    torch.set_num_threads(threads)
    t0 = time.time()
    print("| edit | variant | forward-equivalents (x default) | CPU s (x default) | peak RSS MiB (x default) | "
          "max latent diff |\n|---|---|---|---|---|---|", flush=True)
    rows = []
    for kind in kinds:
        rows += run_savings(kind, lat, steps, guided, lambda r: print(format_saving(r), flush=True))
    result = {"torch_threads": threads, "seconds": round(time.time() - t0, 1), "rows": rows}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"{threads} torch thread(s); {result['seconds']}s; wrote {out}")
    return result


def extrapolate_memory(mem: Any, steps: int) -> dict[str, Any]:
    """Memory of a ``steps``-step inversion at this latent size, from the per-step sizes measured.

    ``default_all_steps``: the default policy as recorded (every step, every decoder
    self-attention's pre-projection input and the two feature levels; int8 with
    per-channel scales); ``fp16_all_steps``: the same in fp16; ``used_steps``: the
    default with K/V only from step 5 (attention start for move/drag) and features only
    on the 20 guided steps of the paper's 50-step schedule; ``recompute``: the latents
    plus the one step a recompute memory holds (fp16); ``reference_impl``: projected K
    and V in fp16 and the latents."""
    n = mem.steps
    b = mem.nbytes()
    kv_step, feat_step = b["kv"] / n, b["features"] / n
    kv_numel = sum(t.numel() for t in mem.kv.values()) / n
    feat_numel = sum(t.numel() for t in mem.features.values()) / n
    lat_bytes = mem.trajectory.latents[0].numel() * mem.trajectory.latents.element_size()
    traj = lat_bytes * (steps + 1)
    guided = sum(1 for s in range(steps) if s < 30 and (s < 10 or s % 2 == 0))
    gib = 2**30
    out = {
        "steps": steps, "dtype": str(mem.policy.dtype),
        "kv_bytes_per_step": kv_step, "feature_bytes_per_step": feat_step,
        "default_all_steps": kv_step * steps + feat_step * steps + traj,
        "fp16_all_steps": 2 * (kv_numel + feat_numel) * steps + traj,
        "used_steps": kv_step * (steps - 5) + feat_step * guided + traj,
        "recompute": traj + 2 * (kv_numel + feat_numel),
        "reference_impl": 2 * 2 * kv_numel * steps + lat_bytes // 2 * (steps + 1),
    }
    out.update({k + "_gib": round(v / gib, 3) for k, v in list(out.items()) if k not in ("steps", "dtype")
                and not k.endswith("per_step")})
    return out


# -- report ----------------------------------------------------------------------------------------------


def format_row(row: dict[str, Any]) -> str:
    r, e, q = row["reference"], row["efficient"], row["ratio"]
    mib = 2**20
    diff = row.get("max_pixel_diff", row.get("max_latent_diff"))
    return (f"| {row['model']} | {row['kind']} | {r['forward_equiv']:.1f} / {e['forward_equiv']:.1f} "
            f"({q.get('forward_equiv', float('nan')):.2f}) | {r['memory_bytes_reference_impl'] / mib:.1f} / "
            f"{e['memory_bytes'] / mib:.1f} | {r['peak_rss_bytes'] / mib:.0f} / {e['peak_rss_bytes'] / mib:.0f} "
            f"({q.get('peak_rss_bytes', float('nan')):.2f}) | {r['seconds']:.1f} / {e['seconds']:.1f} "
            f"({q.get('seconds', float('nan')):.2f}) | {r['cpu_seconds']:.1f} / {e['cpu_seconds']:.1f} "
            f"({q.get('cpu_seconds', float('nan')):.2f}) | {diff:.2g} |")


HEADER = ("| model | edit | forward-equivalents ref / eff (ratio) | memory MiB ref impl / ours | "
          "peak RSS MiB ref / eff (ratio) | edit wall s ref / eff (ratio) | edit CPU s ref / eff (ratio) | max diff |\n"
          "|---|---|---|---|---|---|---|---|")


def run_perf(out: str | Path, kinds: tuple[str, ...] = ("move", "drag"), shapes_n: int = 2, shapes_steps: int = 20,
             paper_steps: int = 50, sd_sizes: tuple[int, ...] = (64,), sd_steps: int = 2, sd_guided: int = 1,
             threads: int = 1, tensor_peak: bool = False) -> dict[str, Any]:
    """The table (module doc); ``tensor_peak``: the SD1.5 edits also report their exact peak
    tensor bytes (:mod:`dragon_lab.tensor_peak`; their timings then include its overhead)."""
    torch.set_num_threads(threads)
    t0 = time.time()
    print(HEADER, flush=True)

    def log(row: dict[str, Any]) -> None:
        print(format_row(row), flush=True)
        if "peak_tensor_bytes" in row["efficient"]:
            r, e = row["reference"]["peak_tensor_bytes"], row["efficient"]["peak_tensor_bytes"]
            print(f"|  | {row['kind']}, peak tensor bytes ref / eff (exact) | {r / 2**20:.1f} / {e / 2**20:.1f} MiB "
                  f"({row['ratio']['peak_tensor_bytes']:.4f}x) |", flush=True)
        low = row.get("low_memory")
        if low:
            st, q = low["stats"], low["ratio_to_default"]
            print(f"|  | {row['kind']}, low-memory (recompute) vs efficient default | {st['forward_equiv']:.1f} "
                  f"({q['forward_equiv']:.2f}x) | {st['memory_bytes'] / 2**20:.1f} MiB | "
                  f"{st['peak_rss_bytes'] / 2**20:.0f} ({q['peak_rss_bytes']:.2f}x) | {st['seconds']:.1f} "
                  f"({q['seconds']:.2f}x) | {st['cpu_seconds']:.1f} ({q['cpu_seconds']:.2f}x) | "
                  f"{low['max_latent_diff_to_default']:.2g} |", flush=True)

    rows = run_shapes(kinds, shapes_n, shapes_steps, False, log)
    if paper_steps:
        rows += run_shapes(kinds, 1, paper_steps, True, log)
    extra: dict[str, Any] = {}
    if sd_sizes:
        sd_rows, extra = run_sd(kinds, sd_sizes, sd_steps, sd_guided, log, tensor_peak)
        rows += sd_rows
    summary: dict[str, Any] = {}
    for row in rows:
        key = f"{row['model']} | {row['kind']}"
        summary.setdefault(key, []).append(row["ratio"])
    summary = {k: {m: round(float(np.mean([r[m] for r in v if m in r])), 3) for m in v[0]} for k, v in summary.items()}
    result = {"torch_threads": threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "seconds": round(time.time() - t0, 1), "rows": rows, "mean_ratios": summary, **extra}
    if "sd15_512_50_steps_memory" in extra:
        m = extra["sd15_512_50_steps_memory"]
        print(f"\nSD1.5 512x512, 50 steps, memory (extrapolated from the measured per-step sizes): default "
              f"({m['dtype']}) {m['default_all_steps_gib']} GiB, fp16 {m['fp16_all_steps_gib']} GiB, used steps only "
              f"{m['used_steps_gib']} GiB, recompute {m['recompute_gib']} GiB, reference implementation "
              f"{m['reference_impl_gib']} GiB")
    print(f"\n{threads} torch thread(s); {result['seconds']}s in all")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return result
