"""``benchmarks.median_of_runs``: one ratio per case from several runs' JSON, their median, and a case
missing from a run or without a ratio shown as such."""

from __future__ import annotations

import json

from benchmarks.median_of_runs import table


def _run(path, cases):
    path.write_text(json.dumps({"cases": [
        {"model": m, "batch": b, "threads": t, "ratios": {"ort/graphc": r},
         "results": {"graphc": {"median_ms": ms}}} for m, b, t, r, ms in cases]}))
    return path


def test_median_per_case_over_runs(tmp_path):
    runs = [_run(tmp_path / "a.json", [("resnet50", 1, 1, 1.25, 57.0), ("mlp", 32, 2, None, 0.004)]),
            _run(tmp_path / "b.json", [("resnet50", 1, 1, 1.17, 62.3), ("mlp", 32, 2, 2.1, 0.005)]),
            _run(tmp_path / "c.json", [("resnet50", 1, 1, 1.21, 59.0)])]
    text = table(runs, "ort/graphc")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["resnet50"].endswith("| 59 | 1.25 | 1.17 | 1.21 | **1.21** |"), rows["resnet50"]
    assert "| — | 2.10 | **2.10** |" in rows["mlp"], rows["mlp"]  # a run without the ratio is left out of the median
    assert "Median of 3 runs" in text
