"""How an edit is sampled: :class:`EditSettings`, the paper's defaults per edit kind, and
the memory policy that keeps only what given settings read.

A model family brings its own calibrated overrides (the bundled shapes model's
``config.json``, a ComfyUI MODEL's ``model_options``); without them the paper's
Stable Diffusion settings apply. The "paper" preset ignores the overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .attention import attention_active
from .edits import EDIT_KINDS
from .memory import MemoryPolicy


@dataclass(frozen=True)
class EditSettings:
    """How an edit is sampled. ``energy_scale`` multiplies the energy gradients
    (the reference method's slider x 1e3 x 0.08 for move, x 0.04 otherwise)."""

    cfg: float = 4.0
    energy_scale: float = 40.0
    w_edit: float = 4.0
    w_content: float = 6.0
    w_contrast: float = 0.2
    w_inpaint: float = 0.8
    guide_until: float = 0.6  # guided steps: s < guide_until * N ...
    guide_every_until: float = 0.2  # ... every step before this fraction, even steps after
    attention: bool = True
    attention_mode: str | None = None  # None: the edit's default (move: replace, drag/points: concat, ...)
    attention_start: int = 5
    attention_end: int | None = None
    flexibility: float = 0.0  # regional SDE eta inside the edit region (DiffEditor), middle steps
    flexibility_window: tuple[float, float] = (0.2, 0.4)  # fraction of steps: 10 < s < 20 of 50
    time_travel: int = 1  # passes per step in the window (3 in DiffEditor)
    time_travel_window: tuple[float, float] = (0.4, 0.6)  # even steps 20 < s < 30 of 50
    feature_scale: float = 1.0  # energy grid = latent size x this (SD: 2)
    copy_start: bool = True  # start latent: copy the inverted object region to its destination
    copy_until: float = 0.0  # ... and keep following the source's moved inversion there for this fraction of steps
    # move/resize: fresh noise (seeded) in the start latent where the object leaves (source minus destination):
    # the inversion's noise there still encodes the object and grows it back (a shrunk object kept its size)
    vacated_noise: bool = False
    background_lock: float = 0.0  # outside the (grown) edit region, follow the inversion for this fraction of steps
    lock_margin: float = 0.1  # growth of the edit region for the lock, as a fraction of the image side
    point_region: float = 0.0  # drag/points without a mask: the points' box grown by this fraction of the side
    reference_interior: bool = False  # appearance: the reference's mean feature over its mask eroded by one cell
    # appearance: shift the start latent's per-channel mean inside the mask by this fraction of the way to
    # the reference object's (its inverted latent under its mask); 0 = the reference method's start
    appearance_start: float = 0.0
    seed: int = 0
    # run cond and uncond of each unguided pass as one batch of 2 (same maths, float-level
    # differences; faster where the device has spare parallelism, e.g. a GPU)
    batch_cfg: bool = True

    def guided(self, s: int, n: int) -> bool:
        return self.energy_scale != 0 and s < round(self.guide_until * n) and (
            s < round(self.guide_every_until * n) or s % 2 == 0)

    def flexible(self, s: int, n: int) -> bool:
        lo, hi = self.flexibility_window
        return self.flexibility > 0 and lo * n < s < hi * n

    def repeats(self, s: int, n: int) -> int:
        lo, hi = self.time_travel_window
        return self.time_travel if (self.time_travel > 1 and self.energy_scale != 0 and lo * n < s < hi * n
                                    and s % 2 == 0) else 1


# The paper's settings: the official DragonDiffusion demo (MC-E/DragonDiffusion f9b5bdf) for Stable
# Diffusion 1.5, per edit kind, as its DragonModels.run_* (src/demo/model.py) run it. Shared by every kind:
# - guided steps i < 30 of 50, every step before 10, even steps after (Sampler.edit, src/models/Sampler.py;
#   50 = NUM_DDIM_STEPS in src/demo/model.py): guide_until 0.6, guide_every_until 0.2;
# - regional SDE on steps 10 < i < 20 (Sampler.edit) with each run_*'s SDE_strength slider: flexibility;
# - time travel: 3 passes on the even steps 20 < i < 30 when guided (Sampler.edit): time_travel 3;
# - features compared on a grid twice the latent size (DragonModels.up_scale 2): feature_scale 2;
# - cross-branch attention from step 5 to the end (move, drag, landmark), on steps 0-35 (appearance, paste)
#   (the memory-bank branch of AttnProcessor in src/unet/attention_processor.py).
# Per kind, the sliders' defaults in src/demo/demo.py (create_demo_*): CFG, energy, weights, SDE strength;
# energy_scale = the energy slider x 1e3 (run_*) x the gradient factor of Sampler.guidance_* (8e-2 move,
# 4e-2 the others).
_PAPER_SCHEDULE: dict[str, Any] = dict(guide_until=0.6, guide_every_until=0.2, flexibility_window=(0.2, 0.4),
                                       time_travel=3, time_travel_window=(0.4, 0.6), feature_scale=2.0,
                                       attention_start=5, attention_end=None)
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    # create_demo_move / run_move (resize: run_move's resize_scale); run_move copies the moved object's
    # inverted latent into zT: copy_start
    "move": dict(_PAPER_SCHEDULE, cfg=4.0, energy_scale=0.5 * 1e3 * 8e-2, w_edit=4.0, w_content=6.0, w_contrast=0.2,
                 w_inpaint=0.8, flexibility=0.4, copy_start=True),
    # create_demo_drag / run_drag: its w_inpaint (0.2) weighs guidance_drag's handle-patch contrast term, our
    # drag's w_contrast; process_drag (src/utils/utils.py) copies each handle's latent patch to its target
    "drag": dict(_PAPER_SCHEDULE, cfg=4.0, energy_scale=2.0 * 1e3 * 4e-2, w_edit=4.0, w_content=6.0, w_contrast=0.2,
                 flexibility=0.4, copy_start=True),
    # create_demo_face_drag / run_drag_face (the landmark mode): guidance_landmark has no content or contrast
    # term (its w_inpaint 0.4 is unused); SDE 0.2 over the whole image (it passes SDE_strength_un too);
    # process_drag_face copies no latent patches
    "points": dict(_PAPER_SCHEDULE, cfg=4.0, energy_scale=3.0 * 1e3 * 4e-2, w_edit=12.0, w_content=0.0,
                   w_contrast=0.0, flexibility=0.2, copy_start=False),
    # create_demo_appearance / run_appearance
    "appearance": dict(_PAPER_SCHEDULE, cfg=5.0, energy_scale=2.0 * 1e3 * 4e-2, w_edit=3.5, w_content=5.0,
                       flexibility=0.4, attention_start=0, attention_end=35),
    # create_demo_paste / run_paste; run_paste copies the source's inverted latent to the destination in zT
    "paste": dict(_PAPER_SCHEDULE, cfg=4.0, energy_scale=1.5 * 1e3 * 4e-2, w_edit=4.0, w_content=6.0,
                  flexibility=0.4, copy_start=True, attention_start=0, attention_end=35),
}
DEFAULT_ATTENTION = {"move": "replace", "drag": "concat", "points": "concat", "appearance": "masked",
                     "paste": "masked"}


