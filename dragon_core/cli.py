"""Command line: ``python -m dragon_core <command>``: edits without a UI.

Commands:
  edit     move, resize, drag, points, appearance or paste an image
  invert   DDIM-invert an image and reconstruct it (reports PSNR)

Both take ``--model DIR`` (default: the bundled shapes demo model), ``--steps``, and
``--threads`` (torch CPU threads). The lab's commands (bench, perf, train, ...) are
``python -m dragon_lab``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .images import array_to_tensor, grid, load_mask, load_png, save_png, tensor_to_array


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder (default: the bundled shapes model)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--spacing", choices=("leading", "comfy_uniform"), default=None,
                   help="DDIM timestep spacing (default: the model's; shapes model: comfy_uniform)")


def load_model(args: argparse.Namespace):
    from .diffusers_backend import load_shapes_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_shapes_backend(args.model, device=args.device)


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    """The model folder's config.json ({} if it has none; load_model reports that)."""
    from dragon_demo.shapes_model import ASSET_DIR, load_config

    try:
        return load_config(args.model or ASSET_DIR)
    except FileNotFoundError:
        return {}


def edit_defaults(args: argparse.Namespace) -> dict[str, dict[str, Any]] | None:
    """The model's calibrated edit settings (None: the paper's)."""
    return model_config(args).get("edit_defaults")


def print_written(paths: Sequence[Path]) -> None:
    for p in paths:
        print(f"wrote {p}")


def sampling(args: argparse.Namespace) -> tuple[float, str]:
    """(cfg, spacing): the command line's if given, else the model's defaults."""
    from dragon_demo.shapes_model import SAMPLING

    defaults = {**SAMPLING, **model_config(args).get("sampling", {})}
    cfg = getattr(args, "cfg", None)
    spacing = getattr(args, "spacing", None)
    return (float(defaults["cfg"]) if cfg is None else cfg, defaults["spacing"] if spacing is None else spacing)


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

    backend, enc = load_model(args)
    img = load_png(args.image, "--image")
    t0 = time.time()
    traj, recon = invert_image(backend, enc, img, args.prompt, args.steps, sampling(args)[1])
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
    print_written(paths)
    return 0


# -- edit ------------------------------------------------------------------------------------------------


def _mask_arg(path: str | None, size: tuple[int, int], name: str) -> torch.Tensor | None:
    if path is None:
        return None
    m = load_mask(path, name=name)
    if m.shape != size:
        raise ValueError(f"{name} {path} is {m.shape[1]}x{m.shape[0]} pixels, the image is {size[1]}x{size[0]}")
    return torch.from_numpy(m.astype(np.float32))


@dataclass
class CliEdit:
    """An edit built from the command line, ready to run."""

    memory: Any
    edit: Any
    settings: Any
    cond: Any
    uncond: Any
    sheet: list[np.ndarray]


def build_cli_edit(args: argparse.Namespace, backend, enc) -> CliEdit:
    """Invert the image(s) and build the edit and its settings from the arguments."""
    from .edits import Appearance, Drag, Move, Paste, Points
    from .memory import STORAGE, default_policy, invert_with_memory
    from .regions import parse_points
    from .settings import default_settings, setting_warnings, with_overrides

    img = load_png(args.image, "--image")
    size = img.shape[:2]
    lat = int(backend.unet.config.sample_size)
    if size != (lat, lat):
        raise ValueError(f"image {args.image} is {size[1]}x{size[0]} pixels; this model works at {lat}x{lat}")
    _, spacing = sampling(args)
    cond, uncond = enc.encode(args.prompt), enc.encode("")
    policy = default_policy(backend, **STORAGE[args.memory])
    mem = invert_with_memory(backend, array_to_tensor(img), cond, steps=args.steps, spacing=spacing, policy=policy)
    mask = _mask_arg(args.mask, size, "--mask")
    sheet = [img]

    def reference():
        if not args.reference or not args.reference_mask:
            raise ValueError(f"{args.kind} needs --reference IMAGE and --reference-mask MASK")
        rimg = load_png(args.reference, "--reference")
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
    default = default_settings(kind, edit_defaults(args), preset=args.preset)
    settings = with_overrides(default, cfg=args.cfg, energy_scale=args.energy_scale, seed=args.seed,
                              flexibility=args.flexibility, time_travel=args.time_travel,
                              attention=False if args.no_attention else None)
    for line in setting_warnings(settings, default, mem.steps):
        print(f"warning: --{line.replace('_', '-', 1)}", file=sys.stderr)
    return CliEdit(mem, edit, settings, cond, uncond, sheet)


