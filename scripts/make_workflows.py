"""Write the user-facing example workflows (ComfyUI's UI format) into workflows/.

Run: ``python scripts/make_workflows.py``. Each workflow is described here as
nodes, widget values (in the node's widget order) and links, laid out in columns
so that no node overlaps another (tests/test_workflows_layout.py checks it); the
ComfyUI integration test converts every file back to an API prompt against the
real node definitions, validates it, and runs the shapes-model ones.

Stable Diffusion workflows start with a Note of the steps to take; after them they
work with any photo: the photo is resized (centre crop) to the model's size, and the
object is selected in the edit node's canvas editor (no mask to paint). The shapes
demos run as they are and show their results upscaled 8x without smoothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "workflows"
TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its pos
GAP = 36  # between the nodes of a column (room for the node's source badge), and between columns


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
            if n.type == "MarkdownNote":
                d.update(color="#432", bgcolor="#653")
            nodes.append(d)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


class Column:
    """Nodes stacked top to bottom at one x, each below the last one's bottom (title bars counted)."""

    def __init__(self, w: Workflow, x: int, width: int, y: int = 40) -> None:
        self.w, self.x, self.width, self.y = w, x, width, y

    @property
    def right(self) -> int:
        return self.x + self.width + GAP

    def add(self, type: str, widgets: list | None = None, inputs=(), outputs=(), height: int = 130,
            title: str | None = None) -> Node:
        n = self.w.add(type, (self.x, self.y), widgets, inputs, outputs, (self.width, height), title)
        self.y += height + TITLE_HEIGHT + GAP
        return n


# -- the nodes used, with their sockets ---------------------------------------------------------------

def note(c: Column, text: str, height: int) -> Node:
    """A Markdown note (frontend only: not part of the prompt)."""
    return c.add("MarkdownNote", [text], height=height, title="Start here")


def shapes_model(c: Column) -> Node:
    return c.add("DragonDiff_ShapesModelLoader", [], [], [("model", "MODEL")], 60)


def shapes_scene(c: Column, seed: int, obj: int = 0, title: str | None = None) -> Node:
    return c.add("DragonDiff_ShapesScene", [seed, obj], [],
                 [("image", "IMAGE"), ("mask", "MASK"), ("positive", "CONDITIONING"), ("prompt", "STRING")], 150,
                 title)


def shapes_prompt(c: Column, text: str, title: str | None = None) -> Node:
    return c.add("DragonDiff_ShapesPrompt", [text], [], [("conditioning", "CONDITIONING")], 80, title)


def vae_loader(c: Column, name: str = "pixel_space") -> Node:
    return c.add("VAELoader", [name], [], [("VAE", "VAE")], 60)


def vae_encode(c: Column, image: Node, slot: int, vae: Node, vae_slot: int = 0) -> Node:
    n = c.add("VAEEncode", [], [("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")], 50)
    c.w.link(image, slot, n, "pixels")
    c.w.link(vae, vae_slot, n, "vae")
    return n


def inversion(c: Column, model: Node, latent: Node, positive: Node, pos_slot: int, steps: int = 50,
              attention_per_block: int = 2, storage: str = "int8", title: str | None = None) -> Node:
    # attention_per_block: dragon_core.memory.MAX_KV_LAYERS_PER_BLOCK (all layers of SD1.x/2.x, a subset of SDXL's)
    n = c.add("DragonDiff_Inversion", [steps, attention_per_block, storage],
              [("model", "MODEL"), ("latent", "LATENT"), ("positive", "CONDITIONING")],
              [("inverted", "LATENT"), ("memory", "DRAGON_MEMORY")], 150, title)
    c.w.link(model, 0, n, "model")
    c.w.link(latent, 0, n, "latent")
    c.w.link(positive, pos_slot, n, "positive")
    return n


