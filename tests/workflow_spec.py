"""Check UI-format workflows against node specs, and convert them to API prompts.

Pure Python (no ComfyUI): the plain suite checks workflows/ against the
snapshot ``tests/data/node_specs.json``; the ComfyUI integration suite builds
the same specs from the live node classes, checks the snapshot is current, and
runs the converted prompts.

A node spec: ``{"inputs": [[name, type, required, flags], ...], "outputs": [type, ...]}``
with inputs in the node's order, ``type`` "COMBO" for a choice list, and
flags among "widget", "control_after_generate", "image_upload". Notes (``VIRTUAL_NODES``) live
only in the frontend: they are not part of the prompt, and have no spec.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECS_PATH = Path(__file__).resolve().parent / "data" / "node_specs.json"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only nodes: never in the prompt


def spec_from_input_types(input_types: dict, outputs: list) -> dict:
    """A node spec from ``INPUT_TYPES()``-style data (as classes and /object_info give it)
    and the output types. A combo is a list of options (classic nodes) or "COMBO"."""
    inputs = []
    for section in ("required", "optional"):
        for name, spec in input_types.get(section, {}).items():
            typ, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            typ = "COMBO" if isinstance(typ, (list, tuple)) else str(typ)
            flags = []
            if typ in WIDGET_TYPES and not opts.get("forceInput"):
                flags.append("widget")
            if opts.get("control_after_generate"):
                flags.append("control_after_generate")
            if opts.get("image_upload"):
                flags.append("image_upload")
            inputs.append([name, typ, section == "required", flags])
    return {"inputs": inputs, "outputs": [str(t) for t in outputs]}


def spec_from_class(cls) -> dict:
    """A node spec from a ComfyUI node class (classic or schema API)."""
    return spec_from_input_types(cls.INPUT_TYPES(), list(cls.RETURN_TYPES))


def spec_from_object_info(entry: dict) -> dict:
    """A node spec from one node's entry in the server's /object_info (inputs in its input_order)."""
    declared = {**entry["input"].get("required", {}), **entry["input"].get("optional", {})}
    ordered = {section: {name: declared[name] for name in entry["input_order"].get(section, [])}
               for section in ("required", "optional")}
    return spec_from_input_types(ordered, entry["output"])


def load_specs(path: Path = SPECS_PATH) -> dict:
    return json.loads(path.read_text())


def to_api(ui: dict, specs: dict) -> dict:
    """UI-format workflow -> API prompt; AssertionError on an unknown node, a widget
    count that does not match, an unlinked required input or a link whose types differ."""
    links = {l[0]: l for l in ui["links"]}
    by_id = {n["id"]: n for n in ui["nodes"]}
    prompt = {}
    for n in ui["nodes"]:
        if n["type"] in VIRTUAL_NODES:
            continue
        assert n.get("mode", 0) == 0, f"node {n['id']} ({n['type']}) is muted or bypassed"
        assert n["type"] in specs, f"unknown node type {n['type']}"
        spec = specs[n["type"]]
        types = {name: typ for name, typ, _, _ in spec["inputs"]}
        inputs: dict = {}
        values = list(n.get("widgets_values", []))
        for name, typ, required, flags in spec["inputs"]:
            if "widget" not in flags:
                continue
            assert values, f"{n['type']} (node {n['id']}): no widget value for {name}"
            inputs[name] = values.pop(0)
            if "control_after_generate" in flags:
                assert values and values.pop(0) in CONTROL_VALUES, f"{n['type']}: {name} needs its control value"
            if "image_upload" in flags:
                assert values and values.pop(0) == "image", f"{n['type']}: {name} needs its upload widget value"
        assert not values, f"{n['type']} (node {n['id']}): widget values left over: {values}"
        linked = {}
        for inp in n.get("inputs", []):
            assert inp["name"] in types, f"{n['type']} has no input {inp['name']}"
            if inp.get("link") is None:
                continue
            lid, src, slot, dst, _, typ = links[inp["link"]]
            assert dst == n["id"], f"link {lid} does not end at node {n['id']}"
            out_types = specs[by_id[src]["type"]]["outputs"]
            assert out_types[slot] == typ == types[inp["name"]], \
                f"link {lid}: {by_id[src]['type']}[{slot}] gives {out_types[slot]}, {n['type']}.{inp['name']} " \
                f"takes {types[inp['name']]} (link says {typ})"
            linked[inp["name"]] = [str(src), slot]
        for name, typ, required, flags in spec["inputs"]:
            if required and "widget" not in flags:
                assert name in linked, f"{n['type']} (node {n['id']}): required input {name} is not linked"
        inputs.update(linked)
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt
