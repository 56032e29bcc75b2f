"""DragonDiffusion's feature-correspondence energies, as pure functions.

Every energy compares decoder features of the sample being edited (``cur``)
with remembered features of the original (``ref``) at the same step, on one
common grid, summed over the feature levels. Terms that should become
*similar* have the form ``w / (1 + 4 * sim)``; terms that should become
*dissimilar* are ``w * sim``. ``sim`` is the cosine over channels, either raw
(move's edit and content terms, as in the reference method) or mapped to
[0, 1] as ``(cos + 1) / 2`` (everything else).

Each ``*_energy`` function returns ``(edit, content)``: the edit energy's
gradient is applied inside the edit region, the content energy's outside.
Inputs: lists (one entry per level) of (C, h, w) feature maps, bool (h, w)
region masks on the same grid. Features of any float dtype: the cosines (and so
every energy) are computed in fp32, so fp16/bf16 features neither overflow in the
channel sums nor round the energy to half precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine(a: torch.Tensor, b: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Cosine similarity along ``dim``, in fp32 whatever the inputs' dtype."""
    return F.cosine_similarity(a.float(), b.float(), dim=dim, eps=1e-6)


def cos_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over channels of two (C, h, w) maps -> (h, w), fp32."""
    return cosine(a, b)


def unit(cos: torch.Tensor) -> torch.Tensor:
    """Cosine mapped to [0, 1]."""
    return (cos + 1) / 2


def similar(sim: torch.Tensor, w: float) -> torch.Tensor:
    """The "make similar" energy ``w / (1 + 4 * sim)``."""
    return w / (1 + 4 * sim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (h, w) ``x`` over a bool mask (zero if the mask is empty)."""
    n = mask.sum()
    if n == 0:
        return x.sum() * 0
    return (x * mask).sum() / n


def mean_vector(f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean (C,) feature over a bool (h, w) mask, fp32."""
    return (f.float() * mask).sum(dim=(1, 2)) / mask.sum().clamp(min=1)


def _zero(feats: list[torch.Tensor]) -> torch.Tensor:
    return feats[0].float().sum() * 0


def move_energy(cur: list[torch.Tensor], ref: list[torch.Tensor], ref_moved: list[torch.Tensor],
                m_cur: torch.Tensor, m_org: torch.Tensor, inpaint_region: torch.Tensor | None,
                w_edit: float, w_content: float, w_contrast: float, w_inpaint: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Move/resize: the object's new place looks like the object (``ref_moved`` = the
    reference moved by the edit), everything else like the original, and the hole it
    leaves stops looking like the object (contrast) and looks like its surroundings
    (inpaint: mean feature of the hole vs mean feature of ``inpaint_region``)."""
    other = ~(m_cur | m_org)
    hole = m_org & ~m_cur
    region = other if inpaint_region is None else inpaint_region
    edit, content = _zero(cur), _zero(cur)
    for fc, fr, fm in zip(cur, ref, ref_moved):
        edit = edit + 0.5 * similar(masked_mean(cos_map(fc, fm), m_cur), w_edit)
        content = content + 0.5 * similar(masked_mean(cos_map(fc, fr), other), w_content)
        if hole.any():
            content = content + 0.5 * w_contrast * masked_mean(unit(cos_map(fc, fr)), hole)
            if region.any():
                s = unit(cosine(mean_vector(fc, hole), mean_vector(fr, region)))
                content = content + similar(s, w_inpaint)
    return edit, content


def drag_energy(cur: list[torch.Tensor], ref: list[torch.Tensor], handle_patches: torch.Tensor,
                target_patches: torch.Tensor, keep: torch.Tensor | None,
                w_edit: float, w_content: float, w_contrast: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Point dragging: the patch at each target looks like the reference patch at its
    handle; the handle patch stops looking like itself where the target does not cover
    it (contrast); outside the editable region (``keep``) the image stays the original.

    ``handle_patches``/``target_patches``: long (P, K, 2) grid (row, col) indices."""
    n_levels, n_points = len(cur), handle_patches.shape[0]
    edit, content = _zero(cur), _zero(cur)
    h, w = cur[0].shape[-2:]
    holes = []  # per point: the handle patch minus the target patch (same on every level)
    if w_contrast:
        for i in range(n_points):
            m = torch.zeros(h, w, dtype=torch.bool, device=cur[0].device)
            m[handle_patches[i, :, 0], handle_patches[i, :, 1]] = True
            m[target_patches[i, :, 0], target_patches[i, :, 1]] = False
            if m.any():
                holes.append(m)
    for fc, fr in zip(cur, ref):
        cur_vec = fc[:, target_patches[..., 0], target_patches[..., 1]]  # (C, P, K)
        ref_vec = fr[:, handle_patches[..., 0], handle_patches[..., 1]]
        sims = unit(cosine(cur_vec, ref_vec))  # (P, K)
        edit = edit + similar(sims.mean(dim=1), w_edit).sum() / (n_levels * n_points)
        same = unit(cos_map(fc, fr)) if holes or keep is not None else None
        for m in holes:
            edit = edit + w_contrast * masked_mean(same, m) / (n_levels * n_points)
        if keep is not None and keep.any():
            content = content + similar(masked_mean(same, keep), w_content) / n_levels
    return edit, content


def appearance_energy(cur: list[torch.Tensor], base: list[torch.Tensor], reference: list[torch.Tensor],
                      m_base: torch.Tensor, m_ref: torch.Tensor, w_edit: float,
                      w_content: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Appearance replacement: the edited object's mean feature matches the reference
    object's mean feature; outside the object the image stays the base image."""
    edit, content = _zero(cur), _zero(cur)
    for fc, fb, fr in zip(cur, base, reference):
        s = unit(cosine(mean_vector(fc, m_base), mean_vector(fr, m_ref)))
        edit = edit + similar(s, w_edit)
        content = content + similar(masked_mean(unit(cos_map(fc, fb)), ~m_base), w_content)
    return edit, content


def paste_energy(cur: list[torch.Tensor], base: list[torch.Tensor], object_moved: list[torch.Tensor],
                 m_base: torch.Tensor, w_edit: float, w_content: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Object pasting: inside the destination the features match the pasted object's
    (``object_moved``: the object image's features moved to the destination), pixel by
    pixel; outside, the base image."""
    edit, content = _zero(cur), _zero(cur)
    for fc, fb, fo in zip(cur, base, object_moved):
        edit = edit + similar(masked_mean(unit(cos_map(fc, fo)), m_base), w_edit)
        content = content + similar(masked_mean(unit(cos_map(fc, fb)), ~m_base), w_content)
    return edit, content
