"""Data loaders: a deterministic, resumable training stream over one or several datasets, and test loaders.

Training stream. Iteration i's global batch (SOLVER.IMS_PER_BATCH clips) is a pure function of
(seed, i): each of its B slots draws its source dataset with probability proportional to
DATASETS.DATASET_RATIO and then a sample uniformly from that dataset (with replacement); the augmentation
randomness of slot j is seeded from (seed, i, j). Rank r of w takes slots [r*B/w, (r+1)*B/w). Hence:
- the stream does not depend on DATALOADER.NUM_WORKERS or on the world size (the union of the ranks'
  slices is the global batch);
- `start_iter` resumes exactly where a stopped run left off, without replaying anything.
The original instead interleaves per-dataset detectron2 loaders through a shared pool, which makes its
ratio approximate (digest §6.3); here the ratio holds exactly in expectation.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch.utils.data
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data.build import build_detection_test_loader, trivial_batch_collator
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from .dataset_mapper import CocoClipDatasetMapper, YTVISDatasetMapper, is_image_dataset

__all__ = [
    "ClipBatchPlan",
    "TrainClipDataset",
    "build_test_loader",
    "build_train_loader",
    "get_train_dataset_dicts",
]

logger = logging.getLogger(__name__)


def _has_annotation(record: dict) -> bool:
    annos = record.get("annotations")
    if annos is None:
        return False
    if "file_names" in record:  # video: a list of per-frame lists
        return any(not obj.get("iscrowd", 0) for frame in annos for obj in frame)
    return any(not obj.get("iscrowd", 0) for obj in annos)


def get_train_dataset_dicts(dataset_name: str, filter_empty: bool = True) -> list[dict]:
    """Dataset dicts of a training dataset; with `filter_empty`, videos/images without any non-crowd
    annotation are dropped (and counted in the log)."""
    dicts = DatasetCatalog.get(dataset_name)
    if filter_empty:
        kept = [d for d in dicts if _has_annotation(d)]
        if len(kept) < len(dicts):
            logger.warning(
                f"Dataset '{dataset_name}': removed {len(dicts) - len(kept)} of {len(dicts)} samples without "
                "annotations (DATALOADER.FILTER_EMPTY_ANNOTATIONS)"
            )
        dicts = kept
    if not dicts:
        raise ValueError(f"Dataset '{dataset_name}' has no usable training sample")
    return dicts


class ClipBatchPlan:
    """Which (dataset, sample) fills each slot of each iteration's global batch; see the module docstring."""

    def __init__(self, dataset_sizes: Sequence[int], ratios: Sequence[float], batch_size: int, seed: int):
        if len(ratios) != len(dataset_sizes):
            raise ValueError(
                f"DATASETS.DATASET_RATIO has {len(ratios)} entries but DATASETS.TRAIN has "
                f"{len(dataset_sizes)}"
            )
        weights = np.asarray(ratios, dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"DATASETS.DATASET_RATIO must be non-negative with a positive sum, got {list(ratios)}"
            )
        self.probs = weights / weights.sum()
        self.dataset_sizes = list(dataset_sizes)
        self.batch_size = batch_size
        self.seed = seed

    def __call__(self, iteration: int) -> list[tuple[int, int]]:
        """(dataset index, sample index) for each of the `batch_size` slots of `iteration`."""
        rng = np.random.default_rng([self.seed, iteration])
        datasets = rng.choice(len(self.probs), size=self.batch_size, p=self.probs)
        fractions = rng.random(self.batch_size)
        sizes = np.asarray(self.dataset_sizes)[datasets]
        return list(zip(datasets.tolist(), (fractions * sizes).astype(np.int64).tolist()))

    def clip_seed(self, iteration: int, slot: int) -> int:
        """Seed of the augmentation randomness of one clip."""
        return int(np.random.SeedSequence([self.seed, iteration, slot]).generate_state(1)[0])


