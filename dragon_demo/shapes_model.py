"""The bundled shapes-world model: UNet config, prompt vocabulary, text encoder, files.

The denoiser is a diffusers ``UNet2DConditionModel`` with SD1.5's topology in
miniature: four resolution levels, a decoder whose middle two levels carry
transformer blocks (self-attention attn1 + cross-attention attn2), epsilon
prediction, SD's scaled_linear schedule. It works in pixel space (3 channels,
no VAE) at 32x32. Every choice is one ComfyUI's ``UNetModel`` can represent
(GroupNorm 32, conv proj_in/out, num_res_blocks 1, channel_mult (1, 2, 2, 2),
transformer depth (0, 1, 1, 0), one head), so the same weights load there.

The "text encoder" is a learned prompt vocabulary: a prompt such as
``"gradient, red disc, blue square"`` becomes 4 context tokens (background
slot + 3 object slots), each the sum of learned embeddings (background kind, or
colour + shape) and a slot embedding, then a LayerNorm. The empty prompt is
the unconditional context used by classifier-free guidance.

Files (``dragon_core/assets/shapes32``): ``config.json`` (UNet config, text
encoder dims, schedule, calibrated edit defaults), ``unet.safetensors`` and
``text_encoder.safetensors`` (fp16), ``MODEL_CARD.md``, ``samples.png``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from .shapes_world import BACKGROUNDS, COLOURS, SHAPES, Scene

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "shapes32"
RESOLUTION = 32
CONTEXT_DIM = 32
MAX_OBJECTS = 3
CONTEXT_TOKENS = 1 + MAX_OBJECTS

UNET_CONFIG: dict[str, Any] = {
    "sample_size": RESOLUTION,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "block_out_channels": [32, 64, 64, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": CONTEXT_DIM,
    "attention_head_dim": 1,  # diffusers' legacy name: this is the number of heads
    "norm_num_groups": 32,
    "use_linear_projection": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

SCHEDULE: dict[str, Any] = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
}

# Sampling defaults for this pixel-space model. ComfyUI's ddim_uniform spacing ends
# at sigma 0 (the clean x0 estimate); diffusers' "leading" spacing ends at abar[0],
# which leaves sqrt(1 - abar[0]) = 0.029 of predicted noise in the image: invisible
# behind a VAE, visible grain in pixel space (background roughness 0.11 vs 0.054).
# CFG 3 follows the prompt's colours far better than 1 (56 vs 39 of 63 in a test batch).
SAMPLING: dict[str, Any] = {"cfg": 3.0, "spacing": "comfy_uniform"}

# Edit settings calibrated on the shapes bench (python -m dragon_lab bench; 6 move
# cases per variant), overriding editing.PAPER_DEFAULTS:
# - CFG 1: under CFG this pixel model drifts in colour away from its inversion;
# - no start-latent copy for drag: pasting inverted pixel-space noise elsewhere derailed
#   sampling (move IoU 0.35 vs 0.91 on 12 cases at scale 160, before the background lock);
# - move/resize start from the inversion with the object's latent copied (scaled) to its
#   destination and fresh noise where it leaves (copy_start + vacated_noise): the inversion's
#   noise re-grows the object at its old size and place (scripts/resize_study.py, bench cases
#   0-11, 20 steps: resize |area ratio - 1| mean 0.217 vs 0.328, IoU 0.810 vs 0.729; move IoU
#   0.782 vs 0.754 with the prompt, 0.678 vs 0.571 without; attention, lock and SDE change the
#   size by under 0.01, the guidance's contrast and inpaint terms by 0.13);
# - energy scale 6x the paper's effective value (4x and 12x were worse);
# - concatenated rather than replaced K/V for move (IoU 0.63 vs 0.46);
# - background lock: small edits drift this model's global colour (background PSNR
#   22.8 dB); following the inversion outside the grown edit region keeps 39-40 dB;
# - guidance on every other step to the end (guide_until 1): IoU 0.72 vs 0.63;
# - appearance at 3x the paper's scale: colour error 0.36 vs 0.45 at 6x (4 cases), with
#   the masked attention to the last step (0.479 vs 0.520 ending at step 35, 12 cases);
# - drag at 3x the paper's scale with DiffEditor's time travel (3 passes): remaining
#   distance 0.282 vs 0.958 at 6x without it (12 cases);
# - point sets (no mask, so no lock) at half the paper's face scale: area ratio 1.01,
#   background 30.3 dB, vs 0.60 and 16.7 dB at 480 (6 cases);
# - paste: the pasted region follows the source's moved inversion for the first 80% of
#   the steps (copy_until; the start-latent copy alone lets the prompt-less object
#   dissolve) at the paper's scale: IoU 0.63, PSNR 24.7 vs 0.13 and 18.2 with the copy
#   at step 0 only and 6x the scale (6 cases);
# - features compared at the latent size (feature_scale 1: the latent is the image);
# - DiffEditor's regional SDE (flexibility) in the middle steps: fresh noise in the edit
#   region lets the model redraw the vacated area instead of leaving blobs there. Move
#   0.7: PSNR 28.84 vs 27.80 at 0 (IoU 0.764 vs 0.765, 12 cases; resize 26.71 vs 26.29);
#   drag 1.0: PSNR 26.86 vs 24.36, remaining distance 0.248 vs 0.282 (12 cases);
#   appearance 0.7: colour error 0.386 vs 0.420 (6 cases); point sets (no mask, so the
#   noise covers the whole image) lose background at 0.7 (23.4 vs 31.6 dB): 0;
# - point sets without a mask edit inside the points' box grown by 10% of the side
#   (point_region), so the background lock holds the rest: PSNR 23.86 vs 23.03, background
#   41.4 vs 30.0 dB, area ratio 1.15 vs 1.18 (6 cases);
# - appearance matches the reference object's mean feature over its interior (mask eroded
#   by one cell; reference_interior): its boundary features carry its shape, which came
#   along; colour error 0.361 vs 0.386, IoU 0.32 vs 0.27 (6 cases).
# - appearance starts from the base's inverted latent with the masked region's per-channel
#   mean moved to the reference object's (appearance_start 1.0), and the energy scale halves
#   to 120: colour error 0.230 vs 0.416, PSNR 24.25 vs 21.88, IoU 0.52 vs 0.30 (12 cases;
#   seed 1: 0.254, 24.38, 0.435; energy 60 / 90 / 240: colour error 0.245 / 0.245 / 0.338).
# - paste follows the source's moved inversion for 90% of the steps (copy_until 0.9; 0.8
#   before): PSNR 24.82 vs 24.66, IoU 0.71 vs 0.64, centroid error 1.28 vs 1.61 px, now below no
#   guidance's 1.42 (12 cases; 0.6: 23.78 / 0.57 / 4.15; 0.95: 25.05 / 0.73 / 1.23, but that leaves
#   the method only the last 2-3 steps).
# - no time travel (one pass per step) except for drag, and no regional SDE for point sets and
#   paste: every value above was calibrated without them, before PAPER_DEFAULTS took the
#   official demo's 3 passes and SDE strength (0.4; 0.2 for point sets).
EDIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "move": {
        "cfg": 1.0,
        "energy_scale": 240.0,
        "copy_start": True,
        "vacated_noise": True,
        "attention_mode": "concat",
        "background_lock": 1.0,
        "guide_until": 1.0,
        "feature_scale": 1.0,
        "flexibility": 0.7,
        "time_travel": 1
    },
    "drag": {
        "cfg": 1.0,
        "energy_scale": 240.0,
        "time_travel": 3,
        "copy_start": False,
        "background_lock": 1.0,
        "guide_until": 1.0,
        "feature_scale": 1.0,
        "flexibility": 1.0
    },
    "points": {
        "cfg": 1.0,
        "energy_scale": 60.0,
        "copy_start": False,
        "background_lock": 1.0,
        "guide_until": 1.0,
        "feature_scale": 1.0,
        "point_region": 0.1,
        "flexibility": 0.0,
        "time_travel": 1
    },
    "appearance": {
        "cfg": 1.0,
        "energy_scale": 120.0,
        "attention_end": None,
        "background_lock": 1.0,
        "guide_until": 1.0,
        "feature_scale": 1.0,
        "flexibility": 0.7,
        "reference_interior": True,
        "appearance_start": 1.0,
        "time_travel": 1
    },
    "paste": {
        "cfg": 1.0,
        "energy_scale": 60.0,
        "background_lock": 1.0,
        "guide_until": 1.0,
        "feature_scale": 1.0,
        "copy_until": 0.9,
        "flexibility": 0.0,
        "time_travel": 1
    }
}

_SYNONYMS = {"circle": "disc", "ball": "disc", "box": "square", "rhombus": "diamond", "purple": "magenta",
             "pink": "magenta", "grey": None, "gray": None, "plain": "flat", "textured": "texture",
             "noise": "texture", "gradient": "gradient"}
_IGNORED = {"a", "an", "the", "on", "and", "with", "in", "of", "background", "scene", "image", "picture"}


def parse_prompt(prompt: str) -> tuple[str | None, list[tuple[str, str]]]:
    """Parse a shapes-vocabulary prompt into (background kind or None, [(colour, shape), ...]).

    Words: a background kind (flat, gradient, texture), and "colour shape" pairs.
    Filler words ("a", "on", "and", "background", ...) are ignored. Unknown words
    raise a ValueError that lists the vocabulary.
    """
    words = [w for w in re.split(r"[^a-z]+", prompt.lower()) if w]
    background: str | None = None
    objects: list[tuple[str, str]] = []
    colour: str | None = None
    for raw in words:
        if raw in _IGNORED:
            continue
        w = _SYNONYMS.get(raw, raw)
        if w is None:
            continue
        if w in BACKGROUNDS:
            background = w
        elif w in COLOURS:
            if colour is not None:
                raise ValueError(f"prompt {prompt!r}: colour {colour!r} is not followed by a shape")
            colour = w
        elif w in SHAPES or (w.endswith("s") and w[:-1] in SHAPES):
            if colour is None:
                raise ValueError(f"prompt {prompt!r}: shape {w!r} needs a colour before it, e.g. 'red {w}'")
            objects.append((colour, w.rstrip("s") if w not in SHAPES else w))
            colour = None
        else:
            raise ValueError(
                f"prompt {prompt!r}: unknown word {raw!r}. Vocabulary: backgrounds {list(BACKGROUNDS)}, "
                f"colours {list(COLOURS)}, shapes {list(SHAPES)}"
            )
    if colour is not None:
        raise ValueError(f"prompt {prompt!r}: colour {colour!r} is not followed by a shape")
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"prompt {prompt!r}: at most {MAX_OBJECTS} objects, got {len(objects)}")
    return background, objects


def tokenize(prompts: str | Iterable[str]) -> torch.Tensor:
    """Prompts to token ids, long (B, 4, 2): slot 0 = (background id, 0), slots
    1-3 = (colour id, shape id); id 0 means "unspecified"."""
    if isinstance(prompts, str):
        prompts = [prompts]
    rows = []
    for p in prompts:
        bg, objs = parse_prompt(p)
        row = [[BACKGROUNDS.index(bg) + 1 if bg else 0, 0]]
        row += [[COLOURS.index(c) + 1, SHAPES.index(s) + 1] for c, s in objs]
        row += [[0, 0]] * (CONTEXT_TOKENS - len(row))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


def scene_tokens(scene: Scene) -> list[list[int]]:
    """Token ids (4, 2) of a scene's full description, without string parsing."""
    row = [[BACKGROUNDS.index(scene.background.kind) + 1, 0]]
    row += [[COLOURS.index(o.colour) + 1, SHAPES.index(o.shape) + 1] for o in scene.objects]
    return row + [[0, 0]] * (CONTEXT_TOKENS - len(row))


