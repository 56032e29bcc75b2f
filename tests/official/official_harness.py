"""Run the official DragonDiffusion code (MC-E/DragonDiffusion) on given weights and inputs.

This file runs INSIDE the official code's own venv (diffusers 0.18; see
.ci/setup_official_env.sh), as a subprocess of tests/official/. It never imports the
project's packages: it gets the UNet config and weights, the prompt embeddings and the
input images/masks as files, and writes each case's result latent as .npy plus a .json.

Nothing in the official checkout is edited. Everything it needs to run here is patched
from outside, in this process only (the list is in docs/official-agreement.md):

* stand-in modules in ``sys.modules`` for xformers (exact softmax attention), basicsr's
  ``img2tensor``, torchvision's ``PILToTensor``, pytorch_lightning's ``seed_everything``,
  dlib, scipy and transformers (empty: no faces, no CLIP);
* ``'cuda'`` -> CPU (``Tensor.to``/``Module.to``/``Tensor.cuda``), fp32 (``precision``);
* ``DragonModels``/``DragonPipeline``/``Sampler`` made with ``__new__`` (their constructors
  download SD1.5, CLIP, IP-Adapter and dlib data); the forked UNet and the feature estimator
  built from the given config and weights;
* the CLIP tokenizer/text encoder replaced by a table of the given prompt embeddings;
  the VAE by an identity in the official 0.18215 scaling (pixel-space model) or the
  test's latent stand-in; ``decode_latents`` returns the float latent (no uint8 rounding);
* ``resize_numpy_image`` -> identity (it rounds sides to multiples of 64), ``SIZES``
  divided by the VAE factor (8 in the official code) for a pixel-space model;
* no IP-Adapter: attn2 gets the official ``IPAttnProcessor`` with no image tokens (the
  same as ip_scale 0), attn1 the official ``AttnProcessor`` (what ``load_adapter`` sets);
* the regional-SDE noise (``torch.randn_like``) drawn from a generator seeded with the
  case's seed, the same stream the project's sampler draws from;
* face landmarks: ``align_face`` -> identity, ``get_landmark`` -> the case's points;
* the step count (``NUM_DDIM_STEPS``, ``edit(num_inference_steps=...)``) when a case asks
  for fewer than the demo's 50.

Optional measurement flags per case (``"flags"``), off by default:
``token_masks: "area"`` makes the masked attention's token masks area coverage >= 0.5
instead of nearest-pixel sampling; ``drag_copy: "clone"`` keeps the drag's start-latent patch
copy out of the inversion's last latent (see set_drag_copy).

Usage: python official_harness.py JOB.json   (JOB: {"official": path, "model": {...},
"embeddings": npz, "out": dir, "cases": [...]}).
"""

from __future__ import annotations

import importlib.machinery
import json
import random
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
_GEN: list[torch.Generator] = [torch.Generator().manual_seed(0)]
CALLS = {"unet": 0, "estimator": 0}


# --------------------------------------------------------------------------- stand-in modules
def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _memory_efficient_attention(q, k, v, attn_bias=None, **_):
    if attn_bias is not None:
        raise NotImplementedError("stand-in xformers: attn_bias")
    return F.scaled_dot_product_attention(q, k, v)  # (B*heads, N, d): softmax(q k^T / sqrt(d)) v


def _img2tensor(imgs, bgr2rgb=True, float32=True):
    """basicsr.utils.img2tensor: HWC numpy -> CHW tensor (BGR->RGB for 3 channels)."""
    import cv2

    def one(img):
        if img.shape[2] == 3 and bgr2rgb:
            img = cv2.cvtColor(img.astype(np.float32) if img.dtype == np.float64 else img, cv2.COLOR_BGR2RGB)
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return t.float() if float32 else t

    return [one(i) for i in imgs] if isinstance(imgs, list) else one(imgs)


def _tensor2img(*_a, **_k):
    raise NotImplementedError("stand-in basicsr: tensor2img is not used (decode_latents is replaced)")


class _PILToTensor:
    def __call__(self, pic):
        return torch.from_numpy(np.array(pic)).permute(2, 0, 1).contiguous()


def _seed_everything(seed: int) -> int:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    _GEN[0] = torch.Generator().manual_seed(int(seed))
    return seed


class _Placeholder:
    def __init__(self, *a, **k):
        raise RuntimeError("stand-in: not available in the differential test")

    @classmethod
    def from_pretrained(cls, *a, **k):
        raise RuntimeError("stand-in: no downloads in the differential test")


