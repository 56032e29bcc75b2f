"""API-prompt pieces the ComfyUI integration tests share (plain dicts, no ComfyUI import)."""

from __future__ import annotations


def guided_sampler(edit: str, positive: list | None = None, **inputs) -> dict:
    """A DragonDiff_GuidedSampler node on nodes "model", "neg" and "inv" (the Inversion) for edit
    node ``edit``; ``positive`` defaults to the Shapes Scene "scene"'s prompt; ``inputs`` override
    the widgets (all -1 = the model's defaults (preset model), cross-branch attention on)."""
    values = {"model": ["model", 0], "positive": positive or ["scene", 2], "negative": ["neg", 0],
              "memory": ["inv", 1], "edit": [edit, 0], "seed": 0, "cfg": -1.0, "energy_scale": -1.0,
              "guidance_end": -1.0, "flexibility": -1.0, "cross_attention": True, "preset": "model"}
    values.update(inputs)
    return {"class_type": "DragonDiff_GuidedSampler", "inputs": values}


def shapes_scene(scene: int = 4, steps: int | None = None, reference: int | None = None) -> dict:
    """The bundled model, Shapes Scene ``scene`` (object 1) as "scene", the empty prompt "neg", the
    pixel-space VAE and the scene's latent "lat"; with ``steps`` an Inversion "inv" of it, with
    ``reference`` a second Shapes Scene "ref" (object 0)."""
    g = {
        "model": {"class_type": "DragonDiff_ShapesModelLoader", "inputs": {}},
        "scene": {"class_type": "DragonDiff_ShapesScene", "inputs": {"scene": scene, "object": 1}},
        "neg": {"class_type": "DragonDiff_ShapesPrompt", "inputs": {"prompt": ""}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "lat": {"class_type": "VAEEncode", "inputs": {"pixels": ["scene", 0], "vae": ["vae", 0]}},
    }
    if reference is not None:
        g["ref"] = {"class_type": "DragonDiff_ShapesScene", "inputs": {"scene": reference, "object": 0}}
    if steps is not None:
        g["inv"] = {"class_type": "DragonDiff_Inversion",
                    "inputs": {"model": ["model", 0], "latent": ["lat", 0], "positive": ["scene", 2], "steps": steps}}
    return g
