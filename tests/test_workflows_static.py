"""workflows/*.json without ComfyUI: structurally valid against the node specs
snapshot (tests/data/node_specs.json, checked against a live ComfyUI by the
integration suite): known node types, widget counts, required inputs linked,
link types matching both ends. And every edit has a demo and an SD1.5 workflow; every
Stable Diffusion workflow starts with a Note of its steps and needs no preset mask or
points (any photo: resized for the model, the object selected in the edit node's editor);
every demo shows its pictures upscaled without smoothing."""

import json
from pathlib import Path

import pytest
from workflow_spec import load_specs, to_api

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
EDITS = ("move", "resize", "drag", "points", "appearance", "paste")


def test_one_workflow_per_edit_for_the_demo_model_and_for_sd15():
    names = {p.stem for p in WORKFLOWS}
    for edit in EDITS:
        assert f"dragon_{edit}_shapes_demo" in names
        if edit != "points":
            assert f"dragon_{edit}_sd15" in names
    assert "dragon_move_sdxl" in names  # SDXL through the same nodes (README support table)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_structurally_valid(path):
    ui = json.loads(path.read_text())
    prompt = to_api(ui, load_specs())
    types = {n["class_type"] for n in prompt.values()}
    assert "DragonDiff_GuidedSampler" in types and "SaveImage" in types
    if "sd15" in path.name or "sdxl" in path.name:  # stock loaders (a capture workflow generates its image)
        photo = set() if "capture" in path.name else {"LoadImage", "VAEEncode"}
        assert {"CheckpointLoaderSimple", "CLIPTextEncode", "VAEDecode"} | photo <= types
    else:
        assert "CheckpointLoaderSimple" not in types and "DragonDiff_ShapesModelLoader" in types


def test_checker_catches_broken_workflows():
    ui = json.loads((ROOT / "workflows" / "dragon_move_shapes_demo.json").read_text())
    specs = load_specs()
    bad = json.loads(json.dumps(ui))
    next(n for n in bad["nodes"] if n["type"] == "DragonDiff_GuidedSampler")["widgets_values"].pop()
    with pytest.raises(AssertionError, match="no widget value"):
        to_api(bad, specs)
    bad = json.loads(json.dumps(ui))
    bad["links"][0][5] = "NOT_A_TYPE"
    with pytest.raises(AssertionError, match="link"):
        to_api(bad, specs)
    bad = json.loads(json.dumps(ui))
    sampler = next(n for n in bad["nodes"] if n["type"] == "DragonDiff_GuidedSampler")
    next(i for i in sampler["inputs"] if i["name"] == "edit")["link"] = None
    with pytest.raises(AssertionError, match="required input edit"):
        to_api(bad, specs)


EDIT_NODES = {"DragonDiff_MoveEdit", "DragonDiff_DragEdit", "DragonDiff_PointSetEdit", "DragonDiff_AppearanceEdit",
              "DragonDiff_PasteEdit"}


def _origin(ui: dict, node: dict, name: str) -> dict | None:
    link = next((i["link"] for i in node["inputs"] if i["name"] == name), None)
    if link is None:
        return None
    src = next(l[1] for l in ui["links"] if l[0] == link)
    return next(n for n in ui["nodes"] if n["id"] == src)


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if "shapes" not in p.name and "capture" not in p.name],
                         ids=lambda p: p.name)  # capture workflows: tests/test_capture.py
def test_sd_workflow_starts_with_its_steps_and_works_with_any_photo(path):
    ui = json.loads(path.read_text())
    first = ui["nodes"][0]
    assert first["type"] == "MarkdownNote" and first["pos"] == [min(n["pos"][0] for n in ui["nodes"]),
                                                                 min(n["pos"][1] for n in ui["nodes"])]
    steps = [line for line in first["widgets_values"][0].splitlines() if line[:2].rstrip(".").isdigit()]
    assert 3 <= len(steps) <= 5, steps
    assert any("Load Image" in s for s in steps) and "Run" in steps[-1]
    prompt = to_api(ui, load_specs())
    [edit] = [n for n in ui["nodes"] if n["type"] in EDIT_NODES]
    inputs = prompt[str(edit["id"])]["inputs"]
    # nothing preset for one picture: no mask, no selection, no points, no move
    assert not any(k in inputs for k in ("mask", "reference_mask"))
    assert all(inputs.get(k, "") == "" for k in ("selection", "reference_selection", "region", "points"))
    assert inputs.get("dx", 0) == inputs.get("dy", 0) == 0
    # the editor's pictures: each photo, resized to the model's size (a multiple of 8), straight from Load Image
    for name in ("image", "reference_image", "source_image"):
        if name in inputs:
            resize = _origin(ui, edit, name)
            assert resize["type"] == "ImageScale" and resize["widgets_values"][3] == "center"
            assert resize["widgets_values"][1] == resize["widgets_values"][2] and resize["widgets_values"][1] % 8 == 0
            assert _origin(ui, resize, "image")["type"] == "LoadImage"


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if "shapes" in p.name], ids=lambda p: p.name)
def test_demo_shows_its_pictures_upscaled_without_smoothing(path):
    ui = json.loads(path.read_text())
    shown = [n for n in ui["nodes"] if n["type"] in ("PreviewImage", "SaveImage")]
    assert shown
    for n in shown:
        up = _origin(ui, n, "images")
        assert up["type"] == "ImageScaleBy" and up["widgets_values"] == ["nearest-exact", 8.0], up
    # the edit node gets the picture it edits (its editor draws on it)
    [edit] = [n for n in ui["nodes"] if n["type"] in EDIT_NODES]
    assert _origin(ui, edit, "image")["type"] == ("VAEDecode" if "capture" in path.name else "DragonDiff_ShapesScene")
