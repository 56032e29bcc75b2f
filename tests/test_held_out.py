"""Held-out stratified bench cases: fixed seeds apart from the tuning cases, each case in the
stratum it was drawn for, and a run's rows and summaries."""

import pytest

from dragon_lab import bench
from dragon_lab.held_out import (HELD_OUT_SEED, STRATA, applies, format_held_out, held_out_case, merge_held_out,
                                 run_held_out, strata_of)


def test_held_out_seeds_are_not_the_tuning_seeds():
    assert HELD_OUT_SEED != bench.BENCH_SEED
    tuning = {bench.make_case(kind, k).edit_case.scene for kind in bench.KINDS for k in range(12)}
    held = {held_out_case(kind, s, k).scene for kind in bench.KINDS for s in STRATA if applies(kind, s)
            for k in range(2)}
    assert not tuning & held


@pytest.mark.parametrize("kind", bench.KINDS)
def test_every_case_is_in_its_stratum_and_reproducible(kind):
    for stratum in STRATA:
        if not applies(kind, stratum):
            with pytest.raises(ValueError):
                held_out_case(kind, stratum, 0)
            continue
        case = held_out_case(kind, stratum, 1)
        assert stratum in strata_of(kind, case) and case == held_out_case(kind, stratum, 1)
        if stratum == "plain":
            assert strata_of(kind, case) == {"plain"}
        if stratum == "small":
            assert 2 * case.target.objects[case.index].size < 6


def test_a_held_out_run_reports_rows_and_summaries(shapes):
    backend, enc = shapes
    r = run_held_out(backend, enc, ("move",), ("plain", "far"), n=1, steps=3, prompts=("input", "empty"),
                     log=lambda line: None)
    assert [(c["stratum"], c["prompt"]) for c in r["cases"]] == [("plain", "input"), ("plain", "empty"),
                                                                 ("far", "input"), ("far", "empty")]
    assert set(r["summary"]) == {"move|plain|input", "move|plain|empty", "move|far|input", "move|far|empty",
                                 "move|all|input", "move|all|empty"}
    assert r["summary"]["move|all|input"]["dragon"]["psnr"]["n"] == 2
    assert "| move | far | empty |" in format_held_out(r)


def test_merging_replaces_only_the_kinds_rerun():
    """After a settings change for some kinds, their rows replace the old ones; the others stay,
    and the summaries are recomputed from the merged rows (not kept from either run)."""
    def row(kind, stratum, psnr):
        scores = {m: {"psnr": psnr, "bg_psnr": 30.0, "iou": 0.5, "centroid_err": 1.0, "vacated": 1.0,
                      "colour_drift": 0.0, "area_err": 0.1, "drag_ratio": 0.2, "colour_err": 0.1,
                      "colour_gap_left": 0.3} for m in bench.METHODS}
        return {"kind": kind, "stratum": stratum, "prompt": "input", "k": 0, "strata": [stratum], "edit": {},
                "scores": scores}

    head = {"held_out_seed": HELD_OUT_SEED, "cases_per_stratum": 1, "steps": 20, "prompts": ["input"]}
    old = {**head, "summary": {}, "cases": [row("move", "plain", 20.0), row("drag", "plain", 25.0)]}
    new = {**head, "summary": {}, "cases": [row("move", "plain", 30.0)]}
    merged = merge_held_out(old, new)
    assert [(c["kind"], c["scores"]["dragon"]["psnr"]) for c in merged["cases"]] == [("drag", 25.0), ("move", 30.0)]
    assert merged["summary"]["move|all|input"]["dragon"]["psnr"]["mean"] == 30.0
    assert merged["summary"]["drag|plain|input"]["dragon"]["psnr"]["mean"] == 25.0
    with pytest.raises(ValueError, match="different steps: 20 vs 10"):
        merge_held_out(old, {**new, "steps": 10})
    with pytest.raises(ValueError, match="different presets: model vs paper"):
        merge_held_out(old, {**new, "preset": "paper"})
