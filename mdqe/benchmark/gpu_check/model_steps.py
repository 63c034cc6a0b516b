"""Steps of the GPU check that run the whole model: whole-video inference (FPS, peak memory) and training
iterations (s/iteration, peak memory), in float32 and with AMP (float16 autocast on a GPU, bfloat16 on a
CPU), with the deformable-attention backend of the step's process (MDQE_MSDA_BACKEND).

Weights are the model's own deterministic initialisation (torch.manual_seed(0)): speed and memory do not
depend on trained weights, except through how many queries pass the score threshold. Peak memory is the
total peak (weights included) of torch's CUDA allocator, or of the process's RSS on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from mdqe.benchmark.synthetic import synthetic_clip, synthetic_frames
from mdqe.benchmark.timing import PeakMemory, median_seconds, synchronize
from mdqe.layers.msda_backend import MSDABackendError, select_backend

from .repo import REPO
from .steps import (
    PRECISIONS,
    R50,
    MeasurementErrors,
    Rows,
    StepContext,
    inference_labels,
    training_labels,
)

__all__ = ["DRY_RUN_OPTS", "build_model", "inference_and_training_step", "inference_step", "time_training"]

# Whole-video inference: frames and size per config (R50_ovis_360 tests at 360p, swinl_ovis at 480p).
VIDEO_SIZES = {"R50_ovis_360": (60, 360, 640), "swinl_ovis": (60, 480, 854)}
DRY_RUN_VIDEO = (4, 32, 64)
# Training at the original's per-GPU batch: 2 clips of 4 frames (IMS_PER_BATCH 16 on 8 GPUs), 384x640 (a
# 0.8 crop of a clip resized to 480x800); median of 5 iterations after 2 warm-up ones. The dry run: one
# iteration on one clip of 2 frames 32x64 (DRY_RUN_TRAIN_OPTS).
TRAIN_CLIPS, TRAIN_SIZE, TRAIN_ITERS, TRAIN_WARMUP = 2, (384, 640), 5, 2
# The dry run keeps each config's structure and input pipeline but shrinks the transformer (one head of
# 32 channels and one point: Triton's interpreter runs a program per frame, head and block of queries,
# slowly), the training clips (2 frames: whole-video inference keeps clips of 4, the config's) and
# Swin-L's widths and depths, and freezes the ResNet (whose
# weight gradients dominate a CPU training iteration), so that it takes CPU seconds.
DRY_RUN_OPTS = (
    *("MODEL.MDQE.ENC_LAYERS", 1, "MODEL.MDQE.DEC_LAYERS", 1, "MODEL.MDQE.NUM_OBJECT_QUERIES", 16),
    *("MODEL.MDQE.HIDDEN_DIM", 32, "MODEL.MDQE.NHEADS", 1),
    *("MODEL.MDQE.ENC_NUM_POINTS", 1, "MODEL.MDQE.DEC_NUM_POINTS", 1),
    *("MODEL.BACKBONE.FREEZE_AT", 5),
)
DRY_RUN_TRAIN_OPTS = ("INPUT.SAMPLING_FRAME_NUM", 2)
DRY_RUN_SWIN_OPTS = ("MODEL.SWIN.EMBED_DIM", 48, "MODEL.SWIN.DEPTHS", [2, 2, 2, 2])


def build_model(config: str, device: torch.device, dry_run: bool, opts: tuple = ()):
    """(cfg, MDQE) of configs/`config`.yaml and `opts` with the model's own initialisation (seed 0) on
    `device`; the dry run's opts shrink it."""
    from detectron2.config import get_cfg

    from mdqe.config import add_mdqe_config
    from mdqe.modeling import MDQE

    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / f"{config}.yaml"))
    cfg.MODEL.DEVICE = device.type
    cfg.MODEL.WEIGHTS = ""
    if dry_run:
        cfg.merge_from_list(list(DRY_RUN_OPTS) + (list(DRY_RUN_SWIN_OPTS) if "swin" in config else []))
    cfg.merge_from_list(list(opts))
    torch.manual_seed(0)
    return cfg, MDQE(cfg).to(device)


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def _unavailable_rows(labels: tuple[str, ...], device: torch.device) -> tuple[str, Rows]:
    """(the implementation this process's MDQE_MSDA_BACKEND runs on `device`, []), or ('', `labels` saying
    why none can run)."""
    try:
        return select_backend(device.type), []
    except MSDABackendError as e:
        return "", [(label, f"unavailable: {e}") for label in labels]


