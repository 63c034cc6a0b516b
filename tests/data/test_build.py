"""The training stream is a deterministic function of (seed, iteration, rank); dataset mixing ratios."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch
from conftest import small_cfg

from mdqe.data import build_test_loader, build_train_loader
from mdqe.data.build import ClipBatchPlan, get_train_dataset_dicts


def _batches(cfg, num: int, start_iter: int = 0, rank: int = 0, world_size: int = 1) -> list[list[dict]]:
    loader = build_train_loader(cfg, start_iter=start_iter, rank=rank, world_size=world_size)
    return list(itertools.islice(iter(loader), num))


def _same_clip(a: dict, b: dict) -> bool:
    return (
        a["file_names"] == b["file_names"]
        and a["frame_idx"] == b["frame_idx"]
        and all(torch.equal(x, y) for x, y in zip(a["image"], b["image"]))
        and all(
            torch.equal(x.gt_masks.tensor, y.gt_masks.tensor) for x, y in zip(a["instances"], b["instances"])
        )
    )


def _joint_cfg(**kw):
    return small_cfg(
        DATASETS__TRAIN=("test_synth_coco", "test_synth_train"), DATASETS__DATASET_RATIO=[0.75, 1.0], **kw
    )


def test_same_seed_and_iteration_give_the_same_batch(synthetic_root):
    first, second = _batches(_joint_cfg(), 3), _batches(_joint_cfg(), 3)
    for a, b in zip(first, second):
        assert len(a) == 4 and all(_same_clip(x, y) for x, y in zip(a, b))
    other_seed = _batches(_joint_cfg(SEED=4), 3)
    assert not all(_same_clip(x, y) for a, b in zip(first, other_seed) for x, y in zip(a, b))


def test_rank_slices_partition_the_global_batch(synthetic_root):
    cfg = _joint_cfg()
    whole = _batches(cfg, 2)
    rank0, rank1 = _batches(cfg, 2, rank=0, world_size=2), _batches(cfg, 2, rank=1, world_size=2)
    for full, r0, r1 in zip(whole, rank0, rank1):
        assert len(r0) == len(r1) == 2
        assert all(_same_clip(x, y) for x, y in zip(full, r0 + r1))


def test_start_iter_resumes_the_stream_exactly(synthetic_root):
    cfg = _joint_cfg()
    from_start, resumed = _batches(cfg, 4), _batches(cfg, 2, start_iter=2)
    for a, b in zip(from_start[2:], resumed):
        assert all(_same_clip(x, y) for x, y in zip(a, b))


def test_worker_processes_give_the_same_stream(synthetic_root):
    serial = _batches(_joint_cfg(), 2)
    parallel = _batches(_joint_cfg(DATALOADER__NUM_WORKERS=2), 2)
    for a, b in zip(serial, parallel):
        assert all(_same_clip(x, y) for x, y in zip(a, b))


def test_training_leaves_the_global_random_state_alone(synthetic_root):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    _batches(_joint_cfg(), 1)
    assert np.random.rand() == expected


def test_dataset_ratio_sets_the_sampling_frequencies():
    plan = ClipBatchPlan([7, 30], [0.75, 1.0], batch_size=16, seed=0)
    draws = np.array([pair for it in range(1000) for pair in plan(it)])
    share = (draws[:, 0] == 0).mean()
    assert abs(share - 0.75 / 1.75) < 0.015  # 16000 draws: std 0.004
    counts = np.bincount(draws[draws[:, 0] == 0, 1], minlength=7)
    assert counts.min() > 0.8 * counts.mean()  # every sample of the small dataset is drawn about equally
    assert draws[draws[:, 0] == 1, 1].max() == 29


def test_each_epoch_is_a_permutation_of_the_dataset():
    plan = ClipBatchPlan([10], [1.0], batch_size=5, seed=3)
    draws = [sample for it in range(8) for _, sample in plan(it)]
    epochs = [draws[i : i + 10] for i in range(0, 40, 10)]
    assert all(sorted(e) == list(range(10)) for e in epochs)  # no sample twice within an epoch
    assert len({tuple(e) for e in epochs}) == 4  # a fresh permutation every epoch


def test_batches_are_grouped_by_orientation():
    landscape = [np.arange(9) % 3 != 0, np.arange(5) % 2 == 0]  # both orientations in both datasets
    plan = ClipBatchPlan([9, 5], [1.0, 1.0], batch_size=4, seed=0, landscape=landscape)
    kinds = set()
    for it in range(200):
        batch = {bool(landscape[d][i]) for d, i in plan(it)}
        assert len(batch) == 1, f"iteration {it} mixes landscape and portrait clips"
        kinds |= batch
    assert kinds == {True, False}


def test_the_plan_of_an_iteration_does_not_depend_on_what_was_asked_before():
    landscape = [np.arange(9) % 3 != 0, np.arange(5) % 2 == 0]
    fresh = lambda: ClipBatchPlan([9, 5], [0.5, 1.0], batch_size=4, seed=7, landscape=landscape)
    a = fresh()
    expected = [a(it) for it in range(60)]
    b = fresh()
    assert b(41) == expected[41]  # a resumed run starts there directly
    assert [b(it) for it in (42, 43, 10, 59)] == [expected[it] for it in (42, 43, 10, 59)]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"DATASETS__DATASET_RATIO": [1.0]}, "DATASET_RATIO has 1 entries"),
        ({"DATASETS__DATASET_RATIO": [0.0, 0.0]}, "positive sum"),
        ({"SOLVER__IMS_PER_BATCH": 3, "DATASETS__DATASET_RATIO": [1.0, 1.0]}, "divisible by the world size"),
    ],
)
def test_bad_loader_settings_name_the_key(synthetic_root, overrides, match):
    cfg = small_cfg(DATASETS__TRAIN=("test_synth_coco", "test_synth_train"), **overrides)
    with pytest.raises(ValueError, match=match):
        build_train_loader(cfg, rank=0, world_size=2)


def test_test_loader_yields_whole_videos(synthetic_root):
    (batch,) = itertools.islice(iter(build_test_loader(small_cfg(), "test_synth_val")), 1)
    assert len(batch) == 1 and len(batch[0]["image"]) == batch[0]["length"]


def test_empty_videos_are_dropped_from_training_with_a_count(synthetic_root, caplog, monkeypatch):
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get("test_synth_train")
    dicts[0]["annotations"] = [[] for _ in dicts[0]["annotations"]]
    monkeypatch.setattr(DatasetCatalog, "get", lambda name: dicts)
    with caplog.at_level(logging.WARNING):
        kept = get_train_dataset_dicts("test_synth_train")
    assert len(kept) == len(dicts) - 1
    assert "removed 1 of 5 samples without annotations" in caplog.text
