"""Command line: ``python -m dragon_core <command>``.

Commands:
  demo     the main job on the embedded default model (writes PNGs, prints where)
  edit     move, resize, drag, points, appearance or paste an image
  scene    render a shapes-world scene, its masks, and an edit's ground truth
  sample   sample images from the model for a prompt
  invert   DDIM-invert an image and reconstruct it (reports PSNR)
  train    train the shapes model (slow; never in CI)
  export   write a training run's EMA weights as a model folder
  model-report  measure a model: sample rates, reconstruction PSNR
  bench    score every edit kind against ground truth, with baselines
  perf     reference schedule vs efficient default: passes, memory, peak RSS, time (JSON)

Every command that runs the model takes ``--model DIR`` (default: the bundled
shapes model), ``--steps``, and ``--threads`` (torch CPU threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import shapes_world as sw
from .images import array_to_tensor, grid, load_png, save_png, tensor_to_array


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder (default: the bundled shapes model)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--spacing", choices=("leading", "comfy_uniform"), default=None,
                   help="DDIM timestep spacing (default: the model's; shapes model: comfy_uniform)")


def _load(args: argparse.Namespace):
    from .diffusers_backend import load_shapes_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_shapes_backend(args.model, device=args.device)


def _model_config(args: argparse.Namespace) -> dict[str, Any]:
    """The model folder's config.json ({} if it has none; _load reports that)."""
    from .shapes_model import ASSET_DIR, load_config

    try:
        return load_config(args.model or ASSET_DIR)
    except FileNotFoundError:
        return {}


def _edit_defaults(args: argparse.Namespace) -> dict[str, dict[str, Any]] | None:
    """The model's calibrated edit settings (None: the paper's)."""
    return _model_config(args).get("edit_defaults")


def _print_written(paths: Sequence[Path]) -> None:
    for p in paths:
        print(f"wrote {p}")


def _sampling(args: argparse.Namespace) -> tuple[float, str]:
    """(cfg, spacing): the command line's if given, else the model's defaults."""
    from .shapes_model import SAMPLING

    defaults = {**SAMPLING, **_model_config(args).get("sampling", {})}
    cfg = getattr(args, "cfg", None)
    spacing = getattr(args, "spacing", None)
    return (float(defaults["cfg"]) if cfg is None else cfg, defaults["spacing"] if spacing is None else spacing)


# -- scene ----------------------------------------------------------------------------


