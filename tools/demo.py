#!/usr/bin/env python
"""Segment and track the instances of a video with MDQE and write a visualisation.

    python tools/demo.py --config-file configs/R50_ovis_360.yaml --input video.mp4 --output out.mp4 \
        --opts MODEL.WEIGHTS mdqe_r50_ovis.pth MODEL.DEVICE cpu
    python tools/demo.py --config-file ... --input frames_dir/ --output out.mp4 --frames-dir out_frames/
    python tools/demo.py --config-file ... --input a.jpg b.jpg c.jpg --output out.gif
    python tools/demo.py --onnx export/r18 --input video.mp4 --output out.mp4   # tools/export_onnx.py's

The input is a video file (.mp4/.avi/... via OpenCV), a folder of frames (sorted by name), or a list of
images. Each instance is drawn with its mask, a colour that stays the same through the video, its class
name and score. The whole video is held in memory: an input whose decoded frames pass 2 GiB is refused
before they are decoded (raise the limit with MDQE_MAX_VIDEO_BYTES, see mdqe/data/frames.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# detectron2 v0.6 scripts a few helpers at import time, which recent PyTorch flags on every run
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def read_input(inputs: list[str]) -> tuple[list[np.ndarray], float]:
    """Frames (RGB uint8) and a frame rate from a video file, a folder of frames or a list of images,
    within the memory limit of `mdqe.data.frames` (MDQE_MAX_VIDEO_BYTES); a bad input ends the tool with
    one line."""
    from mdqe.data.frames import FrameReadError, read_frames_input

    try:
        return read_frames_input(inputs)
    except FrameReadError as e:
        raise SystemExit(f"error: {e}") from None


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
    parser.add_argument("--config-file", help="the model's config (not with --onnx)")
    parser.add_argument("--onnx", metavar="DIR", help="an export of tools/export_onnx.py, run by onnxruntime")
    parser.add_argument("--input", nargs="+", required=True, help="video file, frame folder, or images")
    parser.add_argument("--output", required=True, help="output video (.mp4, .avi or .gif)")
    parser.add_argument("--frames-dir", help="also write the drawn frames as JPEGs here")
    parser.add_argument("--confidence-threshold", type=float, default=0.3)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    if bool(args.onnx) == bool(args.config_file):
        parser.error("give either --config-file (PyTorch model) or --onnx DIR (exported model)")

    from detectron2.config import get_cfg
    from detectron2.utils.logger import setup_logger

    from mdqe import add_mdqe_config
    from mdqe.checkpoint import CheckpointError
    from mdqe.predictor import VideoPredictor
    from mdqe.utils.visualization import write_video

    setup_logger(name="mdqe")
    if args.onnx:
        from mdqe.deploy import DeployError, OnnxVideoPredictor

        try:  # the export first: a broken one fails before a long video is decoded
            predictor = OnnxVideoPredictor(args.onnx)
        except DeployError as e:
            raise SystemExit(f"error: {e}") from None
    else:
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
