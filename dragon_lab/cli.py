"""The lab's command line: ``python -m dragon_lab <command>``.

Commands:
  demo     the main job on the embedded default model (writes PNGs, prints where)
  scene    render a shapes-world scene, its masks, and an edit's ground truth
  sample   sample images from the model for a prompt
  edit     the product's ``edit`` with its cost measured (``--stats``, ``--schedule reference``)
  train    train the shapes model (slow; never in CI)
  export   write a training run's EMA weights as a model folder
  model-report  measure a model: sample rates, reconstruction PSNR
  bench    score every edit kind against ground truth, with baselines
  perf     reference schedule vs efficient default: passes, memory, peak RSS, time (JSON)
  capture-bench  moves on generated samples: memory captured while generating vs inverted

Every command that runs the model takes ``--model DIR`` (default: the bundled
shapes model), ``--steps``, and ``--threads`` (torch CPU threads). The product's
own commands (``edit``, ``invert``) are ``python -m dragon_core``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dragon_core.cli import (build_cli_edit, command_parser, edit_arguments, edit_defaults, load_model, memory_arg,
                             model_args, preset_arg, print_written, run_command, sampling, write_edit)
from dragon_core.images import grid, save_png, tensor_to_array
from dragon_demo import shapes_world as sw

from . import edit_cases as ec


# -- scene ----------------------------------------------------------------------------


def cmd_scene(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if args.edit:
        case = ec.random_edit_case(args.seed, args.edit, args.size, args.object, args.dx, args.dy, args.scale)
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
    print_written(written)
    return 0


# -- sample ----------------------------------------------------------------------------


def generate(backend, encoder, prompt: str, n: int, seed: int, steps: int, cfg: float,
             spacing: str = "comfy_uniform") -> torch.Tensor:
    """``n`` samples (n, 3, H, W) in [-1, 1] for ``prompt``, seeded."""
    from dragon_core import ddim

    size = int(backend.unet.config.sample_size)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((n, 3, size, size), generator=g)
    cond, uncond = encoder.encode(prompt), encoder.encode("")
    return ddim.sample(backend, z, cond, uncond, steps=steps, cfg=cfg, spacing=spacing)


def cmd_sample(args: argparse.Namespace) -> int:
    backend, enc = load_model(args)
    cfg, spacing = sampling(args)
    t0 = time.time()
    x = generate(backend, enc, args.prompt, args.n, args.seed, args.steps, cfg, spacing)
    imgs = [tensor_to_array(x[i : i + 1]) for i in range(x.shape[0])]
    path = save_png(grid(imgs, min(args.n, 8)), args.out, args.upscale)
    print(f"prompt {args.prompt!r}, {args.n} sample(s), {args.steps} steps, cfg {cfg}, {spacing} spacing: "
          f"{time.time() - t0:.1f}s")
    print(f"wrote {path}")
    return 0


# -- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: one edit of each kind on shapes scenes, scored against ground truth,
    plus samples and an inversion round trip of the move scene."""
    from dragon_core import ddim
    from .bench import KINDS, make_case, run_case
    from dragon_core.settings import default_settings

    backend, enc = load_model(args)
    out = Path(args.out)
    t0 = time.time()
    cfg, spacing = sampling(args)
    defaults = edit_defaults(args)
    paths, sheet, runs = [], [], {}
    extra_metric = {"move": "centroid_err", "resize": "area_err", "drag": "drag_ratio", "points": "area_err",
                    "appearance": "colour_gap_left", "paste": "centroid_err"}
    for kind in KINDS:
        case = make_case(kind, args.seed).edit_case
        settings = default_settings("move" if kind == "resize" else kind, defaults, preset=args.preset)
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
    print_written(paths)
    return 0


# -- model report ------------------------------------------------------------------------------


def cmd_model_report(args: argparse.Namespace) -> int:
    from .model_report import report

    backend, enc = load_model(args)
    cfg, spacing = sampling(args)
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


