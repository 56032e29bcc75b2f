"""Tests for dragon_demo.shapes_world: the seeded scene generator and its exact ground truth.

Edits are checked against what the renderer must give *exactly* (moved masks and
object pixels are shifted copies, untouched pixels are bit-identical), and the
few float-sensitive quantities (blurred shadows) to within float32 rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dragon_demo import shapes_world as sw
from dragon_lab import edit_cases as ec

N = 32
SEEDS = range(300)
PROPERTY = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers --------------------------------------------------------------------


def flat(grey: float = 0.6) -> sw.Background:
    return sw.Background("flat", (grey,) * 3, (grey,) * 3)


def background_only(scene: sw.Scene) -> np.ndarray:
    return sw.Scene(scene.size, scene.background, ()).render()


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=4096)
def cov(obj: sw.ShapeObject, n: int = N) -> np.ndarray:
    return _frozen(sw.coverage(obj, n))


@functools.lru_cache(maxsize=4096)
def shadow_factor(obj: sw.ShapeObject, n: int = N) -> np.ndarray:
    """The factor ``obj``'s shadow multiplies the image by, computed as the renderer does."""
    sh = sw._shift_blur(sw.coverage(obj, n), sw.SHADOW_OFFSET * n, sw.SHADOW_OFFSET * n, sw.SHADOW_BLUR * n)
    return _frozen(1.0 - sw.SHADOW_STRENGTH * np.clip(sh, 0, 1))


def untouched_by(objs, n: int = N) -> np.ndarray:
    """Pixels where none of ``objs`` has any coverage and none of their shadows changes a bit."""
    ok = np.ones((n, n), bool)
    for o in objs:
        ok &= (cov(o, n) == 0) & (shadow_factor(o, n) == 1.0)
    return ok


def shift(a: np.ndarray, dx: int, dy: int, fill=0) -> np.ndarray:
    """``a`` moved by (dx, dy) pixels (x right, y down), ``fill`` where nothing comes in."""
    out = np.full_like(a, fill)
    h, w = a.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def valid_after_shift(dx: int, dy: int, n: int = N) -> np.ndarray:
    """Pixels of a shifted array whose value came from inside the original array."""
    return shift(np.ones((n, n), bool), dx, dy, fill=False)


def expected_shade(obj: sw.ShapeObject, n: int = N) -> np.ndarray:
    """The documented shading: 1 + SHADING * ((cx - x) + (cy - y)) / (2 size), clipped."""
    x = np.arange(n) + 0.5
    X, Y = np.meshgrid(x, x)
    s = 1.0 + sw.SHADING * ((obj.cx - X) + (obj.cy - Y)) / (2.0 * obj.size)
    return np.clip(s, 1.0 - sw.SHADING, 1.0 + sw.SHADING)


def centroid(weights: np.ndarray) -> tuple[float, float]:
    y, x = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    w = weights.astype(np.float64)
    return float(((x + 0.5) * w).sum() / w.sum()), float(((y + 0.5) * w).sum() / w.sum())


def true_area(obj: sw.ShapeObject) -> float:
    r = obj.size
    return {"disc": math.pi * r * r, "square": 4 * r * r, "diamond": 2 * r * r, "triangle": 2 * r * r}[obj.shape]


def true_centroid(obj: sw.ShapeObject) -> tuple[float, float]:
    # triangle: apex (cx, cy - r), base corners (cx +- r, cy + r): centroid a third of the way up from the base
    return (obj.cx, obj.cy + obj.size / 3.0) if obj.shape == "triangle" else (obj.cx, obj.cy)


def perimeter(obj: sw.ShapeObject) -> float:
    r = obj.size
    return {
        "disc": 2 * math.pi * r,
        "square": 8 * r,
        "diamond": 4 * math.sqrt(2) * r,
        "triangle": 2 * r + 2 * math.sqrt(5) * r,
    }[obj.shape]


def moves(seeds=SEEDS):
    """(scene, index, dx, dy) for every object of every seed, with a random_move that keeps it inside."""
    rng = np.random.default_rng(2024)
    for seed in seeds:
        scene = sw.random_scene(seed)
        for i in range(len(scene.objects)):
            dx, dy = ec.random_move(rng, scene, i)
            yield scene, i, int(dx), int(dy)