def install_stand_ins() -> None:
    xf = _module("xformers")
    xf.ops = _module("xformers.ops", memory_efficient_attention=_memory_efficient_attention)
    bs = _module("basicsr")
    bs.utils = _module("basicsr.utils", img2tensor=_img2tensor, tensor2img=_tensor2img)
    tv = _module("torchvision")
    tv.transforms = _module("torchvision.transforms", PILToTensor=_PILToTensor)
    _module("pytorch_lightning", seed_everything=_seed_everything)
    _module("dlib")
    sp = _module("scipy")  # src/utils/alignment.py (face alignment, replaced below)
    sp.ndimage = _module("scipy.ndimage")
    _module("transformers", CLIPTextModel=_Placeholder, CLIPTokenizer=_Placeholder,
            CLIPVisionModelWithProjection=_Placeholder, CLIPImageProcessor=_Placeholder)


# --------------------------------------------------------------------------- cuda -> cpu
def _cpu(dev):
    if isinstance(dev, str) and dev.startswith("cuda"):
        return "cpu"
    if isinstance(dev, torch.device) and dev.type == "cuda":
        return torch.device("cpu")
    return dev


def redirect_cuda() -> None:
    t_to, m_to = torch.Tensor.to, torch.nn.Module.to

    def tensor_to(self, *args, **kw):
        args = tuple(_cpu(a) for a in args)
        if "device" in kw:
            kw["device"] = _cpu(kw["device"])
        return t_to(self, *args, **kw)

    def module_to(self, *args, **kw):
        args = tuple(_cpu(a) for a in args)
        if "device" in kw:
            kw["device"] = _cpu(kw["device"])
        return m_to(self, *args, **kw)

    torch.Tensor.to = tensor_to
    torch.nn.Module.to = module_to
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.empty_cache = lambda: None


def seeded_randn_like(x, *a, **k):
    """The regional-SDE noise: the case's seeded stream (the project's sampler draws
    ``torch.randn(shape, generator=Generator().manual_seed(seed))`` in the same order)."""
    return torch.randn(x.shape, generator=_GEN[0]).to(x.device, x.dtype)


# --------------------------------------------------------------------------- text and VAE
class _Ids:
    def __init__(self, ids: torch.Tensor) -> None:
        self.input_ids = ids


class PromptTable:
    """Tokenizer + text encoder stand-in: a prompt's 'token' is its row in a table of
    embeddings given by the test (the project's prompt encoder's outputs)."""

    model_max_length = 77

    def __init__(self, prompts: list[str], emb: torch.Tensor, alias: dict[str, str]) -> None:
        self.prompts, self.emb, self.alias = list(prompts), emb, alias

    def __call__(self, prompt, **_):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        return _Ids(torch.tensor([[self.prompts.index(self.alias.get(p, p))] for p in prompts]))

    def encode(self, ids: torch.Tensor):
        return (self.emb[ids[:, 0]],)


class _Dist:
    def __init__(self, mean: torch.Tensor) -> None:
        self.mean = mean

    def __getitem__(self, key):
        return {"latent_dist": self}[key]


