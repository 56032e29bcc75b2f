"""Write the user-facing example workflows (ComfyUI's UI format) into workflows/.

Run: ``python scripts/make_workflows.py``. Each workflow is described here as
nodes, widget values (in the node's widget order) and links; the ComfyUI
integration test converts every file back to an API prompt against the real
node definitions, validates it, and runs the shapes-model ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "workflows"


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    widgets: list
    inputs: list[tuple[str, str]]  # socket inputs (name, type), in the node's order
    outputs: list[tuple[str, str]]
    size: tuple[int, int] = (300, 130)
    title: str | None = None
    links_in: dict[str, int] = field(default_factory=dict)
    links_out: dict[int, list[int]] = field(default_factory=dict)


class Workflow:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.links: list[list] = []

    def add(self, type: str, pos: tuple[int, int], widgets: list | None = None, inputs=(), outputs=(),
            size=(300, 130), title: str | None = None) -> Node:
        n = Node(len(self.nodes) + 1, type, pos, list(widgets or []), list(inputs), list(outputs), size, title)
        self.nodes.append(n)
        return n

    def link(self, src: Node, slot: int, dst: Node, name: str) -> None:
        lid = len(self.links) + 1
        typ = src.outputs[slot][1]
        want = dict(dst.inputs)[name]
        if want != typ:
            raise TypeError(f"{src.type}[{slot}] gives {typ}, {dst.type}.{name} takes {want}")
        self.links.append([lid, src.id, slot, dst.id, [n for n, _ in dst.inputs].index(name), typ])
        dst.links_in[name] = lid
        src.links_out.setdefault(slot, []).append(lid)

    def to_json(self) -> dict:
        nodes = []
        for order, n in enumerate(self.nodes):
            d = {
                "id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size), "flags": {}, "order": order,
                "mode": 0,
                "inputs": [{"name": name, "type": typ, "link": n.links_in.get(name)} for name, typ in n.inputs],
                "outputs": [{"name": name, "type": typ, "links": n.links_out.get(i, []), "slot_index": i}
                            for i, (name, typ) in enumerate(n.outputs)],
                "properties": {"Node name for S&R": n.type},
                "widgets_values": n.widgets,
            }
            if n.title:
                d["title"] = n.title
            nodes.append(d)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


# -- the nodes used, with their sockets ---------------------------------------------------------------

def shapes_model(w: Workflow, pos) -> Node:
    return w.add("DragonDiff_ShapesModelLoader", pos, [], [], [("model", "MODEL")], (300, 60))


def shapes_scene(w: Workflow, pos, seed: int, obj: int = 0) -> Node:
    return w.add("DragonDiff_ShapesScene", pos, [seed, obj], [],
                 [("image", "IMAGE"), ("mask", "MASK"), ("positive", "CONDITIONING"), ("prompt", "STRING")])


def shapes_prompt(w: Workflow, pos, text: str, title: str | None = None) -> Node:
    return w.add("DragonDiff_ShapesPrompt", pos, [text], [], [("conditioning", "CONDITIONING")], (300, 80), title)


def vae_loader(w: Workflow, pos, name: str = "pixel_space") -> Node:
    return w.add("VAELoader", pos, [name], [], [("VAE", "VAE")], (300, 60))


def vae_encode(w: Workflow, pos, image: Node, slot: int, vae: Node, vae_slot: int = 0) -> Node:
    n = w.add("VAEEncode", pos, [], [("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")], (200, 50))
    w.link(image, slot, n, "pixels")
    w.link(vae, vae_slot, n, "vae")
    return n


def inversion(w: Workflow, pos, model: Node, latent: Node, positive: Node, pos_slot: int, steps: int = 50) -> Node:
    n = w.add("DragonDiff_Inversion", pos, [steps],
              [("model", "MODEL"), ("latent", "LATENT"), ("positive", "CONDITIONING")],
              [("inverted", "LATENT"), ("memory", "DRAGON_MEMORY")])
    w.link(model, 0, n, "model")
    w.link(latent, 0, n, "latent")
    w.link(positive, pos_slot, n, "positive")
    return n


def guided_sampler(w: Workflow, pos, model: Node, positive: Node, pos_slot: int, negative: Node, memory: Node,
                   edit: Node, seed: int = 0) -> Node:
    n = w.add("DragonDiff_GuidedSampler", pos, [seed, "fixed", -1.0, -1.0, -1.0, -1.0, True],
              [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
               ("memory", "DRAGON_MEMORY"), ("edit", "DRAGON_EDIT")], [("latent", "LATENT")], (320, 270))
    w.link(model, 0, n, "model")
    w.link(positive, pos_slot, n, "positive")
    w.link(negative, 0, n, "negative")
    w.link(memory, 1, n, "memory")
    w.link(edit, 0, n, "edit")
    return n


def decode_and_show(w: Workflow, pos, latent: Node, vae: Node, prefix: str) -> Node:
    d = w.add("VAEDecode", pos, [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], (200, 50))
    w.link(latent, 0, d, "samples")
    w.link(vae, 0, d, "vae")
    s = w.add("SaveImage", (pos[0] + 230, pos[1]), [prefix], [("images", "IMAGE")], [], (300, 300))
    w.link(d, 0, s, "images")
    return s


def preview(w: Workflow, pos, image: Node, slot: int = 0, title: str | None = None) -> Node:
    n = w.add("PreviewImage", pos, [], [("images", "IMAGE")], [], (250, 250), title)
    w.link(image, slot, n, "images")
    return n


# -- workflows ------------------------------------------------------------------------------------------------

def _shapes_base(seed: int, obj: int = 0):
    w = Workflow()
    model = shapes_model(w, (20, 40))
    scene = shapes_scene(w, (20, 150), seed, obj)
    neg = shapes_prompt(w, (20, 330), "", "Negative (empty)")
    vae = vae_loader(w, (20, 460))
    lat = vae_encode(w, (360, 150), scene, 0, vae)
    inv = inversion(w, (360, 260), model, lat, scene, 2)
    preview(w, (360, 440), scene, 0, "Input")
    return w, model, scene, neg, vae, inv


def shapes_move() -> dict:
    w, model, scene, neg, vae, inv = _shapes_base(seed=3)
    edit = w.add("DragonDiff_MoveEdit", (700, 40), [6, 4, 1.0], [("mask", "MASK"), ("inpaint_region", "MASK")],
                 [("edit", "DRAGON_EDIT")])
    w.link(scene, 1, edit, "mask")
    out = guided_sampler(w, (700, 210), model, scene, 2, neg, inv, edit)
    decode_and_show(w, (1050, 40), out, vae, "dragon_move")
    return w.to_json()


def shapes_drag() -> dict:
    w, model, scene, neg, vae, inv = _shapes_base(seed=3)
    edit = w.add("DragonDiff_DragEdit", (700, 40), ["9,9,15,12"], [("image", "IMAGE"), ("mask", "MASK")],
                 [("edit", "DRAGON_EDIT")], (300, 150))
    w.link(scene, 0, edit, "image")
    out = guided_sampler(w, (700, 230), model, scene, 2, neg, inv, edit)
    decode_and_show(w, (1050, 40), out, vae, "dragon_drag")
    return w.to_json()


def sd15_move() -> dict:
    """Stock loaders: a Stable Diffusion 1.5 checkpoint, a photo and a painted mask."""
    w = Workflow()
    ckpt = w.add("CheckpointLoaderSimple", (20, 40), ["v1-5-pruned-emaonly.safetensors"], [],
                 [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], (320, 100))
    img = w.add("LoadImage", (20, 180), ["example.png", "image"], [], [("IMAGE", "IMAGE"), ("MASK", "MASK")],
                (320, 330), "Load image (paint the object's mask in the mask editor)")
    pos = w.add("CLIPTextEncode", (360, 40), ["a photo"], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")],
                (320, 110), "Prompt describing the image")
    w.link(ckpt, 1, pos, "clip")
    neg = w.add("CLIPTextEncode", (360, 180), [""], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")],
                (320, 110), "Negative")
    w.link(ckpt, 1, neg, "clip")
    lat = vae_encode(w, (360, 320), img, 0, ckpt, vae_slot=2)
    inv = inversion(w, (360, 400), ckpt, lat, pos, 0)
    edit = w.add("DragonDiff_MoveEdit", (700, 40), [64, 0, 1.0], [("mask", "MASK"), ("inpaint_region", "MASK")],
                 [("edit", "DRAGON_EDIT")])
    w.link(img, 1, edit, "mask")
    out = guided_sampler(w, (700, 210), ckpt, pos, 0, neg, inv, edit)
    d = w.add("VAEDecode", (1050, 40), [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], (200, 50))
    w.link(out, 0, d, "samples")
    w.link(ckpt, 2, d, "vae")
    s = w.add("SaveImage", (1280, 40), ["dragon_move_sd15"], [("images", "IMAGE")], [], (400, 400))
    w.link(d, 0, s, "images")
    return w.to_json()


WORKFLOWS = {
    "dragon_move_shapes_demo.json": shapes_move,
    "dragon_drag_shapes_demo.json": shapes_drag,
    "dragon_move_sd15.json": sd15_move,
}


def main() -> None:
    for name, make in WORKFLOWS.items():
        (OUT / name).write_text(json.dumps(make(), indent=1) + "\n")
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
