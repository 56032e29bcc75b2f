"""Per-kind summaries of per-case bench scores: mean, median and worst, of errors taken as
absolute values first, so that opposite misses never cancel (a 0.7 and a 1.3 area ratio are
a 30 % area error, not a perfect 1.0)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

# direction of every metric the bench reports: True = higher is better
HIGHER_IS_BETTER = {"psnr": True, "bg_psnr": True, "iou": True, "vacated": True, "centroid_err": False,
                    "centroid_err_pct": False, "colour_err": False, "colour_gap_left": False, "drag_ratio": False,
                    "area_err": False, "colour_drift": False}
# a case fails on colour when more than this share of the target object's pixels show another
# palette colour in the result (an edit other than appearance changed the object's colour)
DRIFT_FAILURE = 0.5


def area_error(ratio: float) -> float:
    """|result area / expected area - 1|: how far the size is off, either way."""
    return abs(ratio - 1.0)


def summarise(values: Iterable[float], metric: str) -> dict[str, float]:
    """Mean, median and worst (lowest where higher is better, else highest) of one metric's
    per-case values; NaN values (a metric a case does not have) are left out."""
    v = np.asarray([x for x in values if not (isinstance(x, float) and math.isnan(x))], np.float64)
    if v.size == 0:
        return {"mean": math.nan, "median": math.nan, "worst": math.nan, "n": 0}
    worst = v.min() if HIGHER_IS_BETTER[metric] else v.max()
    return {"mean": float(v.mean()), "median": float(np.median(v)), "worst": float(worst), "n": int(v.size)}


def summarise_cases(rows: list[dict[str, Any]], metrics: tuple[str, ...], methods: tuple[str, ...]
                    ) -> dict[str, Any]:
    """{method: {metric: summary}} over per-case ``rows[i]["scores"][method][metric]``, plus
    ``colour_failures``: per method, the cases whose colour drifted (``DRIFT_FAILURE``)."""
    out: dict[str, Any] = {}
    for method in methods:
        scores = [r["scores"][method] for r in rows]
        out[method] = {m: summarise([s.get(m, math.nan) for s in scores], m) for m in metrics}
        out[method]["colour_failures"] = sum(s.get("colour_drift", 0.0) > DRIFT_FAILURE for s in scores)
    return out
