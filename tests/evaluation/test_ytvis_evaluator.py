"""YTVISEvaluator: CodaLab results.json / results.zip schema, metrics, atomic writes, resumption."""

from __future__ import annotations

import json
import os
import uuid
import zipfile

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from _ytvis_testing import dataset, gt_annotation
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

from mdqe.evaluation import YTVISEvaluator, atomic_write, evaluate_ytvis, instances_to_results
from mdqe.evaluation.ytvis_metrics import METRIC_NAMES

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

HEIGHT, WIDTH = 6, 8
# Dataset category ids 3 and 7 are contiguous classes 0 and 1.
DATASET_IDS = {3: 0, 7: 1}


def video_masks(video_id: int) -> list[torch.Tensor]:
    """Two instances of 3 frames; the second is empty in frame 1."""
    a = torch.zeros(3, HEIGHT, WIDTH, dtype=torch.bool)
    a[:, 0:3, video_id : video_id + 3] = True
    b = torch.zeros(3, HEIGHT, WIDTH, dtype=torch.bool)
    b[0, 3:6, 4:8] = True
    b[2, 4:6, 0:4] = True
    return [a, b]


def ground_truth(annotated: bool = True) -> dict:
    anns = []
    for video_id in (1, 2, 3):
        a, b = (m.numpy() for m in video_masks(video_id))
        anns.append(gt_annotation(len(anns) + 1, video_id, 3, list(a)))
        anns.append(gt_annotation(len(anns) + 1, video_id, 7, [b[0], None, b[2]]))
    gt = dataset([(v, HEIGHT, WIDTH, 3) for v in (1, 2, 3)], anns, categories=(3, 7))
    if not annotated:
        gt["annotations"] = None
    return gt


@pytest.fixture
def registered(tmp_path):
    """A registered dataset name whose json is written by the test; removed afterwards."""
    name = f"test_ytvis_eval_{uuid.uuid4().hex[:8]}"
    json_file = tmp_path / "gt.json"

    def register(gt: dict) -> str:
        json_file.write_text(json.dumps(gt))
        MetadataCatalog.get(name).set(
            json_file=str(json_file),
            thing_dataset_id_to_contiguous_id=DATASET_IDS,
            thing_classes=["cat", "dog"],
        )
        return name

    yield register
    MetadataCatalog.remove(name)


def video_input(video_id: int) -> dict:
    return {"video_id": video_id, "length": 3, "height": HEIGHT, "width": WIDTH, "file_names": ["x"] * 3}


def tensor_output(video_id: int) -> dict:
    return {
        "image_size": (HEIGHT, WIDTH),
        "pred_scores": [0.9, 0.8],
        "pred_labels": [0, 1],
        "pred_masks": video_masks(video_id),
    }


def rle_output(video_id: int) -> dict:
    """The memory-bounded form: per-frame RLE with bytes counts, None for an empty frame."""
    masks = []
    for m in video_masks(video_id):
        masks.append(
            [mask_util.encode(np.asfortranarray(f.numpy().astype(np.uint8))) if f.any() else None for f in m]
        )
    return {
        "image_size": (HEIGHT, WIDTH),
        "pred_scores": [0.9, 0.8],
        "pred_labels": [0, 1],
        "pred_masks": masks,
    }


def run(evaluator: YTVISEvaluator, videos=(1, 2, 3), make_output=tensor_output):
    evaluator.reset()
    for video_id in videos:
        evaluator.process([video_input(video_id)], make_output(video_id))
    return evaluator.evaluate()


@pytest.mark.parametrize("make_output", [tensor_output, rle_output], ids=["tensor_masks", "rle_masks"])
def test_results_json_schema(registered, tmp_path, make_output):
    name = registered(ground_truth())
    out = tmp_path / "out"
    run(YTVISEvaluator(name, distributed=False, output_dir=str(out)), make_output=make_output)
    results = json.loads((out / "results.json").read_text())
    assert [r["video_id"] for r in results] == [1, 1, 2, 2, 3, 3]  # every video, in dataset order
    assert [r["category_id"] for r in results] == [3, 7] * 3  # dataset ids
    for r in results:
        assert set(r) == {"video_id", "category_id", "score", "segmentations"}
        assert len(r["segmentations"]) == 3
        for f, segm in enumerate(r["segmentations"]):
            expected = video_masks(r["video_id"])[0 if r["category_id"] == 3 else 1][f].numpy()
            if segm is None:
                assert not expected.any()
                continue
            assert isinstance(segm["counts"], str)
            np.testing.assert_array_equal(mask_util.decode(segm).astype(bool), expected)
    assert results[1]["segmentations"][1] is None


def test_zip_holds_exactly_results_json(registered, tmp_path):
    name = registered(ground_truth())
    run(YTVISEvaluator(name, distributed=False, output_dir=str(tmp_path)))
    with zipfile.ZipFile(tmp_path / "results.zip") as archive:
        assert archive.namelist() == ["results.json"]
        assert archive.read("results.json") == (tmp_path / "results.json").read_bytes()


def test_metrics_returned_logged_and_written(registered, tmp_path):
    name = registered(ground_truth())
    returned = run(YTVISEvaluator(name, distributed=False, output_dir=str(tmp_path)))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert list(written)[: len(METRIC_NAMES)] == list(METRIC_NAMES)
    assert {"per_category", "occlusion", "errors", "per_video"} <= set(written)
    expected = evaluate_ytvis(ground_truth(), json.loads((tmp_path / "results.json").read_text())).metrics
    for key in METRIC_NAMES:
        assert returned["segm"][key] == expected[key] or (np.isnan(expected[key]) and written[key] is None)
    assert returned["segm"]["AP"] == 100.0  # the predictions are the ground truth
    assert "AP-cat" in returned["segm"] and "AP-dog" in returned["segm"]
    # what EvalHook puts into EventStorage: flat floats, occlusion levels and error gains included
    assert {"APso", "APmo", "APho", "dAP-cls", "dAP-missed"} <= set(returned["segm"])
    assert all(isinstance(v, float) for v in returned["segm"].values())
    assert 'id="metric-AP">100.00<' in (tmp_path / "report.html").read_text()


def test_ytvis_2022_scores_from_the_short_and_long_ground_truth(registered, tmp_path):
    gt = ground_truth()
    name = registered({**gt, "annotations": None})  # valid.json of the release: no annotations
    short = {
        **gt,
        "videos": gt["videos"][:2],
        "annotations": [a for a in gt["annotations"] if a["video_id"] < 3],
    }
    long = {
        **gt,
        "videos": gt["videos"][2:],
        "annotations": [a for a in gt["annotations"] if a["video_id"] == 3],
    }
    files = []
    for part, content in (("short", short), ("long", long)):
        files.append(str(tmp_path / f"gt_{part}.json"))
        (tmp_path / f"gt_{part}.json").write_text(json.dumps(content))
    MetadataCatalog.get(name).set(ytvis_2022_gt=tuple(files))
    segm = run(YTVISEvaluator(name, distributed=False, output_dir=str(tmp_path)))["segm"]
    assert segm["AP_S"] == pytest.approx(100) and segm["AP_L"] == pytest.approx(100)
    assert segm["AP"] == pytest.approx(100)
    assert not (tmp_path / "metrics.json").exists()  # valid.json itself has no annotations


def test_unannotated_dataset_gets_results_but_no_metrics(registered, tmp_path):
    name = registered(ground_truth(annotated=False))
    assert run(YTVISEvaluator(name, distributed=False, output_dir=str(tmp_path))) == {}
    assert (tmp_path / "results.json").exists() and (tmp_path / "results.zip").exists()
    assert not (tmp_path / "metrics.json").exists()


def test_output_dir_defaults_under_cfg_output_dir(registered, tmp_path):
    name = registered(ground_truth())
    cfg = CfgNode({"OUTPUT_DIR": str(tmp_path)})
    run(YTVISEvaluator(name, cfg, distributed=False))
    assert (tmp_path / "inference" / name / "results.json").exists()


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")

    def fail(f):
        f.write(b"half of the new")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind


