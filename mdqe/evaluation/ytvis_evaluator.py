"""YouTube-VIS evaluator: CodaLab results.json / results.zip, metrics, and per-video resumption.

Files, under `output_dir` (by default `<OUTPUT_DIR>/inference/<dataset>/` when a cfg is given):

- `results.json`: the CodaLab list, one entry per video and predicted instance
  `{"video_id", "category_id" (dataset id), "score", "segmentations": per-frame RLE with str counts,
  null where the mask is empty}`, videos in the dataset's order;
- `results.zip`: `results.json` alone in a zip, the form CodaLab takes;
- `metrics.json`: AP, AP50, AP75, APs, APm, APl, AR1, AR10 in percent (null where undefined), then the
  analysis of `mdqe.evaluation.analysis` ("per_category", "occlusion", "errors", "per_video"), only when
  the dataset json has annotations;
- `report.html`: the self-contained evaluation report (`mdqe.evaluation.report`), likewise.

The returned {"segm": {...}} (which detectron2's EvalHook puts into EventStorage during training) holds
the eight metrics, "AP-<class>", APso / APmo / APho and "dAP-<error type>". A dataset whose metadata has
`ytvis_2022_gt` = (gt_short.json, gt_long.json) is also scored as the YouTube-VIS 2022 challenge does
(AP_S, AP_L, ..., and AP their mean) when both files exist.

All three are written atomically (a temporary file in the same folder, then `os.replace`), so a reader
never sees a half-written file.

Resumption: `process` also appends each video's entries as one line to `partial_rank<r>.jsonl` in
`output_dir`, headed by a fingerprint of the cfg and dataset. `finished_video_ids()` lists the videos
those files hold, so an interrupted inference loop can skip them (`mdqe.engine.inference_on_videos` does);
`evaluate()` merges them with what this run gathered and deletes them once the final files are written.
Partial files with another fingerprint (another cfg or weights path) are ignored and overwritten, and a
line cut short by a crash is dropped. The fingerprint cannot see weights that change under the same cfg
(evaluation during training): build such evaluators with `resume=False`.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from .analysis import YTVISAnalysis, analyze_ytvis, evaluate_ytvis_2022
from .submission import log_submission_check
from .ytvis_metrics import METRIC_NAMES, format_summary

__all__ = ["YTVISEvaluator", "atomic_write", "instances_to_results"]

logger = logging.getLogger(__name__)

_PARTIAL_GLOB = "partial_rank*.jsonl"


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through `write(binary_file)` so that it appears complete or not at all."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _frame_rles(masks: Any, video_id: Any, instance: int) -> list[dict | None]:
    """One instance's masks, a (T, H, W) bool tensor/array or T RLE dicts / None, as RLE or None."""
    if isinstance(masks, (list, tuple)):
        return list(masks)
    array = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if array.ndim != 3:
        raise ValueError(
            f"video {video_id}, instance {instance}: pred_masks must be (T, H, W) or a per-frame RLE list, "
            f"got an array of shape {array.shape}"
        )
    nonempty = array.reshape(len(array), -1).any(1)
    rles: list[dict | None] = [None] * len(array)
    keep = np.flatnonzero(nonempty)
    if len(keep):
        encoded = mask_util.encode(np.asfortranarray(array[keep].transpose(1, 2, 0).astype(np.uint8)))
        for f, rle in zip(keep.tolist(), encoded):
            rles[f] = rle
    return rles


