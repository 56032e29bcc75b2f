"""The shipped workflows (workflows/*.json, ComfyUI's UI format) against real ComfyUI.

The node specs snapshot the plain suite checks workflows against
(tests/data/node_specs.json) must equal the specs of the live node classes
(regenerate with ``UPDATE_NODE_SPECS=1`` and this suite). Each workflow is
converted to an API prompt, validated by ComfyUI, and the shapes-demo ones run
in ComfyUI's executor. The SD1.5 and SDXL workflows need a checkpoint and a photo, so
they are checked up to validation, where only those missing files may fail.
Also: the files are what scripts/make_workflows.py writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from workflow_spec import SPECS_PATH, VIRTUAL_NODES, load_specs, spec_from_class, to_api

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))


def test_workflows_are_generated_and_up_to_date():
    before = {p: p.read_text() for p in WORKFLOWS}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_workflows.py")], check=True, capture_output=True)
    assert {p: p.read_text() for p in WORKFLOWS} == before, "run scripts/make_workflows.py and commit the result"


def test_node_specs_snapshot_matches_comfyui(comfy_env):
    classes = comfy_env.nodes.NODE_CLASS_MAPPINGS
    used = {n["type"] for p in WORKFLOWS for n in json.loads(p.read_text())["nodes"]} - VIRTUAL_NODES
    ours = {k for k in classes if k.startswith("DragonDiff_")}
    live = {k: spec_from_class(classes[k]) for k in sorted(used | ours)}
    if os.environ.get("UPDATE_NODE_SPECS"):
        SPECS_PATH.parent.mkdir(exist_ok=True)
        SPECS_PATH.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in live.items())
                              + "\n}\n")
    assert load_specs() == live, "node specs changed: rerun with UPDATE_NODE_SPECS=1 and commit tests/data/node_specs.json"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_converts_validates_and_runs(comfy_env, path):
    classes = comfy_env.nodes.NODE_CLASS_MAPPINGS
    ui = json.loads(path.read_text())
    prompt = to_api(ui, {n["type"]: spec_from_class(classes[n["type"]]) for n in ui["nodes"]
                         if n["type"] not in VIRTUAL_NODES})
    valid = asyncio.run(comfy_env.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    if "sd15" in path.name or "sdxl" in path.name:
        # no checkpoint or photo here: only those files may be missing
        errors = [e for ne in valid[3].values() for e in ne["errors"]]
        assert errors and all(e["type"] in ("value_not_in_list", "custom_validation_failed") for e in errors), errors
        assert {e["extra_info"]["input_name"] for e in errors} <= {"ckpt_name", "image"}
        return
    assert valid[0], valid[1:]
    out = comfy_env.run(prompt)
    saves = [k for k, v in prompt.items() if v["class_type"] == "SaveImage"]
    from PIL import Image

    info = out[saves[0]]["images"][0]
    img = np.asarray(Image.open(comfy_env.base / "output" / info["subfolder"] / info["filename"]).convert("RGB"))
    assert img.shape == (256, 256, 3) and img.std() > 5  # the 32x32 result, upscaled 8x to be seen
