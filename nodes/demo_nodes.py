"""The bundled shapes-world demo model as a real ComfyUI MODEL, and its prompts.

With these two nodes and ComfyUI's stock ``VAELoader`` (``pixel_space``),
``VAEEncode`` / ``VAEDecode`` and ``LoadImage``, every DragonDiffusion workflow
runs without downloading a checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from dragon_demo.shapes_model import load_config
from dragon_demo.shapes_world import random_scene

from .convert import InputError, named_errors
from .model_info import DEFAULTS_KEY
from .shapes_comfy import encode_prompt, load_shapes_model


class ShapesModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_ShapesModelLoader",
            display_name="DragonDiffusion Shapes Demo Model",
            category="DragonDiffusion/demo",
            description="Load the bundled 2M-parameter shapes-world UNet (SD1.5 architecture in miniature, 32x32 "
                        "pixel space). Use it with VAE Loader 'pixel_space' and the Shapes Prompt node.",
            inputs=[],
            outputs=[io.Model.Output(display_name="model", tooltip="The shapes demo model, with its calibrated "
                                                                    "edit settings.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        model = load_shapes_model()
        model.model_options[DEFAULTS_KEY] = load_config().get("edit_defaults", {})
        return io.NodeOutput(model)


class ShapesPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_ShapesPrompt",
            display_name="DragonDiffusion Shapes Prompt",
            category="DragonDiffusion/demo",
            description="Encode a shapes-world prompt for the demo model: a background (flat, gradient, texture) "
                        "and up to 3 'colour shape' pairs, e.g. 'gradient, red disc, blue square'. Empty = "
                        "unconditional (for negative).",
            inputs=[io.String.Input("prompt", default="flat, red disc",
                                    tooltip="Background and 'colour shape' pairs; colours: red, orange, yellow, "
                                            "green, cyan, blue, magenta; shapes: disc, square, triangle, diamond.")],
            outputs=[io.Conditioning.Output(display_name="conditioning", tooltip="For the shapes demo model only.")],
        )

    @classmethod
    @named_errors("DragonDiffusion Shapes Prompt")
    def execute(cls, prompt) -> io.NodeOutput:
        try:
            return io.NodeOutput(encode_prompt(prompt))
        except ValueError as e:
            raise InputError(f"prompt: {e}") from None


class ShapesScene(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_ShapesScene",
            display_name="DragonDiffusion Shapes Scene",
            category="DragonDiffusion/demo",
            description="Render a random shapes-world scene (32x32) for trying edits on the demo model without any "
                        "files: the image, one object's mask, and the scene's prompt.",
            inputs=[
                # not named "seed": the frontend gives every INT "seed" a control-after-generate widget
                io.Int.Input("scene", default=1, min=0, max=2**31 - 1, tooltip="Which scene (the seed of "
                                                                                 "the random scene)."),
                io.Int.Input("object", default=0, min=0, max=2,
                             tooltip="Which object's mask to output (0 = first; clipped to the scene's objects)."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The scene."),
                io.Mask.Output(display_name="mask", tooltip="The chosen object's visible mask."),
                io.Conditioning.Output(display_name="positive", tooltip="The scene's prompt, encoded for the demo "
                                                                        "model."),
                io.String.Output(display_name="prompt", tooltip="The scene's prompt as text."),
            ],
        )

    @classmethod
    def execute(cls, scene, object) -> io.NodeOutput:
        world = random_scene(int(scene))
        i = min(int(object), len(world.objects) - 1)
        image = torch.from_numpy(world.render().astype(np.float32))[None]
        mask = torch.from_numpy(world.masks()[i].astype(np.float32))[None]
        prompt = world.prompt()
        return io.NodeOutput(image, mask, encode_prompt(prompt), prompt)


NODES = [ShapesModelLoader, ShapesPrompt, ShapesScene]
