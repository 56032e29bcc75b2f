"""The bench's summaries: absolute errors, medians and worst cases, and the colour-drift metric."""

import math

import numpy as np
import pytest

from dragon_demo import shapes_world as sw
from dragon_lab import edit_cases as ec
from dragon_lab.bench import colour_drift, score
from dragon_lab.bench_stats import area_error, summarise, summarise_cases


def test_opposite_area_misses_do_not_cancel():
    errors = [area_error(r) for r in (0.7, 1.3)]
    s = summarise(errors, "area_err")
    assert s["mean"] == pytest.approx(0.3) and s["median"] == pytest.approx(0.3)
    assert np.mean([0.7, 1.3]) == pytest.approx(1.0)  # what a mean of signed ratios would have said


def test_worst_follows_the_metric_direction_and_nan_is_left_out():
    assert summarise([30.0, 20.0, math.nan], "psnr") == {"mean": 25.0, "median": 25.0, "worst": 20.0, "n": 2}
    assert summarise([1.0, 4.0], "centroid_err")["worst"] == 4.0
    assert summarise([], "iou")["n"] == 0


def test_colour_drift_counts_pixels_of_another_palette_colour():
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    img = np.full((8, 8, 3), 0.5, np.float32)  # grey background: neither colour
    img[mask] = sw.PALETTE["red"]
    assert colour_drift(img, mask, "red") == 0.0
    img[2:4, 2:6] = sw.PALETTE["magenta"]
    assert colour_drift(img, mask, "red") == pytest.approx(0.5)
    img[mask] = 0.5  # the object is gone: a position failure, not a colour change
    assert colour_drift(img, mask, "red") == 0.0


def test_scores_of_the_target_itself_and_a_recoloured_result():
    case = ec.random_edit_case(3, "move")
    perfect = score("move", case, case.target.render())
    assert perfect["colour_drift"] == 0.0 and perfect["iou"] == 1.0
    other = next(c for c in sw.COLOURS if c != case.target.objects[case.index].colour)
    recoloured = score("move", case, case.target.recoloured(case.index, other).render())
    assert recoloured["colour_drift"] > 0.5
    rows = [{"scores": {"m": perfect}}, {"scores": {"m": recoloured}}]
    assert summarise_cases(rows, ("iou",), ("m",))["m"]["colour_failures"] == 1


def test_appearance_reports_the_share_of_the_colour_gap_left():
    case = ec.random_edit_case(5, "appearance")
    assert score("appearance", case, case.target.render())["colour_gap_left"] == 0.0
    assert score("appearance", case, case.scene.render())["colour_gap_left"] == pytest.approx(1.0)