# -- edit (measured) -----------------------------------------------------------------------------


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
    from .instrument import measured_edit

    backend, enc = load_model(args)
    t0 = time.time()
    job = build_cli_edit(args, backend, enc)
    res = measured_edit(backend, job.memory, job.edit, job.cond, job.uncond, job.settings, args.schedule)
    stats = res.stats
    paths = write_edit(args, res.latent, stats, job.sheet)
    print(f"{args.kind} edit in {time.time() - t0:.1f}s: {stats['guided_steps']} guided steps, "
          f"{stats['forward'] + stats['forward_grad']} UNet passes"
          + (f" + {stats['forward_partial'] + stats['forward_grad_partial']} partial"
             if stats['forward_partial'] + stats['forward_grad_partial'] else "")
          + f", {stats['backward']} backward ({stats['forward_equiv']} forward-equivalents)")
    if args.stats:
        print(format_stats(stats))
    print_written(paths)
    return 0


# -- bench -----------------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import KINDS, format_table, run_bench

    backend, enc = load_model(args)
    _, spacing = sampling(args)
    defaults = edit_defaults(args)
    kinds = tuple(args.kinds.split(",")) if args.kinds else KINDS
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"--kinds: unknown edit kind(s) {bad}; choose from {list(KINDS)}")
    if args.held_out:
        return _held_out(args, backend, enc, kinds, spacing, defaults)
    result = run_bench(backend, enc, quick=args.quick, defaults=defaults, spacing=spacing, kinds=kinds, n=args.n,
                       steps=args.steps, sheet=args.sheet, json_path=args.json, sample_prompt=args.sample_prompt,
                       memory=args.memory, seed=args.seed, preset=args.preset)
    print(format_table(result))
    print_written([Path(p) for p in (args.json, args.sheet) if p])
    return 0


