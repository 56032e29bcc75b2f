"""The shipped SD1.5 workflows on a real ComfyUI server, with a random-weight SD1.5 checkpoint.

No Stable Diffusion weights can be downloaded here, so ``sd15_checkpoint.py`` (next to this
file) builds a seeded random-weight checkpoint in SD1.5's single-file layout with ComfyUI's own
model classes and save path (about 2 GB, cached in ``~/.cache/dragondiffusion-tests/``, never in
the repository; ``$DRAGONDIFF_TEST_CACHE`` moves the cache). The images it makes are noise: this
checks that the real model's shapes, dtypes and sizes go through the pack, and measures time and
memory, not quality.

* ``test_random_checkpoint_is_detected_as_sd15``: ``comfy.sd.load_checkpoint_guess_config``
  (what CheckpointLoaderSimple calls) detects SD1.5: the SD15 config with SD1.5's UNet config,
  eps prediction, 4 latent channels, CLIP-L (768-wide tokens), the KL-f8 VAE; no warnings.
* ``test_sd15_workflow_over_http[<workflow>]``: ``main.py --cpu`` with this pack in a
  custom_nodes folder and a models folder holding the checkpoint (both through
  ``--extra-model-paths-config``). Each shipped ``workflows/*_sd15.json`` gets what its Note asks
  of a user, as the editor writes it into the widgets (the checkpoint, the 512x512 photos drawn
  here in Load Image, a box selection around the ball, the arrow or scale, handle -> target
  points and a brushed region), 4 Inversion steps and guidance_end 0.75 (steps 0 and 2 guided); it
  is converted to the API prompt the frontend sends (widget order from the server's
  /object_info) and run. Checked: every node executed, no error, a 512x512 image saved, every
  memory node's memory size logged (SD1.5's numbers at 512x512; the Generate with Memory node's
  with both CFG branches' K/V), 4 guided passes (step 2 three times: time travel), and when
  cross-branch attention read the memory
  (appearance and paste: every step; move, resize and drag start at step 5, so in 4 steps it
  never does, and the node warns). The wall time,
  per-node times and the server's peak RSS (VmHWM, reset before each workflow) are printed.
  ``DRAGONDIFF_SD15_ALL=1`` runs all six (the capture one generates
  its picture in 4 steps instead of loading a photo).

* ``test_sd15_move_in_the_browser`` (the one SD1.5 run in CI): the move workflow opened from the
  template route in chromium, the checkpoint and photo picked, a box dragged around the ball in the
  Move / Resize editor on the 512x512 photo and the ball dragged 96 px right and 32 up, Run; the
  frontend's own prompt is checked (selection, dx, dy, checkpoint) and the run as above.

The server runs with ``--use-pytorch-cross-attention`` (what CUDA installs use; ComfyUI's CPU
default, sub-quadratic attention, made the move prompt 1.5x slower and its peak 11.0 instead of
7.7 GiB; ``DRAGONDIFF_SD15_ATTENTION=default`` restores it).

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=2 python -m pytest -q -s
tests/integration/test_sd15_checkpoint.py`` with ComfyUI's Python. On 2 CPU cores: about 30 s to
build the checkpoint the first time and 25-55 s to load it back, 5-7 min for the move prompt;
peak RSS about 3.2 GB building, 6.8 GB checking the file, 7.7 GB in the server. Skipped without
``COMFYUI_PATH``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import pytest

import sd15_checkpoint
import test_http_server as hs  # the HTTP suite's helpers (ComfyServer, execute, saved_image), used read-only
import test_browser_editor as be  # the browser suite's helpers (page, editor, mouse), used read-only
from test_browser_editor import browser_tools  # noqa: F401  (the fixture: playwright and chromium, or a skip)
from workflow_spec import spec_from_object_info

ROOT = Path(__file__).resolve().parents[2]
BUILDER = Path(sd15_checkpoint.__file__).resolve()
SEED = 0
CKPT_NAME = "dragondiff_random_sd15.safetensors"  # the name the models folder offers it under
SIZE = 512
STEPS = 4  # the Move's cross-branch attention starts at step 5: with 4 steps it is never active
GUIDANCE_END = 0.75  # of 4 steps: step 0 (first 20%) and step 2 (then every other step, s < round(0.75 * 4))
# guided passes: step 0, and step 2 three times (the paper's time travel: even steps 1.6 < s < 2.4 of 4)
GUIDED = 4
DX, DY = 96, -32
PHOTO, PHOTO2 = "dragon_sd15_photo.png", "dragon_sd15_other.png"
BUILD_TIMEOUT = 1800.0
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
    and what ComfyUI detected when loading it (see build_checkpoint)."""
    return build_checkpoint(BUILDER, comfyui_path, "SD1.5")


