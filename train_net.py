#!/usr/bin/env python
"""Train and evaluate MDQE (detectron2-style entry point).

    python train_net.py --num-gpus 8 --config-file configs/R50_ovis_360.yaml
    python train_net.py --config-file configs/R50_ovis_360.yaml --eval-only MODEL.WEIGHTS /path/ckpt.pth
    python train_net.py --config-file configs/synthetic/R18_synthetic.yaml   # CPU, synthetic data

With `MODEL.DEVICE cpu`, --num-gpus N starts N CPU processes joined with the gloo backend.

SIGTERM or SIGUSR1 (SLURM's warning before a time limit or a preemption) during training writes a
checkpoint of the current iteration and exits with status 75 (EX_TEMPFAIL, `mdqe.engine.hooks.
EXIT_PREEMPTED`); run the same command with --resume to continue exactly where it stopped.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import sys
import warnings

REQUIRED = {
    "torch": "PyTorch",
    "torchvision": "torchvision",
    "detectron2": "detectron2",
    "pycocotools": "pycocotools",
    "cv2": "opencv-python-headless",
    "scipy": "scipy",
}


def _require_dependencies() -> None:
    missing = [name for module, name in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:
        sys.exit(
            f"error: missing Python packages: {', '.join(missing)}. Run `bash tools/install.sh` and use "
            ".venv/bin/python (or follow INSTALL.md to install them into your own environment)."
        )


_require_dependencies()
# detectron2 v0.6 scripts a few helpers at import time, which recent PyTorch flags on every run.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

# detectron2 v0.6 uses PIL.Image.LINEAR, which Pillow >= 10 removed: restore it before detectron2 is imported
import mdqe.utils.compat  # noqa: E402, F401  # isort: skip
import torch  # noqa: E402
from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.engine import default_argument_parser  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.collect_env import collect_env_info  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.file_io import PathManager  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from mdqe import add_mdqe_config  # noqa: E402
from mdqe.checkpoint import CheckpointError, MDQECheckpointer, check_fits, load_for_inference  # noqa: E402
from mdqe.engine import launch  # noqa: E402
from mdqe.engine.trainer import Trainer  # noqa: E402

logger = logging.getLogger("mdqe")

REMOTE_PREFIXES = ("detectron2://", "http://", "https://", "manifold://", "s3://", "gs://")


def load_config(config_file: str, opts: list[str]) -> CfgNode:
    """The frozen config of a YAML file plus command-line overrides."""
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.freeze()
    return cfg


def _eval_weights_path(cfg: CfgNode, resume: bool) -> str:
    """The checkpoint --eval-only evaluates: the last one of OUTPUT_DIR with --resume, else MODEL.WEIGHTS."""
    checkpointer = MDQECheckpointer(torch.nn.Module(), save_dir=cfg.OUTPUT_DIR)
    if resume and checkpointer.has_checkpoint():
        return checkpointer.get_checkpoint_file()
    return PathManager.get_local_path(cfg.MODEL.WEIGHTS)


def _check_eval_weights(cfg: CfgNode, path: str, config_name: str) -> None:
    """Exit with one line when the checkpoint cannot be read or does not fit the model of `cfg`.

    The model is built on the meta device (no memory, no initialisation), so a wrong checkpoint is refused
    within seconds, before any dataset is read or any process started.
    """
    from detectron2.modeling import META_ARCH_REGISTRY

    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    try:
        check_fits(model, path, cfg, config_name)
    except (FileNotFoundError, CheckpointError) as e:
        sys.exit(f"error: {e}")


def check_run_inputs(cfg: CfgNode, eval_only: bool, resume: bool, config_name: str = "the config") -> None:
    """Fail early, with one line saying what is missing or does not fit, before any process is started
    or any data is read (an --eval-only checkpoint is checked against the config's model first)."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: MODEL.DEVICE is 'cuda' but no CUDA device is available; add `MODEL.DEVICE cpu`.")
    if cfg.SOLVER.AMP.ENABLED and not eval_only and not cfg.MODEL.DEVICE.startswith("cuda"):
        sys.exit("error: SOLVER.AMP.ENABLED needs MODEL.DEVICE cuda; add `SOLVER.AMP.ENABLED False` on CPU.")
    weights = cfg.MODEL.WEIGHTS
    resuming = resume and os.path.exists(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if eval_only and not weights and not resuming:
        sys.exit("error: --eval-only needs weights: pass MODEL.WEIGHTS /path/to/checkpoint.pth")
    if weights and not weights.startswith(REMOTE_PREFIXES) and not os.path.isfile(weights) and not resuming:
        sys.exit(
            f"error: MODEL.WEIGHTS file not found: {weights}. Download the checkpoint (see the model zoo in "
            "README.md) and pass its path, or `MODEL.WEIGHTS ''` to train from scratch."
        )
    if eval_only:
        _check_eval_weights(cfg, _eval_weights_path(cfg, resume), config_name)
    keys = [("DATASETS.TEST", cfg.DATASETS.TEST)] + (
        [] if eval_only else [("DATASETS.TRAIN", cfg.DATASETS.TRAIN)]
    )
    registered = DatasetCatalog.list()
    for key, names in keys:
        for name in names:
            if name not in registered:
                close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                sys.exit(
                    f"error: {key} names {name!r}, which is not a registered dataset{hint} "
                    "(datasets/README.md lists the registered ones)"
                )
            try:
                DatasetCatalog.get(name)  # also generates the synthetic datasets once, before workers start
            except FileNotFoundError as e:
                sys.exit(f"error: {e}")


def _environment_info() -> str:
    try:
        return collect_env_info()
    except (
        ImportError
    ):  # detectron2 installed without its compiled ops (tools/install.sh) has no compiler info
        import detectron2

        return f"PyTorch {torch.__version__}, detectron2 {detectron2.__version__} (Python-only install)"


def setup(args) -> CfgNode:
    """The config, plus what detectron2's `default_setup` does: output folder, loggers (detectron2, fvcore,
    mdqe) writing to OUTPUT_DIR/log.txt, environment and config in the log, OUTPUT_DIR/config.yaml,
    per-rank seeding (SEED + rank when SEED >= 0)."""
    cfg = load_config(args.config_file, args.opts)
    rank = comm.get_rank()
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    for name in ("fvcore", "mdqe"):
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name=name, abbrev_name=name)
    d2_logger = setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank)
    d2_logger.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    d2_logger.info("Environment info:\n" + _environment_info())
    d2_logger.info(f"Command line arguments: {args}")
    if comm.is_main_process():
        path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
        with open(path, "w") as f:
            f.write(cfg.dump())
        d2_logger.info(f"Running with full config:\n{cfg.dump()}\nFull config saved to {path}")
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    return cfg


def main(args) -> dict | None:
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_for_inference(model, _eval_weights_path(cfg, args.resume), cfg, args.config_file)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv: list[str] | None = None) -> None:
    args = default_argument_parser().parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts)
    except (AssertionError, KeyError, ValueError) as e:  # yacs reports bad files and keys by assertions
        sys.exit(f"error: config {args.config_file!r} with overrides {args.opts}: {e}")
    check_run_inputs(cfg, args.eval_only, args.resume, args.config_file)
    device = "cpu" if cfg.MODEL.DEVICE == "cpu" else "cuda"
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        device=device,
    )
    comm.synchronize()


if __name__ == "__main__":
    cli()
