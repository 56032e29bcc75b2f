"""Faults and isolation in ComfyUI's real executor (a long-lived server's situation).

Checked:

* cache isolation: two different edits run back to back from one cached
  inversion (and both in one prompt) give bitwise the latents each gives alone
  on a fresh executor;
* resources: 20 consecutive edits in one process do not raise the peak RSS
  above the first edit's (the per-edit curve is printed with ``-s``); the
  DRAGON_MEMORY is freed once ComfyUI drops the prompt that made it from its
  cache (also after ComfyUI's own KSampler used a model patched with it);
* out of memory during guidance (simulated: the backend raises torch's
  OutOfMemoryError, or the CPU allocator's RuntimeError, on a guided pass) and
  during inversion: a clear error with what to change, raised as a
  ``torch.OutOfMemoryError`` so that ComfyUI frees its models; the next prompt runs;
* security at runtime: a whole edit, model loading included, runs with
  every socket connection refused and every pickle load refused; no node input
  is a file path, upload or file list (the pack accepts no paths at all).

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q -s
tests/integration/test_faults.py`` (skipped without ``COMFYUI_PATH``).
"""

from __future__ import annotations

import asyncio
import gc
import pickle
import socket
import sys
import time
import uuid
import warnings
import weakref
from pathlib import Path

import pytest
from graphs import guided_sampler, shapes_scene

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6


def _pack(name: str):
    """A module of the pack as ComfyUI loaded it (named after the folder's path)."""
    return sys.modules[f"{ROOT}.nodes.{name}"]


class _Keep:
    """Test-only output node: keeps a copy of a LATENT under a tag."""

    latents: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",), "tag": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def run(self, latent, tag):
        with torch.inference_mode(False):
            _Keep.latents[tag] = latent["samples"].clone()
        return ()


class _Watch:
    """Test-only output node: holds only a weak reference to a DRAGON_MEMORY."""

    refs: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"memory": ("DRAGON_MEMORY",), "tag": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def run(self, memory, tag):
        _Watch.refs[tag] = weakref.ref(memory)
        return ()


@pytest.fixture(scope="module")
def env(comfy_env):
    comfy_env.nodes.NODE_CLASS_MAPPINGS["DragonTest_Keep"] = _Keep
    comfy_env.nodes.NODE_CLASS_MAPPINGS["DragonTest_Watch"] = _Watch
    return comfy_env


def _run(env, prompt: dict, executor=None) -> None:
    """Validate and execute on ``executor`` (default: the session's); raise with ComfyUI's error."""
    executor = executor or env.executor
    pid = str(uuid.uuid4())
    valid = asyncio.run(env.execution.validate_prompt(pid, prompt, None))
    assert valid[0], valid[1:]
    executor.execute(prompt, pid, {}, valid[2])
    if not executor.success:
        errs = [d for e, d in executor.status_messages if e == "execution_error"]
        raise RuntimeError(errs[0]["exception_message"] if errs else "execution failed")


def _error(executor) -> dict:
    return next(d for e, d in executor.status_messages if e == "execution_error")


def _base(steps: int = STEPS, seed: int = 4) -> dict:
    return shapes_scene(seed, steps)


def _edit(name: str, node: dict, tag: str | None = None, **sampler) -> dict:
    """Edit node ``e_<name>``, its Guided Sampler ``s_<name>`` and a keeper of its LATENT."""
    return {f"e_{name}": node,
            f"s_{name}": guided_sampler(f"e_{name}", **{"flexibility": 0.0, **sampler}),
            f"k_{name}": {"class_type": "DragonTest_Keep", "inputs": {"latent": [f"s_{name}", 0],
                                                                     "tag": tag or name}}}


def _move(dx: int, dy: int = 0, scale: float = 1.0) -> dict:
    return {"class_type": "DragonDiff_MoveEdit", "inputs": {"mask": ["scene", 1], "dx": dx, "dy": dy,
                                                            "scale": scale}}


DRAG = {"class_type": "DragonDiff_DragEdit", "inputs": {"image": ["scene", 0], "points": "16,21,19,20",
                                                        "mask": ["scene", 1]}}