def guided_sampler(c: Column, model: Node, positive: Node, pos_slot: int, negative: Node, memory: Node,
                   edit: Node, seed: int = 0) -> Node:
    n = c.add("DragonDiff_GuidedSampler", [seed, "fixed", -1.0, -1.0, -1.0, -1.0, True, "model"],
              [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
               ("memory", "DRAGON_MEMORY"), ("edit", "DRAGON_EDIT")], [("latent", "LATENT")], 314)
    c.w.link(model, 0, n, "model")
    c.w.link(positive, pos_slot, n, "positive")
    c.w.link(negative, 0, n, "negative")
    c.w.link(memory, 1, n, "memory")
    c.w.link(edit, 0, n, "edit")
    return n


def vae_decode(c: Column, latent: Node, vae: Node, vae_slot: int = 0) -> Node:
    d = c.add("VAEDecode", [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], 50)
    c.w.link(latent, 0, d, "samples")
    c.w.link(vae, vae_slot, d, "vae")
    return d


def upscale(c: Column, image: Node, slot: int = 0, factor: float = 8.0, title: str | None = None) -> Node:
    """Nearest-neighbour upscale: the demo's 32-pixel pictures, large enough to judge."""
    n = c.add("ImageScaleBy", ["nearest-exact", factor], [("image", "IMAGE")], [("IMAGE", "IMAGE")], 82,
              title or f"Upscale x{factor:g} (nearest, to see)")
    c.w.link(image, slot, n, "image")
    return n


def resize(c: Column, image: Node, size: int) -> Node:
    """Any photo -> size x size (centre crop): a multiple of 8 the model handles; the editor shows it at once."""
    n = c.add("ImageScale", ["lanczos", size, size, "center"], [("image", "IMAGE")], [("IMAGE", "IMAGE")], 130,
              f"Resize to {size}x{size} (centre crop)")
    c.w.link(image, 0, n, "image")
    return n


def preview(c: Column, image: Node, slot: int = 0, title: str | None = None, height: int = 330) -> Node:
    n = c.add("PreviewImage", [], [("images", "IMAGE")], [], height, title)
    c.w.link(image, slot, n, "images")
    return n


def save(c: Column, image: Node, prefix: str, height: int = 340) -> Node:
    n = c.add("SaveImage", [prefix], [("images", "IMAGE")], [], height)
    c.w.link(image, 0, n, "images")
    return n


def load_image(c: Column, title: str, photo: str = "example.png") -> Node:
    return c.add("LoadImage", [photo, "image"], [], [("IMAGE", "IMAGE"), ("MASK", "MASK")], 380, title)


# -- the edit nodes: sockets in the frontend's order (required, then optional), widgets likewise ---------------

EDITOR_HEIGHT = 540  # the edit nodes draw the canvas editor (web/dragon_editor.js): room for the picture


def move_edit(c: Column, image: Node, mask: Node | None = None, mask_slot: int = 1, dx: int = 0, dy: int = 0,
              scale: float = 1.0, selection: str = "") -> Node:
    n = c.add("DragonDiff_MoveEdit", [dx, dy, scale, selection],
              [("mask", "MASK"), ("inpaint_region", "MASK"), ("image", "IMAGE")], [("edit", "DRAGON_EDIT")],
              EDITOR_HEIGHT)
    c.w.link(image, 0, n, "image")
    if mask is not None:
        c.w.link(mask, mask_slot, n, "mask")
    return n


def drag_edit(c: Column, image: Node, points: str, region: str = "") -> Node:
    n = c.add("DragonDiff_DragEdit", [points, region], [("image", "IMAGE"), ("mask", "MASK")],
              [("edit", "DRAGON_EDIT")], EDITOR_HEIGHT)
    c.w.link(image, 0, n, "image")
    return n


def point_set_edit(c: Column, image: Node, points: str) -> Node:
    n = c.add("DragonDiff_PointSetEdit", [points], [("image", "IMAGE")], [("edit", "DRAGON_EDIT")], EDITOR_HEIGHT)
    c.w.link(image, 0, n, "image")
    return n


