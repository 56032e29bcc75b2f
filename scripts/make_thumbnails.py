"""Render the template-browser thumbnail of every shapes demo workflow (workflows/<name>.jpg).

Run with the dev environment: ``.venv/bin/python scripts/make_thumbnails.py``.
Each thumbnail is the demo's real result, not a mock-up: the same scenes and
edit settings as the workflow (scripts/make_workflows.py DEMO), run by
dragon_core on the bundled model; the ComfyUI integration tests show the
nodes give the same image as the core (within 3/255). Layout: input |
reference (appearance, paste) | result, upscaled 6x without smoothing.
The SD1.5 workflows get no thumbnail: no checkpoint is available to render one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from make_workflows import DEMO, OUT  # noqa: E402

from dragon_core.diffusers_backend import load_shapes_backend  # noqa: E402
from dragon_core.edits import Appearance, Drag, Move, Paste, Points  # noqa: E402
from dragon_core.sampler import edit_image  # noqa: E402
from dragon_core.settings import default_settings  # noqa: E402
from dragon_core.images import array_to_tensor, tensor_to_array  # noqa: E402
from dragon_core.memory import invert_with_memory  # noqa: E402
from dragon_core.regions import parse_points  # noqa: E402
from dragon_demo.shapes_model import load_config  # noqa: E402
from dragon_demo.shapes_world import random_scene  # noqa: E402

STEPS = 50  # the workflows' Inversion steps
UPSCALE = 6


def grow_mask(mask: torch.Tensor, expand: int) -> torch.Tensor:
    """ComfyUI's GrowMask with tapered corners: ``expand`` dilations by a 3x3 cross."""
    m = mask[None, None]
    cross = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]])[None, None]
    for _ in range(expand):
        m = (torch.nn.functional.conv2d(m, cross, padding=1) > 0).float()
    return m[0, 0]


def render(kind: str, backend, encoder) -> list[np.ndarray]:
    d = DEMO[kind]
    cfg = load_config()
    scene = random_scene(d["seed"])
    cond, uncond = encoder.encode(scene.prompt()), encoder.encode("")
    spacing = cfg["sampling"]["spacing"]
    memory = invert_with_memory(backend, array_to_tensor(scene.render()), cond, steps=STEPS, spacing=spacing)
    mask = torch.from_numpy(scene.masks()[0].astype(np.float32))
    panels = [scene.render()]
    if kind in ("move", "resize"):
        edit = Move(mask, **{k: float(v) for k, v in d["edit"].items()})
    elif kind == "drag":
        handles, targets = parse_points(d["points"])
        edit = Drag(handles, targets, (scene.size, scene.size), grow_mask(mask, d["grow"]))
    elif kind == "points":
        handles, targets = parse_points(d["points"])
        edit = Points(handles, targets, (scene.size, scene.size))
    else:
        ref = random_scene(d["reference"])
        panels.append(ref.render())
        ref_memory = invert_with_memory(backend, array_to_tensor(ref.render()), encoder.encode(ref.prompt()),
                                        steps=STEPS, spacing=spacing)
        ref_mask = torch.from_numpy(ref.masks()[0].astype(np.float32))
        edit = Appearance(mask, ref_memory, ref_mask) if kind == "appearance" else \
            Paste(ref_memory, ref_mask, **{k: float(v) for k, v in d["edit"].items()})
    settings = default_settings("move" if kind == "resize" else kind, cfg["edit_defaults"], seed=0)
    panels.append(tensor_to_array(edit_image(backend, memory, edit, cond, uncond, settings).latent))
    return panels


def main() -> None:
    torch.set_num_threads(1)
    backend, encoder = load_shapes_backend()
    for kind in DEMO:
        panels = render(kind, backend, encoder)
        gap = np.ones((panels[0].shape[0], 2, 3), dtype=np.float32)
        row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        img = Image.fromarray((row.clip(0, 1) * 255).round().astype(np.uint8))
        img = img.resize((img.width * UPSCALE, img.height * UPSCALE), Image.NEAREST)
        path = OUT / f"dragon_{kind}_shapes_demo.jpg"
        img.save(path, quality=92)
        print("wrote", path)


if __name__ == "__main__":
    main()
