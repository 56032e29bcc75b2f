"""The edit nodes with a selection drawn in the canvas editor instead of a wired MASK.

The pack as ComfyUI loads it (``comfy_env``); node calls under ``torch.inference_mode()``, as the
executor makes them. Checked: a selection gives the same edit as the equal mask (through the
executor, to the saved picture); a wired mask wins; the Drag node's region; Paste and Appearance
select on their own pictures; every missing or bad value is one error naming the node, the input
and what to do.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from graphs import guided_sampler, shapes_scene

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6


@pytest.fixture(scope="module")
def edit_nodes(comfy_env):
    return sys.modules[f"{ROOT}.nodes.edit_nodes"]


def _call(node, **inputs):
    with torch.inference_mode():
        return node.execute(**inputs).args[0]


def _image(h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(0))


def _box(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = 1
    return m


def test_a_selection_moves_like_the_equal_mask_through_the_executor(comfy_env):
    from PIL import Image

    x0, y0, x1, y1 = 8, 13, 25, 30  # scene 4's orange square
    box_mask = {"zero": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 32, "height": 32}},
                "one": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": x1 - x0, "height": y1 - y0}},
                "m": {"class_type": "MaskComposite", "inputs": {"destination": ["zero", 0], "source": ["one", 0],
                                                                "x": x0, "y": y0, "operation": "add"}}}
    g = {**shapes_scene(4, STEPS), **box_mask,
         "edit": {"class_type": "DragonDiff_MoveEdit", "inputs": {"mask": ["m", 0], "dx": 2, "dy": -3, "scale": 1.0}},
         "out": guided_sampler("edit", flexibility=0.0),
         "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["out", 0], "vae": ["vae", 0]}},
         "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "sel_mask"}}}

    def saved(outputs):
        info = outputs["save"]["images"][0]
        return np.asarray(Image.open(comfy_env.base / "output" / info["subfolder"] / info["filename"]))

    by_mask = saved(comfy_env.run(g))
    g["edit"]["inputs"] = {"image": ["scene", 0], "selection": f"box {x0},{y0},{x1},{y1}", "dx": 2, "dy": -3,
                           "scale": 1.0}
    g["save"]["inputs"]["filename_prefix"] = "sel_box"
    by_selection = saved(comfy_env.run(g))
    assert by_selection.std() > 5 and np.array_equal(by_mask, by_selection)


def test_move_selection_wired_mask_and_their_errors(edit_nodes):
    move = edit_nodes.MoveEdit
    edit = _call(move, image=_image(), selection="box 4,5,12,14", dx=3, dy=0, scale=1.0)
    assert torch.equal(edit.mask, _box(32, 32, 4, 5, 12, 14))
    wired = _box(32, 32, 20, 20, 25, 25)
    edit = _call(move, mask=wired[None], image=_image(), selection="box 4,5,12,14", dx=3, dy=0, scale=1.0)
    assert torch.equal(edit.mask, wired)  # the wired mask wins
    cases = [
        (dict(image=_image()), "selection: nothing selected and no mask wired: draw a box around the object to move "
                               "in the node's editor, or wire a MASK into mask"),
        (dict(selection="box 1,1,5,5"), "image: the selection needs the picture it was drawn on: wire that image "
                                        "into image"),
        (dict(image=_image(), selection="rect 1,1,5,5"), "selection: shape 1 starts with 'rect'"),
        (dict(image=_image(), selection="box 40,40,50,50"), "selection selects no pixel of the 32x32 image"),
        (dict(image=_image(24, 32), mask=wired[None]), "image is 32x24 but mask is 32x32: wire the image the mask "
                                                       "belongs to"),
    ]
    for inputs, message in cases:
        with pytest.raises(ValueError) as e:
            _call(move, dx=3, dy=0, scale=1.0, **inputs)
        text = str(e.value)
        assert text.startswith("DragonDiffusion Move / Resize: ") and message in text and "\n" not in text, text


def test_drag_region_and_point_set(edit_nodes):
    edit = _call(edit_nodes.DragEdit, image=_image(), points="5,5,8,5", region="brush 3 5,5 20,5")
    assert edit.mask is not None and edit.mask[5, 5:21].all() and edit.mask[20].sum() == 0
    assert _call(edit_nodes.DragEdit, image=_image(), points="5,5,8,5", region="").mask is None
    wired = _box(32, 32, 0, 0, 16, 16)
    assert torch.equal(_call(edit_nodes.DragEdit, image=_image(), points="5,5,8,5", mask=wired[None],
                             region="box 20,20,30,30").mask, wired)
    with pytest.raises(ValueError, match=r"^DragonDiffusion Drag: region: shape 1 \(brush\) radius '0' must be above"):
        _call(edit_nodes.DragEdit, image=_image(), points="5,5,8,5", region="brush 0 5,5")
    assert _call(edit_nodes.PointSetEdit, image=_image(), points="5,5,8,5").kind == "points"


def test_paste_and_appearance_select_on_their_own_pictures(edit_nodes):
    memory = object()  # not looked at by the edit nodes (the sampler checks memories)
    edit = _call(edit_nodes.PasteEdit, source_memory=memory, image=_image(), source_image=_image(),
                 selection="box 2,2,10,10", dx=4, dy=4, scale=1.0)
    assert torch.equal(edit.mask, _box(32, 32, 2, 2, 10, 10)) and edit.source is memory
    with pytest.raises(ValueError, match="^DragonDiffusion Paste: source_image: the selection needs the picture"):
        _call(edit_nodes.PasteEdit, source_memory=memory, selection="box 2,2,10,10", dx=4, dy=4, scale=1.0)
    with pytest.raises(ValueError, match="^DragonDiffusion Paste: source_image is 16x16 but image is 32x32"):
        _call(edit_nodes.PasteEdit, source_memory=memory, image=_image(), source_image=_image(16, 16),
              selection="box 2,2,10,10", dx=4, dy=4, scale=1.0)
    with pytest.raises(ValueError, match="^DragonDiffusion Paste: selection: nothing selected and no mask wired"):
        _call(edit_nodes.PasteEdit, source_memory=memory, source_image=_image(), dx=4, dy=4, scale=1.0)
    edit = _call(edit_nodes.AppearanceEdit, reference_memory=memory, image=_image(), reference_image=_image(),
                 selection="box 1,1,4,4", reference_selection="poly 10,10 20,10 20,20")
    assert edit.mask.sum() == 9 and edit.reference_mask.sum() > 30
    with pytest.raises(ValueError, match="^DragonDiffusion Appearance: reference_selection: nothing selected and no "
                                         "reference_mask wired"):
        _call(edit_nodes.AppearanceEdit, reference_memory=memory, image=_image(), selection="box 1,1,4,4")
