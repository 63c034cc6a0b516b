"""tools/eval_ytvis.py: the --json line, zip input, and a start-up without torch or detectron2."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from _ytvis_testing import dataset, gt_annotation, rect, result

from mdqe.evaluation.ytvis_metrics import METRIC_NAMES

TOOL = Path(__file__).resolve().parents[2] / "tools" / "eval_ytvis.py"


@pytest.fixture
def files(tmp_path):
    a, b = rect(8, 8, 0, 0, 4, 4), rect(8, 8, 4, 4, 8, 8)
    gt = dataset([(1, 8, 8, 2)], [gt_annotation(1, 1, 1, [a, a]), gt_annotation(2, 1, 2, [b, None])])
    results = [result(1, 1, 0.9, [a, a]), result(1, 2, 0.8, [a, None])]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    with zipfile.ZipFile(tmp_path / "results.zip", "w") as archive:
        archive.write(tmp_path / "results.json", "results.json")
    return tmp_path


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, check=True)


def test_json_line_has_exactly_the_eight_metrics_in_percent(files):
    out = run_tool("--gt", str(files / "gt.json"), "--results", str(files / "results.json"), "--json")
    metrics = json.loads(out.stdout)
    assert list(metrics) == list(METRIC_NAMES)
    # Category 1 is found, category 2 is missed: AP 50; no medium or large objects: null.
    assert metrics["AP"] == pytest.approx(50) and metrics["AR10"] == pytest.approx(50)
    assert metrics["APm"] is None and metrics["APl"] is None


def test_zip_input_and_table_output(files):
    table = run_tool("--gt", str(files / "gt.json"), "--results", str(files / "results.zip")).stdout
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.500" in table


def test_tool_imports_neither_torch_nor_detectron2():
    code = (
        f"import sys; sys.path.insert(0, {str(TOOL.parent)!r}); import eval_ytvis; "
        "eval_ytvis.load_metrics_module(); "
        "print(sorted(m for m in ('torch', 'detectron2', 'mdqe') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