class ShapesTextEncoder(nn.Module):
    """Learned prompt vocabulary: token ids (B, 4, 2) -> context (B, 4, CONTEXT_DIM)."""

    def __init__(self, dim: int = CONTEXT_DIM) -> None:
        super().__init__()
        self.background = nn.Embedding(len(BACKGROUNDS) + 1, dim)
        self.colour = nn.Embedding(len(COLOURS) + 1, dim)
        self.shape = nn.Embedding(len(SHAPES) + 1, dim)
        self.slot = nn.Embedding(CONTEXT_TOKENS, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[1:] != (CONTEXT_TOKENS, 2):
            raise ValueError(f"tokens must have shape (B, {CONTEXT_TOKENS}, 2), got {tuple(tokens.shape)}")
        bg = self.background(tokens[:, :1, 0])
        obj = self.colour(tokens[:, 1:, 0]) + self.shape(tokens[:, 1:, 1])
        slots = self.slot(torch.arange(CONTEXT_TOKENS, device=tokens.device))
        return self.norm(torch.cat([bg, obj], dim=1) + slots[None])

    def encode(self, prompts: str | Iterable[str]) -> torch.Tensor:
        """Prompts to context (B, 4, dim) on this module's device and dtype."""
        dev = self.slot.weight.device
        with torch.no_grad():
            return self(tokenize(prompts).to(dev))


def build_unet(config: dict[str, Any] | None = None):
    """A fresh diffusers UNet2DConditionModel with the shapes config (diffusers imported lazily)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**(config or UNET_CONFIG))


def load_config(model_dir: str | Path = ASSET_DIR) -> dict[str, Any]:
    """The model folder's config.json as a dict."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"model folder {model_dir} has no config.json")
    return json.loads(path.read_text())


def load_text_encoder(model_dir: str | Path = ASSET_DIR, dtype: torch.dtype = torch.float32) -> ShapesTextEncoder:
    """The bundled text encoder (safetensors only; no pickle)."""
    from safetensors.torch import load_file

    cfg = load_config(model_dir)
    enc = ShapesTextEncoder(int(cfg["text_encoder"]["dim"]))
    enc.load_state_dict(load_file(str(Path(model_dir) / "text_encoder.safetensors")))
    return enc.to(dtype).eval()


def load_unet(model_dir: str | Path = ASSET_DIR, dtype: torch.dtype = torch.float32):
    """The bundled UNet as a diffusers UNet2DConditionModel (safetensors only)."""
    from safetensors.torch import load_file

    cfg = load_config(model_dir)
    unet = build_unet(cfg["unet"])
    unet.load_state_dict(load_file(str(Path(model_dir) / "unet.safetensors")))
    if dtype != torch.float32:
        unet = unet.to(dtype)
    return unet.eval()


def save_model(
    out_dir: str | Path, unet: nn.Module, text_encoder: nn.Module, extra: dict[str, Any] | None = None
) -> None:
    """Write the model folder: fp16 safetensors for both modules and config.json."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    half = lambda m: {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in m.state_dict().items()}  # noqa: E731
    save_file(half(unet), str(out / "unet.safetensors"))
    save_file(half(text_encoder), str(out / "text_encoder.safetensors"))
    cfg = {
        "format": "dragon-shapes-model/1",
        "resolution": RESOLUTION,
        "unet": dict(UNET_CONFIG),
        "text_encoder": {"dim": CONTEXT_DIM, "tokens": CONTEXT_TOKENS},
        "schedule": dict(SCHEDULE),
        "sampling": dict(SAMPLING),
        "edit_defaults": {k: dict(v) for k, v in EDIT_DEFAULTS.items()},
    }
    cfg.update(extra or {})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