def build_checkpoint(builder: Path, comfyui_path: Path, model: str, timeout: float = BUILD_TIMEOUT) -> SimpleNamespace:
    """Run a checkpoint builder script (``sd15_checkpoint.py``'s command line) with --verify in a
    subprocess with ComfyUI's Python: the random ``model`` ("SD1.5") checkpoint, built if it is not
    cached, and what ComfyUI detected loading it. Attributes: ``path``, ``built`` (the build report,
    None when cached), ``verify`` (the load report), ``seconds`` (the subprocess's wall time)."""
    label = model.lower().replace(".", "")  # sd15, sdxl: the prefix of the printed lines
    cmd = [sys.executable, str(builder), "--comfyui", str(comfyui_path), "--seed", str(SEED), "--verify"]
    env = {**os.environ, "OMP_NUM_THREADS": _threads(), "MKL_NUM_THREADS": _threads(), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"building/checking the random {model} checkpoint took over {timeout:.0f} s: {' '.join(cmd)}\n"
                    f"{(e.stdout or '')[-3000:]}\n{(e.stderr or '')[-3000:]}", pytrace=False)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        pytest.fail(f"building/checking the random {model} checkpoint failed (status {proc.returncode}): "
                    f"{' '.join(cmd)}\n--- stdout ---\n{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-8000:]}",
                    pytrace=False)
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines()
             if line.split(" ", 1)[0] in ("BUILT", "PATH", "VERIFY")}
    built = json.loads(lines["BUILT"]) if "BUILT" in lines else None
    info = SimpleNamespace(path=Path(lines["PATH"]), built=built, verify=json.loads(lines["VERIFY"]), seconds=seconds)
    what = (f"built in {built['total_s']:.0f} s (weights initialised in {built['init_s']:.0f} s)" if built
            else "cached")
    print(f"\n[{label} checkpoint] {info.path} ({info.path.stat().st_size / 2**30:.2f} GiB): {what}; loaded back by "
          f"ComfyUI in {info.verify['load_s']:.0f} s; subprocess {seconds:.0f} s")
    return info


@pytest.fixture(scope="session")
def sd15_models_dir(sd15_checkpoint_info, tmp_path_factory) -> Path:
    """A ComfyUI models folder whose ``checkpoints/`` offers the random checkpoint as CKPT_NAME."""
    return models_folder(tmp_path_factory, "sd15_models", sd15_checkpoint_info.path, CKPT_NAME)


def models_folder(tmp_path_factory, folder: str, checkpoint: Path, ckpt_name: str) -> Path:
    """A new ComfyUI models folder whose ``checkpoints/`` offers ``checkpoint`` (a symlink to the
    cached file) as ``ckpt_name``."""
    base = tmp_path_factory.mktemp(folder)
    (base / "checkpoints").mkdir()
    (base / "checkpoints" / ckpt_name).symlink_to(checkpoint)
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


