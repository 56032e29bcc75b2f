"""Edit nodes: ComfyUI MASK / IMAGE / points strings -> a DRAGON_EDIT.

A DRAGON_EDIT is one of the core's validated edit objects (``Move``, ``Drag``,
``Points``, ``Appearance``, ``Paste``); the guidance sampler plans and runs it
against a base image's DRAGON_MEMORY. Offsets and points are image pixels
(the size of the MASK / IMAGE given here); the sampler checks that size
against the inverted latent. Every validation error names the node input.

Move / Resize, Paste and Appearance take the object either from a wired MASK (it wins)
or from a selection drawn in the node's canvas editor (web/dragon_editor.js): a STRING of
boxes, lassos and brush strokes in image pixels (nodes/convert.py ``parse_selection``),
rasterised at the size of the picture it was drawn on; the Drag node's editable region
the same way. The nodes hand their pictures and wired masks to the editor: as ``ui``
output when they run, and as a websocket message when they refuse their settings (no
points yet, nothing selected yet), so the picture to edit on shows up either way.
"""

from __future__ import annotations

import logging

import torch

from comfy_api.latest import io, ui

from dragon_core.edits import Appearance, Drag, Move, Paste, Points
from dragon_core.regions import parse_points

from .comfy_types import DragonEdit, DragonMemory
from .convert import InputError, image_size, named_errors, parse_selection, selection_mask, single_mask

CATEGORY = "DragonDiffusion/edit"

POINTS_TOOLTIP = ("Handle -> target pairs in image pixels: 'x1,y1,x2,y2; x1,y1,x2,y2; ...' (handle first), or a "
                  "JSON list of points such as KJNodes' PointsEditor writes ([{\"x\":..,\"y\":..}, ...]), read as "
                  "handle, target, handle, target, ...")


POINTS = {"handles": "points", "targets": "points"}  # the core's names for what the points input gave

SELECTION_TOOLTIP = ("Drawn in the node's editor (Box, Lasso, Brush): shapes in image pixels, one per ';', "
                     "'-' removes: 'box x0,y0,x1,y1', 'poly x,y x,y x,y ...', 'brush r x,y x,y ...'. ")


# -- what the canvas editor (web/dragon_editor.js) draws ---------------------------------------------------

EDITOR_PREVIEW_EVENT = "dragondiffusion.editor_preview"  # websocket message when the node fails


def _editor_previews(images: dict | None = None, masks: dict | None = None) -> dict:
    """The node's pictures and wired masks as temporary PNGs for the canvas editor drawn in the
    node, keyed ``dragon_<input name>``. Keys of our own, not "images": ComfyUI would otherwise
    draw them as an ordinary preview under the editor. No workflow metadata in them. A preview
    that cannot be written is logged, never fails the edit."""
    out = {}
    try:
        for name, image in (images or {}).items():
            if image is not None:
                img = image[:1]
                img = img[..., :3] if img.shape[-1] >= 3 else img[..., :1].expand(-1, -1, -1, 3)
                out[f"dragon_{name}"] = ui.PreviewImage(img).values
        for name, mask in (masks or {}).items():
            if mask is not None:
                out[f"dragon_{name}"] = ui.PreviewMask(mask[None]).values
    except Exception as e:  # disk full, temp dir gone: the edit itself does not need the preview
        logging.warning("DragonDiffusion: could not write the editor preview: %s", e)
    return out


def _size(image, name: str) -> tuple[int, int] | None:
    return None if image is None else image_size(image, name)


def _wired_mask(mask, name: str, size: tuple[int, int] | None, image: str) -> torch.Tensor | None:
    """A wired MASK as (H, W), which must match the picture the editor draws it on."""
    if mask is None:
        return None
    m = single_mask(mask, name)
    if size is not None and tuple(m.shape) != size:
        raise InputError(f"{image} is {size[1]}x{size[0]} but {name} is {m.shape[1]}x{m.shape[0]}: wire the image "
                         f"the mask belongs to")
    return m


def _object_mask(wired, selection: str, name: str, size: tuple[int, int] | None, image: str):
    """The wired mask (it wins), else the selection rasterised at the picture's size; None when
    neither is given."""
    if wired is not None:
        return wired
    shapes = parse_selection(selection or "", name)
    if not shapes:
        return None
    if size is None:
        raise InputError(f"{image}: the {name} needs the picture it was drawn on: wire that image into {image}")
    return selection_mask(shapes, size, name)