def appearance_edit(c: Column, ref_inv: Node, image: Node, ref_image: Node, mask: Node | None = None,
                    ref_mask: Node | None = None) -> Node:
    n = c.add("DragonDiff_AppearanceEdit", ["", ""],
              [("reference_memory", "DRAGON_MEMORY"), ("mask", "MASK"), ("reference_mask", "MASK"), ("image", "IMAGE"),
               ("reference_image", "IMAGE")], [("edit", "DRAGON_EDIT")], EDITOR_HEIGHT)
    c.w.link(ref_inv, 1, n, "reference_memory")
    c.w.link(image, 0, n, "image")
    c.w.link(ref_image, 0, n, "reference_image")
    if mask is not None:
        c.w.link(mask, 1, n, "mask")
        c.w.link(ref_mask, 1, n, "reference_mask")
    return n


def paste_edit(c: Column, src_inv: Node, image: Node, source: Node, mask: Node | None = None, dx: int = 0,
               dy: int = 0, scale: float = 1.0) -> Node:
    n = c.add("DragonDiff_PasteEdit", [dx, dy, scale, ""],
              [("source_memory", "DRAGON_MEMORY"), ("mask", "MASK"), ("image", "IMAGE"), ("source_image", "IMAGE")],
              [("edit", "DRAGON_EDIT")], EDITOR_HEIGHT)
    c.w.link(src_inv, 1, n, "source_memory")
    c.w.link(image, 0, n, "image")
    c.w.link(source, 0, n, "source_image")
    if mask is not None:
        c.w.link(mask, 1, n, "mask")
    return n


# -- the shapes demos ---------------------------------------------------------------------------------------

# the demo scenes (DragonDiff_ShapesScene scene numbers) and what each edit does to them
DEMO = {
    "move": dict(seed=3, edit=dict(dx=10, dy=-6, scale=1.0)),  # the yellow triangle to the right and up
    "resize": dict(seed=8, edit=dict(dx=0, dy=0, scale=1.3)),  # the red diamond 30% larger
    "drag": dict(seed=8, points="15,14,19,14", grow=5),  # the diamond 4 px to the right, inside its grown mask
    "points": dict(seed=8, points="11,14,9,14; 19,14,21,14; 15,10,15,8; 15,18,15,20"),  # the diamond 1.3x larger
    "appearance": dict(seed=2, reference=11),  # the blue triangle takes the cyan triangle's look
    "paste": dict(seed=2, reference=8, edit=dict(dx=-6, dy=-5, scale=1.0)),  # the red diamond into the scene
}

DEMO_NOTES = {
    "move": "drag the object in the **Move / Resize** editor (the corner handle resizes it)",
    "resize": "drag the square handle at the object's corner in the **Move / Resize** editor",
    "drag": "click handle -> target points in the **Drag** editor (Brush: the region that may change)",
    "points": "click handle -> target points in the **Point-Set Drag** editor",
    "appearance": "the **Appearance** editor shows both objects (Object / Reference)",
    "paste": "drag the pasted object in the **Paste** editor",
}


def demo_note(kind: str) -> str:
    mask = ("disconnect the node's mask to select the object yourself (**Box**, Lasso, Brush)"
            if kind in ("move", "resize", "appearance", "paste") else "")
    return ("### Demo: the bundled shapes model (no download)\n\n"
            "1. Press **Run**. Input and result are shown upscaled 8x (nearest) to judge.\n"
            f"2. To edit: {DEMO_NOTES[kind]}, then Run again.\n"
            + (f"3. To try it from scratch: {mask}.\n" if mask else ""))