def instances_to_results(
    video_input: Mapping[str, Any], output: Mapping[str, Any], contiguous_to_dataset_id: Mapping[int, int]
) -> list[dict]:
    """CodaLab entries of one video.

    Args:
        video_input: the test-loader dict ("video_id", "length", "height", "width", ...).
        output: {"image_size": (H, W), "pred_scores": N floats, "pred_labels": N contiguous ids,
            "pred_masks": N instances, each a (T, H, W) bool tensor or T per-frame RLE dicts
            (counts bytes or str) with None for an empty frame}.
        contiguous_to_dataset_id: contiguous class index -> dataset category id.

    Returns:
        N dicts {"video_id", "category_id", "score", "segmentations"}: T entries, RLE with str counts
        of size [H, W], or None where the mask is empty.
    """
    video_id = video_input["video_id"]
    scores, labels, masks = output["pred_scores"], output["pred_labels"], output["pred_masks"]
    if not len(scores) == len(labels) == len(masks):
        raise ValueError(
            f"video {video_id}: pred_scores, pred_labels and pred_masks differ in length "
            f"({len(scores)}, {len(labels)}, {len(masks)})"
        )
    length = video_input.get("length")
    size = [
        int(video_input.get("height", output["image_size"][0])),
        int(video_input.get("width", output["image_size"][1])),
    ]
    entries = []
    for i, (score, label) in enumerate(zip(_as_list(scores), _as_list(labels))):
        rles = _frame_rles(masks[i], video_id, i)
        if length is not None and len(rles) != length:
            raise ValueError(
                f"video {video_id}, instance {i}: {len(rles)} frames of masks, the video has {length}"
            )
        segmentations = []
        for f, rle in enumerate(rles):
            if rle is None:
                segmentations.append(None)
                continue
            if list(rle["size"]) != size:
                raise ValueError(
                    f"video {video_id}, instance {i}, frame {f}: mask size {list(rle['size'])}, "
                    f"the video is {size} (height, width)"
                )
            counts = rle["counts"]
            segmentations.append(
                {"size": size, "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
            )
        if int(label) not in contiguous_to_dataset_id:
            raise ValueError(
                f"video {video_id}, instance {i}: label {int(label)} is not a class of the dataset"
            )
        entries.append(
            {
                "video_id": video_id,
                "category_id": contiguous_to_dataset_id[int(label)],
                "score": float(score),
                "segmentations": segmentations,
            }
        )
    return entries


def _as_list(values: Any) -> list:
    return values.tolist() if isinstance(values, (torch.Tensor, np.ndarray)) else list(values)


def _fingerprint_of(header: bytes) -> str | None:
    try:
        record = json.loads(header)
    except ValueError:
        return None
    return record.get("fingerprint") if isinstance(record, dict) else None


def _read_partial(path: str, fingerprint: str) -> dict[Any, list[dict]]:
    """Entries by video of a partial file; empty when its fingerprint differs. A cut line is dropped."""
    entries: dict[Any, list[dict]] = {}
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if _fingerprint_of(lines[0]) != fingerprint:
        return entries
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        entries[record["video_id"]] = record["entries"]
    return entries


class YTVISEvaluator(DatasetEvaluator):
    """Writes CodaLab results for a video dataset and computes the YouTube-VIS metrics when annotated."""

    def __init__(
        self,
        dataset_name: str,
        cfg: CfgNode | None = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        resume: bool = True,
    ):
        """
        Args:
            dataset_name: a registered dataset whose metadata has `json_file` and
                `thing_dataset_id_to_contiguous_id`.
            cfg: used for the default `output_dir` and the resumption fingerprint.
            distributed: gather results from every process (only the main process evaluates).
            output_dir: where the files go; default `<cfg.OUTPUT_DIR>/inference/<dataset_name>` with a
                cfg, none (no files, no resumption) without.
            resume: keep per-video partial files and skip/merge the videos they hold.
        """
        self._dataset_name = dataset_name
        metadata = MetadataCatalog.get(dataset_name)
        for key in ("json_file", "thing_dataset_id_to_contiguous_id"):
            if not hasattr(metadata, key):
                raise KeyError(f"YTVISEvaluator: dataset {dataset_name!r} has no metadata {key!r}")
        self._json_file = metadata.json_file
        self._contiguous_to_dataset_id = {v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
        self._class_names = dict(enumerate(metadata.get("thing_classes", [])))
        if output_dir is None and cfg is not None:
            output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        self._output_dir = output_dir
        self._distributed = distributed
        self._resume = resume and output_dir is not None
        identity = (cfg.dump() if cfg is not None else "") + "\0" + dataset_name
        self._fingerprint = hashlib.sha1(identity.encode()).hexdigest()
        self._entries: dict[Any, list[dict]] = {}
        self._partial: IO[str] | None = None

    @property
    def _partial_path(self) -> str:
        return os.path.join(self._output_dir, f"partial_rank{comm.get_rank()}.jsonl")

    def reset(self) -> None:
        """Forget this run's in-memory results; partial files on disk are kept for resumption."""
        self._close_partial()
        self._entries = {}

    def finished_video_ids(self) -> set:
        """Videos whose results a partial file from an interrupted run (same fingerprint) holds."""
        return set(self._load_partials())

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Any) -> None:
        """Convert each video's output to CodaLab entries (one output dict, or a list, per batch)."""
        if isinstance(outputs, Mapping):
            outputs = [outputs]
        for video_input, output in zip(inputs, outputs):
            entries = instances_to_results(video_input, output, self._contiguous_to_dataset_id)
            self._entries[video_input["video_id"]] = entries
            if self._resume:
                self._append_partial(video_input["video_id"], entries)

    def evaluate(self) -> OrderedDict | dict:
        """Merge, write results.json/zip (and metrics.json); the metrics as {"segm": {...}} when annotated."""
        self._close_partial()
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._entries, dst=0)
            if not comm.is_main_process():
                return {}
        else:
            gathered = [self._entries]
        by_video = self._load_partials()
        for part in gathered:
            by_video.update(part)
        with open(self._json_file) as f:
            dataset = json.load(f)
        results = self._ordered_results(dataset, by_video)
        if self._output_dir is not None:
            self._write_results(results)
            log_submission_check(os.path.join(self._output_dir, "results.zip"), dataset)
        metrics = None
        if dataset.get("annotations"):
            metrics = self._compute_metrics(dataset, results)
        scores_2022 = self._compute_2022(results)
        if scores_2022:
            metrics = metrics or OrderedDict(segm=OrderedDict())
            metrics["segm"].update(scores_2022)
        if self._resume:
            for path in glob.glob(os.path.join(self._output_dir, _PARTIAL_GLOB)):
                os.remove(path)
        return metrics if metrics is not None else {}

    def _ordered_results(self, dataset: Mapping[str, Any], by_video: dict[Any, list[dict]]) -> list[dict]:
        order = [video["id"] for video in dataset["videos"]]
        unknown = set(by_video) - set(order)
        if unknown:
            raise ValueError(
                f"YTVISEvaluator: results for video ids {sorted(unknown)[:5]} that "
                f"{self._json_file} does not list"
            )
        missing = [video_id for video_id in order if video_id not in by_video]
        if missing:
            logger.warning(
                "%d of %d videos of %s have no results (first: %s)",
                len(missing),
                len(order),
                self._dataset_name,
                missing[:5],
            )
        return [entry for video_id in order for entry in by_video.get(video_id, [])]

    def _write_results(self, results: list[dict]) -> None:
        payload = json.dumps(results).encode()
        json_path = os.path.join(self._output_dir, "results.json")
        atomic_write(json_path, lambda f: f.write(payload))

        def write_zip(f: IO[bytes]) -> None:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("results.json", payload)

        atomic_write(os.path.join(self._output_dir, "results.zip"), write_zip)
        logger.info("Wrote %d results to %s (and results.zip)", len(results), json_path)

    def _compute_metrics(self, dataset: Mapping[str, Any], results: list[dict]) -> OrderedDict:
        analysis = analyze_ytvis(dataset, results)
        logger.info("Evaluation of %s:\n%s", self._dataset_name, format_summary(analysis.evaluation))
        scalars = analysis.scalars()
        logger.info("Metrics (percent):\n%s", create_small_table({k: scalars[k] for k in METRIC_NAMES}))
        if self._output_dir is not None:
            text = json.dumps(analysis.to_json(), indent=1)
            atomic_write(os.path.join(self._output_dir, "metrics.json"), lambda f: f.write(text.encode()))
            self._write_report(analysis, dataset, results)
        segm = OrderedDict((name, scalars[name]) for name in METRIC_NAMES)
        segm.update(self._per_category_ap(analysis.evaluation.precision, analysis.evaluation.category_ids))
        segm.update((k, v) for k, v in scalars.items() if k.startswith(("APso", "APmo", "APho", "dAP-")))
        return OrderedDict(segm=segm)

    def _write_report(self, analysis: YTVISAnalysis, dataset: Mapping[str, Any], results: list[dict]) -> None:
        """report.html beside results.json; a failure is logged, the evaluation goes on."""
        from .report import render_report

        path = os.path.join(self._output_dir, "report.html")
        try:
            image_root = MetadataCatalog.get(self._dataset_name).get("image_root")
            text = render_report(analysis, dataset, results, image_root=image_root, title=self._dataset_name)
        except (ImportError, OSError, ValueError) as e:
            logger.warning("Could not write %s: %s", path, e)
            return
        atomic_write(path, lambda f: f.write(text.encode()))
        logger.info("Wrote the evaluation report %s", path)

    def _compute_2022(self, results: list[dict]) -> dict[str, float]:
        """The YouTube-VIS 2022 scores when the metadata names existing gt_short / gt_long files."""
        files = MetadataCatalog.get(self._dataset_name).get("ytvis_2022_gt")
        if not files or not all(os.path.isfile(path) for path in files):
            return {}
        parts = []
        for path in files:
            with open(path) as f:
                parts.append(json.load(f))
        scores = evaluate_ytvis_2022(parts[0], parts[1], results)
        logger.info("YouTube-VIS 2022 scores of %s:\n%s", self._dataset_name, create_small_table(scores))
        return scores

    def _per_category_ap(self, precision: np.ndarray, category_ids: Iterable[int]) -> dict[str, float]:
        """AP (area all, 100 detections) of every category, keyed "AP-<class name>"."""
        dataset_to_contiguous = {v: k for k, v in self._contiguous_to_dataset_id.items()}
        out = {}
        for k, category_id in enumerate(category_ids):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            name = self._class_names.get(dataset_to_contiguous.get(category_id), str(category_id))
            out[f"AP-{name}"] = float(values.mean() * 100) if len(values) else float("nan")
        return out

    def _load_partials(self) -> dict[Any, list[dict]]:
        if not self._resume:
            return {}
        by_video: dict[Any, list[dict]] = {}
        for path in sorted(glob.glob(os.path.join(self._output_dir, _PARTIAL_GLOB))):
            by_video.update(_read_partial(path, self._fingerprint))
        return by_video

    def _append_partial(self, video_id: Any, entries: list[dict]) -> None:
        if self._partial is None:
            self._partial = self._open_partial()
        self._partial.write(json.dumps({"video_id": video_id, "entries": entries}) + "\n")
        self._partial.flush()

    def _open_partial(self) -> IO[str]:
        """This rank's partial file for appending: kept if its fingerprint matches (a cut last line is
        trimmed), started afresh otherwise."""
        path = self._partial_path
        os.makedirs(self._output_dir, exist_ok=True)
        mode = "w"
        if os.path.exists(path):
            with open(path, "rb") as f:
                content = f.read()
            if _fingerprint_of(content.split(b"\n", 1)[0]) == self._fingerprint:
                with open(path, "r+b") as f:
                    f.truncate(content.rfind(b"\n") + 1)
                mode = "a"
        partial = open(path, mode, encoding="utf-8")  # noqa: SIM115  (open across process() calls)
        if mode == "w":
            partial.write(
                json.dumps({"fingerprint": self._fingerprint, "dataset": self._dataset_name}) + "\n"
            )
        return partial

    def _close_partial(self) -> None:
        if self._partial is not None:
            self._partial.close()
            self._partial = None
