"""The node pack in ComfyUI's real executor: graphs of our nodes and stock nodes.

The pack is loaded the way ComfyUI loads a custom node folder
(``nodes.load_custom_node``) and prompts run through ``execution.PromptExecutor``,
which wraps every node in ``torch.inference_mode()`` and caches outputs, as a
server does. Images come from PNG files in a temporary input directory
(``LoadImage`` / ``LoadImageMask``); results are read back from ``SaveImage``'s
PNGs. The demo model needs no download.

Checked: the move edit through the nodes equals the same edit run by
``dragon_core`` on the diffusers backend; the inverted LATENT reconstructs the
image through ComfyUI's own KSamplerAdvanced; the cross-branch attention patch
works with ComfyUI's KSampler; every edit node runs; cached inputs are not
modified and bad inputs fail with errors naming the input while the executor
keeps serving the next prompt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from graphs import guided_sampler, shapes_scene

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
STEPS = 10


def _saved(env, outputs: dict, node: str) -> np.ndarray:
    from PIL import Image

    info = outputs[node]["images"][0]
    path = env.base / "output" / info["subfolder"] / info["filename"]
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def _write_inputs(env, case, name: str) -> tuple[str, str]:
    from PIL import Image

    img = (case.scene.render() * 255).round().astype(np.uint8)
    Image.fromarray(img).save(env.base / "input" / f"{name}.png")
    m = case.scene.masks()[case.index].astype(np.uint8) * 255
    Image.fromarray(np.stack([m] * 3, -1)).save(env.base / "input" / f"{name}_mask.png")
    return f"{name}.png", f"{name}_mask.png"


def _base_graph(image: str, prompt: str) -> dict:
    return {
        "model": {"class_type": "DragonDiff_ShapesModelLoader", "inputs": {}},
        "pos": {"class_type": "DragonDiff_ShapesPrompt", "inputs": {"prompt": prompt}},
        "neg": {"class_type": "DragonDiff_ShapesPrompt", "inputs": {"prompt": ""}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "img": {"class_type": "LoadImage", "inputs": {"image": image}},
        "lat": {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["vae", 0]}},
        "inv": {"class_type": "DragonDiff_Inversion",
                "inputs": {"model": ["model", 0], "latent": ["lat", 0], "positive": ["pos", 0], "steps": STEPS}},
    }


def _sampler(edit: str, **kw) -> dict:
    return guided_sampler(edit, ["pos", 0], **kw)


def _save(src: str, prefix: str) -> dict:
    return {"dec": {"class_type": "VAEDecode", "inputs": {"samples": [src, 0], "vae": ["vae", 0]}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": prefix}}}


def _move_graph(env, case, name: str) -> tuple[dict, tuple[int, int]]:
    """The base graph plus the case's mask and a Move edit node ('edit'); and the (dx, dy) used."""
    image, mask = _write_inputs(env, case, name)
    dx, dy = int(round(case.dx)), int(round(case.dy))
    g = _base_graph(image, case.scene.prompt())
    g["mask"] = {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}}
    g["edit"] = {"class_type": "DragonDiff_MoveEdit", "inputs": {"mask": ["mask", 0], "dx": dx, "dy": dy, "scale": 1.0}}
    return g, (dx, dy)


@pytest.fixture(scope="module")
def move_case():
    from dragon_lab import edit_cases as ec

    return ec.random_edit_case(1001, "move")


