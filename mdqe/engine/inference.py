"""Whole-dataset video inference with a progress bar, ETA, and per-video resumption."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable

import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tqdm import tqdm

logger = logging.getLogger(__name__)


def inference_on_videos(model: torch.nn.Module, data_loader: Iterable, evaluator: DatasetEvaluator) -> dict:
    """Run `model` on every video of `data_loader` and return `evaluator.evaluate()`.

    Each batch holds one video. If the evaluator keeps per-video partial results (it has
    `finished_video_ids()`), videos finished by an interrupted earlier run are skipped, so an
    `--eval-only` run can be continued. A progress bar with ETA is shown on the main process.
    """
    evaluator.reset()
    finished = set(evaluator.finished_video_ids()) if hasattr(evaluator, "finished_video_ids") else set()
    if finished:
        logger.info("Resuming: %d videos already have results and are skipped", len(finished))
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    start = time.perf_counter()
    compute_seconds = 0.0
    num_done = 0
    progress = tqdm(
        total=total, desc="videos", unit="video", disable=not comm.is_main_process(), smoothing=0.1
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for inputs in data_loader:
                progress.update(1)
                if all(x.get("video_id") in finished for x in inputs):
                    continue
                tic = time.perf_counter()
                outputs = model(inputs)
                compute_seconds += time.perf_counter() - tic
                evaluator.process(inputs, outputs)
                num_done += 1
    finally:
        progress.close()
        model.train(was_training)
    elapsed = time.perf_counter() - start
    logger.info(
        "Inference done on %d videos in %s (%.3f s/video of model time)",
        num_done,
        datetime.timedelta(seconds=int(elapsed)),
        compute_seconds / max(num_done, 1),
    )
    results = evaluator.evaluate()
    return results if results is not None else {}