def shapes_demo(kind: str) -> dict:
    d = DEMO[kind]
    w = Workflow()
    a = Column(w, 20, 360)
    note(a, demo_note(kind), 150)
    model = shapes_model(a)
    scene = shapes_scene(a, d["seed"])
    neg = shapes_prompt(a, "", "Negative (empty)")
    vae = vae_loader(a)
    ref = shapes_scene(a, d["reference"], title="Reference scene") if "reference" in d else None
    b = Column(w, a.right, 300)
    lat = vae_encode(b, scene, 0, vae)
    inv = inversion(b, model, lat, scene, 2)
    if ref is not None:
        rinv = inversion(b, model, vae_encode(b, ref, 0, vae), ref, 2, title="Inversion (reference)")
    preview(b, upscale(b, scene), 0, "Input")
    if ref is not None:
        preview(b, upscale(b, ref), 0, "Reference")
    c = Column(w, b.right, 380)
    if kind in ("move", "resize"):
        edit = move_edit(c, scene, scene, 1, **d["edit"])
    elif kind == "drag":
        edit = drag_edit(c, scene, d["points"])
        grow = b.add("GrowMask", [d["grow"], True], [("mask", "MASK")], [("MASK", "MASK")], 82,
                     "Editable region: the object's mask, grown")
        w.link(scene, 1, grow, "mask")
        w.link(grow, 0, edit, "mask")
    elif kind == "points":
        edit = point_set_edit(c, scene, d["points"])
    elif kind == "appearance":
        edit = appearance_edit(c, rinv, scene, ref, scene, ref)
    else:
        edit = paste_edit(c, rinv, scene, ref, ref, **d["edit"])
    out = guided_sampler(c, model, scene, 2, neg, inv, edit)
    e = Column(w, c.right, 300)
    save(e, upscale(e, vae_decode(e, out, vae)), f"dragon_{kind}")
    return w.to_json()


# -- Stable Diffusion: any photo --------------------------------------------------------------------------------

# stock-loader workflows per model family: checkpoint name, working size (pixels), name in the Note;
# "shapes": the same workflow on the bundled shapes model (not shipped: the browser test runs it on a
# demo picture, as a user runs the Stable Diffusion ones on a photo)
FAMILIES = {
    "sd15": dict(ckpt="v1-5-pruned-emaonly.safetensors", size=512, name="Stable Diffusion 1.5"),
    # SDXL base at 1024x1024: the same nodes; the layers come from the UNet's structure (docs/model-families.md)
    "sdxl": dict(ckpt="sd_xl_base_1.0.safetensors", size=1024, name="SDXL"),
    "shapes": dict(size=32, name="shapes demo"),
}

SD_STEPS = {
    "move": ["In the **Move / Resize** node, drag a box around the object (Lasso / Brush refine it; Shift adds, "
             "Alt removes).",
             "Drag the object where it should go (the square handle at its corner resizes it)."],
    "resize": ["In the **Move / Resize** node, drag a box around the object (Lasso / Brush refine it).",
               "Drag the square handle at the object's corner to resize it (drag the object to move it too)."],
    "drag": ["In the **Drag** node, click a point on what should move, then where it should go (more pairs give "
             "more control).",
             "Optional: with **Brush**, paint the region that may change (without one, all of it may)."],
    "appearance": ["In the **Appearance** node: **Object**, drag a box around the object to restyle; "
                   "**Reference**, drag a box around the object whose look it takes."],
    "paste": ["In the **Paste** node, drag a box around the object on the source photo (shown first).",
              "Drag the object into place on your photo (the corner handle resizes it)."],
}


def sd_note(kind: str, family: str) -> str:
    fam = FAMILIES[family]
    photos = ("In both **Load Image** nodes pick your photo and the one with the other object"
              if kind in ("appearance", "paste") else "In **Load Image**, pick your photo")
    first = ("The bundled shapes model needs no download." if family == "shapes"
             else f"In **Load Checkpoint**, pick a {fam['name']} checkpoint.")
    steps = [first,
             f"{photos} (any size: it is cropped to the middle square, {fam['size']}x{fam['size']}).",
             *SD_STEPS[kind], "Press **Run**. Optional: describe the photo in the prompt."]
    return f"### {kind.capitalize()} an object in your photo\n\n" + "".join(
        f"{i}. {s}\n" for i, s in enumerate(steps, 1))


