#!/usr/bin/env python
"""Segment and track the instances of a video with MDQE and write a visualisation.

    python tools/demo.py --config-file configs/R50_ovis_360.yaml --input video.mp4 --output out.mp4 \
        --opts MODEL.WEIGHTS mdqe_r50_ovis.pth MODEL.DEVICE cpu
    python tools/demo.py --config-file ... --input frames_dir/ --output out.mp4 --frames-dir out_frames/
    python tools/demo.py --config-file ... --input a.jpg b.jpg c.jpg --output out.gif

The input is a video file (.mp4/.avi/... via OpenCV), a folder of frames (sorted by name), or a list of
images. Each instance is drawn with its mask, a colour that stays the same through the video, its class
name and score.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_video_file(path: str) -> tuple[list[np.ndarray], float]:
    """RGB frames and frame rate of a video file."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f"error: OpenCV cannot open the video {path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 6.0
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise SystemExit(f"error: no frame could be decoded from {path}")
    return frames, fps


def read_images(paths: list[str]) -> list[np.ndarray]:
    frames = []
    for path in paths:
        try:
            frames.append(np.asarray(Image.open(path).convert("RGB")))
        except OSError as e:
            raise SystemExit(f"error: cannot read the image {path}: {e}") from None
    return frames


def read_input(inputs: list[str]) -> tuple[list[np.ndarray], float]:
    """Frames (RGB uint8) and a frame rate from a video file, a folder of frames or a list of images."""
    for path in inputs:
        if not os.path.exists(path):
            raise SystemExit(f"error: input not found: {path}")
    if len(inputs) == 1 and os.path.isdir(inputs[0]):
        names = sorted(n for n in os.listdir(inputs[0]) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise SystemExit(f"error: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder {inputs[0]}")
        return read_images([os.path.join(inputs[0], n) for n in names]), 6.0
    if len(inputs) == 1 and not inputs[0].lower().endswith(IMAGE_EXTENSIONS):
        return read_video_file(inputs[0])
    return read_images(inputs), 6.0


def draw_predictions(
    frames: list[np.ndarray], predictions: dict, class_names: list[str], threshold: float
) -> list[np.ndarray]:
    """Frames with every prediction scoring >= threshold drawn (masks as bool (T, H, W) or per-frame RLEs)."""
    from mdqe.utils.visualization import draw_frame

    keep = [i for i, s in enumerate(predictions["pred_scores"]) if s >= threshold]
    labels = []
    for i in keep:
        label = predictions["pred_labels"][i]
        name = class_names[label] if label < len(class_names) else str(label)
        labels.append(f"{name} {predictions['pred_scores'][i]:.2f}")
    out = []
    for t, frame in enumerate(tqdm(frames, desc="drawing", unit="frame")):
        masks = []
        for i in keep:
            m = predictions["pred_masks"][i][t]
            if m is not None and not isinstance(m, dict):
                m = np.asarray(m, dtype=bool)
                m = m if m.any() else None
            masks.append(m)
        out.append(draw_frame(frame, masks, labels, keep))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="video file, frame folder, or images")
    parser.add_argument("--output", required=True, help="output video (.mp4, .avi or .gif)")
    parser.add_argument("--frames-dir", help="also write the drawn frames as JPEGs here")
    parser.add_argument("--confidence-threshold", type=float, default=0.3)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    from detectron2.config import get_cfg
    from detectron2.utils.logger import setup_logger

    from mdqe import add_mdqe_config
    from mdqe.checkpoint import CheckpointError
    from mdqe.predictor import VideoPredictor
    from mdqe.utils.visualization import write_video

    setup_logger(name="mdqe")
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()

    try:  # the checkpoint first: a wrong one fails before a long video is decoded
        predictor = VideoPredictor(cfg, config_name=args.config_file)
    except (FileNotFoundError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    frames, fps = read_input(args.input)
    predictions = predictor(frames)
    drawn = draw_predictions(frames, predictions, predictor.class_names, args.confidence_threshold)
    write_video(drawn, args.output, fps=fps)
    if args.frames_dir:
        os.makedirs(args.frames_dir, exist_ok=True)
        for t, frame in enumerate(drawn):
            Image.fromarray(frame).save(os.path.join(args.frames_dir, f"{t:05d}.jpg"), quality=90)
    print(f"{len(predictions['pred_scores'])} instances; wrote {args.output} ({len(drawn)} frames)")


if __name__ == "__main__":
    main()
