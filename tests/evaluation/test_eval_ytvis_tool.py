"""tools/eval_ytvis.py: the --json line, zip input, --breakdown / --report / --gt-long, bad inputs, and a
start-up without torch or detectron2."""

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


def test_tool_imports_neither_torch_nor_detectron2(files):
    # Run the tool in this interpreter as `python tools/eval_ytvis.py` would, then list what it imported.
    code = (
        "import runpy, sys; "
        f"sys.argv = [{str(TOOL)!r}, '--gt', {str(files / 'gt.json')!r}, '--results', "
        f"{str(files / 'results.json')!r}, '--breakdown', '--json']; "
        "tool = runpy.run_path(sys.argv[0]); tool['main'](); "
        "print(sorted(m for m in ('torch', 'detectron2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads(out.stdout.splitlines()[0])["AP"] == pytest.approx(50)


def test_breakdown_json_has_the_analysis(files):
    out = run_tool(
        "--gt", str(files / "gt.json"), "--results", str(files / "results.json"), "--breakdown", "--json"
    )
    content = json.loads(out.stdout)
    assert content["AP"] == pytest.approx(50)
    assert {"per_category", "occlusion", "errors"} <= set(content)
    # Category 2's prediction lies on category 1's track (video IoU 0.5): a class error; its own track
    # is missed.
    assert content["errors"]["counts"] == {"cls": 1, "dupe": 0, "loc": 0, "both": 0, "bkg": 0, "missed": 1}


def test_breakdown_table_and_report(files):
    report = files / "out" / "report.html"
    out = run_tool(
        "--gt", str(files / "gt.json"), "--results", str(files / "results.json"), "--report", str(report)
    )
    assert "AP per category:" in out.stdout and "Errors at IoU 0.50" in out.stdout
    assert 'id="metric-AP">50.00<' in report.read_text()


def test_2022_protocol_averages_short_and_long_ap(files, tmp_path):
    gt = json.loads((files / "gt.json").read_text())
    long = {**gt, "videos": [{"id": 2, "height": 8, "width": 8, "length": 2}], "annotations": [
        {**gt["annotations"][0], "id": 9, "video_id": 2}
    ]}  # fmt: skip
    (tmp_path / "gt_long.json").write_text(json.dumps(long))
    results = json.loads((files / "results.json").read_text())
    results.append({**results[0], "video_id": 2})  # finds the long video's track
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = run_tool(
        "--gt", str(files / "gt.json"), "--gt-long", str(tmp_path / "gt_long.json"),
        "--results", str(tmp_path / "results.json"),
    )  # fmt: skip
    scores = json.loads(out.stdout)
    assert scores["AP_S"] == pytest.approx(50) and scores["AP_L"] == pytest.approx(100)
    assert scores["AP"] == pytest.approx(75)


def _bad_input(tmp_path, files, name: str, content: str | None, role: str) -> tuple[str, str]:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    gt = path if role == "gt" else files / "gt.json"
    results = path if role == "results" else files / "results.json"
    out = subprocess.run(
        [sys.executable, str(TOOL), "--gt", str(gt), "--results", str(results)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(path) in lines[0]
    return lines[0], out.stdout


@pytest.mark.parametrize(
    ("role", "name", "content", "problem"),
    [
        ("gt", "missing_gt.json", None, "not found"),
        ("gt", "gt.txt", "{not json", "not valid JSON"),
        ("gt", "gt_list.json", "[1, 2]", "expected a YouTube-VIS ground-truth object"),
        ("results", "missing_results.json", None, "not found"),
        ("results", "results.txt", "[{", "not valid JSON"),
        ("results", "results_object.json", '{"video_id": 1}', "expected a JSON list of prediction objects"),
        ("results", "results_numbers.json", "[1, 2]", "is not a prediction object"),
        (
            "results",
            "results_unknown.json",
            json.dumps([{"video_id": 7, "category_id": 1, "score": 0.5, "segmentations": [None, None]}]),
            "not in the ground truth",
        ),
    ],
)
def test_bad_inputs_end_with_one_line_naming_the_file(tmp_path, files, role, name, content, problem):
    line, stdout = _bad_input(tmp_path, files, name, content, role)
    assert problem in line and stdout == ""