# ----------------------------------------------------------------------------------------------
# cache isolation
# ----------------------------------------------------------------------------------------------
def test_two_edits_back_to_back_from_one_inversion_equal_each_run_alone(env):
    a, b = _edit("a", _move(2, 1), "a"), _edit("b", DRAG, "b")
    alone = {}
    for name, edit in (("a", a), ("b", b)):  # each on a fresh executor: nothing cached
        _run(env, {**_base(), **edit}, env.execution.PromptExecutor(env.server, cache_type=False))
        alone[name] = _Keep.latents.pop(name)
    shared = env.execution.PromptExecutor(env.server, cache_type=False)
    runs = []
    for edit in (a, b, a, b):  # queued back to back; the inversion is cached after the first
        _run(env, {**_base(), **edit}, shared)
        cached = {n for e, d in shared.status_messages if e == "execution_cached" for n in d["nodes"]}
        runs.append(("inv" in cached, _Keep.latents.pop(next(iter(_Keep.latents)))))
    assert [c for c, _ in runs] == [False, True, True, True]
    for (_, got), name in zip(runs, "abab"):
        assert torch.equal(got, alone[name]), name
    # and both in one prompt, computed afresh (one inversion feeding both samplers)
    _run(env, {**_base(), **a, **b}, env.execution.PromptExecutor(env.server, cache_type=False))
    assert torch.equal(_Keep.latents.pop("a"), alone["a"]) and torch.equal(_Keep.latents.pop("b"), alone["b"])
    assert not torch.equal(alone["a"], alone["b"])


# ----------------------------------------------------------------------------------------------
# resources
# ----------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


EDITS = 20
EDIT_STEPS = 10