@st.composite
def single_object_moves(draw):
    """A single object anywhere inside a 32 px image and an integer move that keeps it inside."""
    shape = draw(st.sampled_from(sw.SHAPES))
    colour = draw(st.sampled_from(sw.COLOURS))
    r = draw(st.floats(2.5, 9.0))
    cx = draw(st.floats(r + 1, N - r - 1))
    cy = draw(st.floats(r + 1, N - r - 1))
    obj = sw.ShapeObject(shape, colour, cx, cy, r)
    dx = draw(st.integers(math.ceil(r + 1 - cx), math.floor(N - r - 1 - cx)))
    dy = draw(st.integers(math.ceil(r + 1 - cy), math.floor(N - r - 1 - cy)))
    assume(ec.fits(dataclasses.replace(obj, cx=cx + dx, cy=cy + dy), N, 1))
    # the moved centre must be exactly representable (e.g. 3.55 + 5 rounds in float64): otherwise
    # the data itself is not an exact shift, and a sample lying on an edge may fall either way
    assume(Fraction(cx + dx) == Fraction(cx) + dx and Fraction(cy + dy) == Fraction(cy) + dy)
    bg = draw(st.sampled_from([sw.random_background(np.random.default_rng(k)) for k in range(6)]))
    return sw.Scene(N, bg, (obj,)), dx, dy


# -- determinism ------------------------------------------------------------------


def test_same_seed_gives_identical_scene_and_pixels():
    for seed in range(25):
        a, b = sw.random_scene(seed), sw.random_scene(seed)
        assert a == b
        assert np.array_equal(a.render(), b.render())
        # an int seed and a Generator seeded with it are the same stream
        assert sw.random_scene(np.random.default_rng(seed)) == a
    imgs1, scenes1 = sw.random_batch(7, 5)
    imgs2, scenes2 = sw.random_batch(7, 5)
    assert scenes1 == scenes2 and np.array_equal(imgs1, imgs2)
    assert imgs1.shape == (5, N, N, 3) and imgs1.dtype == np.float32
    assert np.array_equal(imgs1, np.stack([s.render() for s in scenes1]))


def test_different_seeds_give_different_scenes():
    scenes = [sw.random_scene(seed) for seed in range(60)]
    assert len({repr(s) for s in scenes}) == len(scenes)
    assert len({s.render().tobytes() for s in scenes}) == len(scenes)
    imgs_a, _ = sw.random_batch(1, 3)
    imgs_b, _ = sw.random_batch(2, 3)
    assert not np.array_equal(imgs_a, imgs_b)


# -- random scenes ------------------------------------------------------------------


def test_random_scene_invariants_over_many_seeds():
    counts = set()
    kinds = set()
    for seed in SEEDS:
        scene = sw.random_scene(seed)
        objs = scene.objects
        counts.add(len(objs))
        kinds.add(scene.background.kind)
        assert 1 <= len(objs) <= 3
        assert len({o.colour for o in objs}) == len(objs), "colours must be distinct"
        for o in objs:
            assert ec.fits(o, N, margin=1.0), (seed, o)
            assert 0.13 * N <= o.size <= 0.27 * N
        for i, p in enumerate(objs):
            for q in objs[i + 1 :]:
                assert math.hypot(p.cx - q.cx, p.cy - q.cy) >= 0.6 * (p.size + q.size), (seed, p, q)
        img = scene.render()
        assert img.shape == (N, N, 3) and img.dtype == np.float32
        assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
        # the object's full mask is inside and non-empty for every object
        for i in range(len(objs)):
            assert scene.shape_mask(i).any()
    assert counts == {1, 2, 3}
    assert kinds == set(sw.BACKGROUNDS)


def test_random_scene_backgrounds_are_muted():
    import colorsys

    for seed in range(100):
        bg = sw.random_scene(seed).background
        for c in (bg.a, bg.b):
            h, s, v = colorsys.rgb_to_hsv(*c)
            assert s <= 0.28 + 1e-9 and 0.30 - 1e-9 <= v <= 0.85 + 1e-9
            assert c not in sw.PALETTE.values()
        if bg.kind == "flat":
            assert bg.a == bg.b


@pytest.mark.parametrize("n_objects", [1, 2, 3])
def test_random_scene_honours_n_objects(n_objects):
    for seed in range(60):
        assert len(sw.random_scene(seed, n_objects=n_objects).objects) == n_objects


@pytest.mark.parametrize("size", [16, 48, 64])
def test_random_scene_other_sizes(size):
    for seed in range(5):
        scene = sw.random_scene(seed, size=size)
        img = scene.render()
        assert scene.size == size and img.shape == (size, size, 3) and img.dtype == np.float32
        assert all(ec.fits(o, size, 1.0) for o in scene.objects)
        assert all(m.shape == (size, size) and m.dtype == bool for m in scene.masks())


# -- geometry ------------------------------------------------------------------------