def _reset_peak(pid: int) -> None:
    """Start a new peak-RSS window for the process (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


@pytest.fixture(scope="module")
def sd15_server(tmp_path_factory, comfyui_path, sd15_models_dir):
    """The server with the random SD1.5 checkpoint (see checkpoint_server)."""
    with checkpoint_server(tmp_path_factory, comfyui_path, sd15_models_dir, "comfy_sd15") as srv:
        yield srv


@contextlib.contextmanager
def checkpoint_server(tmp_path_factory, comfyui_path: Path, models_dir: Path, folder: str) -> Iterator[hs.ComfyServer]:
    """The HTTP suite's server (``test_http_server.run_server``, in a new folder ``folder``) with the
    checkpoints of ``models_dir`` added through --extra-model-paths-config, SERVER_ATTENTION and
    $OMP_NUM_THREADS threads."""
    pytest.importorskip("aiohttp", reason="the server is driven over the websocket with aiohttp")
    pytest.importorskip("PIL", reason="the test photo is drawn and the result read with Pillow")
    with hs.run_server(comfyui_path, tmp_path_factory.mktemp(folder),
                       models={"checkpoints": models_dir / "checkpoints"}, extra_args=tuple(SERVER_ATTENTION),
                       threads=_threads(), stop_timeout=30.0) as srv:
        yield srv


# -- the photos and what a user does in each workflow ------------------------------------------------------


# (colour, centre x, centre y, radius) as fractions of the side: the photo being edited, and the second
# photo the appearance and paste workflows take the other object from
BALLS = {PHOTO: ((0.85, 0.12, 0.10), 0.36, 0.5, 0.14), PHOTO2: ((0.15, 0.25, 0.85), 0.64, 0.42, 0.12)}


def _photo(name: str, size: int = SIZE) -> np.ndarray:
    """A seeded 'photo' (a shaded ball on a table in front of a wall, with grain)."""
    colour, cx, cy, r = BALLS[name]
    rng = np.random.default_rng(SEED + (name == PHOTO2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    wall = np.stack([0.55 + 0.1 * xx, 0.6 + 0.05 * yy, 0.7 - 0.1 * xx], -1)
    table = np.stack([0.45 - 0.1 * yy, 0.3 - 0.05 * yy, 0.2 + 0 * yy], -1)
    horizon = 0.62
    img[:] = np.where((yy < horizon)[..., None], wall, table)
    img[np.abs(yy - horizon) < 0.006] *= 0.5  # the table's edge
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    ball = d < r
    shade = np.clip(1.0 - 1.6 * np.sqrt((xx - cx + 0.05) ** 2 + (yy - cy + 0.05) ** 2) / r * 0.5, 0.25, 1.0)
    img[ball] = (np.asarray(colour, np.float32) * shade[..., None])[ball]
    shadow = (np.abs(yy - (cy + r + 0.005)) < 0.012) & (np.abs(xx - cx) < r) & ~ball
    img[shadow] *= 0.6
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return (img * 255).round().astype(np.uint8)


def _ball_box(name: str, size: int = SIZE) -> tuple[int, int, int, int]:
    """The box a user drags around the photo's ball (x0, y0, x1, y1 in pixels, a few pixels of margin)."""
    _, cx, cy, r = BALLS[name]
    m = r + 0.01
    return tuple(int(round(v * size)) for v in (cx - m, cy - m, cx + m, cy + m))


def _write_inputs(server) -> None:
    from PIL import Image

    for name in BALLS:
        Image.fromarray(_photo(name)).save(server.dirs["input"] / name)


def _box(name: str, size: int = SIZE) -> str:
    return "box " + ",".join(map(str, _ball_box(name, size)))


# What each workflow's Note tells a user to do, as the widget values the editor writes. The photo's ball
# is at (184, 256), radius 72; the second photo's at (328, 215), radius 61.
USER_ACTIONS = {
    "dragon_move_sd15.json": {"DragonDiff_MoveEdit": dict(selection=_box(PHOTO), dx=DX, dy=DY)},
    "dragon_resize_sd15.json": {"DragonDiff_MoveEdit": dict(selection=_box(PHOTO), scale=1.3)},
    "dragon_drag_sd15.json": {"DragonDiff_DragEdit": dict(points="184,256,260,236",
                                                          region="brush 80 184,256 260,236")},
    "dragon_appearance_sd15.json": {"DragonDiff_AppearanceEdit": dict(selection=_box(PHOTO),
                                                                      reference_selection=_box(PHOTO2))},
    "dragon_paste_sd15.json": {"DragonDiff_PasteEdit": dict(selection=_box(PHOTO2), dx=50, dy=110, scale=0.9)},
    # generate (4 steps, the workflow's cfg 4) with the memory, then move a box of the generated picture
    "dragon_capture_move_sd15.json": {"DragonDiff_CaptureSample": dict(steps=STEPS),
                                      "DragonDiff_MoveEdit": dict(selection=_box(PHOTO), dx=DX, dy=DY)},
}
# every workflow here with DRAGONDIFF_SD15_ALL=1 (5-10 min each on 2 cores); CI runs the move workflow through
# the browser instead (test_sd15_move_in_the_browser: the same checks, the frontend's own prompt)
CI_WORKFLOWS: set[str] = set()