@contextlib.contextmanager
def _seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed python's and numpy's global generators (which detectron2 augmentations use), restoring
    their previous state afterwards so the caller's random streams are untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class TrainClipDataset(torch.utils.data.Dataset):
    """Map-style dataset indexed by (iteration, slot): maps the planned sample with a seeded mapper."""

    def __init__(
        self,
        datasets: Sequence[Sequence[dict]],
        mappers: Sequence[Callable[[dict], dict]],
        plan: ClipBatchPlan,
    ):
        self.datasets = [DatasetFromList(list(d), copy=False) for d in datasets]
        self.mappers = list(mappers)
        self.plan = plan
        self._cached: tuple[int, list[tuple[int, int]]] | None = None

    def __len__(self) -> int:
        raise TypeError("TrainClipDataset is an infinite stream indexed by (iteration, slot)")

    def __getitem__(self, key: tuple[int, int]) -> dict:
        iteration, slot = key
        if self._cached is None or self._cached[0] != iteration:
            self._cached = (iteration, self.plan(iteration))
        dataset_idx, sample_idx = self._cached[1][slot]
        # DatasetFromList deserialises a fresh copy: the mapper may modify it
        record = self.datasets[dataset_idx][sample_idx]
        with _seeded_global_rngs(self.plan.clip_seed(iteration, slot)):
            return self.mappers[dataset_idx](record)


class _RankSlotSampler(torch.utils.data.Sampler):
    """Yields (iteration, slot) for this rank's slots of every iteration from `start_iter` on."""

    def __init__(self, start_iter: int, batch_size: int, rank: int, world_size: int):
        if batch_size % world_size:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH ({batch_size}) must be divisible by the world size ({world_size})"
            )
        self.start_iter = start_iter
        per_rank = batch_size // world_size
        self.slots = range(rank * per_rank, (rank + 1) * per_rank)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for iteration in itertools.count(self.start_iter):
            for slot in self.slots:
                yield iteration, slot


def _train_seed(cfg: CfgNode) -> int:
    # as detectron2: a negative SEED means a random one, shared by all ranks
    return int(cfg.SEED) if cfg.SEED >= 0 else int(comm.shared_random_seed())


def build_train_loader(
    cfg: CfgNode, start_iter: int = 0, rank: int | None = None, world_size: int | None = None
) -> torch.utils.data.DataLoader:
    """Infinite training loader over DATASETS.TRAIN, yielding this rank's list of IMS_PER_BATCH / world
    size mapped clips per iteration, starting at iteration `start_iter`.

    Datasets named coco* (or registered as COCO-format) become pseudo-clips (`CocoClipDatasetMapper`),
    the others video clips (`YTVISDatasetMapper`); all but the last dataset map their classes onto the
    last one's. `rank`/`world_size` default to the current process group's.
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty")
    ratios = list(cfg.DATASETS.DATASET_RATIO) or [1.0] * len(names)
    # load first: loading may complete a dataset's metadata, which the class maps of the mappers read
    datasets = [get_train_dataset_dicts(name, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS) for name in names]
    mappers = []
    for i, name in enumerate(names):
        mapper_cls = CocoClipDatasetMapper if is_image_dataset(name) else YTVISDatasetMapper
        mappers.append(mapper_cls(cfg, is_train=True, is_tgt=i == len(names) - 1, src_dataset_name=name))
    rank = comm.get_rank() if rank is None else rank
    world_size = comm.get_world_size() if world_size is None else world_size
    batch_size = cfg.SOLVER.IMS_PER_BATCH
    plan = ClipBatchPlan([len(d) for d in datasets], ratios, batch_size, _train_seed(cfg))
    sampler = _RankSlotSampler(start_iter, batch_size, rank, world_size)
    sources = ", ".join(f"{n} ({len(d)} samples, ratio {r})" for n, d, r in zip(names, datasets, ratios))
    logger.info(
        f"Training stream: {sources}; {batch_size} clips per iteration, seed {plan.seed}, "
        f"starting at iteration {start_iter}"
    )
    return torch.utils.data.DataLoader(
        TrainClipDataset(datasets, mappers, plan),
        batch_size=batch_size // world_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
    )


def build_test_loader(cfg: CfgNode, dataset_name: str) -> torch.utils.data.DataLoader:
    """Loader of whole test videos (or COCO images as T-frame clips), one per batch, sharded over ranks."""
    mapper_cls = CocoClipDatasetMapper if is_image_dataset(dataset_name) else YTVISDatasetMapper
    mapper = mapper_cls(cfg, is_train=False)
    return build_detection_test_loader(
        DatasetCatalog.get(dataset_name), mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
    )
