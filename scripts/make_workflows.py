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


def inversion(w: Workflow, pos, model: Node, latent: Node, positive: Node, pos_slot: int, steps: int = 50,
              attention_per_block: int = 2, storage: str = "int8") -> Node:
    # attention_per_block: dragon_core.memory.MAX_KV_LAYERS_PER_BLOCK (all layers of SD1.x/2.x, a subset of SDXL's)
    n = w.add("DragonDiff_Inversion", pos, [steps, attention_per_block, storage],
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

# the Drag and Move / Resize nodes draw the point / region editor (web/dragon_editor.js): room for the picture
EDITOR_NODE_SIZE = (360, 470)


def below(node: Node, gap: int = 40) -> tuple[int, int]:
    return node.pos[0], node.pos[1] + node.size[1] + gap


def move_edit(w: Workflow, pos, mask: Node, mask_slot: int, dx: int, dy: int, scale: float) -> Node:
    n = w.add("DragonDiff_MoveEdit", pos, [dx, dy, scale], [("mask", "MASK"), ("inpaint_region", "MASK")],
              [("edit", "DRAGON_EDIT")], EDITOR_NODE_SIZE)
    w.link(mask, mask_slot, n, "mask")
    return n


def points_edit(w: Workflow, pos, kind: str, image: Node, points: str) -> Node:
    if kind == "drag":
        n = w.add("DragonDiff_DragEdit", pos, [points], [("image", "IMAGE"), ("mask", "MASK")],
                  [("edit", "DRAGON_EDIT")], EDITOR_NODE_SIZE)
    else:
        n = w.add("DragonDiff_PointSetEdit", pos, [points], [("image", "IMAGE")], [("edit", "DRAGON_EDIT")],
                  (300, 150))
    w.link(image, 0, n, "image")
    return n


def appearance_edit(w: Workflow, pos, mask: Node, mask_slot: int, ref_inv: Node, ref_mask: Node,
                    ref_slot: int) -> Node:
    n = w.add("DragonDiff_AppearanceEdit", pos, [],
              [("mask", "MASK"), ("reference_memory", "DRAGON_MEMORY"), ("reference_mask", "MASK")],
              [("edit", "DRAGON_EDIT")], (300, 80))
    w.link(mask, mask_slot, n, "mask")
    w.link(ref_inv, 1, n, "reference_memory")
    w.link(ref_mask, ref_slot, n, "reference_mask")
    return n


def paste_edit(w: Workflow, pos, src_inv: Node, mask: Node, mask_slot: int, dx: int, dy: int, scale: float) -> Node:
    n = w.add("DragonDiff_PasteEdit", pos, [dx, dy, scale], [("source_memory", "DRAGON_MEMORY"), ("mask", "MASK")],
              [("edit", "DRAGON_EDIT")])
    w.link(src_inv, 1, n, "source_memory")
    w.link(mask, mask_slot, n, "mask")
    return n


# the demo scenes (DragonDiff_ShapesScene scene numbers) and what each edit does to them
DEMO = {
    "move": dict(seed=3, edit=dict(dx=10, dy=-6, scale=1.0)),  # the yellow triangle to the right and up
    "resize": dict(seed=8, edit=dict(dx=0, dy=0, scale=1.3)),  # the red diamond 30% larger
    "drag": dict(seed=8, points="15,14,19,14", grow=5),  # the diamond 4 px to the right, inside its grown mask
    "points": dict(seed=8, points="11,14,9,14; 19,14,21,14; 15,10,15,8; 15,18,15,20"),  # the diamond 1.3x larger
    "appearance": dict(seed=2, reference=11),  # the blue triangle takes the cyan triangle's look
    "paste": dict(seed=2, reference=8, edit=dict(dx=-6, dy=-5, scale=1.0)),  # the red diamond into the scene
}


def shapes_demo(kind: str) -> dict:
    d = DEMO[kind]
    w = Workflow()
    model = shapes_model(w, (20, 40))
    scene = shapes_scene(w, (20, 150), d["seed"])
    neg = shapes_prompt(w, (20, 330), "", "Negative (empty)")
    vae = vae_loader(w, (20, 460))
    lat = vae_encode(w, (360, 150), scene, 0, vae)
    inv = inversion(w, (360, 260), model, lat, scene, 2)
    preview(w, (360, 440), scene, 0, "Input")
    if "reference" in d:
        ref = shapes_scene(w, (20, 580), d["reference"])
        rlat = vae_encode(w, (360, 720), ref, 0, vae)
        rinv = inversion(w, (360, 800), model, rlat, ref, 2)
        preview(w, (20, 760), ref, 0, "Reference")
    if kind in ("move", "resize"):
        edit = move_edit(w, (700, 40), scene, 1, **d["edit"])
    elif kind in ("drag", "points"):
        edit = points_edit(w, (700, 40), kind, scene, d["points"])
        if "grow" in d:  # the editable region: the object's mask grown to reach the target
            grow = w.add("GrowMask", (360, 560), [d["grow"], True], [("mask", "MASK")], [("MASK", "MASK")], (250, 90))
            w.link(scene, 1, grow, "mask")
            w.link(grow, 0, edit, "mask")
    elif kind == "appearance":
        edit = appearance_edit(w, (700, 40), scene, 1, rinv, ref, 1)
    else:
        edit = paste_edit(w, (700, 40), rinv, ref, 1, **d["edit"])
    out = guided_sampler(w, below(edit), model, scene, 2, neg, inv, edit)
    decode_and_show(w, (1100, 40), out, vae, f"dragon_{kind}")
    return w.to_json()


# stock-loader workflows per model family: checkpoint name, file suffix, move distance (pixels)
FAMILIES = {
    "sd15": dict(ckpt="v1-5-pruned-emaonly.safetensors", move=64),
    # SDXL base at 1024x1024: the same nodes; the layers come from the UNet's structure (README)
    "sdxl": dict(ckpt="sd_xl_base_1.0.safetensors", move=128),
}


def sd15(kind: str, family: str = "sd15") -> dict:
    """Stock loaders: a Stable Diffusion checkpoint (SD1.5, or SDXL with ``family="sdxl"``), a
    photo with its mask painted in LoadImage's mask editor (and a reference photo for appearance /
    paste)."""
    fam = FAMILIES[family]
    w = Workflow()
    ckpt = w.add("CheckpointLoaderSimple", (20, 40), [fam["ckpt"]], [],
                 [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], (320, 100))
    img = w.add("LoadImage", (20, 180), ["example.png", "image"], [], [("IMAGE", "IMAGE"), ("MASK", "MASK")],
                (320, 330), "Image (paint the object's mask in the mask editor)")
    pos = w.add("CLIPTextEncode", (360, 40), ["a photo"], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")],
                (320, 110), "Prompt describing the image")
    w.link(ckpt, 1, pos, "clip")
    neg = w.add("CLIPTextEncode", (360, 180), [""], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")],
                (320, 110), "Negative")
    w.link(ckpt, 1, neg, "clip")
    lat = vae_encode(w, (360, 320), img, 0, ckpt, vae_slot=2)
    inv = inversion(w, (360, 400), ckpt, lat, pos, 0)
    if kind in ("appearance", "paste"):
        ref = w.add("LoadImage", (20, 540), ["example.png", "image"], [], [("IMAGE", "IMAGE"), ("MASK", "MASK")],
                    (320, 330), "Reference image (same size; paint its object's mask)")
        rlat = vae_encode(w, (360, 600), ref, 0, ckpt, vae_slot=2)
        rinv = inversion(w, (360, 680), ckpt, rlat, pos, 0)
    if kind == "move":
        edit = move_edit(w, (700, 40), img, 1, fam["move"], 0, 1.0)
    elif kind == "resize":
        edit = move_edit(w, (700, 40), img, 1, 0, 0, 1.25)
    elif kind == "drag":
        edit = points_edit(w, (700, 40), "drag", img, "200,256,260,256")
    elif kind == "appearance":
        edit = appearance_edit(w, (700, 40), img, 1, rinv, ref, 1)
    else:
        edit = paste_edit(w, (700, 40), rinv, ref, 1, 0, 0, 1.0)
    out = guided_sampler(w, below(edit), ckpt, pos, 0, neg, inv, edit)
    d = w.add("VAEDecode", (1100, 40), [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], (200, 50))
    w.link(out, 0, d, "samples")
    w.link(ckpt, 2, d, "vae")
    s = w.add("SaveImage", (1330, 40), [f"dragon_{kind}_{family}"], [("images", "IMAGE")], [], (400, 400))
    w.link(d, 0, s, "images")
    return w.to_json()


WORKFLOWS = {f"dragon_{k}_shapes_demo.json": (lambda k=k: shapes_demo(k)) for k in DEMO}
WORKFLOWS.update({f"dragon_{k}_sd15.json": (lambda k=k: sd15(k)) for k in ("move", "resize", "drag", "appearance",
                                                                              "paste")})
WORKFLOWS["dragon_move_sdxl.json"] = lambda: sd15("move", "sdxl")


def main() -> None:
    for name, make in WORKFLOWS.items():
        (OUT / name).write_text(json.dumps(make(), indent=1) + "\n")
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
