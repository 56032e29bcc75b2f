"""Held-out stratified bench cases: fixed seeds apart from the tuning cases, each case in the
stratum it was drawn for, and a run's rows and summaries."""

import pytest

from dragon_lab import bench
from dragon_lab.held_out import (HELD_OUT_SEED, STRATA, applies, format_held_out, held_out_case, run_held_out,
                                 strata_of)


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
