"""`Trainer`: detectron2's DefaultTrainer with MDQE's data, optimizer, evaluator and a CPU-capable DDP."""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, TrainerBase
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import MDQECheckpointer, inflate_checkpoint_file
from .hooks import FrozenTrainingWarning, PreemptionCheckpointer
from .inference import inference_on_videos
from .optimizer import build_optimizer
from .train_loop import IterationSeeder, MDQEAMPTrainer, MDQESimpleTrainer

logger = logging.getLogger(__name__)


def wrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel when there are several processes; device_ids only for CUDA models."""
    if comm.get_world_size() == 1:
        return model
    on_cuda = next(model.parameters()).is_cuda
    device_ids = [comm.get_local_rank()] if on_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


class Trainer(DefaultTrainer):
    """MDQE training: clip loaders with DATASET_RATIO, per-parameter AdamW, YouTube-VIS evaluation."""

    def __init__(self, cfg: CfgNode):
        # DefaultTrainer.__init__ wraps the model in a CUDA-only DDP; this is the same set-up with a
        # DDP that also works for CPU processes (gloo).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model)
        trainer_cls = MDQEAMPTrainer if cfg.SOLVER.AMP.ENABLED else MDQESimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = MDQECheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """Load weights or resume; a resumed run continues the deterministic data stream at its iteration.

        When starting from MODEL.WEIGHTS trained with another clip length (INPUT.PRETRAIN_FRAME_NUM !=
        INPUT.SAMPLING_FRAME_NUM), the temporal attention weights are inflated first, as the original.
        """
        cfg = self.cfg
        resuming = resume and self.checkpointer.has_checkpoint()
        weights = cfg.MODEL.WEIGHTS
        if (
            not resuming
            and weights.endswith(".pth")
            and cfg.INPUT.PRETRAIN_FRAME_NUM != cfg.INPUT.SAMPLING_FRAME_NUM
        ):
            weights = os.path.join(cfg.OUTPUT_DIR, "inflated", os.path.basename(weights))
            if comm.is_main_process():
                weights = inflate_checkpoint_file(
                    cfg.MODEL.WEIGHTS,
                    cfg.INPUT.SAMPLING_FRAME_NUM,
                    cfg.INPUT.PRETRAIN_FRAME_NUM,
                    os.path.dirname(weights),
                    n_heads=cfg.MODEL.MDQE.NHEADS,
                    n_points=cfg.MODEL.MDQE.DEC_NUM_POINTS,
                )
            weights = comm.all_gather(weights)[0]
        self.checkpointer.resume_or_load(weights, resume=resume)
        if resuming:
            self.start_iter = self.iter + 1
        if self.start_iter > 0:
            loader = self.build_train_loader(self.cfg, start_iter=self.start_iter)
            self._trainer.data_loader = loader
            if hasattr(self._trainer, "_data_loader_iter_obj"):  # detectron2 > v0.6: created lazily
                self._trainer._data_loader_iter_obj = None
            else:
                self._trainer._data_loader_iter = iter(loader)

    def state_dict(self) -> dict:
        """Iteration and hook state, plus the optimizer (and AMP grad scaler) state under "_trainer",
        which detectron2 v0.6's DefaultTrainer leaves out of its checkpoints (later versions save it
        under the same key)."""
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint has no optimizer state: the optimizer restarts from scratch")

    def build_hooks(self) -> list:
        """detectron2's default hooks, preceded by per-iteration seeding when SEED >= 0, plus a warning
        when the first iterations leave the model unchanged and, last (after the scheduler's step), the
        checkpoint-and-exit on SIGTERM/SIGUSR1."""
        hooks = super().build_hooks()
        if self.cfg.SEED >= 0:
            hooks.insert(0, IterationSeeder(self.cfg.SEED))
        # AMP's grad scaler skips the steps whose scaled gradients overflow, often the first few
        frozen_check_iters = 20 if self.cfg.SOLVER.AMP.ENABLED else 3
        hooks += [FrozenTrainingWarning(frozen_check_iters), PreemptionCheckpointer()]
        return hooks

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, start_iter: int = 0):
        from mdqe.data import build_train_loader

        return build_train_loader(cfg, start_iter=start_iter)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        from mdqe.data import build_test_loader

        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        from mdqe.data.datasets.metadata import is_image_dataset
        from mdqe.evaluation import YTVISEvaluator

        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        if is_image_dataset(dataset_name):
            # detectron2's fast COCO evaluation needs its compiled ops; the pycocotools one gives the same AP.
            return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)
        return YTVISEvaluator(dataset_name, cfg, True, output_folder)

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None) -> OrderedDict:
        """Evaluate on every DATASETS.TEST entry; CUDA models run under autocast, as the original.

        Returns the results of the only test dataset, a dict by dataset name when there are several,
        and {} when DATASETS.TEST is empty.
        """
        results = OrderedDict()
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            data_loader = cls.build_test_loader(cfg, dataset_name)
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, dataset_name)
            device_type = next(model.parameters()).device.type
            with torch.autocast(device_type, enabled=device_type == "cuda"):
                results[dataset_name] = inference_on_videos(model, data_loader, evaluator)
            if comm.is_main_process():
                logger.info("Evaluation results for %s in csv format:", dataset_name)
                print_csv_format(results[dataset_name])
        if len(results) == 1:
            return next(iter(results.values()))
        return results