def write_edit(args: argparse.Namespace, latent: torch.Tensor, stats: dict[str, Any], sheet: list[np.ndarray]
               ) -> list[Path]:
    """result.png, sheet.png (inputs | result) and stats.json in ``--out``."""
    out = tensor_to_array(latent)
    d = Path(args.out)
    paths = [save_png(out, d / "result.png", args.upscale),
             save_png(grid(sheet + [out], len(sheet) + 1), d / "sheet.png", 4)]
    (d / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return paths + [d / "stats.json"]


def cmd_edit(args: argparse.Namespace) -> int:
    from .sampler import edit_image
    from .settings import describe

    backend, enc = load_model(args)
    t0 = time.time()
    job = build_cli_edit(args, backend, enc)
    res = edit_image(backend, job.memory, job.edit, job.cond, job.uncond, job.settings)
    stats = dict(res.stats, seconds=round(time.time() - t0, 3))
    paths = write_edit(args, res.latent, stats, job.sheet)
    print(f"{args.kind} edit in {stats['seconds']:.1f}s (inversion included): {stats['steps']} steps, "
          f"{stats['guided_steps']} guided; {describe(job.settings, stats['steps'], args.preset)}")
    print_written(paths)
    return 0


def memory_arg(p: argparse.ArgumentParser) -> None:
    from .memory import STORAGE

    p.add_argument("--memory", choices=list(STORAGE), default="int8",
                   help="how the inversion's memory is kept: int8 (default, per-channel scales), fp16, or "
                        "recompute (latents only; each step's K/V and features rerun during the edit: one more "
                        "UNet pass per step, a few MiB)")


def preset_arg(p: argparse.ArgumentParser) -> None:
    """``--preset``: where an edit's defaults come from (``settings.PRESETS``; the edit, demo and bench commands)."""
    from .settings import PRESETS

    p.add_argument("--preset", choices=PRESETS, default="model",
                   help="where the edit's defaults come from: model (default) = the paper's, then the model's "
                        "calibrated settings (the shapes model's config.json); paper = the official demo's values "
                        "alone (SDE, time travel, CFG, energy weights, guided steps), whatever the model; "
                        "--cfg, --energy-scale etc. override either")


def command_parser(prog: str, doc: str | None) -> tuple[argparse.ArgumentParser, Any]:
    """A parser for ``python -m PROG <command>`` and its subcommand group."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return p, p.add_subparsers(dest="command", required=True)


def build_parser() -> argparse.ArgumentParser:
    p, sub = command_parser("python -m dragon_core", __doc__)

    iv = sub.add_parser("invert", help="DDIM-invert an image and reconstruct it")
    model_args(iv)
    iv.add_argument("--image", required=True)
    iv.add_argument("--prompt", default="", help="source prompt (default: unconditional)")
    iv.add_argument("--out", required=True, help="output folder")
    iv.add_argument("--upscale", type=int, default=1)
    iv.set_defaults(func=cmd_invert)

    ed = sub.add_parser("edit", help="edit an image: move, resize, drag, points, appearance, paste")
    edit_arguments(ed)
    ed.set_defaults(func=cmd_edit)
    return p


def edit_arguments(ed: argparse.ArgumentParser) -> None:
    """The ``edit`` command's arguments (the lab's measured ``edit`` adds its own)."""
    model_args(ed)
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
    preset_arg(ed)
    memory_arg(ed)
    ed.add_argument("--seed", type=int, default=0)
    ed.add_argument("--out", required=True, help="output folder (result.png, sheet.png, stats.json)")
    ed.add_argument("--upscale", type=int, default=1)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Run the parsed command; a ValueError or a missing file is one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
