#!/usr/bin/env python
"""Draw a YouTube-VIS results.json (and optionally the ground truth beside it) onto a split's frames.

    python tools/visualize_results.py --gt datasets/ovis/valid.json --image-root datasets/ovis/valid \
        --results output/inference/ytvis_ovis_val/results.json --output vis/ --score-threshold 0.3 --with-gt

Writes, per video, `<output>/<video_id>/<frame>.jpg` and `<output>/<video_id>.mp4`. `--gt` is any json of
the split (annotations are only needed for --with-gt); it gives the frame files and category names.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict

import numpy as np
from PIL import Image

from mdqe.utils.bounded_io import UntrustedInputError, read_json_file
from mdqe.utils.visualization import draw_frame, write_video


def _load_json(path: str, what: str):
    try:
        return read_json_file(path)
    except FileNotFoundError:
        raise SystemExit(f"error: {what} not found: {path}") from None
    except UntrustedInputError as e:
        raise SystemExit(f"error: {what} {e}") from None
    except ValueError as e:
        raise SystemExit(f"error: {what} {path} is not valid JSON: {e}") from None


def _read_frame(path: str) -> np.ndarray:
    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except FileNotFoundError:
        raise SystemExit(f"error: frame not found: {path}") from None


def _segmentation(seg, height: int, width: int):
    """A COCO RLE dict (polygons and uncompressed RLE converted), or None for an absent frame."""
    if seg is None:
        return None
    from pycocotools import mask as mask_util

    if isinstance(seg, list):
        return mask_util.merge(mask_util.frPyObjects(seg, height, width))
    if isinstance(seg.get("counts"), list):
        return mask_util.frPyObjects(seg, height, width)
    return seg


def render_video(video: dict, image_root: str, tracks: list[dict], names: dict[int, str]) -> list[np.ndarray]:
    """Frames of `video` with `tracks` ({category_id, score?, segmentations}) drawn, one colour per track."""
    frames = []
    height, width = video["height"], video["width"]
    for t, file_name in enumerate(video["file_names"]):
        image = _read_frame(os.path.join(image_root, file_name))
        masks = [_segmentation(tr["segmentations"][t], height, width) for tr in tracks]
        labels = [
            f"{names.get(tr['category_id'], tr['category_id'])}"
            + (f" {tr['score']:.2f}" if "score" in tr else "")
            for tr in tracks
        ]
        frames.append(draw_frame(image, masks, labels, list(range(len(tracks)))))
    return frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="YouTube-VIS json of the split")
    parser.add_argument("--image-root", required=True, help="folder the json's file_names are relative to")
    parser.add_argument("--results", required=True, help="results.json to draw")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--with-gt", action="store_true", help="draw the ground truth beside the predictions")
    parser.add_argument("--video-ids", type=int, nargs="*", help="only these videos")
    parser.add_argument("--max-videos", type=int, default=None)
    parser.add_argument("--fps", type=float, default=6.0)
    args = parser.parse_args(argv)

    gt = _load_json(args.gt, "ground-truth json")
    results = _load_json(args.results, "results file")
    if not isinstance(results, list):
        raise SystemExit(f"error: {args.results} must hold a list of predictions")
    names = {c["id"]: c["name"] for c in gt.get("categories", [])}
    predictions = defaultdict(list)
    for r in results:
        if r["score"] >= args.score_threshold:
            predictions[r["video_id"]].append(r)
    annotations = defaultdict(list)
    for a in gt.get("annotations") or []:
        annotations[a["video_id"]].append(a)
    if args.with_gt and not annotations:
        raise SystemExit(f"error: --with-gt, but {args.gt} has no annotations")

    videos = [v for v in gt["videos"] if not args.video_ids or v["id"] in args.video_ids]
    for video in videos:
        # the id names the files written under --output: an id like "../x" must not leave that folder
        if not isinstance(video.get("id"), int) or isinstance(video["id"], bool):
            raise SystemExit(f"error: {args.gt}: video ids must be integers, found {video.get('id')!r}")
    for video in videos[: args.max_videos]:
        preds = sorted(predictions[video["id"]], key=lambda r: -r["score"])
        frames = render_video(video, args.image_root, preds, names)
        if args.with_gt:
            gt_frames = render_video(video, args.image_root, annotations[video["id"]], names)
            frames = [np.concatenate([p, g], axis=1) for p, g in zip(frames, gt_frames)]
        out_dir = os.path.join(args.output, str(video["id"]))
        os.makedirs(out_dir, exist_ok=True)
        for file_name, frame in zip(video["file_names"], frames):
            name = os.path.splitext(os.path.basename(file_name))[0] + ".jpg"
            Image.fromarray(frame).save(os.path.join(out_dir, name), quality=90)
        write_video(frames, os.path.join(args.output, f"{video['id']}.mp4"), fps=args.fps)
        print(f"video {video['id']}: {len(preds)} predictions drawn on {len(frames)} frames -> {out_dir}")


if __name__ == "__main__":
    main()