# Where an edit's defaults come from: "model" = the paper's, then the model family's calibrated overrides
# (the shapes model's config.json, a ComfyUI MODEL's model_options); "paper" = the paper's alone.
PRESETS = ("model", "paper")


def default_settings(kind: str, overrides: dict[str, dict[str, Any]] | None = None, preset: str = "model",
                     **kw: Any) -> EditSettings:
    """Settings for an edit kind: the paper's (``PAPER_DEFAULTS``), then, with ``preset`` "model", a
    model's calibrated ``overrides`` ("paper" ignores them), then the non-None ``kw``."""
    if kind not in EDIT_KINDS:
        raise ValueError(f"edit kind must be one of {EDIT_KINDS}, got {kind!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    values: dict[str, Any] = dict(PAPER_DEFAULTS[kind])
    if preset == "model":
        values.update((overrides or {}).get(kind, {}))
    values.update({k: v for k, v in kw.items() if v is not None})
    if isinstance(values.get("flexibility_window"), list):
        values["flexibility_window"] = tuple(values["flexibility_window"])
    if isinstance(values.get("time_travel_window"), list):
        values["time_travel_window"] = tuple(values["time_travel_window"])
    return EditSettings(**values)


def attention_steps(settings: EditSettings, steps: int) -> list[int]:
    """The steps of an ``steps``-step run on which cross-branch attention reads the memory
    (``attention_start`` and ``attention_end`` are step numbers, as in the reference code)."""
    if not settings.attention:
        return []
    return [s for s in range(steps) if attention_active(s, settings.attention_start, settings.attention_end)]


def used_steps_policy(settings: list[EditSettings] | EditSettings, steps: int, feature_levels: tuple[int, ...],
                      base: MemoryPolicy | None = None) -> MemoryPolicy:
    """A memory policy that keeps only what edits with these ``settings`` read at ``steps``:
    K/V inputs from the attention's first step to its last, features on guided steps only.
    (The default policy keeps every step: one memory then serves any edit settings.)"""
    group = [settings] if isinstance(settings, EditSettings) else list(settings)
    kv = {s for st in group for s in attention_steps(st, steps)}
    feats = {s for st in group for s in range(steps) if st.guided(s, steps)}
    return replace(base or MemoryPolicy(), steps=frozenset(kv), feature_steps=frozenset(feats),
                    feature_levels=feature_levels)


# Above this multiple of the default energy scale the guidance overwhelms the denoiser: shapes model,
# 2 cases per kind, 20 steps, PSNR to target at 1/2/4/8/16x the default: move 31,28 / 41,41 / 17,29 /
# 13,19 / 12,14 dB; drag 21,18 / 20,24 / 19,23 / 15,23 / 12,12; appearance 27,22 / 28,21 / 30,20 / 23,18 /
# 13,17 (`python scripts/energy_scale_sweep.py`).
ENERGY_WARN_FACTOR = 4.0


def setting_warnings(settings: EditSettings, default: EditSettings, steps: int) -> list[str]:
    """One line per setting so far from this edit's default that the result is likely broken,
    or that does nothing at ``steps`` steps, naming the setting and what to do (the node and the
    command line print them)."""
    out = []
    if settings.attention and not attention_steps(settings, steps):
        out.append(f"steps {steps}: cross-branch attention starts at step {settings.attention_start}, so it never "
                   f"reads the memory and the result keeps less of the original's look; invert with at least "
                   f"{settings.attention_start + 2} steps (the paper uses 50)")
    if default.energy_scale > 0 and settings.energy_scale > ENERGY_WARN_FACTOR * default.energy_scale:
        out.append(f"energy_scale {settings.energy_scale:g} is {settings.energy_scale / default.energy_scale:.0f}x "
                   f"this edit's default ({default.energy_scale:g}): above {ENERGY_WARN_FACTOR:g}x the result usually "
                   f"degrades, and by 8-16x it is noise; lower it or use the default (-1 in the node, no "
                   f"--energy-scale on the command line)")
    return out


def describe(settings: EditSettings, steps: int, preset: str) -> str:
    """The values an edit of ``steps`` steps runs with, for the console line (after "-1 = default"
    was resolved from ``preset``); cross-branch attention with the steps it is active on."""
    active = attention_steps(settings, steps)
    attention = ("off" if not settings.attention else "on but never active" if not active else
                 f"on (steps {active[0]}-{active[-1]})")
    return (f"preset {preset}: cfg {settings.cfg:g}, energy_scale {settings.energy_scale:g}, "
            f"guidance_end {settings.guide_until:g}, flexibility {settings.flexibility:g}, "
            f"time_travel {settings.time_travel}, cross_attention {attention}")


def with_overrides(settings: EditSettings, **kw: Any) -> EditSettings:
    """A copy of ``settings`` with the given non-None fields replaced."""
    return replace(settings, **{k: v for k, v in kw.items() if v is not None})