def sd15(kind: str, family: str = "sd15", photos: tuple[str, str] = ("example.png", "example.png"),
         prompt: str = "a photo") -> dict:
    """Stock loaders: a Stable Diffusion checkpoint (SD1.5, or SDXL with ``family="sdxl"``) and a
    photo (and a second one for appearance / paste), resized to the model's size; the object is
    selected in the edit node's editor. ``family="shapes"``: the same on the bundled model."""
    fam = FAMILIES[family]
    two = kind in ("appearance", "paste")
    w = Workflow()
    a = Column(w, 20, 400)
    note(a, sd_note(kind, family), 250 if two else 230)
    if family == "shapes":
        model, vae, vae_slot = shapes_model(a), vae_loader(a), 0
    else:
        model = vae = a.add("CheckpointLoaderSimple", [fam["ckpt"]], [],
                            [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], 100)
        vae_slot = 2
    img = load_image(a, "Your photo", photos[0])
    if two:
        other = load_image(a, "Reference photo (its object gives the look)" if kind == "appearance"
                           else "Source photo (the object to paste)", photos[1])
    b = Column(w, a.right, 320)
    if family == "shapes":
        pos, neg = shapes_prompt(b, prompt, "Prompt describing the photo"), shapes_prompt(b, "", "Negative")
    else:
        pos = b.add("CLIPTextEncode", [prompt], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], 110,
                    "Prompt describing the photo")
        neg = b.add("CLIPTextEncode", [""], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], 110, "Negative")
        w.link(model, 1, pos, "clip")
        w.link(model, 1, neg, "clip")
    photo = resize(b, img, fam["size"])
    inv = inversion(b, model, vae_encode(b, photo, 0, vae, vae_slot), pos, 0)
    if two:
        other_photo = resize(b, other, fam["size"])
        rinv = inversion(b, model, vae_encode(b, other_photo, 0, vae, vae_slot), pos, 0,
                         title="Inversion (reference)" if kind == "appearance" else "Inversion (source)")
    c = Column(w, b.right, 420)
    if kind in ("move", "resize"):
        edit = move_edit(c, photo)
    elif kind == "drag":
        edit = drag_edit(c, photo, "")
    elif kind == "appearance":
        edit = appearance_edit(c, rinv, photo, other_photo)
    else:
        edit = paste_edit(c, rinv, photo, other_photo)
    out = guided_sampler(c, model, pos, 0, neg, inv, edit)
    e = Column(w, c.right, 420)
    save(e, vae_decode(e, out, vae, vae_slot), f"dragon_{kind}_{family}", 480)
    return w.to_json()


# -- generate, capture the memory, move: no inversion ---------------------------------------------------------

# the bundled model's sample for this prompt and seed (20 steps, cfg 3) shows the blue disc at the left; the
# selection is its colour segmentation (one box per pixel row), the move takes it up and to the right
CAPTURE_DEMO = dict(prompt="flat, yellow triangle, blue disc", seed=4, steps=20, cfg=3.0, dx=10, dy=-8,
                    selection="box 6,11,13,12; box 4,12,15,13; box 3,13,15,14; box 3,14,16,15; box 2,15,16,16; "
                              "box 2,16,17,17; box 2,17,17,18; box 2,18,17,19; box 2,19,17,20; box 2,20,16,21; "
                              "box 3,21,16,22; box 3,22,15,23; box 4,23,14,24; box 5,24,13,25")

CAPTURE_NOTES = {
    "shapes": "### Generate, then move: no inversion (bundled shapes model)\n\n"
              "1. Press **Run**: the image is generated with its memory, and the blue disc moves up and right.\n"
              "2. To edit: drag the object in the **Move / Resize** editor, then Run again (the seed is fixed, "
              "so the generation is reused, not run again).\n"
              "3. Try another prompt or seed: Run once, then draw a **Box** around an object in the editor.\n",
    "sd15": "### Generate an image, then move an object in it\n\n"
            "1. In **Load Checkpoint**, pick a Stable Diffusion 1.5 checkpoint.\n"
            "2. Write the prompt and press **Run**: the image is generated with its memory (no inversion); the "
            "**Move / Resize** node then shows it and asks for an object.\n"
            "3. In the **Move / Resize** node, drag a box around the object, then drag it where it should go.\n"
            "4. Press **Run** again: the seed is fixed, so only the edit runs. Keep the Guided Sampler's cfg at "
            "-1 (4) or equal to the generation's cfg: what the edit does not touch then stays as generated.\n",
}


