"""Fuzzing the readers of a stranger's results and ground-truth files: tools/eval_ytvis.py (plain and
--breakdown) and tools/check_submission.py, with json and zip inputs. Accepted: eval_ytvis prints its
metrics (exit 0) or one line naming the file (exit 2); check_submission prints its report (exit 0 or 1)
or one error line about the ground truth (exit 2)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pycocotools.mask as mask_util
import pytest
from _fuzzing import bounded, fuzz, json_text, mutated, mutated_bytes, one_line, outcome, scratch_folder
from hypothesis import event, given
from hypothesis import strategies as st


def _rle(top: int, left: int) -> dict:
    mask = np.zeros((6, 8), np.uint8)
    mask[top : top + 3, left : left + 4] = 1
    return {"size": [6, 8], "counts": mask_util.encode(np.asfortranarray(mask))["counts"].decode()}


GT = {
    "videos": [
        {"id": 1, "height": 6, "width": 8, "length": 2},
        {"id": 2, "height": 6, "width": 8, "length": 1},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [_rle(0, 0), None],
         "areas": [12, None], "occlusion": ["slight_occlusion", None]},
        {"id": 2, "video_id": 1, "category_id": 2, "iscrowd": 0,
         "segmentations": [{"size": [6, 8], "counts": [2, 3, 43]}, [[1, 1, 5, 1, 5, 4, 1, 4]]]},
        {"id": 3, "video_id": 2, "category_id": 2, "iscrowd": 0, "segmentations": [_rle(2, 3)]},
    ],
}  # fmt: skip
RESULTS = [
    {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [_rle(0, 0), _rle(1, 1)]},
    {"video_id": 1, "category_id": 2, "score": 0.4, "segmentations": [None, _rle(2, 2)]},
    {"video_id": 2, "category_id": 2, "score": 0.7, "segmentations": [_rle(2, 3)]},
]


def _zip(payload: bytes, name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, payload)
    return buffer.getvalue()


@st.composite
def valid_results(draw) -> list[dict]:
    """Results a server accepts, with any masks, scores, categories and absent frames: the metric code's
    own input space."""
    out = []
    for _ in range(draw(st.integers(0, 6))):
        video_id, length = draw(st.sampled_from([(1, 2), (2, 1)]))
        masks = []
        for _ in range(length):
            if draw(st.booleans()):
                masks.append(None)
                continue
            bits = draw(st.lists(st.booleans(), min_size=48, max_size=48))
            rle = mask_util.encode(np.asfortranarray(np.array(bits, np.uint8).reshape(6, 8)))
            masks.append({"size": [6, 8], "counts": rle["counts"].decode()})
        score = draw(st.floats(0, 1) | st.sampled_from([0.0, 1.0, 1e-300, 5.0, -2.0]))
        out.append({"video_id": video_id, "category_id": draw(st.sampled_from([1, 2, 3])), "score": score,
                    "segmentations": masks})  # fmt: skip
    return out


_GOOD_ZIP = _zip(json.dumps(RESULTS).encode(), "results.json")
# (results file name, its bytes): valid results, changed values, changed bytes, a zip of changed values,
# a changed zip
RESULTS_FILES = st.one_of(
    valid_results().map(lambda r: ("results.json", json.dumps(r).encode())),
    mutated(RESULTS, max_changes=2).map(lambda r: ("results.json", json_text(r).encode())),
    mutated(RESULTS, max_changes=2).map(lambda r: ("results.json", json_text(r).encode())),
    mutated_bytes(json.dumps(RESULTS).encode()).map(lambda b: ("results.json", b)),
    st.tuples(
        mutated(RESULTS, max_changes=2),
        st.sampled_from(["results.json", "../results.json", "a/results.json"]),
    ).map(lambda c: ("results.zip", _zip(json_text(c[0]).encode(), c[1]))),
    mutated_bytes(_GOOD_ZIP).map(lambda b: ("results.zip", b)),
)
GT_FILES = st.one_of(*[st.just(json.dumps(GT))] * 3, mutated(GT).map(json_text))  # changed in one case of 4


def _write(scratch, gt: str, results: tuple[str, bytes]):
    (scratch / "gt.json").write_text(gt)
    (scratch / results[0]).write_bytes(results[1])
    return str(scratch / "gt.json"), str(scratch / results[0])


@pytest.fixture
def light_import(monkeypatch):
    monkeypatch.setenv("MDQE_LIGHT_IMPORT", "1")  # what eval_ytvis sets on import, undone after the test


@fuzz
@given(GT_FILES, RESULTS_FILES, st.sampled_from(["plain", "plain", "breakdown", "breakdown", "report"]))
def test_eval_ytvis_prints_metrics_or_one_line(tmp_path, capsys, light_import, gt, results, mode):
    from tools import eval_ytvis

    scratch = scratch_folder(tmp_path)
    gt_path, results_path = _write(scratch, gt, results)
    argv = ["--gt", gt_path, "--results", results_path, "--json"]
    argv += {
        "plain": [],
        "breakdown": ["--breakdown"],
        "report": ["--report", str(scratch / "out" / "r.html")],
    }[mode]
    code = bounded(lambda: eval_ytvis.main(argv), scratch, writes=frozenset({"out", "out/r.html"}))
    out, err = capsys.readouterr()
    event("accepted" if code == 0 else outcome(ValueError(err)))
    if code == 0:
        assert set(json.loads(out)) >= {"AP", "AP50", "AR10"}
        assert err == (f"wrote {scratch / 'out' / 'r.html'}\n" if mode == "report" else ""), err
    else:
        assert code == 2 and one_line(err) and err.startswith("eval_ytvis: ") and out == "", err


@fuzz
@given(GT_FILES, RESULTS_FILES)
def test_check_submission_reports_or_says_why_in_one_line(tmp_path, capsys, gt, results):
    from tools import check_submission

    scratch = scratch_folder(tmp_path)
    gt_path, results_path = _write(scratch, gt, results)
    code = bounded(lambda: check_submission.main(["--results", results_path, "--gt", gt_path]), scratch)
    out, err = capsys.readouterr()
    event(f"exit {code}")
    if code == 2:
        assert one_line(err) and err.startswith("error: ") and out == "", err
    else:
        assert code in (0, 1) and err == "" and out.splitlines()[-1].startswith(results_path), out