def _core_move(case, dx: float, dy: float, preset: str) -> np.ndarray:
    """The core's move of ``case`` on the diffusers backend (the graph's 8-bit input image, STEPS
    steps, the shapes model's settings under ``preset``) as an (H, W, 3) picture in 0..1."""
    from dragon_core.diffusers_backend import load_shapes_backend
    from dragon_core.edits import Move
    from dragon_core.images import array_to_tensor
    from dragon_core.memory import invert_with_memory
    from dragon_core.sampler import edit_image
    from dragon_core.settings import default_settings
    from dragon_demo.shapes_model import load_config

    backend, enc = load_shapes_backend()
    with backend:
        cond, uncond = enc.encode(case.scene.prompt()), enc.encode("")
        x = array_to_tensor(np.asarray(case.scene.render() * 255).round() / 255)
        mem = invert_with_memory(backend, x, cond, steps=STEPS, spacing="comfy_uniform")
        m = torch.from_numpy(case.scene.masks()[case.index].astype(np.float32))
        settings = default_settings("move", load_config()["edit_defaults"], preset=preset)
        want = edit_image(backend, mem, Move(m, dx, dy), cond, uncond, settings).latent
    return ((want.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).numpy()


def test_move_graph_matches_the_core_on_diffusers(comfy_env, move_case):
    case = move_case
    g, (dx, dy) = _move_graph(comfy_env, case, "move")
    g["edit_out"] = _sampler("edit")
    g.update(_save("edit_out", "move"))
    got = _saved(comfy_env, comfy_env.run(g), "save")

    want = _core_move(case, dx, dy, "model")
    diff = np.abs(got - want)
    assert diff.max() <= 3 / 255 and diff.mean() < 0.5 / 255, (diff.max(), diff.mean())
    # and the edit did something: the result is not the input
    assert np.abs(got - case.scene.render()).max() > 0.2


def test_preset_input_reaches_the_settings(comfy_env, move_case, caplog):
    """The sampler's preset: "paper" runs the paper's settings on the shapes model instead of its
    calibrated ones; the picture equals the core's edit with ``default_settings(..., preset="paper")``,
    differs from the default preset's (model), and the console line names the preset."""
    case = move_case
    g, (dx, dy) = _move_graph(comfy_env, case, "preset")
    got = {}
    for preset in ("paper", "model"):
        g["edit_out"] = _sampler("edit", preset=preset)
        g.update(_save("edit_out", f"preset_{preset}"))
        with caplog.at_level("INFO"):
            got[preset] = _saved(comfy_env, comfy_env.run(g), "save")
    assert "move edit, 10 steps (4 guided passes), preset paper: cfg 4, energy_scale 40," in caplog.text
    assert "preset model: cfg 1, energy_scale 240," in caplog.text

    want = _core_move(case, dx, dy, "paper")
    diff = np.abs(got["paper"] - want)
    assert diff.max() <= 3 / 255 and diff.mean() < 0.5 / 255, (diff.max(), diff.mean())
    assert np.abs(got["paper"] - got["model"]).mean() > 10 * diff.mean() + 1 / 255


def test_memory_storage_options_give_the_same_edit(comfy_env, move_case):
    """The Inversion node's storage: recompute (latents only, each step rerun during the edit)
    gives fp16's picture; int8 differs from it by far less than the edit changes; the
    attention patch refuses a memory without stored keys/values, naming the input."""
    case = move_case
    g, _ = _move_graph(comfy_env, case, "storage")
    got = {}
    for storage in ("fp16", "recompute", "int8"):
        g["inv"]["inputs"]["storage"] = storage
        g["edit_out"] = _sampler("edit")
        g.update(_save("edit_out", f"storage_{storage}"))
        got[storage] = _saved(comfy_env, comfy_env.run(g), "save")
    assert np.abs(got["recompute"] - got["fp16"]).max() <= 1 / 255
    change = np.abs(got["fp16"] - case.scene.render()).mean()
    assert np.abs(got["int8"] - got["fp16"]).mean() < 0.05 * change, (np.abs(got["int8"] - got["fp16"]).mean(), change)
    g["inv"]["inputs"]["storage"] = "recompute"
    g["patched"] = {"class_type": "DragonDiff_CrossBranchAttention",
                    "inputs": {"model": ["model", 0], "memory": ["inv", 1], "mode": "replace", "start_step": 0,
                               "end_step": -1}}
    g["ks"] = _ksampler_advanced("patched", "inv")
    g.update(_save("ks", "storage_patch"))
    with pytest.raises(RuntimeError) as e:
        comfy_env.run(g)
    assert "memory" in str(e.value) and "storage" in str(e.value)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-10)))


def _ksampler_advanced(model: str, latent: str, add_noise: str = "disable", cfg: float = 1.0) -> dict:
    return {"class_type": "KSamplerAdvanced",
            "inputs": {"model": [model, 0], "add_noise": add_noise, "noise_seed": 3, "steps": STEPS, "cfg": cfg,
                       "sampler_name": "ddim", "scheduler": "ddim_uniform", "positive": ["pos", 0],
                       "negative": ["neg", 0], "latent_image": [latent, 0], "start_at_step": 0,
                       "end_at_step": 10000, "return_with_leftover_noise": "disable"}}