def _set_widgets(node: dict, spec: dict, **values) -> None:
    """Set a UI node's widgets by name, in the order the frontend stores them (a seed's
    control_after_generate and an image upload take one extra slot each)."""
    i, slots = 0, {}
    for name, _typ, _required, flags in spec["inputs"]:
        if "widget" in flags:
            slots[name] = i
            i += 1 + ("control_after_generate" in flags) + ("image_upload" in flags)
    for name, value in values.items():
        assert name in slots, f"{node['type']} has no widget {name}; it has {sorted(slots)}"
        node["widgets_values"][slots[name]] = value


def workflow_as_user(server, name: str, prefix: str, user_actions: dict | None = None,
                     ckpt_name: str = CKPT_NAME) -> dict:
    """The shipped UI workflow with what its Note asks for done (checkpoint, photos, the selection,
    arrow or points; a few steps), converted to the API prompt the frontend sends. ``user_actions``
    (node type -> widget values) replaces the workflow's USER_ACTIONS entry."""
    ui = json.loads((ROOT / "workflows" / name).read_text())
    specs = {t: spec_from_object_info(server.object_info[t]) for t in {n["type"] for n in ui["nodes"]}
             if t in server.object_info}
    photos = iter([PHOTO, PHOTO2])
    actions = {"CheckpointLoaderSimple": dict(ckpt_name=ckpt_name), "DragonDiff_Inversion": dict(steps=STEPS),
               "DragonDiff_GuidedSampler": dict(guidance_end=GUIDANCE_END), "SaveImage": dict(filename_prefix=prefix),
               **(USER_ACTIONS[name] if user_actions is None else user_actions)}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        if node["type"] == "LoadImage":  # the first is the photo being edited, a second one the other photo
            _set_widgets(node, specs["LoadImage"], image=next(photos))
        elif node["type"] in actions:
            _set_widgets(node, specs[node["type"]], **actions[node["type"]])
    return hs.ui_to_api(ui, server.object_info)


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


SD15_WORKFLOWS = sorted(USER_ACTIONS)
ALL_WORKFLOWS = os.environ.get("DRAGONDIFF_SD15_ALL") == "1"


@pytest.mark.parametrize("name", SD15_WORKFLOWS)
def test_sd15_workflow_over_http(sd15_server, name):
    if name not in CI_WORKFLOWS and not ALL_WORKFLOWS:
        pytest.skip(f"{name}: set DRAGONDIFF_SD15_ALL=1 to run every SD1.5 workflow over HTTP (5-10 min each on 2 "
                    f"cores); CI runs the move workflow in the browser (test_sd15_move_in_the_browser)")
    server = sd15_server
    tag = Path(name).stem.removeprefix("dragon_").removesuffix("_sd15")  # move, capture_move, ...
    prompt = workflow_as_user(server, name, f"dragon_random_{tag}")
    _check_inputs_exist(prompt, server.object_info)
    assert CKPT_NAME in server.object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0], \
        "the models folder's checkpoint is not offered by CheckpointLoaderSimple"
    _write_inputs(server)
    run, log = run_measured(server, prompt, f"sd15 {tag}")
    info, img = hs.saved_image(server, run)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8, img.shape
    assert img.std() > 1, "the saved image is blank"

    check_log(log, prompt, tag, server)


