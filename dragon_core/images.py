"""Image files <-> tensors for the pixel-space shapes model (numpy + Pillow).

Images as tensors are (B, 3, H, W) float32 in [-1, 1] (the model's latent space,
since the shapes model has no VAE); as arrays they are (H, W, 3) float32 in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def array_to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 3, H, W) in [-1, 1]."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {img.shape}")
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None] * 2 - 1


def tensor_to_array(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) in [-1, 1] -> (H, W, 3) float32 in [0, 1] (clipped)."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_png(img: np.ndarray | torch.Tensor, path: str | Path, upscale: int = 1) -> Path:
    """Write an image (array in [0, 1], bool mask, or tensor in [-1, 1]) as PNG."""
    if isinstance(img, torch.Tensor):
        img = tensor_to_array(img)
    arr = to_uint8(img.astype(np.float32)) if img.dtype != np.uint8 else img
    pil = Image.fromarray(arr)
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)
    return path


def _open(path: str | Path, name: str, what: str) -> Image.Image:
    """The decoded image at ``path``; a one-line FileNotFoundError / ValueError naming ``name`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: {what} file not found: {path}")
    try:
        im = Image.open(path)
        im.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{name}: {path} is not an image file Pillow can read (PNG, JPEG, WebP, ...): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return im


def load_png(path: str | Path, name: str = "image") -> np.ndarray:
    """Read an image file as (H, W, 3) float32 in [0, 1] (alpha dropped, greyscale expanded).
    ``name`` (e.g. the command-line option) starts every error message."""
    with _open(path, name, "image") as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def load_mask(path: str | Path, threshold: float = 0.5, name: str = "mask") -> np.ndarray:
    """Read a mask file as bool (H, W): luminance >= ``threshold`` (in [0, 1]) is inside."""
    with _open(path, name, "mask") as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0 >= threshold


def grid(images: list[np.ndarray], cols: int) -> np.ndarray:
    """Tile same-size (H, W, 3) images into a grid with a 1-pixel white gutter."""
    if not images:
        raise ValueError("grid needs at least one image")
    h, w, c = images[0].shape
    rows = (len(images) + cols - 1) // cols
    out = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1, c), np.float32)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, k * (w + 1) : k * (w + 1) + w] = im
    return out