def test_inverted_latent_reconstructs_through_comfyuis_own_sampler(comfy_env, move_case):
    image, _ = _write_inputs(comfy_env, move_case, "recon")
    g = _base_graph(image, move_case.scene.prompt())
    g["ks"] = _ksampler_advanced("model", "inv")
    g.update(_save("ks", "recon"))
    got = _saved(comfy_env, comfy_env.run(g), "save")
    # ComfyUI's DDIM from the inverted latent == the core's DDIM reconstruction (10 steps: ~26.7 dB
    # to the input; 50 steps give ~40 dB)
    from dragon_core import ddim
    from dragon_core.diffusers_backend import load_shapes_backend
    from dragon_core.images import array_to_tensor

    backend, enc = load_shapes_backend()
    with backend:
        cond = enc.encode(move_case.scene.prompt())
        x = array_to_tensor(np.asarray(move_case.scene.render() * 255).round() / 255)
        traj = ddim.invert(backend, x, cond, steps=STEPS, spacing="comfy_uniform")
        want = ddim.sample(backend, traj.z_T, cond, steps=STEPS, spacing="comfy_uniform")
    want = ((want.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() <= 3 / 255
    assert _psnr(got, move_case.scene.render()) > 25.0


def test_cross_branch_attention_patch_works_with_comfyuis_ksampler(comfy_env, move_case):
    """ComfyUI's KSamplerAdvanced from the inverted latent under another prompt (the
    edited object's colour changed): on the patched model (decoder self-attention
    reads the memory) the result stays nearer the original than on the plain model."""
    from dragon_demo import shapes_world as sw

    case = move_case
    image, _ = _write_inputs(comfy_env, case, "xattn")
    g = _base_graph(image, case.scene.prompt())
    obj = case.scene.objects[case.index]
    other = next(c for c in sw.COLOURS if c != obj.colour)
    g["pos2"] = {"class_type": "DragonDiff_ShapesPrompt", "inputs": {"prompt": case.scene.recoloured(case.index,
                                                                                                    other).prompt()}}
    g["patched"] = {"class_type": "DragonDiff_CrossBranchAttention",
                    "inputs": {"model": ["model", 0], "memory": ["inv", 1], "mode": "replace", "start_step": 0,
                               "end_step": -1}}
    for name, model in (("plain", "model"), ("patched", "patched")):
        g[f"ks_{name}"] = _ksampler_advanced(model, "inv")
        g[f"ks_{name}"]["inputs"]["positive"] = ["pos2", 0]
        g[f"dec_{name}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"ks_{name}", 0], "vae": ["vae", 0]}}
        g[f"save_{name}"] = {"class_type": "SaveImage", "inputs": {"images": [f"dec_{name}", 0],
                                                                   "filename_prefix": f"xattn_{name}"}}
    out = comfy_env.run(g)
    plain, patched = _saved(comfy_env, out, "save_plain"), _saved(comfy_env, out, "save_patched")
    original = case.scene.render()
    # measured: 22.9 vs 22.2 dB (this small model's colours follow the prompt's cross-attention)
    assert _psnr(patched, original) > _psnr(plain, original) + 0.3, (_psnr(patched, original), _psnr(plain, original))
    # and it is exactly the core's cross-branch attention, run by ComfyUI's own sampler
    from dragon_core import ddim
    from dragon_core.attention import CrossBranchAttention
    from dragon_core.diffusers_backend import load_shapes_backend
    from dragon_core.images import array_to_tensor
    from dragon_core.memory import invert_with_memory

    backend, enc = load_shapes_backend()
    with backend:
        x = array_to_tensor(np.asarray(original * 255).round() / 255)
        mem = invert_with_memory(backend, x, enc.encode(case.scene.prompt()), steps=STEPS, spacing="comfy_uniform")
        want = ddim.sample(backend, mem.trajectory.z_T, enc.encode(g["pos2"]["inputs"]["prompt"]), steps=STEPS,
                           spacing="comfy_uniform", hooks=CrossBranchAttention(mem, "replace", 0))
    want = ((want.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).numpy()
    assert np.abs(patched - want).max() <= 3 / 255


def test_every_edit_node_runs_in_one_graph(comfy_env):
    from dragon_lab import edit_cases as ec

    base = ec.random_edit_case(7, "move")
    ref = ec.random_edit_case(8, "move")
    image, mask = _write_inputs(comfy_env, base, "all")
    rimage, rmask = _write_inputs(comfy_env, ref, "all_ref")
    g = _base_graph(image, base.scene.prompt())
    g["mask"] = {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}}
    g["rmask"] = {"class_type": "LoadImageMask", "inputs": {"image": rmask, "channel": "red"}}
    g["rpos"] = {"class_type": "DragonDiff_ShapesPrompt", "inputs": {"prompt": ref.scene.prompt()}}
    g["rimg"] = {"class_type": "LoadImage", "inputs": {"image": rimage}}
    g["rlat"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["rimg", 0], "vae": ["vae", 0]}}
    g["rinv"] = {"class_type": "DragonDiff_Inversion",
                 "inputs": {"model": ["model", 0], "latent": ["rlat", 0], "positive": ["rpos", 0], "steps": STEPS}}
    obj = base.scene.objects[base.index]
    x, y = obj.cx, obj.cy
    edits = {
        "drag": {"class_type": "DragonDiff_DragEdit",
                 "inputs": {"image": ["img", 0], "points": f"{x},{y},{x + 4},{y}", "mask": ["mask", 0]}},
        "points": {"class_type": "DragonDiff_PointSetEdit",
                   "inputs": {"image": ["img", 0], "points": f'[[{x - 2}, {y}], [{x - 3}, {y}], [{x + 2}, {y}], '
                                                             f'[{x + 3}, {y}]]'}},
        "appearance": {"class_type": "DragonDiff_AppearanceEdit",
                       "inputs": {"mask": ["mask", 0], "reference_memory": ["rinv", 1], "reference_mask": ["rmask", 0]}},
        "paste": {"class_type": "DragonDiff_PasteEdit",
                  "inputs": {"source_memory": ["rinv", 1], "mask": ["rmask", 0], "dx": 0, "dy": 0, "scale": 1.0}},
        "resize": {"class_type": "DragonDiff_MoveEdit",
                   "inputs": {"mask": ["mask", 0], "dx": 0, "dy": 0, "scale": 1.2}},
    }
    for name, node in edits.items():
        g[f"e_{name}"] = node
        g[f"s_{name}"] = _sampler(f"e_{name}")
        g[f"d_{name}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"s_{name}", 0], "vae": ["vae", 0]}}
        g[f"o_{name}"] = {"class_type": "SaveImage", "inputs": {"images": [f"d_{name}", 0], "filename_prefix": name}}
    out = comfy_env.run(g)
    src = base.scene.render()
    for name in edits:
        img = _saved(comfy_env, out, f"o_{name}")
        assert img.shape == src.shape
        assert np.abs(img - src).max() > 0.05, name  # the edit changed something
        assert _psnr(img, src) > 12.0, name  # and it is still the same picture, not noise


@pytest.mark.parametrize("points, needle", [("1,2,3", "expected 4"), ("[1, 2", "does not parse"),
                                            ("100,1,2,3", "outside")])
def test_bad_points_fail_with_a_named_error_and_the_next_prompt_runs(comfy_env, move_case, points, needle):
    image, _ = _write_inputs(comfy_env, move_case, "bad")
    g = _base_graph(image, move_case.scene.prompt())
    g["edit"] = {"class_type": "DragonDiff_DragEdit", "inputs": {"image": ["img", 0], "points": points}}
    g["out"] = _sampler("edit")
    g.update(_save("out", "bad"))
    with pytest.raises(RuntimeError) as e:
        comfy_env.run(g)
    assert "points" in str(e.value) and needle in str(e.value)
    g["edit"]["inputs"]["points"] = "10,10,12,10"
    assert _saved(comfy_env, comfy_env.run(g), "save").shape == (32, 32, 3)


def _pack(name: str):
    """A module of the pack as ComfyUI loaded it (named after the folder's path)."""
    import sys

    return sys.modules[f"{ROOT}.nodes.{name}"]


def test_memory_from_another_model_is_refused(comfy_env, move_case):
    shapes_comfy, sampler_nodes, memory_nodes = _pack("shapes_comfy"), _pack("sampler_nodes"), _pack("memory_nodes")
    with torch.inference_mode():
        model_a, model_b = shapes_comfy.load_shapes_model(), shapes_comfy.load_shapes_model()
        x = torch.from_numpy(move_case.scene.render()).permute(2, 0, 1)[None].float() * 2 - 1
        _, memory = memory_nodes.Inversion.execute(model_a, {"samples": x}, shapes_comfy.encode_prompt(""), 3).args
        assert sampler_nodes.check_memory_for(model_a.clone(), memory, "memory", "node") is memory
        with pytest.raises(ValueError, match="memory was inverted with another model"):
            sampler_nodes.check_memory_for(model_b, memory, "memory", "node")


class _Fingerprint:
    """A test-only output node: records copies of the cached inputs it is given."""

    seen: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "mask": ("MASK",), "latent": ("LATENT",), "model": ("MODEL",),
                             "tag": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def run(self, image, mask, latent, model, tag):
        import copy

        with torch.inference_mode(False):
            _Fingerprint.seen[tag] = {
                "image": image.clone(), "mask": mask.clone(), "latent": latent["samples"].clone(),
                "model_object": model.model, "options": repr(copy.deepcopy(model.model_options)),
                "patches": sorted(model.patches), "uuid": model.patches_uuid,
                "weights": {k: v.clone() for k, v in model.model.state_dict().items()},
            }
        return ()


def test_cached_inputs_and_the_model_are_unchanged_by_every_node(comfy_env):
    """Prompt 1 records the cached IMAGE, MASK, LATENT and MODEL; prompt 2 runs every
    node of the pack on them (inversion, all edits, the sampler, the attention patch);
    prompt 3 records the same cached objects again: bitwise equal, same model state."""
    comfy_env.nodes.NODE_CLASS_MAPPINGS["DragonTest_Fingerprint"] = _Fingerprint
    base = {
        **shapes_scene(4, reference=8),
        "rlat": {"class_type": "VAEEncode", "inputs": {"pixels": ["ref", 0], "vae": ["vae", 0]}},
    }

    def fingerprint(tag):
        return {"fp": {"class_type": "DragonTest_Fingerprint",
                       "inputs": {"image": ["scene", 0], "mask": ["scene", 1], "latent": ["lat", 0],
                                  "model": ["model", 0], "tag": tag}}}

    comfy_env.run({**base, **fingerprint("before")})
    work = {
        "inv": {"class_type": "DragonDiff_Inversion",
                "inputs": {"model": ["model", 0], "latent": ["lat", 0], "positive": ["scene", 2], "steps": 6}},
        "rinv": {"class_type": "DragonDiff_Inversion",
                 "inputs": {"model": ["model", 0], "latent": ["rlat", 0], "positive": ["ref", 2], "steps": 6}},
        "e_move": {"class_type": "DragonDiff_MoveEdit",
                   "inputs": {"mask": ["scene", 1], "dx": 2, "dy": 1, "scale": 1.1, "inpaint_region": ["scene", 1]}},
        "e_drag": {"class_type": "DragonDiff_DragEdit",
                   "inputs": {"image": ["scene", 0], "points": "16,21,18,21", "mask": ["scene", 1]}},
        "e_points": {"class_type": "DragonDiff_PointSetEdit", "inputs": {"image": ["scene", 0],
                                                                        "points": "16,21,17,21;12,21,11,21"}},
        "e_app": {"class_type": "DragonDiff_AppearanceEdit",
                  "inputs": {"mask": ["scene", 1], "reference_memory": ["rinv", 1], "reference_mask": ["ref", 1]}},
        "e_paste": {"class_type": "DragonDiff_PasteEdit",
                    "inputs": {"source_memory": ["rinv", 1], "mask": ["ref", 1], "dx": 0, "dy": 0, "scale": 1.0}},
        "patched": {"class_type": "DragonDiff_CrossBranchAttention",
                    "inputs": {"model": ["model", 0], "memory": ["inv", 1], "mode": "concat", "start_step": 0,
                               "end_step": -1}},
        "ks": {"class_type": "KSamplerAdvanced",
               "inputs": {"model": ["patched", 0], "add_noise": "disable", "noise_seed": 0, "steps": 6, "cfg": 1.0,
                          "sampler_name": "ddim", "scheduler": "ddim_uniform", "positive": ["scene", 2],
                          "negative": ["neg", 0], "latent_image": ["inv", 0], "start_at_step": 0,
                          "end_at_step": 10000, "return_with_leftover_noise": "disable"}},
        "d_ks": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "o_ks": {"class_type": "SaveImage", "inputs": {"images": ["d_ks", 0], "filename_prefix": "fp_ks"}},
    }
    for name in ("move", "drag", "points", "app", "paste"):
        work[f"s_{name}"] = guided_sampler(f"e_{name}", cfg=2.0, flexibility=0.3)
        work[f"d_{name}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"s_{name}", 0], "vae": ["vae", 0]}}
        work[f"o_{name}"] = {"class_type": "SaveImage", "inputs": {"images": [f"d_{name}", 0],
                                                                   "filename_prefix": f"fp_{name}"}}
    def cached_nodes():
        return {n for e, d in comfy_env.executor.status_messages if e == "execution_cached" for n in d["nodes"]}

    comfy_env.run({**base, **work})
    assert {"model", "scene", "lat"} <= cached_nodes()  # prompt 2 got the very objects prompt 1 recorded
    comfy_env.run({**base, **fingerprint("after")})
    assert {"model", "scene", "lat"} <= cached_nodes()
    a, b = _Fingerprint.seen["before"], _Fingerprint.seen["after"]
    for k in ("image", "mask", "latent"):
        assert torch.equal(a[k], b[k]), k
    assert a["model_object"] is b["model_object"]  # the cached MODEL itself, not a reload
    assert (a["options"], a["patches"], a["uuid"]) == (b["options"], b["patches"], b["uuid"])
    assert a["weights"].keys() == b["weights"].keys()
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
