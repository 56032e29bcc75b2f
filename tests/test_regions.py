"""Region maths: masks on grids, transforms, moved masks, point patches (with hypothesis)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dragon_core.regions import (
    MAX_POINT_PAIRS,
    parse_points,
    RegionError,
    Transform,
    bbox,
    centroid,
    check_mask,
    check_points,
    dilate,
    moved_mask,
    point_patch,
    to_grid,
    transform_about_mask,
    warp,
)


def box(h=32, w=32, x0=6, y0=4, x1=12, y1=10):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = 1
    return m


def test_check_mask_errors_name_the_input():
    with pytest.raises(RegionError, match="mask is empty"):
        check_mask(torch.zeros(8, 8))
    with pytest.raises(RegionError, match="ref_mask is empty"):
        check_mask(torch.full((8, 8), 0.2), "ref_mask")
    with pytest.raises(RegionError, match="NaN"):
        check_mask(torch.full((8, 8), float("nan")))
    with pytest.raises(RegionError, match=r"\[0, 1\]"):
        check_mask(torch.full((8, 8), 2.0))
    with pytest.raises(RegionError, match="2-D"):
        check_mask(torch.ones(1, 8, 8))
    m = box()
    assert torch.equal(check_mask(m), m)


def test_centroid_bbox_and_grid():
    m = box()
    assert centroid(m) == (9.0, 7.0)
    assert bbox(m) == (6, 4, 12, 10)
    g = to_grid(m, 16, 16)
    assert g.shape == (16, 16) and float(g.sum()) == pytest.approx(float(m.sum()) / 4)
    assert to_grid(m, 32, 32) is not m and torch.equal(to_grid(m, 32, 32), m)
    assert dilate(to_grid(m, 16, 16) > 0.5, 1).sum() > (to_grid(m, 16, 16) > 0.5).sum()


def test_integer_shift_is_exact_and_area_preserving():
    m = box()
    out = moved_mask(m, transform_about_mask(m, 5, 3))
    assert torch.equal(out, torch.roll(m, (3, 5), (0, 1)))


def test_resize_about_the_box_centre():
    m = box(x0=10, y0=10, x1=18, y1=18)
    out = moved_mask(m, transform_about_mask(m, 0, 0, 1.5))
    assert float(out.sum()) == pytest.approx(64 * 2.25, rel=0.02)
    cx, cy = centroid(out)
    assert (cx, cy) == pytest.approx((14.0, 14.0), abs=0.05)


def test_leaving_the_image_is_a_clear_error():
    m = box()
    with pytest.raises(RegionError, match="leaves the image.*reduce dx/dy or scale"):
        moved_mask(m, transform_about_mask(m, 25, 0))
    with pytest.raises(RegionError, match="leaves the image"):
        moved_mask(m, transform_about_mask(m, 0, 0, 6.0))


def test_transform_validation():
    with pytest.raises(ValueError, match="scale"):
        Transform(scale=0)
    with pytest.raises(ValueError, match="dx must be finite"):
        Transform(dx=float("inf"))
    assert Transform(dx=2, scale=2, cx=1, cy=1).apply(2, 1) == (5.0, 1.0)


def test_warp_moves_maps_on_any_grid():
    f = torch.zeros(2, 4, 16, 16)
    f[:, :, 2, 3] = 1.0  # cell (row 2, col 3) at 16x16 covers image pixels x 6-7, y 4-5 of 32x32
    out = warp(f, Transform(dx=4, dy=2), (32, 32), mode="nearest")
    assert out.shape == f.shape and out[0, 0, 3, 5] == 1 and out.sum() == f.sum()
    assert torch.equal(warp(f, Transform(), (32, 32)), f)


def test_point_patches_are_clipped():
    p = point_patch(torch.tensor([[0.0, 0.0], [31.5, 31.5], [16.0, 8.0]]), 16, 16, (32, 32))
    assert p.shape == (3, 9, 2)
    assert p.min() >= 0 and p.max() <= 15
    assert p[2, 4].tolist() == [4, 8]  # centre of the patch: row y/2, col x/2


@pytest.mark.parametrize("pts,match", [
    (torch.zeros(0, 2), "no points"),
    (torch.tensor([[40.0, 1.0]]), r"handles\[0\] = \(40, 1\) is outside the 32x32 image"),
    (torch.tensor([[float("nan"), 1.0]]), "NaN"),
    (torch.zeros(3), r"\(P, 2\)"),
])
def test_check_points_errors(pts, match):
    with pytest.raises(RegionError, match=match):
        check_points(pts, (32, 32), "handles")


@settings(max_examples=40, deadline=None, database=None)
@given(x0=st.integers(0, 24), y0=st.integers(0, 24), w=st.integers(1, 8), h=st.integers(1, 8),
       dx=st.integers(-31, 31), dy=st.integers(-31, 31), scale=st.floats(0.3, 3.0))
def test_moved_masks_stay_in_the_image_and_keep_their_area(x0, y0, w, h, dx, dy, scale):
    m = box(x0=x0, y0=y0, x1=x0 + w, y1=y0 + h)
    t = transform_about_mask(m, dx, dy, scale)
    try:
        out = moved_mask(m, t)
    except RegionError:
        return  # the object would leave the image: refused, never clipped silently
    assert out.shape == m.shape and out.min() >= 0 and out.max() <= 1
    # resampling a binary mask moves its edge by up to about half a pixel: allow a
    # quarter of the scaled perimeter plus one pixel
    perimeter = 2 * (w + h) * scale
    assert float(out.sum()) == pytest.approx(float(m.sum()) * scale**2, abs=0.25 * perimeter + 1)
    if scale == 1.0:
        assert float(out.sum()) == pytest.approx(float(m.sum()), abs=1e-3)


@settings(max_examples=40, deadline=None, database=None)
@given(pts=st.lists(st.tuples(st.floats(0, 31.99), st.floats(0, 31.99)), min_size=1, max_size=50),
       grid=st.sampled_from([4, 8, 16, 32]))
def test_point_patches_never_leave_the_grid(pts, grid):
    p = point_patch(torch.tensor(pts), grid, grid, (32, 32))
    assert p.min() >= 0 and p.max() < grid


def test_resize_of_a_triangle_keeps_its_box_centre():
    m = torch.zeros(32, 32)
    for r in range(8):  # apex-up triangle in rows 8..15, widening downward
        m[8 + r, 16 - r : 17 + r] = 1
    t = transform_about_mask(m, 0, 0, 1.5)
    x0, y0, x1, y1 = bbox(m)
    assert (t.cx, t.cy) == ((x0 + x1) / 2, (y0 + y1) / 2)
    nx0, ny0, nx1, ny1 = bbox(moved_mask(m, t))
    assert abs((nx0 + nx1) / 2 - t.cx) <= 0.5 and abs((ny0 + ny1) / 2 - t.cy) <= 0.5


# -- points strings ------------------------------------------------------------------------------


def test_parse_points_pairs_and_lines():
    h, t = parse_points("1,2,3,4; 5.5,6,7,8\n9,10,11,12")
    assert h.tolist() == [[1, 2], [5.5, 6], [9, 10]]
    assert t.tolist() == [[3, 4], [7, 8], [11, 12]]


def test_parse_points_json_kjnodes_and_lists():
    h, t = parse_points('[{"x": 1, "y": 2}, {"x": 3, "y": 4}, {"x": 5, "y": 6}, {"x": 7, "y": 8}]')
    assert h.tolist() == [[1, 2], [5, 6]] and t.tolist() == [[3, 4], [7, 8]]
    h, t = parse_points("[[1, 2], [3, 4]]")
    assert h.tolist() == [[1, 2]] and t.tolist() == [[3, 4]]


@pytest.mark.parametrize("text, needle", [
    ("", "no points"),
    ("1,2,3", "expected 4"),
    ("1,2,3,x", "not a number"),
    ("1,2,3,nan", "NaN"),
    ("1,2,inf,4", "NaN or infinity"),
    ("[{\"x\": 1, \"y\": 2}]", "odd count"),
    ("[1, 2", "does not parse"),
    ('{"x": 1}', "must be a list"),
    ('[{"x": 1}, {"x": 2, "y": 3}]', "JSON point 1"),
    ('[[1, true], [2, 3]]', "not a number"),
    ("__import__('os').system('true')", "expected 4"),
])
def test_parse_points_errors_name_the_input(text, needle):
    with pytest.raises(RegionError) as e:
        parse_points(text, "drag points")
    assert "drag points" in str(e.value) and needle in str(e.value)


def test_parse_points_caps_the_count():
    text = ";".join("1,2,3,4" for _ in range(MAX_POINT_PAIRS + 1))
    with pytest.raises(RegionError, match="at most"):
        parse_points(text)
    assert parse_points(";".join("1,2,3,4" for _ in range(MAX_POINT_PAIRS)))[0].shape == (MAX_POINT_PAIRS, 2)
