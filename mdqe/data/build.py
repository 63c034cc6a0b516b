"""Data loaders: a deterministic, resumable training stream over one or several datasets, and test loaders.

Training stream (`ClipBatchPlan`), with the semantics of detectron2's TrainingSampler and
AspectRatioGroupedDataset that the original uses:
- every dataset is read in epochs: each epoch is a fresh permutation of its samples (no replacement
  within an epoch), the permutation of epoch e a function of (seed, dataset, e);
- each draw of the stream picks its source dataset with probability proportional to
  DATASETS.DATASET_RATIO (so the frequencies across datasets are kept) and takes that dataset's next sample;
- with DATALOADER.ASPECT_RATIO_GROUPING (default True, as detectron2), drawn samples wait in a landscape
  (width > height) and a portrait bucket, and a bucket that holds SOLVER.IMS_PER_BATCH samples becomes the
  next iteration's global batch, so a batch never mixes the two (less zero padding);
- the augmentation randomness of slot j of iteration i is seeded from (seed, i, j).
Rank r of w takes slots [r*B/w, (r+1)*B/w) of the global batch of B clips. The whole stream is a pure
function of the seed (iteration i's batch is found by replaying the cheap index draws of the iterations
before it, never the clips), hence it does not depend on DATALOADER.NUM_WORKERS or on the world size, and
`start_iter` resumes exactly where a stopped run left off.
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
    """Which (dataset, sample) fills each slot of each iteration's global batch; see the module docstring.

    Args:
        dataset_sizes: number of samples of each dataset.
        ratios: DATASETS.DATASET_RATIO, one non-negative weight per dataset.
        batch_size: global batch size (SOLVER.IMS_PER_BATCH).
        seed: the stream's seed.
        landscape: per dataset, a (N,) bool array (width > height of each sample) to group batches by
            orientation; None: no grouping.
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        ratios: Sequence[float],
        batch_size: int,
        seed: int,
        landscape: Sequence[np.ndarray] | None = None,
    ):
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
        if landscape is not None and [len(a) for a in landscape] != list(dataset_sizes):
            raise ValueError("ClipBatchPlan: one orientation flag per sample of every dataset is needed")
        self.probs = weights / weights.sum()
        self.dataset_sizes = list(dataset_sizes)
        self.batch_size = batch_size
        self.seed = seed
        self.landscape = None if landscape is None else [np.asarray(a, dtype=bool) for a in landscape]
        self._restart()

    def _restart(self) -> None:
        self._rng = np.random.default_rng([self.seed, 0])
        self._epochs = [-1] * len(self.dataset_sizes)
        self._cursors = [0] * len(self.dataset_sizes)
        self._perms: list[np.ndarray] = [np.empty(0, np.int64)] * len(self.dataset_sizes)
        self._buckets: tuple[list, list] = ([], [])
        self._next_iteration = 0
        self._last: list[tuple[int, int]] = []

    def _next_sample(self, dataset: int) -> int:
        """The next sample of `dataset`'s epoch-wise permutation stream."""
        if self._cursors[dataset] >= len(self._perms[dataset]):
            self._epochs[dataset] += 1
            rng = np.random.default_rng([self.seed, 1, dataset, self._epochs[dataset]])
            self._perms[dataset] = rng.permutation(self.dataset_sizes[dataset])
            self._cursors[dataset] = 0
        self._cursors[dataset] += 1
        return int(self._perms[dataset][self._cursors[dataset] - 1])

    def _step(self) -> list[tuple[int, int]]:
        """Draw until one bucket is full; return it as the next iteration's batch."""
        while True:
            dataset = int(self._rng.choice(len(self.probs), p=self.probs))
            sample = self._next_sample(dataset)
            bucket = 0 if self.landscape is None or self.landscape[dataset][sample] else 1
            self._buckets[bucket].append((dataset, sample))
            if len(self._buckets[bucket]) == self.batch_size:
                batch = list(self._buckets[bucket])
                self._buckets[bucket].clear()
                return batch

    def __call__(self, iteration: int) -> list[tuple[int, int]]:
        """(dataset index, sample index) for each of the `batch_size` slots of `iteration`."""
        if iteration < self._next_iteration - 1:
            self._restart()
        while self._next_iteration <= iteration:
            self._last = self._step()
            self._next_iteration += 1
        return self._last

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
    landscape = (
        [np.array([r["width"] > r["height"] for r in d], dtype=bool) for d in datasets]
        if cfg.DATALOADER.ASPECT_RATIO_GROUPING
        else None
    )
    plan = ClipBatchPlan([len(d) for d in datasets], ratios, batch_size, _train_seed(cfg), landscape)
    sampler = _RankSlotSampler(start_iter, batch_size, rank, world_size)
    sources = ", ".join(f"{n} ({len(d)} samples, ratio {r})" for n, d, r in zip(names, datasets, ratios))
    logger.info(
        f"Training stream: {sources}; {batch_size} clips per iteration, seed {plan.seed}, "
        f"{'' if landscape is not None else 'no '}aspect-ratio grouping, starting at iteration {start_iter}"
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