def _nothing_selected(name: str, mask: str, where: str) -> InputError:
    return InputError(f"{name}: nothing selected and no {mask} wired: draw a box around the object {where} in the "
                      f"node's editor, or wire a MASK into {mask}")


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
                     tooltip="Horizontal move in image pixels (right is positive). The editor sets it when you drag "
                             "the object."),
        io.Int.Input("dy", default=0, min=-16384, max=16384,
                     tooltip="Vertical move in image pixels (down is positive)."),
        io.Float.Input("scale", default=1.0, min=0.1, max=10.0, step=0.01,
                       tooltip="Resize factor about the centre of the object's bounding box (1 = same size). The "
                               "editor sets it with the handle at the object's corner."),
    ]


def _selection_input(name: str = "selection", what: str = "The object") -> io.String.Input:
    return io.String.Input(name, optional=True, default="",
                           tooltip=f"{what}, when no mask is wired. " + SELECTION_TOOLTIP)


class MoveEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_MoveEdit",
            display_name="DragonDiffusion Move / Resize",
            category=CATEGORY,
            description="Move and/or resize an object: select it in the node's editor (or wire its mask), then drag "
                        "it. The vacated area is filled from its surroundings and the object keeps its look.",
            inputs=[
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional: the object to move, at the size of the inverted image (values >= 0.5 "
                                      "count as inside). When wired it wins over the editor's selection."),
                *_offset_inputs(),
                io.Mask.Input("inpaint_region", optional=True,
                              tooltip="Optional: surroundings the vacated area should resemble."),
                io.Image.Input("image", optional=True,
                               tooltip="The image being edited (the one inverted): the editor draws on it and the "
                                       "selection is made at its size."),
                _selection_input(),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The move edit, for the guidance sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @named_errors("DragonDiffusion Move / Resize")
    def execute(cls, mask=None, dx=0, dy=0, scale=1.0, inpaint_region=None, image=None,
                selection="") -> io.NodeOutput:
        size = _size(image, "image")
        wired = _wired_mask(mask, "mask", size, "image")
        region = None if inpaint_region is None else single_mask(inpaint_region, "inpaint_region")
        previews = _editor_previews({"image": image}, {"mask": wired})

        def make():
            m = _object_mask(wired, selection, "selection", size, "image")
            if m is None:
                raise _nothing_selected("selection", "mask", "to move")
            if region is not None and region.shape != m.shape:
                raise InputError(f"inpaint_region is {region.shape[1]}x{region.shape[0]}, mask is "
                                 f"{m.shape[1]}x{m.shape[0]}: give both at the image's size")
            return Move(m, float(dx), float(dy), float(scale), region)

        return _with_previews(cls, previews, make)


class DragEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_DragEdit",
            display_name="DragonDiffusion Drag",
            category=CATEGORY,
            description="Drag content from handle points to target points (click them in the node's editor); only "
                        "the editable region may change (the whole image without one).",
            inputs=[
                io.Image.Input("image", tooltip="The image being edited (its size gives the point coordinates' "
                                                "frame; the point editor draws on it)."),
                io.String.Input("points", multiline=True, default="", tooltip=POINTS_TOOLTIP),
                io.Mask.Input("mask", optional=True, tooltip="Optional: the editable region (white may change). When "
                                                             "wired it wins over the region drawn in the editor."),
                _selection_input("region", "The editable region (painted in the editor's Region tools)"),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The drag edit, for the guidance sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @named_errors("DragonDiffusion Drag", POINTS)
    def execute(cls, image, points, mask=None, region="") -> io.NodeOutput:
        size = image_size(image, "image")
        wired = _wired_mask(mask, "mask", size, "image")
        previews = _editor_previews({"image": image}, {"mask": wired})

        def make():
            m = _object_mask(wired, region, "region", size, "image")
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
                        "target (click them in the node's editor), with no mask.",
            inputs=[
                io.Image.Input("image", tooltip="The image being edited (the frame of the point coordinates; the "
                                                "point editor draws on it)."),
                io.String.Input("points", multiline=True, default="", tooltip=POINTS_TOOLTIP),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The point-set edit, for the guidance sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @named_errors("DragonDiffusion Point-Set Drag", POINTS)
    def execute(cls, image, points) -> io.NodeOutput:
        size = image_size(image, "image")

        def make():
            handles, targets = parse_points(points, "points")
            return Points(handles, targets, size)

        return _with_previews(cls, _editor_previews({"image": image}), make)


class AppearanceEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_AppearanceEdit",
            display_name="DragonDiffusion Appearance",
            category=CATEGORY,
            description="Give an object of the base image the appearance of an object in a reference image (inverted "
                        "with the same model, size and steps). Select both in the node's editor, or wire their masks.",
            inputs=[
                io.Mask.Input("mask", optional=True, tooltip="Optional: the object whose appearance changes, in the "
                                                             "base image. When wired it wins over the selection."),
                DragonMemory.Input("reference_memory", tooltip="The reference image's memory (DragonDiffusion "
                                                               "Inversion of the reference)."),
                io.Mask.Input("reference_mask", optional=True,
                              tooltip="Optional: the object in the reference image that gives the look. When wired it "
                                      "wins over the reference selection."),
                io.Image.Input("image", optional=True, tooltip="The base image: the editor draws on it, the selection "
                                                               "is made at its size."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="The reference image: the editor draws on it, the reference selection is made "
                                       "at its size."),
                _selection_input("selection", "The object whose appearance changes"),
                _selection_input("reference_selection", "The object in the reference image that gives the look"),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The appearance edit, for the guidance sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @named_errors("DragonDiffusion Appearance")
    def execute(cls, mask=None, reference_memory=None, reference_mask=None, image=None, reference_image=None,
                selection="", reference_selection="") -> io.NodeOutput:
        size, ref_size = _size(image, "image"), _size(reference_image, "reference_image")
        wired = _wired_mask(mask, "mask", size, "image")
        ref_wired = _wired_mask(reference_mask, "reference_mask", ref_size, "reference_image")
        previews = _editor_previews({"image": image, "reference_image": reference_image},
                                    {"mask": wired, "reference_mask": ref_wired})

        def make():
            m = _object_mask(wired, selection, "selection", size, "image")
            if m is None:
                raise _nothing_selected("selection", "mask", "to restyle")
            rm = _object_mask(ref_wired, reference_selection, "reference_selection", ref_size, "reference_image")
            if rm is None:
                raise _nothing_selected("reference_selection", "reference_mask", "that gives the look")
            return Appearance(m, reference_memory, rm)

        return _with_previews(cls, previews, make)


class PasteEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DragonDiff_PasteEdit",
            display_name="DragonDiffusion Paste",
            category=CATEGORY,
            description="Paste an object of a source image into the base image, moved by (dx, dy) and scaled: select "
                        "it in the node's editor (or wire its mask), then drag it into place; the model blends it in.",
            inputs=[
                DragonMemory.Input("source_memory", tooltip="The source image's memory (inverted with the same "
                                                            "model, size and steps as the base image)."),
                io.Mask.Input("mask", optional=True, tooltip="Optional: the object to paste, in the source image. "
                                                             "When wired it wins over the editor's selection."),
                *_offset_inputs(),
                io.Image.Input("image", optional=True, tooltip="The base image: the editor places the object on it."),
                io.Image.Input("source_image", optional=True,
                               tooltip="The source image: the editor draws on it, the selection is made at its size."),
                _selection_input("selection", "The object to paste, in the source image"),
            ],
            outputs=[DragonEdit.Output(display_name="edit", tooltip="The paste edit, for the guidance sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @named_errors("DragonDiffusion Paste")
    def execute(cls, source_memory=None, mask=None, dx=0, dy=0, scale=1.0, image=None, source_image=None,
                selection="") -> io.NodeOutput:
        size, src_size = _size(image, "image"), _size(source_image, "source_image")
        if size is not None and src_size is not None and size != src_size:
            raise InputError(f"source_image is {src_size[1]}x{src_size[0]} but image is {size[1]}x{size[0]}: paste "
                             f"between images of one size (resize them alike)")
        wired = _wired_mask(mask, "mask", src_size, "source_image")
        previews = _editor_previews({"image": image, "source_image": source_image}, {"mask": wired})

        def make():
            m = _object_mask(wired, selection, "selection", src_size, "source_image")
            if m is None:
                raise _nothing_selected("selection", "mask", "to paste (on the source picture)")
            return Paste(source_memory, m, float(dx), float(dy), float(scale))

        return _with_previews(cls, previews, make)


NODES = [MoveEdit, DragEdit, PointSetEdit, AppearanceEdit, PasteEdit]