def capture_sample(c: Column, model: Node, positive: Node, pos_slot: int, negative: Node, size: int, seed: int,
                   steps: int, cfg: float) -> Node:
    n = c.add("DragonDiff_CaptureSample", [size, size, seed, "fixed", steps, cfg, 2, "int8"],
              [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
              [("latent", "LATENT"), ("memory", "DRAGON_MEMORY")], 270)
    c.w.link(model, 0, n, "model")
    c.w.link(positive, pos_slot, n, "positive")
    c.w.link(negative, 0, n, "negative")
    return n


def capture_move(family: str) -> dict:
    """Generate with memory, then move an object of the generated image: the bundled model (a preset
    move that runs as shipped) or Stable Diffusion 1.5 (stock loaders; the object selected by the user)."""
    d = CAPTURE_DEMO
    shapes = family == "shapes"
    w = Workflow()
    a = Column(w, 20, 380)
    note(a, CAPTURE_NOTES[family], 190 if shapes else 270)
    if shapes:
        model, vae, vae_slot = shapes_model(a), vae_loader(a), 0
        pos, neg = shapes_prompt(a, d["prompt"], "Prompt"), shapes_prompt(a, "", "Negative (empty)")
    else:
        model = vae = a.add("CheckpointLoaderSimple", [FAMILIES["sd15"]["ckpt"]], [],
                            [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], 100)
        vae_slot = 2
        pos = a.add("CLIPTextEncode", ["a photo of a red apple and a cup on a wooden table"], [("clip", "CLIP")],
                    [("CONDITIONING", "CONDITIONING")], 110, "Prompt")
        neg = a.add("CLIPTextEncode", [""], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], 110, "Negative")
        w.link(model, 1, pos, "clip")
        w.link(model, 1, neg, "clip")
    b = Column(w, a.right, 320)
    gen = capture_sample(b, model, pos, 0, neg, 32 if shapes else 512, d["seed"], d["steps"] if shapes else 50,
                         d["cfg"] if shapes else 4.0)
    image = vae_decode(b, gen, vae, vae_slot)
    if shapes:
        preview(b, upscale(b, image), 0, "Generated")
    c = Column(w, b.right, 420)
    edit = move_edit(c, image, **({k: d[k] for k in ("dx", "dy", "selection")} if shapes else {}))
    out = guided_sampler(c, model, pos, 0, neg, gen, edit)
    e = Column(w, c.right, 420 if not shapes else 300)
    result = vae_decode(e, out, vae, vae_slot)
    save(e, upscale(e, result) if shapes else result, f"dragon_capture_move_{family}", 340 if shapes else 480)
    return w.to_json()


WORKFLOWS = {f"dragon_{k}_shapes_demo.json": (lambda k=k: shapes_demo(k)) for k in DEMO}
WORKFLOWS.update({f"dragon_{k}_sd15.json": (lambda k=k: sd15(k)) for k in ("move", "resize", "drag", "appearance",
                                                                              "paste")})
WORKFLOWS["dragon_move_sdxl.json"] = lambda: sd15("move", "sdxl")
WORKFLOWS["dragon_capture_move_shapes_demo.json"] = lambda: capture_move("shapes")
WORKFLOWS["dragon_capture_move_sd15.json"] = lambda: capture_move("sd15")


def main() -> None:
    for name, make in WORKFLOWS.items():
        (OUT / name).write_text(json.dumps(make(), indent=1) + "\n")
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