def test_twenty_edits_do_not_grow_memory_beyond_the_first_edits_peak(env):
    if not Path("/proc/self/status").exists() or not _reset_peak():
        pytest.skip("needs Linux /proc to read and reset the peak RSS")
    base = _base(EDIT_STEPS, seed=8)  # one centred diamond: room for every move below
    _run(env, {**base, "k": {"class_type": "DragonTest_Keep", "inputs": {"latent": ["inv", 0], "tag": "inv"}}})
    _Keep.latents.clear()  # the model and the inversion are cached from here on
    peaks, rss, seconds, tensors = [], [], [], []
    for i in range(EDITS):
        dx, dy = [(2, 0), (-2, 0), (0, 2), (0, -2), (1, 1)][i % 5]
        g = {**base, **_edit("r", _move(dx, dy, 1.0 + 0.05 * (i // 5)), "rss")}
        _reset_peak()
        t = time.perf_counter()
        _run(env, g)
        seconds.append(time.perf_counter() - t)
        peaks.append(_status_kib("VmHWM") / 1024)
        rss.append(_status_kib("VmRSS") / 1024)
        _Keep.latents.clear()
        gc.collect()  # ComfyUI's prompt worker collects between prompts too
        with warnings.catch_warnings():  # isinstance() on some deprecated torch objects warns
            warnings.simplefilter("ignore")
            live = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
        tensors.append((len(live), sum(t.numel() * t.element_size() for t in live if not t.is_meta) / 2**20))
        del live
    print(f"\n{EDITS} edits ({EDIT_STEPS} steps, shapes model, ComfyUI executor), MiB after each edit:")
    print("  peak RSS during the edit:", " ".join(f"{p:.1f}" for p in peaks))
    print("  RSS after the edit:      ", " ".join(f"{r:.1f}" for r in rss))
    print("  live tensors (count/MiB):", " ".join(f"{n}/{m:.2f}" for n, m in tensors))
    print(f"  seconds per edit: {min(seconds):.2f}..{max(seconds):.2f}, total {sum(seconds):.1f}")
    # nothing accumulates: the same tensors are alive after every edit (the cached model, scene and memory)
    assert len({n for n, _ in tensors[1:]}) == 1, tensors
    slack = 8.0  # MiB of allocator noise (one-off arena growth of ~7 MiB was seen once)
    assert max(peaks[1:]) <= peaks[0] + slack, (peaks, rss)
    assert rss[-1] <= peaks[0] + slack, rss


def test_the_memory_is_freed_when_comfyui_drops_it_from_the_cache(env):
    g = _base(4, seed=9)
    g.update(_edit("m", _move(2), "freed"))
    g["watch"] = {"class_type": "DragonTest_Watch", "inputs": {"memory": ["inv", 1], "tag": "inv"}}
    # ComfyUI's own sampler on a model patched with the memory: the patch holds it too
    g["patched"] = {"class_type": "DragonDiff_CrossBranchAttention",
                    "inputs": {"model": ["model", 0], "memory": ["inv", 1], "mode": "concat", "start_step": 0,
                               "end_step": -1}}
    g["ks"] = {"class_type": "KSamplerAdvanced",
               "inputs": {"model": ["patched", 0], "add_noise": "disable", "noise_seed": 0, "steps": 4, "cfg": 1.0,
                          "sampler_name": "ddim", "scheduler": "ddim_uniform", "positive": ["scene", 2],
                          "negative": ["neg", 0], "latent_image": ["inv", 0], "start_at_step": 0,
                          "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    g["k_ks"] = {"class_type": "DragonTest_Keep", "inputs": {"latent": ["ks", 0], "tag": "ks"}}
    _run(env, g)
    _Keep.latents.clear()
    gc.collect()
    ref = _Watch.refs.pop("inv")
    assert ref() is not None  # cached: the next prompt with the same inversion reuses it
    # the next prompt has no such inversion: ComfyUI drops the cached outputs of the last one
    _run(env, {"model": g["model"], "scene": g["scene"],
               "keep": {"class_type": "DragonTest_Keep", "inputs": {"latent": ["lat", 0], "tag": "other"}},
               "vae": g["vae"], "lat": g["lat"]})
    gc.collect()
    if ref() is not None:
        holders = [type(r).__name__ for r in gc.get_referrers(ref())]
        pytest.fail(f"the memory outlived its prompt's cache; held by {holders}")


# ----------------------------------------------------------------------------------------------
# out of memory
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"),
], ids=["cuda", "cpu"])
def test_out_of_memory_during_guidance_is_a_clear_error_and_the_server_keeps_serving(env, monkeypatch, error):
    backend_cls = _pack("comfy_backend").ComfyBackend
    real = backend_cls.predict_eps
    calls = {"grad": 0}

    def predict_eps(self, z_t, t, cond, *, grad=False, **kw):
        if grad:  # every guided pass fails, as a too-large image would
            calls["grad"] += 1
            raise error
        return real(self, z_t, t, cond, grad=grad, **kw)

    g = {**_base(4, seed=11 if isinstance(error, torch.OutOfMemoryError) else 14), **_edit("o", _move(2), "oom")}
    monkeypatch.setattr(backend_cls, "predict_eps", predict_eps)
    with pytest.raises(RuntimeError) as e:
        _run(env, g)
    msg = str(e.value)
    assert calls["grad"] == 1
    assert msg.startswith("DragonDiffusion Guided Sampler: out of memory at step 1 of 4 (a guided step; 2 of the 4 "
                          "steps are guided) on a 32x32 latent."), msg
    assert "lower resolution" in msg and "guidance_end 0" in msg and "unload other models" in msg
    info = _error(env.executor)
    assert info["exception_type"].endswith("convert.OutOfMemory")  # a torch.OutOfMemoryError: ComfyUI frees models
    assert issubclass(_pack("convert").OutOfMemory, torch.OutOfMemoryError)
    # the server keeps serving: the same prompt runs once memory is there again
    monkeypatch.setattr(backend_cls, "predict_eps", real)
    _run(env, g)
    assert _Keep.latents.pop("oom").isfinite().all()


def test_out_of_memory_during_inversion_suggests_fewer_steps(env, monkeypatch):
    backend_cls = _pack("comfy_backend").ComfyBackend

    def predict_eps(self, *a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")

    monkeypatch.setattr(backend_cls, "predict_eps", predict_eps)
    with pytest.raises(RuntimeError) as e:
        _run(env, {**_base(7, seed=12), **_edit("i", _move(2), "inv-oom")})
    assert str(e.value).startswith("DragonDiffusion Inversion: out of memory inverting a 32x32 latent with 7 steps")
    assert "use fewer steps or a smaller image" in str(e.value)


# ----------------------------------------------------------------------------------------------
# security at runtime
# ----------------------------------------------------------------------------------------------
def test_an_edit_runs_with_the_network_and_pickle_refused(env, monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("network access at runtime")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    def no_pickle(*a, **kw):
        raise AssertionError("a pickle load at runtime")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    # a fresh executor: the model is loaded from its files again, the inversion and the edit run
    fresh = env.execution.PromptExecutor(env.server, cache_type=False)
    _run(env, {**_base(3, seed=13), **_edit("n", _move(2), "net")}, fresh)
    assert _Keep.latents.pop("net").isfinite().all()


def test_no_node_input_is_a_file_path_an_upload_or_a_file_list(env):
    """The pack's nodes accept no paths: nothing a prompt sends can name a file.
    STRING inputs are the points, the selections and the demo prompt (all parsed); combos are fixed
    lists of modes; nothing asks for an upload or lists a models/input folder."""
    import folder_paths

    extension = _pack("extension")
    files = set()
    for kind in ("checkpoints", "loras", "vae", "diffusion_models", "embeddings"):
        files |= set(folder_paths.get_filename_list(kind))
    files |= set(folder_paths.filter_files_content_types(
        [str(p.name) for p in Path(folder_paths.get_input_directory()).iterdir() if p.is_file()], ["image"]))
    strings = set()
    for node in extension.ALL_NODES:
        spec = env.nodes.NODE_CLASS_MAPPINGS[node.define_schema().node_id].INPUT_TYPES()
        for group in ("required", "optional"):
            for name, (typ, *opts) in spec.get(group, {}).items():
                options = opts[0] if opts else {}
                low = name.lower()
                assert not any(w in low for w in ("path", "file", "dir", "folder", "url")), (node, name)
                assert not any(k for k in options if "upload" in k.lower()), (node, name, options)
                if isinstance(typ, list) or typ == "COMBO":
                    values = typ if isinstance(typ, list) else options.get("options", [])
                    assert not set(values) & files and all("/" not in v and "\\" not in v for v in values), \
                        (node, name, values)
                if typ == "STRING":
                    strings.add(name)
    assert strings == {"points", "prompt", "selection", "reference_selection", "region"}


def test_a_memory_of_two_images_is_refused_as_base_and_as_reference(env):
    """The Inversion node refuses batches, so only code can make such a memory; the sampler
    still refuses it by name (base memory, appearance reference)."""
    from dragon_core.edits import Appearance
    from dragon_core.memory import MemoryPolicy, default_feature_levels, invert_with_memory
    from dragon_demo.shapes_world import random_scene

    shapes_comfy, sampler_nodes = _pack("shapes_comfy"), _pack("sampler_nodes")
    scene = random_scene(8)
    model = _pack("demo_nodes").ShapesModelLoader.execute().args[0]
    cond = shapes_comfy.encode_prompt(scene.prompt())
    x = torch.from_numpy(scene.render()).permute(2, 0, 1)[None].float() * 2 - 1
    with torch.inference_mode(False), torch.no_grad(), _pack("comfy_backend").ComfyBackend(model) as backend:
        policy = MemoryPolicy(feature_levels=default_feature_levels(backend.decoder_levels()))
        one = invert_with_memory(backend, x, cond, steps=2, spacing="comfy_uniform", policy=policy,
                                 model_id=_pack("model_info").model_identity(model))
        two = invert_with_memory(backend, x.repeat(2, 1, 1, 1), cond, steps=2, spacing="comfy_uniform",
                                 policy=policy, model_id=one.model_id)
    mask = torch.from_numpy(scene.masks()[0].astype("float32"))
    settings = dict(seed=0, cfg=-1.0, energy_scale=-1.0, guidance_end=-1.0, flexibility=0.0, cross_attention=True)
    run = sampler_nodes.GuidedSampler.execute
    with torch.inference_mode():
        with pytest.raises(ValueError) as e:
            run(model, cond, cond, two, _pack("edit_nodes").MoveEdit.execute(mask[None], 2, 0, 1.0).args[0],
                **settings)
        assert str(e.value) == ("DragonDiffusion Guided Sampler: memory: edits need a memory of one image (batch 1), "
                                "got batch 2")
        with pytest.raises(ValueError) as e:
            run(model, cond, cond, one, Appearance(mask, two, mask), **settings)
        assert str(e.value) == ("DragonDiffusion Guided Sampler: reference: edits need a memory of one image "
                                "(batch 1), got batch 2")
