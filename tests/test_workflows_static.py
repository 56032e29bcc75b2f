"""workflows/*.json without ComfyUI: structurally valid against the node specs
snapshot (tests/data/node_specs.json, checked against a live ComfyUI by the
integration suite): known node types, widget counts, required inputs linked,
link types matching both ends. And every edit has a demo and an SD1.5 workflow."""

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
    if "sd15" in path.name or "sdxl" in path.name:  # stock loaders
        assert {"CheckpointLoaderSimple", "CLIPTextEncode", "LoadImage", "VAEEncode", "VAEDecode"} <= types
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
    next(n for n in bad["nodes"] if n["type"] == "DragonDiff_MoveEdit")["inputs"][0]["link"] = None
    with pytest.raises(AssertionError, match="required input mask"):
        to_api(bad, specs)
