"""A seeded random-weight SDXL checkpoint, built with ComfyUI's own classes.

The SDXL counterpart of ``sd15_checkpoint.py`` (whose helpers it uses: parameter filling, the VAE's
latent calibration, the cache folder, the build lock and the command line). SDXL base's real
topology with random weights: the UNet (``comfy.supported_models.SDXL`` with SDXL base's UNet
config, 2.57 B parameters), both text models as ComfyUI's SDXL expects them (``clip_target()`` ->
``comfy.sd.CLIP`` holding ``SDXLClipModel``: CLIP-L, the penultimate layer, and OpenCLIP's CLIP-G
with its pooled projection) and the KL-f8 VAE (SDXL's VAE has SD's architecture; its latents are
calibrated to SDXL's scale factor 0.13025), all fp16, saved with ``comfy.sd.save_checkpoint`` in
SDXL's single-file layout (``model.diffusion_model.*``, ``first_stage_model.*``,
``conditioner.embedders.0.transformer.text_model.*`` for CLIP-L and
``conditioner.embedders.1.model.*`` in OpenCLIP's names for CLIP-G). About 6.9 GB; nothing in
it is trained, so its images are noise: it exercises shapes, dtypes, memory and time, not quality.

Cached like the SD1.5 file: ``$DRAGONDIFF_TEST_CACHE`` or ``~/.cache/dragondiffusion-tests/`` /
``sdxl-random-<VERSION>-seed<seed>.safetensors`` (never in the repository).

As a script (ComfyUI's Python; ``--comfyui`` or ``$COMFYUI_PATH``)::

    OMP_NUM_THREADS=2 /work/comfy-venv/bin/python tests/integration/sdxl_checkpoint.py \\
        --comfyui /work/comfyui --seed 0 --verify

prints the cached path (building it if missing) and, with ``--verify``, what
``comfy.sd.load_checkpoint_guess_config`` (CheckpointLoaderSimple) detected, as one JSON line.
On 2 CPU cores: 74 s and 7.6 GiB peak RSS to build, 77 s and 18.6 GiB to verify (ComfyUI loads the
UNet in fp32 on the CPU; the peak counts the memory-mapped file's pages).

Only the standard library at import time, like ``sd15_checkpoint.py``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from sd15_checkpoint import DEFAULT_SEED, build_once, build_random_checkpoint, cache_dir, cli, verify_checkpoint

VERSION = "v1"  # bump when the build changes (config, init, layout): old cache entries are then ignored
# SDXL base's UNet config as ComfyUI configures it for sd_xl_base_1.0 (comfy.model_detection's detection plus
# the SDXL config class's num_head_channels 64; without dtype): the config of scripts/sdxl_memory.py
SDXL_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
SDXL_SCALE_FACTOR = 0.13025  # comfy.latent_formats.SDXL


def cached_path(seed: int = DEFAULT_SEED) -> Path:
    return cache_dir() / f"sdxl-random-{VERSION}-seed{int(seed)}.safetensors"


def build(path: str | os.PathLike, seed: int = DEFAULT_SEED) -> dict:
    """Build the SDXL checkpoint into ``path`` (ComfyUI must be imported: sd15_checkpoint.import_comfy):
    SDXL's UNet, CLIP-L + CLIP-G (SDXL.clip_target(); its process_clip_state_dict_for_saving writes
    CLIP-L's position_ids and CLIP-G's OpenCLIP names), SD's VAE at SDXL's latent scale. Returns a
    small report (parameter counts, seconds, peak RSS)."""
    import comfy.supported_models

    report = build_random_checkpoint(path, seed, lambda: comfy.supported_models.SDXL(dict(SDXL_UNET_CONFIG)),
                                     "random-weight SDXL (nothing trained)", VERSION, SDXL_SCALE_FACTOR)
    return {**report, "peak_rss_gib": round(_peak_rss_gib(), 2)}


def ensure(seed: int = DEFAULT_SEED, out: str | os.PathLike | None = None) -> tuple[Path, dict | None]:
    """The checkpoint's path, building it if missing (ComfyUI must be imported). Returns
    (path, build report or None when it was cached)."""
    return build_once(Path(out) if out is not None else cached_path(seed), lambda tmp: build(tmp, seed))


def verify(path: str | os.PathLike) -> dict:
    """Load the SDXL file as CheckpointLoaderSimple does and report what ComfyUI detected
    (:func:`sd15_checkpoint.verify_checkpoint`: the text models' tokens from CLIP-L + CLIP-G,
    CLIP-G's pooled output, one tiny UNet call with SDXL's size conditioning), and the peak RSS
    while checking."""
    _reset_peak_rss()
    report = verify_checkpoint(path, SDXL_UNET_CONFIG, size_conditioning=True)
    return {**report, "peak_rss_gib": round(_peak_rss_gib(), 2)}


def _peak_rss_gib() -> float:
    """This process's peak RSS (Linux VmHWM) since it started or since the last _reset_peak_rss;
    -1 where /proc is not there."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return -1.0


def _reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: 5 in clear_refs resets VmHWM), so verify's peak is its own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str] | None = None) -> int:
    return cli(argv, __doc__, ensure, verify)


if __name__ == "__main__":
    sys.exit(main())