def cmd_scene(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if args.edit:
        case = sw.random_edit_case(args.seed, args.edit, args.size, args.object, args.dx, args.dy, args.scale)
        scene = case.scene
    else:
        scene = sw.random_scene(args.seed, args.size)
    up = args.upscale
    written.append(save_png(scene.render(), out / "image.png", up))
    for i, m in enumerate(scene.masks()):
        written.append(save_png(m.astype(np.float32)[..., None].repeat(3, 2), out / f"mask_{i}.png", up))
    info: dict[str, Any] = {"seed": args.seed, "scene": scene.to_dict()}
    if args.edit:
        mask3 = lambda m: m.astype(np.float32)[..., None].repeat(3, 2)  # noqa: E731
        info["edit"] = case.params()
        info["target"] = case.target.to_dict()
        written.append(save_png(case.target.render(), out / "target.png", up))
        if case.kind != "paste":
            written.append(save_png(mask3(scene.masks()[case.index]), out / "source_mask.png", up))
        written.append(save_png(mask3(case.target.masks()[case.index]), out / "target_mask.png", up))
        if case.reference is not None:
            info["reference"] = case.reference.to_dict()
            written.append(save_png(case.reference.render(), out / "reference.png", up))
            written.append(save_png(mask3(case.reference.masks()[case.ref_index]), out / "reference_mask.png", up))
    (out / "scene.json").write_text(json.dumps(info, indent=2) + "\n")
    written.append(out / "scene.json")
    print(f"prompt: {scene.prompt()}")
    _print_written(written)
    return 0


# -- sample ----------------------------------------------------------------------------


def generate(backend, encoder, prompt: str, n: int, seed: int, steps: int, cfg: float,
             spacing: str = "comfy_uniform") -> torch.Tensor:
    """``n`` samples (n, 3, H, W) in [-1, 1] for ``prompt``, seeded."""
    from . import ddim

    size = int(backend.unet.config.sample_size)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((n, 3, size, size), generator=g)
    cond, uncond = encoder.encode(prompt), encoder.encode("")
    return ddim.sample(backend, z, cond, uncond, steps=steps, cfg=cfg, spacing=spacing)


def cmd_sample(args: argparse.Namespace) -> int:
    backend, enc = _load(args)
    cfg, spacing = _sampling(args)
    t0 = time.time()
    x = generate(backend, enc, args.prompt, args.n, args.seed, args.steps, cfg, spacing)
    imgs = [tensor_to_array(x[i : i + 1]) for i in range(x.shape[0])]
    path = save_png(grid(imgs, min(args.n, 8)), args.out, args.upscale)
    print(f"prompt {args.prompt!r}, {args.n} sample(s), {args.steps} steps, cfg {cfg}, {spacing} spacing: "
          f"{time.time() - t0:.1f}s")
    print(f"wrote {path}")
    return 0


# -- invert ----------------------------------------------------------------------------


def invert_image(backend, encoder, img: np.ndarray, prompt: str, steps: int, spacing: str = "comfy_uniform"):
    """Invert (H, W, 3) ``img`` and reconstruct it (no CFG); returns (trajectory, reconstruction tensor)."""
    from . import ddim

    size = int(backend.unet.config.sample_size)
    if img.shape[:2] != (size, size):
        raise ValueError(f"image is {img.shape[1]}x{img.shape[0]} pixels; this model works at {size}x{size}")
    cond = encoder.encode(prompt)
    traj = ddim.invert(backend, array_to_tensor(img), cond, steps=steps, spacing=spacing)
    recon = ddim.sample(backend, traj.z_T, cond, None, steps=steps, cfg=1.0, spacing=spacing)
    return traj, recon


def cmd_invert(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from .ddim import psnr

    backend, enc = _load(args)
    img = load_png(args.image)
    t0 = time.time()
    traj, recon = invert_image(backend, enc, img, args.prompt, args.steps, _sampling(args)[1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec = tensor_to_array(recon)
    value = psnr(torch.from_numpy(rec), torch.from_numpy(img))
    paths = [
        save_png(img, out / "input.png", args.upscale),
        save_png(rec, out / "reconstruction.png", args.upscale),
        save_png((traj.z_T[0].permute(1, 2, 0).numpy() / 4 + 0.5).clip(0, 1), out / "inverted_noise.png", args.upscale),
    ]
    save_file({"latents": traj.latents.contiguous(), "timesteps": traj.timesteps}, str(out / "trajectory.safetensors"))
    paths.append(out / "trajectory.safetensors")
    print(f"inverted {args.image} with prompt {args.prompt!r} in {args.steps} steps ({time.time() - t0:.1f}s)")
    print(f"reconstruction PSNR: {value:.2f} dB")
    _print_written(paths)
    return 0


# -- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: one edit of each kind on shapes scenes, scored against ground truth,
    plus samples and an inversion round trip of the move scene."""
    from . import ddim
    from .bench import KINDS, make_case, run_case
    from .editing import default_settings

    backend, enc = _load(args)
    out = Path(args.out)
    t0 = time.time()
    cfg, spacing = _sampling(args)
    defaults = _edit_defaults(args)
    paths, sheet, runs = [], [], {}
    extra_metric = {"move": "centroid_err", "resize": "area_ratio", "drag": "drag_ratio", "points": "area_ratio",
                    "appearance": "colour_err", "paste": "centroid_err"}
    for kind in KINDS:
        case = make_case(kind, args.seed).edit_case
        settings = default_settings("move" if kind == "resize" else kind, defaults)
        r = runs[kind] = run_case(backend, enc, kind, case, settings, spacing, args.steps)
        sc, m = r["scores"]["dragon"], extra_metric[kind]
        print(f"{kind:10s} PSNR to target {sc['psnr']:5.2f} dB (no guidance {r['scores']['no_guidance']['psnr']:5.2f}, "
              f"naive {r['scores']['naive']['psnr']:5.2f}), object IoU {sc['iou']:.2f}, {m} {sc[m]:.2f}")
        blank = np.ones_like(r["images"]["input"])
        sheet += [r["images"]["input"], r["images"].get("reference", blank), r["images"]["target"],
                  r["images"]["dragon"], r["images"]["no_guidance"]]
    paths.append(save_png(grid(sheet, 5), out / "edits.png", 8))
    # the move scene's inversion (its memory) also gives the reconstruction: no second inversion
    scene, memory = runs["move"]["case"].scene, runs["move"]["memory"]
    prompt = scene.prompt()
    samples = generate(backend, enc, prompt, 8, args.seed, args.steps, cfg, spacing)
    recon = ddim.sample(backend, memory.trajectory.z_T, enc.encode(prompt), None, steps=args.steps, spacing=spacing)
    value = ddim.psnr(torch.from_numpy(tensor_to_array(recon)), torch.from_numpy(scene.render()))
    paths.append(save_png(grid([tensor_to_array(samples[i : i + 1]) for i in range(8)], 8), out / "samples.png", 8))
    paths.append(save_png(grid([scene.render(), tensor_to_array(recon)], 2), out / "reconstruction.png", 8))
    print(f"samples for {prompt!r}; DDIM inversion + reconstruction ({args.steps} steps): PSNR {value:.2f} dB")
    print(f"done in {time.time() - t0:.1f}s. edits.png rows ({', '.join(KINDS)}): input | reference | target | "
          f"DragonDiffusion | no guidance")
    _print_written(paths)
    return 0


# -- model report ------------------------------------------------------------------------------


def cmd_model_report(args: argparse.Namespace) -> int:
    from .model_report import report

    backend, enc = _load(args)
    cfg, spacing = _sampling(args)
    r = report(backend, enc, args.out, args.samples, args.reconstructions, args.steps, cfg, spacing)
    s, p = r["samples"], r["reconstruction_psnr_db"]
    print(f"{s['n']} samples ({args.steps} steps, cfg {cfg}, {spacing}): object {s['object_rate']:.0%}, "
          f"background not noise {s['not_noise_rate']:.0%}, clean {s['clean_background_rate']:.0%}, "
          f"recognisable {s['recognisable_rate']:.0%}, prompt colours {s['prompt_colour_rate']:.0%}, "
          f"median roughness {s['median_roughness']:.3f} (real scenes {r['real_scenes']['median_roughness']:.3f})")
    print(f"reconstruction PSNR over {p['n']} held-out scenes: mean {p['mean']:.2f} dB, min {p['min']:.2f}, "
          f"max {p['max']:.2f} ({r['seconds']}s)")
    if args.out:
        print(f"wrote {Path(args.out) / 'samples.png'} and {Path(args.out) / 'model_report.json'}")
    return 0


# -- edit ------------------------------------------------------------------------------------------------


def _mask_arg(path: str | None, size: tuple[int, int], name: str) -> torch.Tensor | None:
    from .images import load_mask

    if path is None:
        return None
    m = load_mask(path)
    if m.shape != size:
        raise ValueError(f"{name} {path} is {m.shape[1]}x{m.shape[0]} pixels, the image is {size[1]}x{size[0]}")
    return torch.from_numpy(m.astype(np.float32))


def run_cli_edit(args: argparse.Namespace, backend, enc) -> tuple[np.ndarray, dict[str, Any], list[np.ndarray]]:
    """Invert the image(s), build the edit from the arguments, run it; (result, stats, sheet images)."""
    from .editing import Appearance, Drag, Move, Paste, Points, default_settings, edit_image
    from .memory import STORAGE, default_policy, invert_with_memory
    from .regions import parse_points

    img = load_png(args.image)
    size = img.shape[:2]
    lat = int(backend.unet.config.sample_size)
    if size != (lat, lat):
        raise ValueError(f"image {args.image} is {size[1]}x{size[0]} pixels; this model works at {lat}x{lat}")
    _, spacing = _sampling(args)
    cond, uncond = enc.encode(args.prompt), enc.encode("")
    policy = default_policy(backend, **STORAGE[args.memory])
    mem = invert_with_memory(backend, array_to_tensor(img), cond, steps=args.steps, spacing=spacing, policy=policy)
    mask = _mask_arg(args.mask, size, "--mask")
    sheet = [img]

    def reference():
        if not args.reference or not args.reference_mask:
            raise ValueError(f"{args.kind} needs --reference IMAGE and --reference-mask MASK")
        rimg = load_png(args.reference)
        if rimg.shape[:2] != size:
            raise ValueError(f"--reference {args.reference} is {rimg.shape[1]}x{rimg.shape[0]}, the image is "
                             f"{size[1]}x{size[0]}: resize it first")
        rmem = invert_with_memory(backend, array_to_tensor(rimg), enc.encode(args.reference_prompt or ""),
                                  steps=args.steps, spacing=spacing, policy=policy)
        sheet.append(rimg)
        return rmem, _mask_arg(args.reference_mask, size, "--reference-mask")

    if args.kind in ("move", "resize"):
        if mask is None:
            raise ValueError(f"{args.kind} needs --mask (the object to move)")
        edit = Move(mask, args.dx, args.dy, args.scale)
    elif args.kind in ("drag", "points"):
        if not args.points:
            raise ValueError(f"{args.kind} needs --points 'x1,y1,x2,y2;...' (handle then target, pixels)")
        h, t = parse_points(args.points, "--points")
        edit = Drag(h, t, size, mask) if args.kind == "drag" else Points(h, t, size)
    elif args.kind == "appearance":
        if mask is None:
            raise ValueError("appearance needs --mask (the object to restyle)")
        rmem, rmask = reference()
        edit = Appearance(mask, rmem, rmask)
    else:
        rmem, rmask = reference()
        edit = Paste(rmem, rmask, args.dx, args.dy, args.scale)
    kind = "move" if args.kind == "resize" else args.kind
    settings = default_settings(kind, _edit_defaults(args), cfg=args.cfg, energy_scale=args.energy_scale, seed=args.seed,
                                flexibility=args.flexibility, time_travel=args.time_travel,
                                attention=False if args.no_attention else None, schedule=args.schedule)
    res = edit_image(backend, mem, edit, cond, uncond, settings)
    out = tensor_to_array(res.latent)
    return out, res.stats, sheet + [out]


def format_stats(stats: dict[str, Any]) -> str:
    """An edit's cost, one item a line (``edit --stats``)."""
    mib = 2**20
    rows = [
        ("schedule", stats.get("schedule", "efficient")),
        ("UNet passes: full no-grad", stats.get("forward", 0)),
        ("UNet passes: partial no-grad", stats.get("forward_partial", 0)),
        ("UNet passes: full with grad", stats.get("forward_grad", 0)),
        ("UNet passes: partial with grad", stats.get("forward_grad_partial", 0)),
        ("backward passes", stats.get("backward", 0)),
        ("partial-pass FLOP fraction", stats.get("partial_fraction", "?")),
        ("forward-equivalents (edit)", stats.get("forward_equiv", "?")),
        ("inversion passes", stats.get("inversion_forward", "?")),
        ("guided steps / re-noise passes", f"{stats.get('guided_steps', 0)} / {stats.get('renoise', 0)}"),
        ("memory", f"{stats.get('memory_bytes', 0) / mib:.2f} MiB ({stats.get('memory_bytes', 0)} bytes)"),
        ("seconds: inversion", stats.get("seconds_inversion", "?")),
        ("seconds: guided steps", stats.get("seconds_guided", "?")),
        ("seconds: plain steps", stats.get("seconds_plain", "?")),
        ("seconds: edit total", stats.get("seconds", "?")),
        ("peak RSS", f"{stats.get('peak_rss_bytes', 0) / mib:.0f} MiB"),
    ]
    if "cuda_max_allocated_bytes" in stats:
        rows.append(("CUDA max allocated", f"{stats['cuda_max_allocated_bytes'] / mib:.0f} MiB"))
    return "\n".join(f"  {k:32s} {v}" for k, v in rows)


def cmd_edit(args: argparse.Namespace) -> int:
    backend, enc = _load(args)
    t0 = time.time()
    out, stats, sheet = run_cli_edit(args, backend, enc)
    d = Path(args.out)
    paths = [save_png(out, d / "result.png", args.upscale), save_png(grid(sheet, len(sheet)), d / "sheet.png", 4)]
    (d / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    paths.append(d / "stats.json")
    print(f"{args.kind} edit in {time.time() - t0:.1f}s: {stats['guided_steps']} guided steps, "
          f"{stats['forward'] + stats['forward_grad']} UNet passes"
          + (f" + {stats['forward_partial'] + stats['forward_grad_partial']} partial"
             if stats.get('forward_partial', 0) + stats.get('forward_grad_partial', 0) else "")
          + f", {stats['backward']} backward ({stats.get('forward_equiv', '?')} forward-equivalents)")
    if args.stats:
        print(format_stats(stats))
    _print_written(paths)
    return 0


# -- bench -----------------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import KINDS, format_table, run_bench

    backend, enc = _load(args)
    _, spacing = _sampling(args)
    defaults = _edit_defaults(args)
    kinds = tuple(args.kinds.split(",")) if args.kinds else KINDS
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"--kinds: unknown edit kind(s) {bad}; choose from {list(KINDS)}")
    result = run_bench(backend, enc, quick=args.quick, defaults=defaults, spacing=spacing, kinds=kinds, n=args.n,
                       steps=args.steps, sheet=args.sheet, json_path=args.json, sample_prompt=args.sample_prompt,
                       memory=args.memory, seed=args.seed)
    print(format_table(result))
    _print_written([Path(p) for p in (args.json, args.sheet) if p])
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    from .perf import run_perf

    sizes = tuple(int(x) for x in args.sd_sizes.split(",") if x) if args.sd_sizes else ()
    if args.savings:
        from .perf import run_savings_report

        run_savings_report(args.json, tuple(args.kinds.split(",")), sizes[0] if sizes else 64, args.sd_steps,
                           args.sd_guided, args.threads)
        return 0
    run_perf(args.json, tuple(args.kinds.split(",")), args.shapes_n, args.shapes_steps, args.paper_steps, sizes,
             args.sd_steps, args.sd_guided, args.threads)
    return 0


# -- train / export ---------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .train_shapes import train

    train(args.out, steps=args.steps, batch=args.batch, seed=args.seed, threads=args.threads, device=args.device,
          max_minutes=args.max_minutes, workers=args.workers, stop_at=args.stop_at)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .train_shapes import export

    info = export(args.run, args.out)
    print(f"exported step {info['training']['steps']} of {args.run} to {args.out}")
    return 0


def _memory_arg(p: argparse.ArgumentParser) -> None:
    from .memory import STORAGE

    p.add_argument("--memory", choices=list(STORAGE), default="int8",
                   help="how the inversion's memory is kept: int8 (default, per-channel scales), fp16, or "
                        "recompute (latents only; each step's K/V and features rerun during the edit: one more "
                        "UNet pass per step, a few MiB)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dragon_core", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="main job on the bundled model: scene, samples, inversion (writes PNGs)")
    _model_args(d)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("scene", help="render a scene, its masks and (with --edit) the edit's ground truth")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    s.add_argument("--edit", choices=sw.EDIT_KINDS, default=None)
    s.add_argument("--object", type=int, default=None, help="index of the edited object (default: random)")
    s.add_argument("--dx", type=float, default=None, help="move/paste offset x in pixels (default: random)")
    s.add_argument("--dy", type=float, default=None, help="move/paste offset y in pixels (default: random)")
    s.add_argument("--scale", type=float, default=None, help="resize/paste scale (default: random / 1)")
    s.add_argument("--upscale", type=int, default=1, help="write PNGs enlarged by this factor (nearest)")
    s.set_defaults(func=cmd_scene)

    sm = sub.add_parser("sample", help="sample images for a prompt")
    _model_args(sm)
    sm.add_argument("--prompt", required=True, help='e.g. "gradient, red disc, blue square" ("" = unconditional)')
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--n", type=int, default=1, help="number of samples (written as one grid)")
    sm.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's)")
    sm.add_argument("--out", required=True, help="output PNG")
    sm.add_argument("--upscale", type=int, default=1)
    sm.set_defaults(func=cmd_sample)

    iv = sub.add_parser("invert", help="DDIM-invert an image and reconstruct it")
    _model_args(iv)
    iv.add_argument("--image", required=True)
    iv.add_argument("--prompt", default="", help="source prompt (default: unconditional)")
    iv.add_argument("--out", required=True, help="output folder")
    iv.add_argument("--upscale", type=int, default=1)
    iv.set_defaults(func=cmd_invert)

    ed = sub.add_parser("edit", help="edit an image: move, resize, drag, points, appearance, paste")
    _model_args(ed)
    ed.add_argument("kind", choices=("move", "resize", "drag", "points", "appearance", "paste"))
    ed.add_argument("--image", required=True, help="the image to edit (PNG)")
    ed.add_argument("--prompt", default="", help="the image's prompt (default: unconditional)")
    ed.add_argument("--mask", default=None, help="object mask (move/resize/appearance) or editable region (drag)")
    ed.add_argument("--dx", type=float, default=0.0, help="move/paste offset x, image pixels")
    ed.add_argument("--dy", type=float, default=0.0, help="move/paste offset y, image pixels")
    ed.add_argument("--scale", type=float, default=1.0, help="resize/paste scale about the object's centre")
    ed.add_argument("--points", default=None, help="drag/points: 'x1,y1,x2,y2;...' handle then target, pixels")
    ed.add_argument("--reference", default=None, help="appearance/paste: the reference image")
    ed.add_argument("--reference-mask", default=None, help="appearance/paste: the object in the reference")
    ed.add_argument("--reference-prompt", default=None, help="the reference image's prompt")
    ed.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's for this edit)")
    ed.add_argument("--energy-scale", type=float, default=None, help="energy gradient scale (default: the model's)")
    ed.add_argument("--flexibility", type=float, default=None, help="regional SDE strength (DiffEditor), e.g. 0.4")
    ed.add_argument("--time-travel", type=int, default=None, help="passes per step in the time-travel window (3)")
    ed.add_argument("--no-attention", action="store_true", help="turn cross-branch attention off")
    ed.add_argument("--schedule", choices=("efficient", "reference"), default=None,
                    help="evaluation schedule: efficient (default) or the official code's (for cost comparisons)")
    ed.add_argument("--stats", action="store_true", help="print the edit's cost: passes, memory, time, peak RSS")
    _memory_arg(ed)
    ed.add_argument("--seed", type=int, default=0)
    ed.add_argument("--out", required=True, help="output folder (result.png, sheet.png, stats.json)")
    ed.add_argument("--upscale", type=int, default=1)
    ed.set_defaults(func=cmd_edit)

    mr = sub.add_parser("model-report", help="measure the model: sample rates and reconstruction PSNR")
    _model_args(mr)
    mr.add_argument("--samples", type=int, default=64, help="number of samples to score (default 64)")
    mr.add_argument("--reconstructions", type=int, default=20, help="held-out scenes to invert (default 20)")
    mr.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's)")
    mr.add_argument("--out", default=None, help="folder for samples.png and model_report.json")
    mr.set_defaults(func=cmd_model_report)

    be = sub.add_parser("bench", help="score every edit kind against the shapes world's ground truth")
    _model_args(be)
    be.add_argument("--quick", action="store_true", help="2 cases per edit kind (CI); default 12")
    be.add_argument("--n", type=int, default=None, help="cases per edit kind (overrides --quick)")
    be.add_argument("--kinds", default=None, help="comma-separated subset of move,resize,drag,points,appearance,paste")
    be.add_argument("--json", default=None, help="write the numbers to this JSON file")
    be.add_argument("--sheet", default=None, help="write a contact sheet PNG (input|ref|target|result|baselines)")
    be.add_argument("--sample-prompt", choices=("input", "target", "empty"), default="input",
                    help="prompt the edits sample under: the input scene's (default), the target's, or none")
    _memory_arg(be)
    be.add_argument("--seed", type=int, default=None, help="the edits' seed (regional noise; default: the model's)")
    be.set_defaults(func=cmd_bench)

    pf = sub.add_parser("perf", help="reference schedule vs efficient default: passes, memory, RSS, time (JSON)")
    pf.add_argument("--json", default="benchmarks/perf.json", help="output JSON (default benchmarks/perf.json)")
    pf.add_argument("--kinds", default="move,drag", help="edit kinds (move, drag)")
    pf.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    pf.add_argument("--shapes-n", type=int, default=2, help="shapes cases per kind (model defaults)")
    pf.add_argument("--shapes-steps", type=int, default=20, help="steps for the shapes cases (default 20)")
    pf.add_argument("--paper-steps", type=int, default=50,
                    help="steps for one shapes case per kind under the paper's schedule (0: skip)")
    pf.add_argument("--sd-sizes", default="64", help="SD1.5 random-UNet latent sizes, e.g. 64,96 ('' skips)")
    pf.add_argument("--sd-steps", type=int, default=2, help="SD1.5 schedule length (default 2: ~8 s per full pass)")
    pf.add_argument("--sd-guided", type=int, default=1, help="guided steps of the SD1.5 schedule (default 1)")
    pf.add_argument("--savings", action="store_true",
                    help="instead: each saving on its own vs the efficient default (SD1.5 random UNet, first size)")
    pf.set_defaults(func=cmd_perf)

    tr = sub.add_parser("train", help="train the shapes model (resumes from OUT/checkpoint)")
    tr.add_argument("--out", default="runs/shapes32")
    tr.add_argument("--steps", type=int, default=6000)
    tr.add_argument("--batch", type=int, default=64)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=2)
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--workers", type=int, default=0, help="processes rendering batches ahead (0: inline)")
    tr.add_argument("--stop-at", type=int, default=None, help="stop (checkpointed) after this step; resume later")
    tr.add_argument("--max-minutes", type=float, default=None, help="stop (checkpointed) after this long")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="write a run's EMA weights as a model folder (fp16 safetensors)")
    ex.add_argument("--run", default="runs/shapes32")
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