def _inference(
    ctx: StepContext, config: str, backend: str | None, errors: MeasurementErrors
) -> Iterator[Rows]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    labels = {p: inference_labels(config, p, backend) for p in PRECISIONS}
    implementation, unavailable = _unavailable_rows(sum(labels.values(), ()), device)
    if unavailable:
        yield unavailable
        return
    num_frames, height, width = DRY_RUN_VIDEO if ctx.dry_run else VIDEO_SIZES[config]
    _, model = build_model(config, device, ctx.dry_run)
    model.eval()
    video = {"image": synthetic_frames(num_frames, height, width), "height": height, "width": width}
    warmup = {"image": synthetic_frames(4, height, width, seed=1), "height": height, "width": width}
    for precision in PRECISIONS:
        fps_label, memory_label = labels[precision]
        try:
            with torch.no_grad(), _autocast(device, precision == "AMP"):
                if not ctx.dry_run:
                    model([warmup])
                with PeakMemory(device.type == "cuda") as peak:
                    synchronize()
                    start = time.perf_counter()
                    out = model([video])
                    synchronize()
                    seconds = time.perf_counter() - start
        except Exception as e:  # reported in its rows; the other precision still runs
            yield errors.failed(labels[precision], e)
            continue
        size = f"{num_frames} frames {height}x{width}, {len(out['pred_scores'])} instances"
        yield [
            (fps_label, f"{num_frames / seconds:.1f} ({size}, deformable attention: {implementation})"),
            (memory_label, peak.value),
        ]


def time_training(
    model: torch.nn.Module, batch: list[dict], amp: bool, lr: float, iters: int, warmup: int
) -> tuple[float, str]:
    """Median seconds of `iters` training iterations (forward, backward, AdamW step; a grad scaler with
    AMP on a GPU) after `warmup` ones, and the peak memory over all of them."""
    cuda = next(model.parameters()).is_cuda
    device = torch.device("cuda" if cuda else "cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cuda)

    def iteration() -> None:
        with _autocast(device, amp):
            losses = model(batch)
        scaler.scale(sum(losses.values())).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    with PeakMemory(cuda) as peak:
        seconds = median_seconds(iteration, iters, warmup)
    return seconds, peak.value


def _training(ctx: StepContext, backend: str, errors: MeasurementErrors) -> Iterator[Rows]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    labels = {p: training_labels(p, backend) for p in PRECISIONS}
    implementation, unavailable = _unavailable_rows(sum(labels.values(), ()), device)
    if unavailable:
        yield unavailable
        return
    cfg, model = build_model(R50, device, ctx.dry_run, DRY_RUN_TRAIN_OPTS if ctx.dry_run else ())
    model.train()
    height, width = DRY_RUN_VIDEO[1:] if ctx.dry_run else TRAIN_SIZE
    num_frames = cfg.INPUT.SAMPLING_FRAME_NUM
    clip = synthetic_clip(num_frames, height, width, cfg.MODEL.MDQE.NUM_CLASSES)
    clips, iters, warmup = (1, 1, 0) if ctx.dry_run else (TRAIN_CLIPS, TRAIN_ITERS, TRAIN_WARMUP)
    size = f"{clips} clip{'s' * (clips > 1)} x {num_frames} frames {height}x{width}"
    size += f", deformable attention: {implementation}"
    for precision in PRECISIONS:
        amp = precision == "AMP"
        try:
            seconds, peak = time_training(model, [clip] * clips, amp, cfg.SOLVER.BASE_LR, iters, warmup)
        except Exception as e:  # reported in its rows; the other precision still runs
            yield errors.failed(labels[precision], e)
            continue
        seconds_label, memory_label = labels[precision]
        yield [(seconds_label, f"{seconds:.3f} ({size})"), (memory_label, peak)]


def inference_step(ctx: StepContext, config: str, backend: str | None) -> Iterator[Rows]:
    """Whole-video inference of `config` on a synthetic video (VIDEO_SIZES; dry run 4 frames 32x64), fp32
    then AMP, each after a 4-frame warm-up video (cuDNN, allocator growth, Triton's compilation, lazy
    initialisation); `backend` names the rows (None: `auto`)."""
    errors = MeasurementErrors()
    yield from _inference(ctx, config, backend, errors)
    errors.check()


def inference_and_training_step(ctx: StepContext, backend: str) -> Iterator[Rows]:
    """R50_ovis_360 with `backend`: whole-video inference as `inference_step`, then training iterations
    (TRAIN_*; dry run: one iteration on one clip of 2 frames 32x64), fp32 then AMP."""
    errors = MeasurementErrors()
    yield from _inference(ctx, R50, backend, errors)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the inference model is gone
    yield from _training(ctx, backend, errors)
    errors.check()