def run_measured(server, prompt: dict, label: str, timeout: float = RUN_TIMEOUT) -> tuple[hs.Run, str]:
    """Run a prompt from a cold start (models unloaded, caches freed) and check it ran: success, no
    error, every node executed. Prints (each line starting ``[label]``) the wall time, the server's
    peak RSS (VmHWM, reset before the prompt), the time of each node with the peak so far when it
    ended, and what the pack logged. Returns the run and the server log written during it."""
    hs.free_everything(server)  # each workflow from a cold start: its own peak, nothing cached
    pid = server.proc.pid
    _reset_peak(pid)
    rss_before = _vm(pid, "VmHWM")
    log_before = len(server.log())
    samples: list[tuple[str, int]] = []  # (node running, VmHWM) at each executing / progress message

    async def sample_memory(session, prompt_id, m):
        if m["type"] in ("executing", "progress") and (m.get("data") or {}).get("node"):
            samples.append((m["data"]["node"], _vm(pid, "VmHWM")))

    t0 = time.monotonic()
    run = hs.execute(server, prompt, sample_memory, timeout=timeout)
    wall = time.monotonic() - t0
    peak, rss_after = _vm(pid, "VmHWM"), _vm(pid, "VmRSS")
    log = server.log()[log_before:]
    times = _node_times(run, prompt)
    print(f"\n[{label}] wall {wall:.1f} s for the prompt; server peak RSS (VmHWM) {peak / 2**30:.2f} GiB "
          f"(before it {rss_before / 2**30:.2f} GiB, RSS now {rss_after / 2**30:.2f} GiB); "
          f"OMP_NUM_THREADS={_threads()}")
    print(f"[{label}] per node (seconds, peak RSS so far when the next node started): " + ", ".join(
        f"{prompt[n]['class_type']} {s:.1f} s {_peak_after(samples, n, peak) / 2**30:.2f} GiB" for n, s in times))
    for line in log.splitlines():
        if "DragonDiffusion" in line:
            print(f"[{label}] server: " + line.strip()[:600])

    if run.status["status_str"] != "success" or not run.status["completed"]:
        server.fail(_failure(server, run))
    assert run.node_errors == {}, run.node_errors
    assert not run.events("execution_error")
    executed = {m["data"]["node"] for _, m in run.messages if m["type"] == "executing" and m["data"]["node"]}
    assert executed == set(prompt), f"not executed: {sorted(set(prompt) - executed)}"
    return run, log


def check_log(log: str, prompt: dict, tag: str, server) -> None:
    """What the pack's nodes logged for one SD1.5 workflow run: every memory node's memory (SD1.5's
    sizes at 512x512), the sampler's guided passes, and when cross-branch attention read the memory."""
    # every memory node logged its memory: SD1.5 at 512x512, 4 steps, every decoder self-attention; a
    # memory captured while generating with cfg > 1 holds the K/V of both CFG branches
    makers = {"DragonDiff_Inversion": "Inversion", "DragonDiff_CaptureSample": "Generate with Memory"}
    nodes = [makers[v["class_type"]] for v in prompt.values() if v["class_type"] in makers]
    found = list(re.finditer(r"DragonDiffusion (Inversion|Generate with Memory): FeatureMemory: (\d+) steps, latent "
                             r"\(1, 4, 64, 64\), (\d+) K/V layers.*?Total ([\d.]+) MiB \(K/V ([\d.]+), features "
                             r"([\d.]+), trajectory ([\d.]+)\)", log))
    assert sorted(m[1] for m in found) == sorted(nodes), "a memory node did not log its memory size" + server.log_tail()
    for m in found:
        steps, layers, total, kv, feats, traj = int(m[2]), int(m[3]), *map(float, m.group(4, 5, 6, 7))
        assert (steps, layers) == (STEPS, SD15_KV_LAYERS), m[0]
        # int8 storage: the decoder's norm1(x) inputs (6.88 M values a step) and features h@6 + h@9 (3.9 M)
        branches = 2 if m[1] == "Generate with Memory" else 1
        assert 0.9 * STEPS * 6.56 * branches < kv < 1.2 * STEPS * 6.56 * branches, m[0]
        assert 0.9 * STEPS * 3.75 < feats < 1.2 * STEPS * 3.75, m[0]
        assert abs(total - (kv + feats + traj)) < 0.05, m[0]
        print(f"[sd15 {tag}] {m[1]} memory: {total:.1f} MiB for {steps} steps (K/V {kv:.1f}, features "
              f"{feats:.1f}, trajectory {traj:.2f})")
    check_sampler_log(log, tag, server)


