"""Energies: their form, their minima, and that a gradient step lowers them."""

import pytest
import torch

from dragon_core import energies as en


def feats(seed, c=8, h=8, w=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(c, h, w, generator=g), torch.randn(c, h, w, generator=g)]


def test_similar_form_and_cosine():
    a = torch.randn(4, 3, 3)
    assert torch.allclose(en.cos_map(a, a), torch.ones(3, 3))
    assert torch.allclose(en.cos_map(a, -a), -torch.ones(3, 3))
    assert en.similar(torch.tensor(1.0), 5.0) == pytest.approx(1.0)
    assert en.similar(torch.tensor(0.0), 5.0) == pytest.approx(5.0)
    assert en.masked_mean(torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.bool)) == 0


def masks(h=8, w=8):
    org = torch.zeros(h, w, dtype=torch.bool)
    org[1:4, 1:4] = True
    cur = torch.zeros(h, w, dtype=torch.bool)
    cur[4:7, 4:7] = True
    return org, cur


def test_move_energy_is_lowest_for_the_ideal_result():
    ref = feats(0)
    org, cur = masks()
    moved = [torch.roll(f, (3, 3), (1, 2)) for f in ref]
    ideal = [torch.where(cur, m, f) for f, m in zip(ref, moved)]
    e_ideal = en.move_energy(ideal, ref, moved, cur, org, None, 4, 6, 0.2, 0.8)
    e_same = en.move_energy(ref, ref, moved, cur, org, None, 4, 6, 0.2, 0.8)
    e_rand = en.move_energy(feats(5), ref, moved, cur, org, None, 4, 6, 0.2, 0.8)
    assert e_ideal[0] < e_same[0] and e_ideal[0] < e_rand[0]  # edit term: object at the new place
    assert e_ideal[1] < e_rand[1]  # content: unchanged elsewhere


@pytest.mark.parametrize("kind", ["move", "drag", "appearance", "paste"])
def test_a_gradient_step_lowers_the_energy(kind):
    ref, other = feats(1), feats(2)
    org, cur = masks()
    x = [f.clone().requires_grad_(True) for f in feats(3)]

    def energy(fs):
        if kind == "move":
            moved = [torch.roll(f, (3, 3), (1, 2)) for f in ref]
            e, c = en.move_energy(fs, ref, moved, cur, org, None, 4, 6, 0.2, 0.8)
        elif kind == "drag":
            hp = torch.tensor([[[1, 1], [1, 2], [2, 1]]])
            tp = torch.tensor([[[5, 5], [5, 6], [6, 5]]])
            e, c = en.drag_energy(fs, ref, hp, tp, ~(org | cur), 4, 6, 0.2)
        elif kind == "appearance":
            e, c = en.appearance_energy(fs, ref, other, cur, org, 3.5, 5)
        else:
            e, c = en.paste_energy(fs, ref, other, cur, 4, 6)
        return e + c

    e0 = energy(x)
    grads = torch.autograd.grad(e0, x)
    with torch.no_grad():
        x2 = [f - 0.5 * g for f, g in zip(x, grads)]
    assert energy(x2) < e0


def test_drag_energy_pairs_handles_with_targets():
    ref = feats(4)
    hp = torch.tensor([[[1, 1]]])
    tp = torch.tensor([[[6, 6]]])
    good = [f.clone() for f in ref]
    for f in good:
        f[:, 6, 6] = f[:, 1, 1]
    e_good, _ = en.drag_energy(good, ref, hp, tp, None, 4, 6, 0.0)
    e_bad, _ = en.drag_energy(ref, ref, hp, tp, None, 4, 6, 0.0)
    assert e_good < e_bad
    assert e_good == pytest.approx(4 / 5)  # sim 1 -> w / (1 + 4), averaged over levels and points