def _held_out(args: argparse.Namespace, backend, enc, kinds: tuple[str, ...], spacing: str, defaults) -> int:
    from .held_out import STRATA, format_held_out, merge_held_out, run_held_out

    strata = tuple(args.strata.split(",")) if args.strata else STRATA
    if [s for s in strata if s not in STRATA]:
        raise ValueError(f"--strata: choose from {list(STRATA)}")
    prompts = tuple(args.prompts.split(","))
    if [p for p in prompts if p not in ("input", "target", "empty")]:
        raise ValueError("--prompts: a comma-separated subset of input, target, empty")
    result = run_held_out(backend, enc, kinds, strata, args.n or 4, args.steps, prompts, defaults, spacing,
                          args.memory, preset=args.preset)
    if args.update:  # the kinds run here replace theirs in an earlier full run; the others are kept
        result = merge_held_out(json.loads(Path(args.update).read_text()), result)
        args.json = args.json or args.update
    print(format_held_out(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print_written([Path(args.json)])
    return 0


def cmd_capture_bench(args: argparse.Namespace) -> int:
    from dragon_core.settings import default_settings

    from .capture_bench import format_capture_bench, run_capture_bench

    backend, enc = load_model(args)
    cfg, spacing = sampling(args)
    settings = default_settings("move", edit_defaults(args), cfg=args.edit_cfg)
    result = run_capture_bench(backend, enc, settings, args.n, args.steps, cfg, spacing, args.memory)
    print(format_capture_bench(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        rows = [{k: v for k, v in r.items() if k != "images"} for r in result["rows"]]
        Path(args.json).write_text(json.dumps({**result, "rows": rows}, indent=2) + "\n")
        print_written([Path(args.json)])
    if args.sheet:
        panels = [r["images"][k] for r in result["rows"] for k in ("sample", "captured", "inverted")]
        print_written([save_png(grid(panels, 3), args.sheet, 4)])
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
             args.sd_steps, args.sd_guided, args.threads, args.tensor_peak)
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


def build_parser() -> argparse.ArgumentParser:
    p, sub = command_parser("python -m dragon_lab", __doc__)

    d = sub.add_parser("demo", help="main job on the bundled model: scene, samples, inversion (writes PNGs)")
    model_args(d)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    preset_arg(d)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("scene", help="render a scene, its masks and (with --edit) the edit's ground truth")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    s.add_argument("--edit", choices=ec.EDIT_KINDS, default=None)
    s.add_argument("--object", type=int, default=None, help="index of the edited object (default: random)")
    s.add_argument("--dx", type=float, default=None, help="move/paste offset x in pixels (default: random)")
    s.add_argument("--dy", type=float, default=None, help="move/paste offset y in pixels (default: random)")
    s.add_argument("--scale", type=float, default=None, help="resize/paste scale (default: random / 1)")
    s.add_argument("--upscale", type=int, default=1, help="write PNGs enlarged by this factor (nearest)")
    s.set_defaults(func=cmd_scene)

    sm = sub.add_parser("sample", help="sample images for a prompt")
    model_args(sm)
    sm.add_argument("--prompt", required=True, help='e.g. "gradient, red disc, blue square" ("" = unconditional)')
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--n", type=int, default=1, help="number of samples (written as one grid)")
    sm.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's)")
    sm.add_argument("--out", required=True, help="output PNG")
    sm.add_argument("--upscale", type=int, default=1)
    sm.set_defaults(func=cmd_sample)

    ed = sub.add_parser("edit", help="the product's edit with its cost measured (passes, memory, time)")
    edit_arguments(ed)
    ed.add_argument("--schedule", choices=("efficient", "reference"), default="efficient",
                    help="evaluation schedule: efficient (default) or the official code's (for cost comparisons)")
    ed.add_argument("--stats", action="store_true", help="print the edit's cost: passes, memory, time, peak RSS")
    ed.set_defaults(func=cmd_edit)

    mr = sub.add_parser("model-report", help="measure the model: sample rates and reconstruction PSNR")
    model_args(mr)
    mr.add_argument("--samples", type=int, default=64, help="number of samples to score (default 64)")
    mr.add_argument("--reconstructions", type=int, default=20, help="held-out scenes to invert (default 20)")
    mr.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's)")
    mr.add_argument("--out", default=None, help="folder for samples.png and model_report.json")
    mr.set_defaults(func=cmd_model_report)

    be = sub.add_parser("bench", help="score every edit kind against the shapes world's ground truth")
    model_args(be)
    be.add_argument("--quick", action="store_true", help="2 cases per edit kind (CI); default 12")
    be.add_argument("--n", type=int, default=None, help="cases per edit kind (overrides --quick)")
    be.add_argument("--kinds", default=None, help="comma-separated subset of move,resize,drag,points,appearance,paste")
    be.add_argument("--json", default=None, help="write the numbers to this JSON file")
    be.add_argument("--sheet", default=None, help="write a contact sheet PNG (input|ref|target|result|baselines)")
    be.add_argument("--sample-prompt", choices=("input", "target", "empty"), default="input",
                    help="prompt the edits sample under: the input scene's (default), the target's, or none")
    memory_arg(be)
    be.add_argument("--seed", type=int, default=None, help="the edits' seed (regional noise; default: the model's)")
    preset_arg(be)
    be.add_argument("--held-out", action="store_true",
                    help="the held-out stratified cases (seed 9001; calibration never uses them) instead of the "
                         "tuning cases; --n cases per stratum (default 4)")
    be.add_argument("--strata", default=None, help="held-out strata (default all: plain, occluded, occluding, small, "
                                                   "textured, far)")
    be.add_argument("--prompts", default="input,empty", help="held-out: sample prompts to run each case with")
    be.add_argument("--update", default=None, help="held-out: an earlier run's JSON; the kinds run now replace "
                    "theirs in it (the others are kept) and it is rewritten (or --json is written)")
    be.set_defaults(func=cmd_bench)

    cb = sub.add_parser("capture-bench", help="moves on generated samples: captured memory vs the sample inverted")
    model_args(cb)
    cb.add_argument("--n", type=int, default=16, help="samples to generate (default 16)")
    cb.add_argument("--cfg", type=float, default=None, help="generation cfg (default: the model's)")
    cb.add_argument("--edit-cfg", type=float, default=None, help="the move's cfg (default: the model's move setting)")
    cb.add_argument("--json", default=None, help="write the numbers to this JSON file")
    cb.add_argument("--sheet", default=None, help="contact sheet PNG: sample | captured | inverted per row")
    memory_arg(cb)
    cb.set_defaults(func=cmd_capture_bench)

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
    pf.add_argument("--tensor-peak", action="store_true",
                    help="the SD1.5 edits also report exact peak tensor bytes (timings include the tracker's overhead)")
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
    return run_command(build_parser(), argv)
