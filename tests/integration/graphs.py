"""API-prompt pieces the ComfyUI integration tests share (plain dicts, no ComfyUI import)."""

from __future__ import annotations


def guided_sampler(edit: str, positive: list | None = None, **inputs) -> dict:
    """A DragonDiff_GuidedSampler node on nodes "model", "neg" and "inv" (the Inversion) for edit
    node ``edit``; ``positive`` defaults to the Shapes Scene "scene"'s prompt; ``inputs`` override
    the widgets (all -1 = the model's defaults, cross-branch attention on)."""
    values = {"model": ["model", 0], "positive": positive or ["scene", 2], "negative": ["neg", 0],
              "memory": ["inv", 1], "edit": [edit, 0], "seed": 0, "cfg": -1.0, "energy_scale": -1.0,
              "guidance_end": -1.0, "flexibility": -1.0, "cross_attention": True}
    values.update(inputs)
    return {"class_type": "DragonDiff_GuidedSampler", "inputs": values}
