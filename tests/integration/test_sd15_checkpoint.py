"""The SD1.5 move path on a real ComfyUI server, with a random-weight SD1.5 checkpoint.

No Stable Diffusion weights can be downloaded here, so ``sd15_checkpoint.py`` (next to this
file) builds a seeded random-weight checkpoint in SD1.5's single-file layout with ComfyUI's own
model classes and save path (about 2 GB, cached in ``~/.cache/dragondiffusion-tests/``, never in
the repository; ``$DRAGONDIFF_TEST_CACHE`` moves the cache). The images it makes are noise: this
checks that the real model's shapes, dtypes and sizes go through the pack, and measures time and
memory, not quality.

* ``test_random_checkpoint_is_detected_as_sd15``: ``comfy.sd.load_checkpoint_guess_config``
  (what CheckpointLoaderSimple calls) detects SD1.5: the SD15 config with SD1.5's UNet config,
  eps prediction, 4 latent channels, CLIP-L (768-wide tokens), the KL-f8 VAE; no warnings.
* ``test_sd15_move_over_http``: ``main.py --cpu`` with this pack in a custom_nodes folder and a
  models folder holding the checkpoint (both through ``--extra-model-paths-config``) runs the API
  equivalent of workflows/dragon_move_sd15.json on a 512x512 photo drawn here: Load Checkpoint,
  prompts, Load Image, Image Scale, VAE Encode, Inversion (4 steps), the object's mask (Load Image
  + Image To Mask), Move / Resize, Guided Sampler (guidance_end 0.75: steps 0 and 2 of 4 guided),
  VAE Decode, Save Image. Checked: every node executed, no error, a 512x512 image saved, the
  Inversion's memory size logged (and its numbers are SD1.5's at 512x512), 2 guided passes; the
  wall time, per-node times and the server's peak RSS (VmHWM) are printed.

The server runs with ``--use-pytorch-cross-attention`` (what CUDA installs use; ComfyUI's CPU
default, sub-quadratic attention, made this prompt 1.5x slower and its peak 11.0 instead of
7.7 GiB; ``DRAGONDIFF_SD15_ATTENTION=default`` restores it). With 4 steps the Move's cross-branch
attention (from step 5, the paper's default) never reads the memory: this covers inversion,
memory capture, guidance and sampling, not the K/V read path.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=2 python -m pytest -q -s
tests/integration/test_sd15_checkpoint.py`` with ComfyUI's Python. On 2 CPU cores: about 30 s to
build the checkpoint the first time and 25-55 s to load it back, 5-7 min for the prompt; peak RSS
about 3.2 GB building, 6.8 GB checking the file, 7.7 GB in the server. Skipped without ``COMFYUI_PATH``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import sd15_checkpoint
import test_http_server as hs  # the HTTP suite's helpers (ComfyServer, execute, saved_image), used read-only

ROOT = Path(__file__).resolve().parents[2]
BUILDER = Path(sd15_checkpoint.__file__).resolve()
SEED = 0
CKPT_NAME = "dragondiff_random_sd15.safetensors"  # the name the models folder offers it under
SIZE = 512
STEPS = 4  # the Move's cross-branch attention starts at step 5: with 4 steps it is never active
GUIDANCE_END = 0.75  # of 4 steps: step 0 (first 20%) and step 2 (then every other step, s < round(0.75 * 4))
GUIDED = 2
DX, DY = 96, -32
PHOTO, MASK = "dragon_sd15_photo.png", "dragon_sd15_mask.png"
BUILD_TIMEOUT = 1800.0
READY_TIMEOUT = 120.0
RUN_TIMEOUT = 1800.0
# ComfyUI on CPU picks sub-quadratic attention; every CUDA install uses PyTorch's SDPA, which on these 2
# cores is ~5x faster per 4096-token attention (0.25 s vs 1.5 s forward, 0.9 s vs 2.4 s with backward).
# $DRAGONDIFF_SD15_ATTENTION=default keeps ComfyUI's own choice.
SERVER_ATTENTION = [] if os.environ.get("DRAGONDIFF_SD15_ATTENTION") == "default" else ["--use-pytorch-cross-attention"]
# SD1.5 at 512x512 (latent 64x64): decoder self-attentions in output blocks 3..11, features of blocks 6 and 9
SD15_KV_LAYERS = 9


def _threads() -> str:
    return os.environ.get("OMP_NUM_THREADS") or "1"


# -- the checkpoint ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sd15_checkpoint_info(comfyui_path) -> SimpleNamespace:
    """The random SD1.5 checkpoint (built by a subprocess with ComfyUI's Python if it is not cached)
    and what ComfyUI detected when loading it. Attributes: ``path``, ``built`` (the build report, None
    when cached), ``verify`` (the load report), ``seconds`` (the subprocess's wall time)."""
    cmd = [sys.executable, str(BUILDER), "--comfyui", str(comfyui_path), "--seed", str(SEED), "--verify"]
    env = {**os.environ, "OMP_NUM_THREADS": _threads(), "MKL_NUM_THREADS": _threads(), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"building/checking the random SD1.5 checkpoint took over {BUILD_TIMEOUT:.0f} s: {' '.join(cmd)}\n"
                    f"{(e.stdout or '')[-3000:]}\n{(e.stderr or '')[-3000:]}", pytrace=False)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        pytest.fail(f"building/checking the random SD1.5 checkpoint failed (status {proc.returncode}): "
                    f"{' '.join(cmd)}\n--- stdout ---\n{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-8000:]}",
                    pytrace=False)
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines()
             if line.split(" ", 1)[0] in ("BUILT", "PATH", "VERIFY")}
    built = json.loads(lines["BUILT"]) if "BUILT" in lines else None
    info = SimpleNamespace(path=Path(lines["PATH"]), built=built, verify=json.loads(lines["VERIFY"]), seconds=seconds)
    what = (f"built in {built['total_s']:.0f} s (weights initialised in {built['init_s']:.0f} s)" if built
            else "cached")
    print(f"\n[sd15 checkpoint] {info.path} ({info.path.stat().st_size / 2**30:.2f} GiB): {what}; loaded back by "
          f"ComfyUI in {info.verify['load_s']:.0f} s; subprocess {seconds:.0f} s")
    return info


@pytest.fixture(scope="session")
def sd15_models_dir(sd15_checkpoint_info, tmp_path_factory) -> Path:
    """A ComfyUI models folder whose ``checkpoints/`` offers the random checkpoint (a symlink to the
    cached file) as CKPT_NAME."""
    base = tmp_path_factory.mktemp("sd15_models")
    (base / "checkpoints").mkdir()
    (base / "checkpoints" / CKPT_NAME).symlink_to(sd15_checkpoint_info.path)
    return base


def test_random_checkpoint_is_detected_as_sd15(sd15_checkpoint_info):
    v = sd15_checkpoint_info.verify
    assert 1.9e9 < v["bytes"] < 2.3e9, v["bytes"]  # fp16 UNet + CLIP-L + VAE
    assert (v["model_class"], v["config_class"], v["model_type"]) == ("BaseModel", "SD15", "EPS"), v
    assert v["unet_config_diff"] == {}, f"detected UNet config differs from SD1.5's: {v['unet_config_diff']}"
    assert v["unet_parameters"] == 859_520_964  # SD1.5's UNet
    assert (v["latent_channels"], v["latent_format"], v["scale_factor"]) == (4, "SD15", 0.18215), v
    assert (v["clip_class"], v["tokenizer_class"], v["clip_width"]) == ("SD1ClipModel", "SD1Tokenizer", 768), v
    assert v["cond_shape"] == [1, 77, 768]
    assert (v["vae_latent_channels"], v["vae_downscale"]) == (4, 8)
    assert v["vae_latent_shape"] == [1, 4, 8, 8] and v["vae_decoded_shape"] == [1, 64, 64, 3]
    assert v["unet_output_shape"] == [1, 4, 8, 8]
    assert all(v["finite"].values()), v["finite"]
    assert v["load_warnings"] == [], v["load_warnings"]  # no missing / unexpected keys
    # sensible scales: O(1) text tokens and UNet eps; VAE latents with SD's statistics (std ~ 1 / 0.18215
    # before the scale factor, as the real VAE's; a flat 0.02 init gave 0.03)
    assert 0.5 < v["std"]["cond"] < 2 and 0.1 < v["std"]["unet_eps"] < 10, v
    assert 2 < v["std"]["vae_latent"] < 12, v


# -- the server ----------------------------------------------------------------------------------------


def _vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field (VmHWM: peak RSS, VmRSS) in bytes; -1 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


@pytest.fixture(scope="module")
def sd15_server(tmp_path_factory, comfyui_path, sd15_models_dir):
    """The HTTP suite's server (``test_http_server.run_server``) with the random checkpoint in a
    models folder added through --extra-model-paths-config."""
    pytest.importorskip("aiohttp", reason="the server is driven over the websocket with aiohttp")
    pytest.importorskip("PIL", reason="the test photo is drawn and the result read with Pillow")
    with hs.run_server(comfyui_path, tmp_path_factory.mktemp("comfy_sd15"),
                       models={"checkpoints": sd15_models_dir / "checkpoints"}, extra_args=tuple(SERVER_ATTENTION),
                       threads=_threads(), stop_timeout=30.0) as srv:
        yield srv


# -- the photo, the mask, the prompt ---------------------------------------------------------------------


def _photo_and_mask(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 'photo' (a shaded red ball on a table in front of a wall, with grain) and the ball's mask."""
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    wall = np.stack([0.55 + 0.1 * xx, 0.6 + 0.05 * yy, 0.7 - 0.1 * xx], -1)
    table = np.stack([0.45 - 0.1 * yy, 0.3 - 0.05 * yy, 0.2 + 0 * yy], -1)
    horizon = 0.62
    img[:] = np.where((yy < horizon)[..., None], wall, table)
    img[np.abs(yy - horizon) < 0.006] *= 0.5  # the table's edge
    cx, cy, r = 0.36, 0.5, 0.14
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    ball = d < r
    shade = np.clip(1.0 - 1.6 * np.sqrt((xx - cx + 0.05) ** 2 + (yy - cy + 0.05) ** 2) / r * 0.5, 0.25, 1.0)
    img[ball] = np.stack([0.85 * shade, 0.12 * shade, 0.1 * shade], -1)[ball]
    shadow = (np.abs(yy - (cy + r + 0.005)) < 0.012) & (np.abs(xx - cx) < r) & ~ball
    img[shadow] *= 0.6
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    mask = (d < r + 0.01).astype(np.float32)  # the ball with a small margin
    return (img * 255).round().astype(np.uint8), (mask * 255).astype(np.uint8)


def _write_inputs(server) -> None:
    from PIL import Image

    photo, mask = _photo_and_mask()
    Image.fromarray(photo).save(server.dirs["input"] / PHOTO)
    Image.fromarray(np.repeat(mask[..., None], 3, -1)).save(server.dirs["input"] / MASK)


def move_prompt(prefix: str) -> dict:
    """The API equivalent of workflows/dragon_move_sd15.json, with the object's mask wired (Load Image
    + Image To Mask) instead of a selection drawn in the editor, 4 steps and 2 guided steps."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT_NAME}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a red ball on a table",
                                                           "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "photo": {"class_type": "LoadImage", "inputs": {"image": PHOTO}},
        "scale": {"class_type": "ImageScale", "inputs": {"image": ["photo", 0], "upscale_method": "lanczos",
                                                         "width": SIZE, "height": SIZE, "crop": "center"}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["scale", 0], "vae": ["ckpt", 2]}},
        "inv": {"class_type": "DragonDiff_Inversion", "inputs": {"model": ["ckpt", 0], "latent": ["enc", 0],
                                                                 "positive": ["pos", 0], "steps": STEPS,
                                                                 "attention_per_block": 2, "storage": "int8"}},
        "mask_img": {"class_type": "LoadImage", "inputs": {"image": MASK}},
        "mask": {"class_type": "ImageToMask", "inputs": {"image": ["mask_img", 0], "channel": "red"}},
        "move": {"class_type": "DragonDiff_MoveEdit", "inputs": {"mask": ["mask", 0], "dx": DX, "dy": DY,
                                                                 "scale": 1.0, "image": ["scale", 0],
                                                                 "selection": ""}},
        "sampler": {"class_type": "DragonDiff_GuidedSampler",
                    "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                               "memory": ["inv", 1], "edit": ["move", 0], "seed": 0, "cfg": -1.0,
                               "energy_scale": -1.0, "guidance_end": GUIDANCE_END, "flexibility": -1.0,
                               "cross_attention": True}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": prefix}},
    }


def _check_inputs_exist(prompt: dict, object_info: dict) -> None:
    """Every input the prompt sets is one the server's node definition has (a renamed input would
    otherwise be ignored silently or reported far from here)."""
    for nid, node in prompt.items():
        spec = object_info.get(node["class_type"])
        assert spec is not None, f"{nid}: the server has no node {node['class_type']}"
        known = set(spec["input"].get("required", {})) | set(spec["input"].get("optional", {}))
        unknown = set(node["inputs"]) - known
        assert not unknown, f"{nid} ({node['class_type']}): no inputs {sorted(unknown)}; it has {sorted(known)}"


def _failure(server, run) -> str:
    err = run.status_message("execution_error") or run.status_message("execution_interrupted") or {}
    tb = "".join(err.get("traceback", []))
    return (f"prompt {run.prompt_id} failed in {err.get('node_type')} (node {err.get('node_id')}): "
            f"{err.get('exception_type')}: {err.get('exception_message')}\n--- traceback ---\n{tb}\n"
            f"--- inputs ---\n{json.dumps(err.get('current_inputs'), default=str)[:3000]}")


def _node_times(run, prompt: dict) -> list[tuple[str, float]]:
    """(node id, seconds) from the websocket 'executing' messages: each node runs until the next
    starts (the last one until the prompt's terminal message)."""
    starts = [(t, (m.get("data") or {}).get("node")) for t, m in run.messages
              if m["type"] == "executing" or m["type"] in hs.TERMINAL_EVENTS]
    return [(node, t1 - t0) for (t0, node), (t1, _) in zip(starts, starts[1:]) if node in prompt]


def _peak_after(samples: list[tuple[str, int]], node: str, final: int) -> int:
    """VmHWM at the first sample taken after ``node`` stopped running (the final peak if none)."""
    seen = False
    for running, hwm in samples:
        if running == node:
            seen = True
        elif seen:
            return hwm
    return final


def test_sd15_move_over_http(sd15_server):
    server = sd15_server
    prompt = move_prompt("dragon_sd15_random_move")
    _check_inputs_exist(prompt, server.object_info)
    assert CKPT_NAME in server.object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0], \
        "the models folder's checkpoint is not offered by CheckpointLoaderSimple"
    _write_inputs(server)
    pid = server.proc.pid
    rss_before = _vm(pid, "VmHWM")
    log_before = len(server.log())
    samples: list[tuple[str, int]] = []  # (node running, VmHWM) at each executing / progress message

    async def sample_memory(session, prompt_id, m):
        if m["type"] in ("executing", "progress") and (m.get("data") or {}).get("node"):
            samples.append((m["data"]["node"], _vm(pid, "VmHWM")))

    t0 = time.monotonic()
    run = hs.execute(server, prompt, sample_memory, timeout=RUN_TIMEOUT)
    wall = time.monotonic() - t0
    peak, rss_after = _vm(pid, "VmHWM"), _vm(pid, "VmRSS")
    log = server.log()[log_before:]
    times = _node_times(run, prompt)
    print(f"\n[sd15 move] wall {wall:.1f} s for the prompt; server peak RSS (VmHWM) {peak / 2**30:.2f} GiB "
          f"(after startup {rss_before / 2**30:.2f} GiB, RSS now {rss_after / 2**30:.2f} GiB); "
          f"OMP_NUM_THREADS={_threads()}")
    print("[sd15 move] per node (seconds, peak RSS so far when the next node started): " + ", ".join(
        f"{prompt[n]['class_type']} {s:.1f} s {_peak_after(samples, n, peak) / 2**30:.2f} GiB" for n, s in times))
    for line in log.splitlines():
        if "DragonDiffusion" in line:
            print("[sd15 move] server: " + line.strip()[:600])

    if run.status["status_str"] != "success" or not run.status["completed"]:
        server.fail(_failure(server, run))
    assert run.node_errors == {}, run.node_errors
    assert not run.events("execution_error")
    executed = {m["data"]["node"] for _, m in run.messages if m["type"] == "executing" and m["data"]["node"]}
    assert executed == set(prompt), f"not executed: {sorted(set(prompt) - executed)}"
    assert run.status_message("execution_cached")["nodes"] == []  # a fresh server: nothing came from a cache

    info, img = hs.saved_image(server, run)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8, img.shape
    assert img.std() > 1, "the saved image is blank"

    # the Inversion logged its memory: SD1.5 at 512x512, 4 steps, every decoder self-attention
    m = re.search(r"DragonDiffusion Inversion: FeatureMemory: (\d+) steps, latent \(1, 4, 64, 64\), (\d+) K/V layers.*?"
                  r"Total ([\d.]+) MiB \(K/V ([\d.]+), features ([\d.]+), trajectory ([\d.]+)\)", log)
    assert m, "the Inversion did not log its memory size" + server.log_tail()
    steps, layers, total, kv, feats, traj = int(m[1]), int(m[2]), *map(float, m.group(3, 4, 5, 6))
    assert (steps, layers) == (STEPS, SD15_KV_LAYERS), m[0]
    # int8 storage: the decoder's norm1(x) inputs (6.88 M values a step) and features h@6 + h@9 (3.9 M)
    assert 0.9 * STEPS * 6.56 < kv < 1.2 * STEPS * 6.56 and 0.9 * STEPS * 3.75 < feats < 1.2 * STEPS * 3.75, m[0]
    assert abs(total - (kv + feats + traj)) < 0.05, m[0]
    print(f"[sd15 move] Inversion memory: {total:.1f} MiB for {steps} steps (K/V {kv:.1f}, features {feats:.1f}, "
          f"trajectory {traj:.2f})")
    # the sampler ran the move with 2 guided passes
    g = re.search(r"DragonDiffusion Guided Sampler: move edit, (\d+) steps \((\d+) guided passes\)", log)
    assert g and (int(g[1]), int(g[2])) == (STEPS, GUIDED), (g and g[0]) or server.log_tail()