def test_interrupted_run_resumes_without_redoing_finished_videos(registered, tmp_path):
    name = registered(ground_truth())
    cfg = CfgNode({"OUTPUT_DIR": str(tmp_path), "MODEL": {"WEIGHTS": "a.pth"}})
    first = YTVISEvaluator(name, cfg, distributed=False)
    first.reset()
    for video_id in (1, 2):
        first.process([video_input(video_id)], tensor_output(video_id))
    first.reset()  # interrupted: evaluate() never runs

    second = YTVISEvaluator(name, cfg, distributed=False)
    second.reset()
    assert second.finished_video_ids() == {1, 2}
    second.process([video_input(3)], tensor_output(3))
    results = second.evaluate()
    folder = tmp_path / "inference" / name
    assert [r["video_id"] for r in json.loads((folder / "results.json").read_text())] == [1, 1, 2, 2, 3, 3]
    assert results["segm"]["AP"] == 100.0
    assert not list(folder.glob("partial_rank*.jsonl"))  # cleaned up once the final files exist
    assert YTVISEvaluator(name, cfg, distributed=False).finished_video_ids() == set()


def test_partial_results_of_another_cfg_are_not_reused(registered, tmp_path):
    name = registered(ground_truth())
    cfg = CfgNode({"OUTPUT_DIR": str(tmp_path), "MODEL": {"WEIGHTS": "a.pth"}})
    evaluator = YTVISEvaluator(name, cfg, distributed=False)
    evaluator.reset()
    evaluator.process([video_input(1)], tensor_output(1))
    evaluator.reset()
    other = cfg.clone()
    other.MODEL.WEIGHTS = "b.pth"
    assert YTVISEvaluator(name, other, distributed=False).finished_video_ids() == set()


def test_line_cut_by_a_crash_is_dropped(registered, tmp_path):
    name = registered(ground_truth())
    evaluator = YTVISEvaluator(name, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    for video_id in (1, 2):
        evaluator.process([video_input(video_id)], tensor_output(video_id))
    evaluator.reset()
    partial = next(tmp_path.glob("partial_rank*.jsonl"))
    content = partial.read_bytes()
    partial.write_bytes(content[: content.rfind(b"\n", 0, len(content) - 1) + 20])  # video 2 half-written
    resumed = YTVISEvaluator(name, distributed=False, output_dir=str(tmp_path))
    resumed.reset()
    assert resumed.finished_video_ids() == {1}
    for video_id in (2, 3):
        resumed.process([video_input(video_id)], tensor_output(video_id))
    assert resumed.evaluate()["segm"]["AP"] == 100.0


def test_no_resumption_without_output_dir_or_when_disabled(registered, tmp_path):
    name = registered(ground_truth())
    assert run(YTVISEvaluator(name, distributed=False))["segm"]["AP"] == 100.0
    evaluator = YTVISEvaluator(name, distributed=False, output_dir=str(tmp_path), resume=False)
    run(evaluator, videos=(1,))
    assert not list(tmp_path.glob("partial_rank*.jsonl"))


def test_frame_count_mismatch_is_an_error_naming_the_video():
    output = tensor_output(1)
    with pytest.raises(ValueError, match="video 5, instance 0: 3 frames of masks, the video has 4"):
        instances_to_results(dict(video_input(5), length=4), output, {0: 3, 1: 7})


def test_mask_size_mismatch_is_an_error_naming_the_frame():
    output = rle_output(1)
    with pytest.raises(ValueError, match=r"video 1, instance 0, frame 0: mask size \[6, 8\]"):
        instances_to_results(dict(video_input(1), height=12), output, {0: 3, 1: 7})


def test_unknown_label_is_an_error():
    output = dict(tensor_output(1), pred_labels=[0, 5])
    with pytest.raises(ValueError, match="label 5"):
        instances_to_results(video_input(1), output, {0: 3, 1: 7})


def test_ytvis_2022_splits_are_registered_with_the_2021_classes_and_the_short_long_files():
    from detectron2.data import DatasetCatalog

    import mdqe  # noqa: F401  (registration)

    assert {f"ytvis_2022_{split}" for split in ("train", "val", "test", "dev")} <= set(DatasetCatalog.list())
    meta = MetadataCatalog.get("ytvis_2022_val")
    assert meta.thing_classes == MetadataCatalog.get("ytvis_2021_val").thing_classes
    assert [os.path.basename(p) for p in meta.ytvis_2022_gt] == ["gt_short.json", "gt_long.json"]
    assert meta.json_file.endswith(os.path.join("ytvis_2022", "valid.json"))
