"""A seeded random-weight Stable Diffusion 1.5 checkpoint, built with ComfyUI's own classes.

No Stable Diffusion weights can be downloaded on the test machines, so the integration tests
build a checkpoint with SD1.5's real topology and random weights: the UNet
(``comfy.supported_models.SD15`` with SD1.5's UNet config), the CLIP-L text model
(``clip_target()`` -> ``comfy.sd.CLIP``, ComfyUI's SD1 tokenizer) and the KL VAE (ComfyUI's
``AutoencoderKL`` with SD's VAE config -> ``comfy.sd.VAE``), all fp16, saved with
``comfy.sd.save_checkpoint`` in the standard single-file layout (``model.diffusion_model.*``,
``first_stage_model.*``, ``cond_stage_model.transformer.text_model.*``) that
CheckpointLoaderSimple reads. About 2.0 GB; nothing in it is trained, so images made with
it are noise: it exercises shapes, dtypes, memory and time, not quality.

ComfyUI's ops leave weights uninitialised, so every floating-point parameter is filled from
one seeded generator, module by module in ``named_modules`` order: norm weights 1, biases 0,
embeddings normal * 0.02, linear and convolution weights normal / sqrt(fan_in) (1x1 convolutions
such as the VAE's quant_conv would shrink the latents ~20x with a flat 0.02), CLIP's
``logit_scale`` ln 100. The VAE's latent means are then scaled to SD's latent statistics (std
1 / 0.18215 on a smooth test image, so the UNet sees O(1) latents as with the real VAE; the
decoder's post_quant_conv compensates). Buffers (such as the noise schedule's, computed at
construction) are never touched; the real checkpoints' integer ``position_ids`` (0..76) is
written as they have it.

The file is built on demand and cached outside the repository, keyed by seed and
``VERSION`` (change it whenever what is built changes):
``$DRAGONDIFF_TEST_CACHE`` or ``~/.cache/dragondiffusion-tests/`` /
``sd15-random-<VERSION>-seed<seed>.safetensors``. Builds are serialised with a lock file and
written to a temporary name first, so concurrent test runs never see half a file.

As a script (ComfyUI's Python; ``--comfyui`` or ``$COMFYUI_PATH``)::

    OMP_NUM_THREADS=2 /work/comfy-venv/bin/python tests/integration/sd15_checkpoint.py \
        --comfyui /work/comfyui --seed 0 --verify

prints the cached path (building it if missing); ``--verify`` then loads it with
``comfy.sd.load_checkpoint_guess_config`` and prints what ComfyUI detected, as one JSON line
(``VERIFY {...}``). ``--out FILE`` writes somewhere else (no cache). On 2 CPU cores: about 30-40 s
and 3.2 GB peak RSS to build (the same seed gives a byte-identical file), 6.8 GB while verifying
(ComfyUI casts the UNet to fp32 on the CPU).

This module only uses the standard library at import time (the test imports it and runs it as a
subprocess; ComfyUI and torch are imported in the process that builds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

VERSION = "v2"  # bump when the build changes (config, init, layout): old cache entries are then ignored
DEFAULT_SEED = 0
CACHE_ENV = "DRAGONDIFF_TEST_CACHE"

# SD1.5's UNet config, as comfy.model_detection detects it from v1-5-pruned-emaonly
# (model_detection.unet_config_from_diffusers_unet's SD15 entry, without dtype); the
# SD15 config class adds num_heads 8 / num_head_channels -1.
SD15_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
# SD1.x/2.x's KL-f8 VAE (comfy.sd.VAE's default SD config; embed_dim 4)
SD_VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                   "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
SD_VAE_EMBED_DIM = 4
SD15_SCALE_FACTOR = 0.18215  # comfy.latent_formats.SD15: latents are scaled by this before the UNet
EMBEDDING_STD = 0.02  # token and position embeddings (as CLIP is initialised)
POSITION_IDS_KEY = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def cache_dir() -> Path:
    raw = os.environ.get(CACHE_ENV, "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "dragondiffusion-tests"


def cached_path(seed: int = DEFAULT_SEED) -> Path:
    return cache_dir() / f"sd15-random-{VERSION}-seed{int(seed)}.safetensors"


# -- building (ComfyUI imported) ---------------------------------------------------------------------


def import_comfy(comfyui_path: str | os.PathLike) -> None:
    """Put ComfyUI on sys.path and import it in --cpu mode (before comfy.model_management)."""
    path = str(Path(comfyui_path).expanduser().resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args

    if "comfy.model_management" not in sys.modules:
        comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401


def fill_parameters(module, gen) -> dict[str, int]:
    """Fill every floating-point parameter of ``module`` in place from ``gen``; buffers are left
    alone. Returns how many values got each kind of initialisation."""
    import torch

    counts = {"normal": 0, "ones": 0, "zeros": 0, "other": 0}
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    with torch.no_grad():
        for mod_name, mod in module.named_modules():
            for name, p in mod.named_parameters(recurse=False):
                if not p.is_floating_point():
                    continue
                full = f"{mod_name}.{name}" if mod_name else name
                if name == "logit_scale":  # CLIP's temperature, ln(100) in the trained models
                    p.fill_(math.log(100.0))
                    counts["other"] += p.numel()
                elif isinstance(mod, norms) and name == "weight":
                    p.fill_(1.0)
                    counts["ones"] += p.numel()
                elif name == "bias":
                    p.zero_()
                    counts["zeros"] += p.numel()
                elif name == "weight" and (isinstance(mod, torch.nn.Embedding) or p.ndim < 2):
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(EMBEDDING_STD))
                    counts["normal"] += p.numel()
                elif name == "weight":  # Linear / Conv: fan-in scaled, so activations stay O(1)
                    std = 1.0 / math.sqrt(p[0].numel())
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std))
                    counts["normal"] += p.numel()
                else:
                    raise ValueError(f"no initialisation rule for parameter {full} {tuple(p.shape)}")
    return counts


def calibrate_latent_scale(ae, gen, scale_factor: float = SD15_SCALE_FACTOR) -> float:
    """Give the random VAE SD's latent scale: the latent means (quant_conv's first 4 outputs) of a
    smooth seeded image get std 1 / ``scale_factor`` (SD1.5's 0.18215 by default), so latents after
    ``process_latent_in`` are O(1) as with the real VAE; post_quant_conv is divided by the same
    gain, so the decoder sees what it saw before. Returns the gain."""
    import torch

    with torch.no_grad():
        img = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=(64, 64),
                                              mode="bilinear", align_corners=False)
        mean = ae.quant_conv(ae.encoder(img))[:, :SD_VAE_EMBED_DIM]
        gain = float((1.0 / scale_factor) / mean.std())
        ae.quant_conv.weight[:SD_VAE_EMBED_DIM] *= gain
        ae.quant_conv.bias[:SD_VAE_EMBED_DIM] *= gain
        ae.post_quant_conv.weight /= gain
    return gain


def build(path: str | os.PathLike, seed: int = DEFAULT_SEED) -> dict:
    """Build the SD1.5 checkpoint into ``path`` (ComfyUI must be imported, see import_comfy).
    Returns a small report (parameter counts, seconds)."""
    import torch
    import comfy.supported_models

    return build_random_checkpoint(path, seed, lambda: comfy.supported_models.SD15(dict(SD15_UNET_CONFIG)),
                                   "random-weight SD1.5 (nothing trained)", VERSION, SD15_SCALE_FACTOR,
                                   extra_keys={POSITION_IDS_KEY: torch.arange(77, dtype=torch.int64)[None]})


def build_random_checkpoint(path: str | os.PathLike, seed: int, make_config: Callable[[], Any], what: str,
                            version: str, scale_factor: float, extra_keys: dict | None = None) -> dict:
    """A seeded random-weight checkpoint of the model family ``make_config()`` returns (a
    ``comfy.supported_models`` config): its UNet and text model(s) from that config, SD's VAE
    calibrated to ``scale_factor``, all fp16, saved by ComfyUI's own ``save_checkpoint``."""
    import torch
    import comfy.ldm.models.autoencoder
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    fp16 = torch.float16
    with torch.inference_mode(False):
        # the UNet: ComfyUI's model config with the family's UNet config, fp16 weights
        config = make_config()
        config.set_inference_dtype(fp16, None)
        model = config.get_model({}, device=torch.device("cpu"))
        unet_counts = fill_parameters(model.diffusion_model, gen)
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                   offload_device=mm.unet_offload_device())
        # the text model(s): config.clip_target() -> comfy.sd.CLIP with ComfyUI's tokenizer(s)
        clip = comfy.sd.CLIP(config.clip_target(), model_options={"dtype": fp16,
                                                                  "initial_device": torch.device("cpu")})
        clip_counts = fill_parameters(clip.cond_stage_model, gen)
        # the VAE: ComfyUI's AutoencoderKL with SD's config, through comfy.sd.VAE (which detects the layout)
        ae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dict(SD_VAE_DDCONFIG), embed_dim=SD_VAE_EMBED_DIM)
        vae_counts = fill_parameters(ae, gen)
        latent_gain = calibrate_latent_scale(ae, gen, scale_factor)
        vae_sd = {k: v.to(fp16) for k, v in ae.state_dict().items()}
        del ae
        vae = comfy.sd.VAE(sd=vae_sd, dtype=fp16)
        del vae_sd
        t_init = time.perf_counter() - t0
        metadata = {"dragondiffusion_tests": json.dumps({"what": what, "seed": int(seed), "version": version})}
        comfy.sd.save_checkpoint(str(path), patcher, clip=clip, vae=vae, metadata=metadata, extra_keys=extra_keys or {})
    mm.unload_all_models()
    total = {k: unet_counts.get(k, 0) + clip_counts.get(k, 0) + vae_counts.get(k, 0) for k in unet_counts}
    return {"path": str(path), "seed": int(seed), "version": version, "bytes": os.path.getsize(path),
            "parameters": {"unet": sum(unet_counts.values()), "clip": sum(clip_counts.values()),
                           "vae": sum(vae_counts.values())}, "init": total,
            "vae_latent_gain": round(latent_gain, 3), "init_s": round(t_init, 1),
            "total_s": round(time.perf_counter() - t0, 1)}


