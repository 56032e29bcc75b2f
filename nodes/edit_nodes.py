"""Edit nodes: ComfyUI MASK / IMAGE / points strings -> a DRAGON_EDIT.

A DRAGON_EDIT is one of the core's validated edit objects (``Move``, ``Drag``,
``Points``, ``Appearance``, ``Paste``); the guidance sampler plans and runs it
against a base image's DRAGON_MEMORY. Offsets and points are image pixels
(the size of the MASK / IMAGE given here); the sampler checks that size
against the inverted latent. Every validation error names the node input.

The Drag and Move / Resize nodes also hand their image / mask to the canvas
editor in the node (web/dragon_editor.js): as ``ui`` output when they run, and as
a websocket message when they refuse their settings (no points yet, no move yet),
so the picture to edit on shows up either way.
"""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from dragon_core.edits import Appearance, Drag, Move, Paste, Points
from dragon_core.regions import parse_points

from .comfy_types import DragonEdit, DragonMemory
from .convert import InputError, image_size, named_errors, single_mask

CATEGORY = "DragonDiffusion/edit"

POINTS_TOOLTIP = ("Handle -> target pairs in image pixels: 'x1,y1,x2,y2; x1,y1,x2,y2; ...' (handle first), or a "
                  "JSON list of points such as KJNodes' PointsEditor writes ([{\"x\":..,\"y\":..}, ...]), read as "
                  "handle, target, handle, target, ...")


POINTS = {"handles": "points", "targets": "points"}  # the core's names for what the points input gave


# -- what the canvas editor (web/dragon_editor.js) draws ---------------------------------------------------

EDITOR_PREVIEW_EVENT = "dragondiffusion.editor_preview"  # websocket message when the node fails


def _editor_previews(image=None, mask=None) -> dict:
    """The node's image and/or mask as temporary PNGs, for the point / region editor drawn in
    the node. Keys of our own ("dragon_image", "dragon_mask"), not "images": ComfyUI would
    otherwise draw them as an ordinary preview under the editor. No workflow metadata in them.
    A preview that cannot be written is logged, never fails the edit."""
    out = {}
    try:
        if image is not None:
            img = image[:1]
            img = img[..., :3] if img.shape[-1] >= 3 else img[..., :1].expand(-1, -1, -1, 3)
            out["dragon_image"] = ui.PreviewImage(img).values
        if mask is not None:
            out["dragon_mask"] = ui.PreviewMask(mask[None]).values
    except Exception as e:  # disk full, temp dir gone: the edit itself does not need the preview
        logging.warning("DragonDiffusion: could not write the editor preview: %s", e)
    return out


def _with_previews(cls, previews: dict, make):
    """``make()`` -> io.NodeOutput(edit, ui=previews). When the edit is refused (no points yet,
    dx = dy = 0 and scale 1, ...) the previews still reach the editor, as a websocket message,
    so the user sees the picture to place points on; then the error is raised as usual."""
    try:
        edit = make()
    except ValueError:  # InputError, the core's RegionError and validation errors
        _send_previews(cls, previews)
        raise
    return io.NodeOutput(edit, ui=previews)


def _send_previews(cls, previews: dict) -> None:
    node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
    if not previews or node_id is None:
        return
    try:
        from server import PromptServer  # ComfyUI's server module; absent when nodes run without one
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None:
        server.send_sync(EDITOR_PREVIEW_EVENT, {"node": str(node_id), "output": previews}, server.client_id)


def _offset_inputs() -> list:
    return [
        io.Int.Input("dx", default=0, min=-16384, max=16384,
                     tooltip="Horizontal move in image pixels (right is positive)."),
        io.Int.Input("dy", default=0, min=-16384, max=16384,
                     tooltip="Vertical move in image pixels (down is positive)."),
        io.Float.Input("scale", default=1.0, min=0.1, max=10.0, step=0.01,
                       tooltip="Resize factor about the centre of the object's bounding box (1 = same size)."),
    ]


class MoveEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_MoveEdit",
            display_name="DragonDiffusion Move / Resize",
            category=CATEGORY,
            description="Move and/or resize the object under the mask. The vacated area is filled from its "
                        "surroundings and the object keeps its look (the memory's self-attention).",
            inputs=[
                io.Mask.Input("mask", tooltip="The object to move, at the size of the inverted image "
                                              "(values >= 0.5 count as inside)."),
                *_offset_inputs(),
                io.Mask.Input("inpaint_region", optional=True,
                              tooltip="Optional: surroundings the vacated area should resemble."),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The move edit, for the guidance sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @named_errors("DragonDiffusion Move / Resize")
    def execute(cls, mask, dx, dy, scale, inpaint_region=None) -> io.NodeOutput:
        m = single_mask(mask, "mask")
        region = None if inpaint_region is None else single_mask(inpaint_region, "inpaint_region")
        if region is not None and region.shape != m.shape:
            raise InputError(f"inpaint_region is {region.shape[1]}x{region.shape[0]}, mask is "
                             f"{m.shape[1]}x{m.shape[0]}: give both at the image's size")
        previews = _editor_previews(mask=m)
        return _with_previews(cls, previews, lambda: Move(m, float(dx), float(dy), float(scale), region))


class DragEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_DragEdit",
            display_name="DragonDiffusion Drag",
            category=CATEGORY,
            description="Drag content from handle points to target points; only the masked region may change "
                        "(the whole image without a mask).",
            inputs=[
                io.Image.Input("image", tooltip="The image being edited (its size gives the point coordinates' "
                                                "frame; the point editor draws on it)."),
                io.String.Input("points", multiline=True, default="", tooltip=POINTS_TOOLTIP),
                io.Mask.Input("mask", optional=True, tooltip="Optional: the editable region (white may change)."),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The drag edit, for the guidance sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @named_errors("DragonDiffusion Drag", POINTS)
    def execute(cls, image, points, mask=None) -> io.NodeOutput:
        size = image_size(image, "image")
        m = None if mask is None else single_mask(mask, "mask")
        previews = _editor_previews(image=image, mask=m)

        def make():
            handles, targets = parse_points(points, "points")
            return Drag(handles, targets, size, m)

        return _with_previews(cls, previews, make)


class PointSetEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_PointSetEdit",
            display_name="DragonDiffusion Point-Set Drag",
            category=CATEGORY,
            description="Move many landmarks at once (e.g. face keypoints): every handle point goes to its "
                        "target, with no mask.",
            inputs=[
                io.Image.Input("image", tooltip="The image being edited (the frame of the point coordinates)."),
                io.String.Input("points", multiline=True, default="", tooltip=POINTS_TOOLTIP),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The point-set edit, for the guidance sampler.")],
        )

    @classmethod
    @named_errors("DragonDiffusion Point-Set Drag", POINTS)
    def execute(cls, image, points) -> io.NodeOutput:
        size = image_size(image, "image")
        handles, targets = parse_points(points, "points")
        return io.NodeOutput(Points(handles, targets, size))


class AppearanceEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_AppearanceEdit",
            display_name="DragonDiffusion Appearance",
            category=CATEGORY,
            description="Give the masked object the appearance of an object in a reference image (inverted with "
                        "the same model, size and steps).",
            inputs=[
                io.Mask.Input("mask", tooltip="The object whose appearance changes, in the base image."),
                DragonMemory.Input("reference_memory", tooltip="The reference image's memory (DragonDiffusion "
                                                               "Inversion of the reference)."),
                io.Mask.Input("reference_mask", tooltip="The object in the reference image that gives the look."),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The appearance edit, for the guidance sampler.")],
        )

    @classmethod
    @named_errors("DragonDiffusion Appearance")
    def execute(cls, mask, reference_memory, reference_mask) -> io.NodeOutput:
        m, rm = single_mask(mask, "mask"), single_mask(reference_mask, "reference_mask")
        return io.NodeOutput(Appearance(m, reference_memory, rm))


class PasteEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_PasteEdit",
            display_name="DragonDiffusion Paste",
            category=CATEGORY,
            description="Paste the masked object of a source image into the base image, moved by (dx, dy) and "
                        "scaled; the model blends it in.",
            inputs=[
                DragonMemory.Input("source_memory", tooltip="The source image's memory (inverted with the same "
                                                            "model, size and steps as the base image)."),
                io.Mask.Input("mask", tooltip="The object to paste, in the source image."),
                *_offset_inputs(),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The paste edit, for the guidance sampler.")],
        )

    @classmethod
    @named_errors("DragonDiffusion Paste")
    def execute(cls, source_memory, mask, dx, dy, scale) -> io.NodeOutput:
        m = single_mask(mask, "mask")
        return io.NodeOutput(Paste(source_memory, m, float(dx), float(dy), float(scale)))


NODES = [MoveEdit, DragEdit, PointSetEdit, AppearanceEdit, PasteEdit]