def check_sampler_log(log: str, tag: str, server) -> None:
    """The sampler ran the edit (STEPS steps) with GUIDED guided passes, and said when cross-branch
    attention read the memory: move, resize and drag start it at step 5 (never in 4 steps: warned),
    appearance and paste at step 0. ``tag`` is the workflow's edit (move, capture_move, ...)."""
    g = re.search(r"DragonDiffusion Guided Sampler: (\w+) edit, (\d+) steps \((\d+) guided passes\), (.*?); ", log)
    assert g and (int(g[2]), int(g[3])) == (STEPS, GUIDED), (g and g[0]) or server.log_tail()
    late_attention = tag.split("_")[-1] in ("move", "resize", "drag")
    assert g[4].endswith("cross_attention on but never active" if late_attention else
                         f"cross_attention on (steps 0-{STEPS - 1})"), g[0]
    assert ("steps 4: cross-branch attention starts at step 5" in log) == late_attention


# -- the same in the browser: the editor on the 512x512 photo, the frontend's own prompt -----------------


def test_sd15_move_in_the_browser(browser_tools, sd15_server):  # noqa: F811
    """The move workflow as a user runs it: opened from the template browser's route, the checkpoint
    and photo picked in their combos, a box dragged around the ball in the Move / Resize editor (which
    shows the photo through the Resize node at 512x512), the ball dragged 96 px right and 32 up, Run.
    The frontend converts the graph to the prompt itself."""
    server = sd15_server
    _write_inputs(server)  # before the page lists the input files
    hs.free_everything(server)  # nothing cached from an earlier workflow here: every node runs
    with be.open_page(browser_tools, server) as pg:
        ids = be.load_graph(pg, hs.template(server, "dragon_move_sd15.json"))
        move_id, app = ids["DragonDiff_MoveEdit"], be.APP
        # the combos and numbers the Note names (as a pick in the combo menu does: value, then callback)
        for node_type, name, value in (("CheckpointLoaderSimple", "ckpt_name", CKPT_NAME), ("LoadImage", "image", PHOTO),
                                       ("DragonDiff_Inversion", "steps", STEPS),
                                       ("DragonDiff_GuidedSampler", "guidance_end", GUIDANCE_END)):
            pg.evaluate(f"""([id, name, value]) => {{ const w = {app}.graph.getNodeById(id).widgets.find(w => w.name === name);
                w.value = value; w.callback?.(value); }}""", [ids[node_type], name, value])
        be.show_node(pg, move_id, zoom=1.0)
        be.wait_picture(pg, move_id, f"filename={PHOTO}")
        assert pg.evaluate(f"() => {be.editor(move_id)}.frame()") == {"w": SIZE, "h": SIZE}
        x0, y0, x1, y1 = _ball_box(PHOTO)
        be.drag_box(pg, move_id, (x0 + 0.2, y0 + 0.2), (x1 - 0.2, y1 - 0.2))
        assert be.widget(pg, move_id, "selection") == _box(PHOTO)
        pg.wait_for_function(f"() => {be.editor(move_id)}.tool === 'move'")
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        be.drag_box(pg, move_id, (cx, cy), (cx + DX, cy + DY))
        assert [be.widget(pg, move_id, n) for n in ("dx", "dy", "scale")] == [DX, DY, 1]
        be.shot(pg, move_id, "sd15_move_selected_and_moved.png")

        _reset_peak(server.proc.pid)
        log_before = len(server.log())
        t0 = time.monotonic()
        sent, entry = be.run_and_wait(pg, server, timeout=RUN_TIMEOUT)
        wall, peak = time.monotonic() - t0, _vm(server.proc.pid, "VmHWM")
    print(f"\n[sd15 browser move] wall {wall:.1f} s from Run to the history entry; server peak RSS {peak / 2**30:.2f} GiB")
    executed = entry["prompt"][2]
    assert sent == executed
    inputs = executed[str(move_id)]["inputs"]
    assert {k: inputs[k] for k in ("selection", "dx", "dy", "scale")} == \
        {"selection": _box(PHOTO), "dx": DX, "dy": DY, "scale": 1}, inputs
    assert executed[str(ids["CheckpointLoaderSimple"])]["inputs"]["ckpt_name"] == CKPT_NAME
    cached = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and cached[0]["nodes"] == [], cached  # every node ran (the cache was freed)
    [img] = [i for out in entry["outputs"].values() for i in out.get("images", []) if i.get("type") == "output"]
    result = hs.view_image(server, img)
    assert result.shape == (SIZE, SIZE, 3) and result.std() > 1, result.shape
    check_log(server.log()[log_before:], executed, "move", server)