def reference_inside(obj: sw.ShapeObject, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The documented shapes, written independently (float64, triangle from its vertices)."""
    u, v, r = x - obj.cx, y - obj.cy, obj.size
    if obj.shape == "disc":
        return np.hypot(u, v) <= r
    if obj.shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= r
    if obj.shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    # apex (0, -r), base corners (-r, r) and (r, r): inside = left of every edge, walking clockwise on screen
    pts = [(0.0, -r), (r, r), (-r, r)]
    ok = np.ones(np.broadcast(u, v).shape, bool)
    for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1]):
        ok &= (bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0
    return ok


def reference_coverage(obj: sw.ShapeObject, n: int = N, ss: int = sw.SUPERSAMPLE) -> np.ndarray:
    c = (np.arange(n * ss) + 0.5) / ss
    inside = reference_inside(obj, c[None, :], c[:, None])
    return inside.reshape(n, ss, n, ss).mean(axis=(1, 3))


@PROPERTY
@given(
    shape=st.sampled_from(sw.SHAPES),
    r=st.floats(2.0, 9.0),
    cx=st.floats(10.0, 22.0),
    cy=st.floats(10.0, 22.0),
)
def test_coverage_matches_the_documented_geometry(shape, r, cx, cy):
    obj = sw.ShapeObject(shape, "red", cx, cy, r)
    got, want = sw.coverage(obj, N), reference_coverage(obj)
    assert got.dtype == np.float32 and got.shape == (N, N)
    # samples exactly on an edge may round either way (float32 vs float64): at most a couple per pixel
    assert np.abs(got - want).max() <= 2 / sw.SUPERSAMPLE**2
    assert np.abs(got - want).sum() <= 4 / sw.SUPERSAMPLE**2


def test_coverage_of_pixel_aligned_shapes_is_exact():
    sq = sw.ShapeObject("square", "red", 16.0, 16.0, 6.0)  # exactly pixels 10..21
    want = np.zeros((N, N), np.float32)
    want[10:22, 10:22] = 1.0
    assert np.array_equal(sw.coverage(sq, N), want)
    tri = sw.ShapeObject("triangle", "red", 16.0, 16.0, 8.0)  # apex (16, 8), base y = 24 from x = 8 to 24
    tri_mask = sw.Scene(N, flat(), (tri,)).shape_mask(0)
    assert np.array_equal(tri_mask, tri_mask[:, ::-1])  # symmetric about x = 16
    assert not tri_mask[:8].any() and not tri_mask[24:].any()
    for y in range(8, 24):  # width 2 * (v + r) / 2 at the row's centre, apex up
        assert abs(tri_mask[y].sum() - (y + 0.5 - 16.0 + 8.0)) <= 1.0
    for shape in sw.SHAPES:
        obj = sw.ShapeObject(shape, "red", 16.0, 16.0, 8.0)
        assert np.array_equal(sw.coverage(obj, N), reference_coverage(obj))


def test_mask_threshold_is_half_coverage():
    # right edge at x = 20.5: pixel 20 is exactly half covered (in); at x = 20.3: a quarter (out)
    half = sw.ShapeObject("square", "red", 14.5, 14.5, 6.0)
    quarter = sw.ShapeObject("square", "red", 14.3, 14.5, 6.0)
    for obj, cols in ((half, range(8, 21)), (quarter, range(8, 20))):
        scene = sw.Scene(N, flat(), (obj,))
        c, m = sw.coverage(obj, N), scene.shape_mask(0)
        assert np.array_equal(m, c >= 0.5) and np.array_equal(scene.masks()[0], m)
        assert set(np.nonzero(m.any(axis=0))[0]) == set(cols)
    assert sw.coverage(half, N)[14, 20] == 0.5 and sw.coverage(quarter, N)[14, 20] == 0.25


# -- moved() ------------------------------------------------------------------------


def test_moved_changes_only_that_object_and_leaves_the_original_alone():
    scene = sw.random_scene(3, n_objects=3)
    before = scene.render()
    moved = scene.moved(1, 3, -2)
    assert moved.objects[0] == scene.objects[0] and moved.objects[2] == scene.objects[2]
    o, m = scene.objects[1], moved.objects[1]
    assert (m.cx, m.cy) == (o.cx + 3, o.cy - 2) and (m.shape, m.colour, m.size) == (o.shape, o.colour, o.size)
    assert moved.background == scene.background
    assert np.array_equal(scene.render(), before)  # scenes are immutable values
    assert scene.moved(1, 0, 0) == scene


def test_moved_mask_is_an_exact_shift():
    n = 0
    for scene, i, dx, dy in moves():
        moved = scene.moved(i, dx, dy)
        a, b = scene.shape_mask(i), moved.shape_mask(i)
        assert np.array_equal(b, shift(a, dx, dy)), (scene, i, dx, dy)
        assert np.array_equal(b, np.roll(a, (dy, dx), axis=(0, 1)))  # nothing touches the border
        assert np.array_equal(cov(moved.objects[i]), shift(cov(scene.objects[i]), dx, dy))
        n += 1
    assert n > 400


def test_moved_object_pixels_are_exactly_the_shifted_pixels():
    checked = 0
    for scene, i, dx, dy in moves():
        moved = scene.moved(i, dx, dy)
        later_old, later_new = scene.objects[i + 1 :], moved.objects[i + 1 :]
        # fully covered by the moved object, and nothing painted later touches it, here or at the source
        ok = (cov(moved.objects[i]) == 1) & untouched_by(later_new) & shift(untouched_by(later_old), dx, dy, False)
        old_img, new_img = scene.render(), moved.render()
        assert np.array_equal(new_img[ok], shift(old_img, dx, dy)[ok]), (scene, i, dx, dy)
        checked += int(ok.sum())
    assert checked > 20000


def test_moved_vacated_area_shows_the_background():
    exact_px = 0
    for scene, i, dx, dy in moves():
        moved = scene.moved(i, dx, dy)
        vacated = scene.shape_mask(i) & np.all([cov(o) == 0 for o in moved.objects], axis=0)
        if not vacated.any():
            continue
        img, bg = moved.render(), background_only(scene)
        # no trace of the object's colour is left where it was fully painted
        gone = vacated & (cov(scene.objects[i]) == 1)
        if gone.any():
            assert (np.abs(img - scene.render()).max(axis=-1)[gone] > 0.05).all()
        # where no shadow reaches either, the hole is bit-identical to the background-only render
        free = vacated & untouched_by(moved.objects)
        assert np.array_equal(img[free], bg[free])
        exact_px += int(free.sum())
        # elsewhere in the hole: background darkened by the (moved and other) shadows only
        shade = np.prod([shadow_factor(o) for o in moved.objects], axis=0)
        np.testing.assert_allclose(img[vacated], (bg * shade[..., None])[vacated], rtol=0, atol=2e-6)
    assert exact_px > 1000


def test_moved_shadow_moves_with_the_object():
    for scene, i, dx, dy in moves(range(80)):
        moved = scene.moved(i, dx, dy)
        valid = valid_after_shift(dx, dy)
        # the shadow field itself is a shifted copy (to float32 rounding of the blur)
        np.testing.assert_allclose(
            shadow_factor(moved.objects[i])[valid], shift(shadow_factor(scene.objects[i]), dx, dy)[valid], atol=1e-6
        )
    # end to end on one-object scenes: the darkening of the background (image / background) moves too
    for scene, i, dx, dy in moves(range(80, 200)):
        if len(scene.objects) != 1:
            continue
        moved = scene.moved(i, dx, dy)
        bg = background_only(scene).astype(np.float64)
        dark_old, dark_new = scene.render() / bg, moved.render() / bg
        ok = valid_after_shift(dx, dy) & (cov(moved.objects[0]) == 0) & shift(cov(scene.objects[0]) == 0, dx, dy, False)
        np.testing.assert_allclose(dark_new[ok], shift(dark_old, dx, dy)[ok], atol=2e-6)
        assert dark_new[ok].min() < 0.8  # there is a real shadow in what was compared


@PROPERTY
@given(single_object_moves())
def test_moved_property_any_centre(case):
    scene, dx, dy = case
    moved = scene.moved(0, dx, dy)
    o, m = scene.objects[0], moved.objects[0]
    assert np.array_equal(cov(m), shift(cov(o), dx, dy))
    full = cov(m) == 1
    assert np.array_equal(moved.render()[full], shift(scene.render(), dx, dy)[full])
    valid = valid_after_shift(dx, dy)
    np.testing.assert_allclose(shadow_factor(m)[valid], shift(shadow_factor(o), dx, dy)[valid], atol=1e-6)


@pytest.mark.parametrize(
    "obj, dx, dy",
    [
        # a diamond edge through sample points: float32 geometry put them on different sides after the move
        (sw.ShapeObject("diamond", "red", 4.195328327186168, 8.195328327186168, 3.0), 0, -1),
        # float32 shading was 1 ulp off the shifted pixels
        (sw.ShapeObject("disc", "orange", 10.3, 12.7, 5.1), 7, 3),
        (sw.ShapeObject("square", "cyan", 9.9, 11.3, 4.6), 9, 6),
    ],
)
def test_moved_exactness_regressions(obj, dx, dy):
    scene = sw.Scene(N, flat(), (obj,))
    moved = scene.moved(0, dx, dy)
    assert np.array_equal(cov(moved.objects[0]), shift(cov(obj), dx, dy))
    full = cov(moved.objects[0]) == 1
    assert np.array_equal(moved.render()[full], shift(scene.render(), dx, dy)[full])


# -- resized() ------------------------------------------------------------------------


def test_resized_area_centre_and_bbox():
    checked = 0
    for seed in range(150):
        scene = sw.random_scene(seed)
        for i, o in enumerate(scene.objects):
            for scale in (0.5, 0.8, 1.25, 1.6):
                r = scene.resized(i, scale)
                ro = r.objects[i]
                if not ec.fits(ro, N, 1.0):
                    continue
                assert (ro.cx, ro.cy, ro.shape, ro.colour) == (o.cx, o.cy, o.shape, o.colour)
                assert ro.size == pytest.approx(o.size * scale)
                x0, y0, x1, y1 = o.bbox
                assert ro.bbox == pytest.approx(
                    (o.cx - scale * (o.cx - x0), o.cy - scale * (o.cy - y0), o.cx + scale * (x1 - o.cx), o.cy + scale * (y1 - o.cy))
                )
                a0, a1 = scene.shape_mask(i), r.shape_mask(i)
                # area ~ scale^2, to within the pixels along the two outlines
                # (a pixel is in at coverage >= 1/2, i.e. >= 3/8 true coverage given the 1/8 sampling error:
                # at most 5/8 pixel error per pixel of outline, plus the corners)
                assert abs(a1.sum() - scale**2 * a0.sum()) <= 0.625 * (perimeter(ro) + scale**2 * perimeter(o)) + 4
                # anti-aliased area: 4x4 samples err by at most 1/8 pixel per pixel of outline
                assert abs(cov(ro).sum() - scale**2 * cov(o).sum()) <= 0.125 * (perimeter(ro) + scale**2 * perimeter(o)) + 1
                # centre preserved: centroid where the shape's centroid is (below centre for a triangle)
                ex, ey = true_centroid(ro)
                assert centroid(a1) == pytest.approx((ex, ey), abs=0.5)
                assert centroid(cov(ro)) == pytest.approx((ex, ey), abs=0.2)  # edges land on a 1/4 px grid
                # the mask's pixel bbox is the object's bbox up to a pixel
                ys, xs = np.nonzero(a1)
                bx0, by0, bx1, by1 = ro.bbox
                assert bx0 - 1 <= xs.min() and xs.max() + 1 <= bx1 + 1 and by0 - 1 <= ys.min() and ys.max() + 1 <= by1 + 1
                assert xs.max() + 1 - xs.min() == pytest.approx(bx1 - bx0, abs=2)
                assert ys.max() + 1 - ys.min() == pytest.approx(by1 - by0, abs=2)
                # other objects untouched
                assert r.objects[:i] == scene.objects[:i] and r.objects[i + 1 :] == scene.objects[i + 1 :]
                checked += 1
    assert checked > 300
    scene = sw.random_scene(5)
    assert scene.resized(0, 1.0) == scene


@PROPERTY
@given(
    shape=st.sampled_from(sw.SHAPES),
    r=st.floats(3.0, 7.0),
    cx=st.floats(14.0, 18.0),
    cy=st.floats(14.0, 18.0),
    scale=st.floats(0.4, 2.0),
)
def test_resized_property(shape, r, cx, cy, scale):
    scene = sw.Scene(N, flat(), (sw.ShapeObject(shape, "red", cx, cy, r),))
    big = scene.resized(0, scale)
    o = big.objects[0]
    assume(ec.fits(o, N, 0.0))
    c = cov(o)
    # coverage integrates to the true area (supersampling error is per boundary pixel)
    assert abs(c.sum() - true_area(o)) <= 0.125 * perimeter(o) + 1
    assert abs(big.shape_mask(0).sum() - true_area(o)) <= 0.625 * perimeter(o) + 4
    assert centroid(c) == pytest.approx(true_centroid(o), abs=0.2)


# -- recoloured() -----------------------------------------------------------------------


def test_recoloured_changes_only_the_object_colour():
    checked = 0
    for seed in range(120):
        scene = sw.random_scene(seed)
        i = seed % len(scene.objects)
        o = scene.objects[i]
        new_colour = sw.COLOURS[(sw.COLOURS.index(o.colour) + 1 + seed % 6) % len(sw.COLOURS)]
        assert new_colour != o.colour
        rec = scene.recoloured(i, new_colour)
        ro = rec.objects[i]
        assert (ro.shape, ro.cx, ro.cy, ro.size, ro.colour) == (o.shape, o.cx, o.cy, o.size, new_colour)
        assert np.array_equal(rec.shape_mask(i), scene.shape_mask(i))
        assert all(np.array_equal(a, b) for a, b in zip(rec.masks(), scene.masks()))
        old_img, new_img = scene.render(), rec.render()
        outside = cov(o) == 0
        assert np.array_equal(new_img[outside], old_img[outside])  # shadows unchanged too: exact
        # fully covered, not touched by later objects: the new palette colour times the shading
        inside = (cov(o) == 1) & untouched_by(scene.objects[i + 1 :])
        want = np.clip(np.asarray(sw.PALETTE[new_colour])[None, None, :] * expected_shade(o)[..., None], 0, 1)
        np.testing.assert_allclose(new_img[inside], want[inside], rtol=0, atol=1e-6)
        if inside.any():
            # it is no longer the old colour
            assert (np.abs(new_img[inside] - old_img[inside]).max(axis=-1) > 0.1).all()
            # and its hue is nearest the new palette colour
            pal = np.array([sw.PALETTE[c] for c in sw.COLOURS])
            px = new_img[inside] / np.linalg.norm(new_img[inside], axis=-1, keepdims=True)
            nearest = np.argmax(px @ (pal / np.linalg.norm(pal, axis=-1, keepdims=True)).T, axis=-1)
            assert (nearest == sw.COLOURS.index(new_colour)).all()
        checked += int(inside.sum())
    assert checked > 5000


# -- pasted() ------------------------------------------------------------------------------


def test_pasted_adds_an_object_on_top():
    rng = np.random.default_rng(99)
    checked = 0
    for seed in range(120):
        scene = sw.random_scene(seed)
        donor = sw.random_scene(10_000 + seed).objects[0]
        scale = float(rng.choice([0.7, 1.0, 1.3]))
        r = donor.size * scale
        cx, cy = (float(v) for v in rng.uniform(r + 1, N - r - 1, size=2))
        pasted = scene.pasted(donor, cx, cy, scale)
        new = pasted.objects[-1]
        assert pasted.objects[:-1] == scene.objects and len(pasted.objects) == len(scene.objects) + 1
        assert new == dataclasses.replace(donor, cx=cx, cy=cy, size=donor.size * scale)
        assert pasted.background == scene.background
        # visible masks: the pasted object is fully visible, everything else loses what it covers
        full_new = pasted.shape_mask(len(scene.objects))
        old_vis, new_vis = scene.masks(), pasted.masks()
        assert np.array_equal(new_vis[-1], full_new)
        for a, b in zip(old_vis, new_vis[:-1]):
            assert np.array_equal(b, a & ~full_new)
        # pixels: unchanged outside the object and its shadow, exactly darkened by the shadow elsewhere
        old_img, new_img = scene.render(), pasted.render()
        far = untouched_by([new])
        assert np.array_equal(new_img[far], old_img[far])
        uncovered = cov(new) == 0
        assert np.array_equal(new_img[uncovered], (old_img * shadow_factor(new)[..., None])[uncovered])
        # the object itself: its own colour, shaded
        inside = cov(new) == 1
        want = np.clip(np.asarray(sw.PALETTE[new.colour])[None, None, :] * expected_shade(new)[..., None], 0, 1)
        np.testing.assert_allclose(new_img[inside], want[inside], rtol=0, atol=1e-6)
        checked += int(far.sum())
    assert checked > 10000


# -- visible masks -------------------------------------------------------------------------------


def _check_visible_masks(scene: sw.Scene) -> None:
    vis = scene.masks()
    full = [scene.shape_mask(i) for i in range(len(scene.objects))]
    assert len(vis) == len(scene.objects)
    for i, v in enumerate(vis):
        assert v.dtype == bool and v.shape == (scene.size, scene.size)
        assert not (v & ~full[i]).any(), "visible mask must be a subset of the full mask"
        for j in range(i + 1, len(vis)):
            assert not (v & vis[j]).any(), "visible masks must be disjoint"
            assert not (v & full[j]).any(), "a later object occludes an earlier one"
        # what is hidden is exactly what later objects cover
        later = np.any(full[i + 1 :], axis=0) if i + 1 < len(full) else np.zeros_like(v)
        assert np.array_equal(v, full[i] & ~later)
    assert np.array_equal(np.any(vis, axis=0), np.any(full, axis=0))
    assert np.array_equal(vis[-1], full[-1])
    assert all(np.array_equal(a, b) for a, b in zip(vis, sw.visible_masks(scene)))


def test_visible_masks_properties():
    for seed in range(100):
        scene = sw.random_scene(seed)
        _check_visible_masks(scene)
        # more overlap: paste another scene's objects across the middle
        extra = sw.random_scene(seed + 500).objects
        for k, o in enumerate(extra):
            scene = scene.pasted(o, 12.0 + 4 * k, 14.0 + 2 * k)
        _check_visible_masks(scene)


def test_fully_occluded_object_has_an_empty_visible_mask():
    small = sw.ShapeObject("disc", "red", 16, 16, 3)
    big = sw.ShapeObject("square", "blue", 16, 16, 8)
    vis = sw.Scene(N, flat(), (small, big)).masks()
    assert not vis[0].any() and vis[1].sum() == 16 * 16
    vis = sw.Scene(N, flat(), (big, small)).masks()  # order matters
    assert vis[0].sum() == 16 * 16 - vis[1].sum() and vis[1].any()


# -- serialisation ------------------------------------------------------------------------------------


def test_dict_and_json_round_trip_render_identically():
    for seed in range(40):
        scene = sw.random_scene(seed)
        variants = [scene, scene.moved(0, 1, -1), scene.resized(0, 0.9), scene.pasted(scene.objects[0], 10.5, 20.25, 0.5)]
        for s in variants:
            d = s.to_dict()
            back = sw.Scene.from_dict(d)
            assert back == s
            assert np.array_equal(back.render(), s.render())
            text = s.to_json()
            loaded = json.loads(text)
            assert loaded == json.loads(json.dumps(d))
            back2 = sw.Scene.from_dict(loaded)
            assert back2 == s and np.array_equal(back2.render(), s.render())


def test_to_dict_contents():
    scene = sw.Scene(
        N,
        sw.Background("gradient", (0.2, 0.3, 0.4), (0.5, 0.5, 0.5), angle=1.0),
        (sw.ShapeObject("disc", "red", 10.0, 12.0, 4.0), sw.ShapeObject("triangle", "blue", 20.0, 20.0, 5.0)),
    )
    d = scene.to_dict()
    assert d["size"] == N
    assert d["prompt"] == scene.prompt() == "gradient, red disc, blue triangle"
    assert d["background"]["kind"] == "gradient" and d["background"]["angle"] == 1.0
    assert d["objects"][0] == {"shape": "disc", "colour": "red", "centre": [10.0, 12.0], "size": 4.0, "bbox": [6.0, 8.0, 14.0, 16.0]}
    assert d["objects"][1]["bbox"] == [15.0, 15.0, 25.0, 25.0]
    json.loads(scene.to_json())


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(shape="hexagon"), "'hexagon'"),
        (dict(colour="purple"), "'purple'"),
        (dict(size=0.0), r"size.*0\.0"),
        (dict(size=-2.0), r"size.*-2\.0"),
        (dict(size=float("nan")), r"size.*nan"),
        (dict(size=float("inf")), r"size.*inf"),
        (dict(cx=float("nan")), r"centre.*nan"),
        (dict(cy=float("inf")), r"centre.*inf"),
        (dict(cx=float("-inf")), r"centre.*-inf"),
    ],
)
def test_shape_object_validation(kwargs, pattern):
    args = dict(shape="disc", colour="red", cx=10.0, cy=10.0, size=3.0) | kwargs
    with pytest.raises(ValueError, match=pattern):
        sw.ShapeObject(**args)


def test_background_validation():
    with pytest.raises(ValueError, match="'stripes'"):
        sw.Background("stripes", (0.5,) * 3, (0.5,) * 3)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_resized_rejects_bad_scale(scale):
    scene = sw.random_scene(1)
    with pytest.raises(ValueError, match="scale.*" + re.escape(repr(scale))):
        scene.resized(0, scale)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_pasted_rejects_bad_scale(scale):
    scene = sw.random_scene(1)
    with pytest.raises(ValueError, match="size"):
        scene.pasted(scene.objects[0], 16.0, 16.0, scale)


@pytest.mark.parametrize("index", [3, 10, -1, -4])
@pytest.mark.parametrize("edit", ["moved", "resized", "recoloured", "shape_mask", "random_move"])
def test_bad_object_index(edit, index):
    scene = sw.random_scene(0, n_objects=3)
    call = {
        "moved": lambda: scene.moved(index, 1, 1),
        "resized": lambda: scene.resized(index, 1.1),
        "recoloured": lambda: scene.recoloured(index, "red"),
        "shape_mask": lambda: scene.shape_mask(index),
        "random_move": lambda: ec.random_move(np.random.default_rng(0), scene, index),
    }[edit]
    with pytest.raises(IndexError, match=rf"index {index} out of range.*3 objects"):
        call()


def test_edit_validation_errors():
    scene = sw.random_scene(2)
    with pytest.raises(ValueError, match="'purple'"):
        scene.recoloured(0, "purple")
    with pytest.raises(ValueError, match="centre.*nan"):
        scene.moved(0, float("nan"), 0.0)
    with pytest.raises(ValueError, match="centre.*inf"):
        scene.pasted(scene.objects[0], 5.0, float("inf"))
    for n in (0, 4, -1):
        with pytest.raises(ValueError, match=f"n_objects.*{n}"):
            sw.random_scene(0, n_objects=n)


# -- random_move --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("min_dist", [4.0, 9.0])
def test_random_move_keeps_object_inside_and_moves_far_enough(min_dist):
    rng = np.random.default_rng(7)
    n = 0
    for seed in range(150):
        scene = sw.random_scene(seed)
        for i, o in enumerate(scene.objects):
            try:
                dx, dy = ec.random_move(rng, scene, i, min_dist=min_dist)
            except ValueError:
                assert min_dist > 4.0  # an object at most 0.27 * 32 px always has room to move 4 px
                continue
            assert float(dx).is_integer() and float(dy).is_integer()
            assert math.hypot(dx, dy) >= min_dist
            moved = scene.moved(i, dx, dy).objects[i]
            assert ec.fits(moved, N, margin=1.0)
            n += 1
    assert n > 250
    # reproducible from the generator state
    scene = sw.random_scene(4)
    assert ec.random_move(np.random.default_rng(3), scene, 0) == ec.random_move(np.random.default_rng(3), scene, 0)


def test_random_move_without_room_raises():
    scene = sw.Scene(N, flat(), (sw.ShapeObject("square", "red", 16.0, 16.0, 14.5),))
    with pytest.raises(ValueError, match="object 0 has no room"):
        ec.random_move(np.random.default_rng(0), scene, 0)


def test_fits():
    o = sw.ShapeObject("disc", "red", 10.0, 10.0, 4.0)
    assert ec.fits(o, 20) and ec.fits(o, 20, 6.0) and not ec.fits(o, 20, 6.5)
    assert not ec.fits(dataclasses.replace(o, cx=3.0), 20)
    assert not ec.fits(dataclasses.replace(o, cy=17.0), 20)


# -- shading and shadows -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", sw.SHAPES)
def test_objects_are_brighter_toward_the_top_left(shape):
    obj = sw.ShapeObject(shape, "green", 15.0, 15.0, 9.0)
    img = sw.Scene(N, flat(), (obj,)).render()
    inside = cov(obj) == 1
    ys, xs = np.nonzero(inside)
    lum = img[ys, xs].sum(axis=-1)
    assert np.corrcoef(lum, xs + ys)[0, 1] < -0.99  # brightness falls along x + y
    assert (xs + ys)[np.argmax(lum)] < (xs + ys)[np.argmin(lum)]
    # exactly the documented model (green is never clipped)
    want = np.asarray(sw.PALETTE["green"])[None, None, :] * expected_shade(obj)[..., None]
    np.testing.assert_allclose(img[inside], want[inside], rtol=0, atol=1e-6)
    # the shading is a small modulation: never more than +-SHADING
    assert lum.max() / lum.min() <= (1 + sw.SHADING) / (1 - sw.SHADING) + 1e-6


def test_shadow_darkens_the_background_down_right_only():
    grey = 0.6
    obj = sw.ShapeObject("square", "red", 14.0, 14.0, 6.0)  # covers [8, 20] x [8, 20]
    img = sw.Scene(N, flat(grey), (obj,)).render()
    bg = sw.Scene(N, flat(grey), ()).render()
    assert np.array_equal(bg, np.full((N, N, 3), grey, np.float32))
    outside = cov(obj) == 0
    assert (img[outside] <= bg[outside]).all()  # a shadow only ever darkens
    # just down-right of the object (offset 2 px, blur 1 px): clearly darker
    for y, x in [(20, 20), (21, 21), (14, 20), (14, 21), (20, 14), (21, 12)]:
        assert outside[y, x]
        assert img[y, x, 0] < 0.8 * grey, (y, x, img[y, x])
    # just up-left: essentially untouched
    for y, x in [(7, 7), (6, 14), (14, 6), (7, 12)]:
        assert img[y, x, 0] > 0.99 * grey, (y, x, img[y, x])
    # far away: bit-identical
    assert np.array_equal(img[:3], bg[:3]) and np.array_equal(img[:, :3], bg[:, :3])


def test_shadows_in_random_scenes():
    for seed in range(120):
        scene = sw.random_scene(seed)
        img, bg = scene.render(), background_only(scene)
        free = np.all([cov(o) == 0 for o in scene.objects], axis=0)
        assert (img[free] <= bg[free]).all()
        for o in scene.objects:
            # where the object, shifted 2 px down-right, fully covers a pixel it does not cover itself
            core = shift(cov(o) == 1, 2, 2, False) & free
            if core.any():
                assert (img[core] < 0.8 * bg[core]).all(), (seed, o)


def test_shift_blur_kernel():
    a = np.zeros((N, N), np.float32)
    a[10, 12] = 1.0
    out = sw._shift_blur(a, 2.0, 3.0, 1.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)  # normalised, nothing lost away from the border
    assert centroid(out) == pytest.approx((12.5 + 2.0, 10.5 + 3.0), abs=1e-4)
    assert np.unravel_index(np.argmax(out), out.shape) == (13, 14)
    # zero (no wrap-around) past the border
    edge = np.zeros((N, N), np.float32)
    edge[N - 1, N - 1] = 1.0
    assert sw._shift_blur(edge, 2.0, 2.0, 1.0).sum() < 0.1