class StandInVAE(torch.nn.Module):
    """Identity (pixel-space model: latent = image in [-1, 1]) or the test's latent map,
    both in the official 0.18215 scaling (``image2latent`` multiplies by it)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def encode(self, image: torch.Tensor):
        if self.kind == "pixel":
            z = image
        else:
            sys.path.insert(0, str(HERE))
            from latent_vae import encode  # the test side's stand-in encoder (torch only)

            z = encode(image.float())
        return _Dist(z / 0.18215)


# --------------------------------------------------------------------------- building the models
def build(job: dict):
    off = str(Path(job["official"]).resolve())
    if off not in sys.path:
        sys.path.insert(0, off)
    install_stand_ins()
    redirect_cuda()
    from safetensors.torch import load_file
    from diffusers import DDIMScheduler

    import src.demo.model as demo_model
    from src.models.dragondiff import DragonPipeline
    from src.models.Sampler import Sampler
    from src.unet.attention_processor import AttnProcessor, IPAttnProcessor
    from src.unet.estimator import MyUNet2DConditionModel
    from src.unet.unet_2d_condition import DragonUNet2DConditionModel

    m = job["model"]
    cfg = dict(m["unet_config"])
    weights = {k: v.float() for k, v in load_file(m["unet_weights"]).items()}

    unet = DragonUNet2DConditionModel.from_config(dict(cfg, use_sc_attn=True, use_st_attn=False, st_attn_idx=0))
    missing, unexpected = unet.load_state_dict(weights, strict=False)
    # Downsample2D/Upsample2D keep the same conv under two names (conv and Conv2d_0)
    bad = [k for k in missing if ".Conv2d_0." not in k] + list(unexpected)
    if bad:
        raise RuntimeError(f"official UNet: weights do not fit: {bad[:5]}")
    estimator = MyUNet2DConditionModel.from_config(cfg)
    estimator.load_state_dict(weights, strict=True)
    unet.eval().requires_grad_(False)
    estimator.eval().requires_grad_(False)

    # what DragonPipeline.load_adapter sets, without the adapter's weights: no image tokens reach
    # attn2 (the context is <= 77 tokens), so its IP branch never runs (= ip_scale 0)
    procs = {}
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            procs[name] = AttnProcessor()
        else:
            # its image-token projections (sized by the layer's width) are never used here
            width = unet.get_submodule(name.rsplit(".", 1)[0]).to_q.out_features
            procs[name] = IPAttnProcessor(hidden_size=width, cross_attention_dim=cfg["cross_attention_dim"],
                                          scale=0.1, num_tokens=64)
    unet.set_attn_processor(procs)

    data = np.load(job["embeddings"])
    prompts = json.loads(str(data["prompts"]))
    table = PromptTable(prompts, torch.from_numpy(data["emb"]).float(), {})

    def counted(module, key):
        fwd = module.forward

        def forward(*a, **k):
            CALLS[key] += 1
            return fwd(*a, **k)

        module.forward = forward

    counted(unet, "unet")
    counted(estimator, "estimator")

    pipe = Sampler.__new__(Sampler)
    for k, v in dict(unet=unet, estimator=estimator, vae=StandInVAE(m.get("vae", "pixel")), tokenizer=table,
                     text_encoder=table.encode).items():
        object.__setattr__(pipe, k, v)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)
    object.__setattr__(pipe, "scheduler", sched)
    type.__setattr__(Sampler, "device", property(lambda self: torch.device("cpu")))

    editor = DragonPipeline.__new__(DragonPipeline)
    editor.pipe, editor.NUM_DDIM_STEPS, editor.precision, editor.ip_id = pipe, 50, torch.float32, None
    editor.decode_latents = lambda z: z[0].permute(1, 2, 0).detach().float().numpy()[:, :, ::-1]
    empty = torch.zeros(1, 0, cfg["cross_attention_dim"])
    editor.get_image_embeds = lambda _img: (empty, empty)
    editor.load_adapter = lambda path, scale: None  # no adapter weights; its image tokens are empty anyway

    models = demo_model.DragonModels.__new__(demo_model.DragonModels)
    models.ip_scale, models.precision, models.editor = 0.1, torch.float32, editor
    models.up_ft_index, models.up_scale, models.device, models.face_predictor = [1, 2], 2, "cpu", None

    demo_model.resize_numpy_image = lambda image, *a, **k: (image, 1.0)
    factor = float(m.get("vae_factor", 8))
    demo_model.SIZES = {k: v * factor / 8 for k, v in {0: 4, 1: 2, 2: 1, 3: 1}.items()}
    demo_model.align_face = lambda img, predictor, size: img
    torch.randn_like = seeded_randn_like
    return models, demo_model


def set_token_masks(mode: str) -> None:
    """Measurement flag: the masked attention's token masks by nearest-pixel sampling (the
    official code) or by area coverage >= 0.5 (the project's)."""
    import src.unet.attention_processor as ap

    if mode == "nearest":
        ap.F = F
        return

    class Area:
        def __getattr__(self, name):
            return getattr(F, name)

        @staticmethod
        def interpolate(x, size=None, **_):
            # the caller thresholds with > 0.5 (inside) / < 0.5 (outside): coverage >= 0.5 is inside
            return F.adaptive_avg_pool2d(x, size) + 1e-6

    ap.F = Area()


_PROCESS_DRAG: list = []


def set_drag_copy(demo_model, mode: str) -> None:
    """Measurement flag: ``process_drag`` copies the handle patches into ``latent_in`` in place,
    and ``latent_in`` is a view of the inversion's last latent, so the copy also reaches the
    step-0 reference latent of the guidance ("in_place", the official code); "clone" hands it a
    copy, leaving the inversion untouched."""
    if not _PROCESS_DRAG:
        _PROCESS_DRAG.append(demo_model.process_drag)
    orig = _PROCESS_DRAG[0]
    demo_model.process_drag = orig if mode == "in_place" else (
        lambda latent_in, **kw: orig(latent_in=latent_in.clone(), **kw))


_EDIT: list = []


def set_steps(models, steps: int) -> None:
    """The step count: DragonPipeline's NUM_DDIM_STEPS (inversion) and Sampler.edit's
    num_inference_steps (the demo uses their defaults, 50). Its step windows (guidance i < 30,
    SDE 10 < i < 20, time travel 20 < i < 30, attention from 5 / up to 35) stay as written."""
    from src.models.Sampler import Sampler

    if not _EDIT:
        _EDIT.append(Sampler.edit)
    edit = _EDIT[0]
    models.editor.NUM_DDIM_STEPS = steps
    Sampler.edit = lambda self, *a, **k: edit(self, *a, **dict(k, num_inference_steps=steps))


# --------------------------------------------------------------------------- cases
def _load(job_dir: Path, name: str | None):
    return None if name is None else np.load(job_dir / name)


def run_case(models, demo_model, case: dict, job_dir: Path):
    p, kind = case["params"], case["kind"]
    img = _load(job_dir, case["image"])
    mask = _load(job_dir, case.get("mask"))
    set_token_masks(case.get("flags", {}).get("token_masks", "nearest"))
    set_steps(models, case.get("steps", 50))
    set_drag_copy(demo_model, case.get("flags", {}).get("drag_copy", "in_place"))
    common = dict(seed=case["seed"], guidance_scale=p["cfg"], energy_scale=p["energy"], max_resolution=0,
                  SDE_strength=p["sde"])
    if kind == "move":
        x, y = p["point"]
        pts = [[x, y], [x + p["dx"], y + p["dy"]]]
        out = models.run_move(img, np.repeat(mask[:, :, None], 3, 2), None, case["prompt"], p.get("resize", 1.0),
                              p["w_edit"], p["w_content"], p["w_contrast"], p["w_inpaint"], selected_points=pts, **common)
    elif kind == "drag":
        pts = [list(q) for pair in zip(p["handles"], p["targets"]) for q in pair]
        out = models.run_drag(img, mask, case["prompt"], p["w_edit"], p["w_content"], p["w_inpaint"],
                              selected_points=pts, **common)
    elif kind == "landmark":
        # run_drag_face's fixed prompt 'a photo of a human face' reads as the case's prompt
        models.editor.pipe.tokenizer.alias = {"a photo of a human face": case["prompt"]}
        queue = [list(map(tuple, p["handles"])), list(map(tuple, p["targets"]))]
        demo_model.get_landmark = lambda image, predictor: queue.pop(0)
        out = models.run_drag_face(img, img.copy(), p["w_edit"], p["w_inpaint"], **common)
    elif kind == "appearance":
        ref = _load(job_dir, case["reference"])
        ref_mask = _load(job_dir, case["reference_mask"])
        out = models.run_appearance(img, mask, ref, ref_mask, case["prompt"], case["reference_prompt"],
                                    p["w_edit"], p["w_content"], **common)
    elif kind == "paste":
        ref = _load(job_dir, case["reference"])
        out = models.run_paste(img, mask, ref, case["prompt"], case["reference_prompt"], p["w_edit"], p["w_content"],
                               dx=p["dx"], dy=p["dy"], resize_scale=p.get("resize", 1.0), **common)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return np.ascontiguousarray(out[0].transpose(2, 0, 1)).astype(np.float32)  # (C, H, W) float latent


def main(job_path: str) -> None:
    job_path = Path(job_path)
    job = json.loads(job_path.read_text())
    torch.set_num_threads(1)
    models, demo_model = build(job)
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    for case in job["cases"]:
        for k in CALLS:
            CALLS[k] = 0
        t0 = time.time()
        z = run_case(models, demo_model, case, job_path.parent)
        np.save(out / f"{case['name']}.npy", z)
        info = {"name": case["name"], "seconds": round(time.time() - t0, 2), **CALLS}
        (out / f"{case['name']}.json").write_text(json.dumps(info))
        print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