def ensure(seed: int = DEFAULT_SEED, out: str | os.PathLike | None = None) -> tuple[Path, dict | None]:
    """The checkpoint's path, building it if missing (ComfyUI must be imported). Returns
    (path, build report or None when it was cached)."""
    return build_once(Path(out) if out is not None else cached_path(seed), lambda tmp: build(tmp, seed))


def build_once(path: Path, make: Callable[[Path], dict]) -> tuple[Path, dict | None]:
    """``path``, made by ``make(temporary path)`` (which returns its report) if it is missing; under a
    lock file, written to a temporary name and renamed, so concurrent runs never see half a file.
    Returns (path, the report or None when it was there)."""
    if path.is_file():
        return path, None
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path.with_name(path.name + ".lock")):
        if path.is_file():  # another process built it while we waited
            return path, None
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            report = make(tmp)
            os.chmod(tmp, 0o644)  # safetensors writes it 0600; the cache may be shared
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        report["path"] = str(path)
        return path, report


@contextlib.contextmanager
def _lock(lock_path: Path):
    import fcntl

    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- checking (ComfyUI imported) ---------------------------------------------------------------------


class WarningLog(logging.Handler):
    """Keeps the messages of the warnings logged while it is attached to a logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage()[:500])


def verify(path: str | os.PathLike) -> dict:
    """Load the SD1.5 file as CheckpointLoaderSimple does and report what ComfyUI detected
    (:func:`verify_checkpoint`)."""
    return verify_checkpoint(path, SD15_UNET_CONFIG)


def verify_checkpoint(path: str | os.PathLike, unet_config: dict, size_conditioning: bool = False) -> dict:
    """Load the file as CheckpointLoaderSimple does (comfy.sd.load_checkpoint_guess_config) and
    report what ComfyUI detected: model and config class, model type, latent channels, the
    detected UNet config's differences from ``unet_config``, the text model(s), the VAE, warnings
    logged while loading, one tiny UNet call (with SDXL's size conditioning from the pooled text
    output when ``size_conditioning``), and whether the outputs are finite."""
    import torch
    import comfy.model_management as mm
    import comfy.sd

    handler = WarningLog()
    logging.getLogger().addHandler(handler)
    t0 = time.perf_counter()
    try:
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    finally:
        logging.getLogger().removeHandler(handler)
    load_s = time.perf_counter() - t0
    mc = model.model.model_config
    detected = {k: v for k, v in mc.unet_config.items() if k != "dtype"}
    config_diff = {k: (detected.get(k), v) for k, v in unet_config.items() if detected.get(k) != v}
    with torch.inference_mode():
        tokens = clip.tokenize("a photo of a red ball on a table")
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        img = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
        z = vae.encode(img)
        back = vae.decode(z)
        mm.load_models_gpu([model])
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        sigma = model.model.model_sampling.sigma(torch.tensor([500.0]))
        extra = {}
        if size_conditioning:
            adm = model.model.encode_adm(pooled_output=pooled, width=64, height=64)
            extra = {"y": adm.to(x.dtype)}
        den = model.model.apply_model(x, sigma, c_crossattn=cond.to(x.dtype), **extra)
    report = {
        "path": str(path), "bytes": os.path.getsize(path), "load_s": round(load_s, 1),
        "model_class": type(model.model).__name__, "config_class": type(mc).__name__,
        "model_type": model.model.model_type.name, "unet_dtype": str(model.model.get_dtype()),
        "latent_channels": int(model.model.latent_format.latent_channels),
        "latent_format": type(model.model.latent_format).__name__,
        "scale_factor": float(model.model.latent_format.scale_factor),
        "unet_config_diff": {k: list(v) for k, v in config_diff.items()},
        "unet_parameters": sum(p.numel() for p in model.model.diffusion_model.parameters()),
        "clip_class": type(clip.cond_stage_model).__name__, "tokenizer_class": type(clip.tokenizer).__name__,
        "clip_width": int(cond.shape[-1]), "cond_shape": list(cond.shape),
        "clip_dtype": str(clip.cond_stage_model.dtypes),
        "vae_latent_channels": int(vae.latent_channels), "vae_downscale": int(vae.downscale_ratio),
        "vae_latent_shape": list(z.shape), "vae_decoded_shape": list(back.shape),
        "unet_output_shape": list(den.shape),
        "finite": {"cond": bool(torch.isfinite(cond).all()), "vae_latent": bool(torch.isfinite(z).all()),
                   "vae_decoded": bool(torch.isfinite(back).all()), "unet": bool(torch.isfinite(den).all())},
        "std": {"cond": round(float(cond.float().std()), 4), "vae_latent": round(float(z.float().std()), 4),
                "unet_eps": round(float(((x - den) / sigma).float().std()), 4)},
        "load_warnings": handler.lines,
    }
    if size_conditioning:
        report.update(pooled_shape=list(pooled.shape), adm_shape=list(extra["y"].shape))
        report["finite"]["pooled"] = bool(torch.isfinite(pooled).all())
        report["std"]["pooled"] = round(float(pooled.float().std()), 4)
    mm.unload_all_models()
    return report


def main(argv: list[str] | None = None) -> int:
    return cli(argv, __doc__, ensure, verify)


def cli(argv: list[str] | None, doc: str, ensure: Callable[..., tuple[Path, dict | None]],
        verify: Callable[[Path], dict]) -> int:
    """The command line shared by the checkpoint builders: ``ensure(seed, out)`` then, with
    --verify, ``verify(path)``; prints BUILT / PATH / VERIFY lines (JSON) for the tests."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout ($COMFYUI_PATH)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", help="write here instead of the cache (built only if missing)")
    ap.add_argument("--verify", action="store_true", help="load it with ComfyUI and print what was detected")
    args = ap.parse_args(argv)
    if not args.comfyui:
        ap.error("--comfyui or $COMFYUI_PATH is required")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or "1"))
    import_comfy(args.comfyui)
    path, report = ensure(args.seed, args.out)
    if report is not None:
        print("BUILT " + json.dumps(report), flush=True)
    print(f"PATH {path}", flush=True)
    if args.verify:
        print("VERIFY " + json.dumps(verify(path)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
