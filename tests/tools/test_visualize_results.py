import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

TOOL = Path(__file__).resolve().parents[2] / "tools" / "visualize_results.py"
H, W, T = 48, 64, 3


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def _make_split(root: Path) -> tuple[Path, Path]:
    files = [f"v1/{t:05d}.jpg" for t in range(T)]
    (root / "frames" / "v1").mkdir(parents=True)
    for f in files:
        Image.fromarray(np.full((H, W, 3), 40, np.uint8)).save(root / "frames" / f)
    mask = np.zeros((H, W), bool)
    mask[10:30, 10:40] = True
    gt = {
        "videos": [{"id": 1, "height": H, "width": W, "length": T, "file_names": files}],
        "categories": [{"id": 1, "name": "circle"}],
        "annotations": [
            {
                "id": 1,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": [_rle(mask)] * 2 + [None],
            }
        ],
    }
    results = [
        {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [_rle(mask), None, _rle(mask)]}
    ]
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "results.json").write_text(json.dumps(results))
    return root / "gt.json", root / "results.json"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_results_are_drawn_on_every_frame_with_gt_beside(tmp_path):
    gt, results = _make_split(tmp_path)
    out = tmp_path / "vis"
    r = _run(
        "--gt", gt, "--image-root", tmp_path / "frames", "--results", results, "--output", out, "--with-gt"
    )
    assert r.returncode == 0, r.stderr
    frames = [np.asarray(Image.open(out / "1" / f"{t:05d}.jpg")) for t in range(T)]
    assert all(f.shape == (H, 2 * W, 3) for f in frames)
    inside, outside = frames[0][20, 25].astype(int), frames[0][45, 60].astype(int)
    assert np.abs(inside - outside).max() > 30  # the mask is coloured, the background is not
    # frame 1: no prediction, but the ground truth (right half) is drawn
    assert np.abs(frames[1][20, 25].astype(int) - 40).max() < 10
    assert np.abs(frames[1][20, W + 25].astype(int) - 40).max() > 30
    video = cv2.VideoCapture(str(out / "1.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == T


def test_missing_results_file_gives_one_clear_error(tmp_path):
    gt, _ = _make_split(tmp_path)
    r = _run(
        "--gt",
        gt,
        "--image-root",
        tmp_path / "frames",
        "--results",
        tmp_path / "nope.json",
        "--output",
        tmp_path,
    )
    assert r.returncode != 0
    assert "results file not found" in r.stderr and "Traceback" not in r.stderr


def test_a_path_as_video_id_writes_nothing_outside_the_output_folder(tmp_path):
    gt, results = _make_split(tmp_path)
    split = json.loads(gt.read_text())
    split["videos"][0]["id"] = "../escaped"
    gt.write_text(json.dumps(split))
    out = tmp_path / "nested" / "vis"
    r = _run("--gt", gt, "--image-root", tmp_path / "frames", "--results", results, "--output", out)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == f"error: {gt}: video ids must be integers, found '../escaped'"
    assert (
        not (tmp_path / "nested" / "escaped").exists() and not (tmp_path / "nested" / "escaped.mp4").exists()
    )
