"""Clip mappers: shapes, identity consistency, clip-consistent augmentation, pseudo-clips, test mapper."""

from __future__ import annotations

import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from conftest import TINY_SEED, TINY_SPLITS, small_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from fvcore.transforms.transform import HFlipTransform

from mdqe.data import CocoClipDatasetMapper, YTVISDatasetMapper
from mdqe.data.augmentation import (
    RandomCropClip,
    RandomFlipClip,
    ResizeShortestEdgeClip,
    apply_clip_augmentations,
)
from mdqe.data.build import _seeded_global_rngs
from mdqe.data.dataset_mapper import (
    _frame_instances,
    filter_empty_instances,
    is_image_dataset,
    sample_clip_frames,
    source_to_target_classes,
)
from mdqe.data.synthetic import split_video


def _check_clip(out: dict, num_frames: int) -> None:
    images, instances = out["image"], out["instances"]
    assert len(images) == len(instances) == len(out["file_names"]) == len(out["frame_idx"]) == num_frames
    num = len(instances[0])
    ids = torch.stack([inst.gt_ids for inst in instances], 1)  # (N, T)
    for image, inst in zip(images, instances):
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert inst.image_size == tuple(image.shape[1:])
        assert len(inst) == num
        assert inst.gt_masks.tensor.shape == (num, *image.shape[1:])
        assert inst.gt_boxes.tensor.shape == (num, 4)
        present = inst.gt_ids != -1
        # a present instance has a mask and a class; an absent one has no class or an empty mask/box
        assert bool(inst.gt_masks.tensor[present].flatten(1).any(1).all())
        assert bool((inst.gt_classes[present] >= 0).all())
    for row in ids:
        assert len(set(row[row != -1].tolist())) <= 1, f"one row mixes instance ids: {row.tolist()}"


@pytest.mark.parametrize("seed", range(6))
def test_train_clip_shapes_and_ids_consistent_across_frames(synthetic_root, seed):
    cfg = small_cfg(
        INPUT__CROP__ENABLED=True, INPUT__CROP__TYPE="relative_range", INPUT__CROP__SIZE=(0.6, 0.6)
    )
    mapper = YTVISDatasetMapper(cfg, is_train=True)
    record = DatasetCatalog.get("test_synth_train")[seed % 5]
    with _seeded_global_rngs(seed):
        out = mapper(record)
    _check_clip(out, 3)
    assert len({tuple(im.shape) for im in out["image"]}) == 1  # one resize per clip
    assert out["video_id"] == record["video_id"] and out["video_len"] == record["length"]
    assert out["file_names"] == [record["file_names"][i] for i in out["frame_idx"]]


def test_train_masks_are_the_generated_masks_under_the_clip_flip(synthetic_root):
    video = split_video("train", 1, TINY_SEED, TINY_SPLITS["train"])
    record = DatasetCatalog.get("test_synth_train")[1]
    height, width = record["height"], record["width"]
    mapper = YTVISDatasetMapper(
        is_train=True,
        augmentations=[T.ResizeShortestEdge(min(height, width), 10_000), RandomFlipClip(prob=1.0)],
        image_format="RGB",
        sampling_frame_num=4,
        sampling_frame_range=3,
    )
    with _seeded_global_rngs(0):
        out = mapper(record)
    _check_clip(out, 4)
    ann_ids = sorted({obj["id"] for frame in record["annotations"] for obj in frame})
    for t, inst in zip(out["frame_idx"], out["instances"]):
        for row, ann_id in enumerate(inst.gt_ids.tolist()):
            if ann_id == -1:
                continue
            expected = video.masks[ann_ids.index(ann_id), t][:, ::-1]
            assert np.array_equal(inst.gt_masks.tensor[row].numpy(), expected)
            assert inst.gt_classes[row] == video.category_ids[ann_ids.index(ann_id)] - 1
    flipped = np.ascontiguousarray(video.frames[out["frame_idx"][0]][:, ::-1]).astype(np.float32)
    assert np.abs(out["image"][0].permute(1, 2, 0).numpy() - flipped).mean() < 6


def test_flip_by_clip_flips_all_frames_or_none(synthetic_root):
    cfg = small_cfg(INPUT__SAMPLING_FRAME_NUM=4)
    mapper = YTVISDatasetMapper(cfg, is_train=True)
    record = DatasetCatalog.get("test_synth_train")[0]
    flip = next(a for a in mapper.augmentations if isinstance(a, RandomFlipClip))
    flips = set()
    for seed in range(8):
        with _seeded_global_rngs(seed):
            tfms = flip.get_clip_transforms([np.zeros((8, 10, 3), np.uint8)] * 4)
        kinds = {isinstance(t, HFlipTransform) for t in tfms}
        assert len(kinds) == 1
        flips |= kinds
    assert flips == {True, False}
    assert mapper(record)["image"]  # the full mapper runs with this configuration


def test_sampled_frames_stay_within_range_of_a_reference(synthetic_root):
    for seed in range(50):
        with _seeded_global_rngs(seed):
            frames = sample_clip_frames(40, 5, 3)
        assert frames == sorted(frames) and len(frames) == 5
        assert max(frames) - min(frames) <= 6
    with _seeded_global_rngs(0):
        assert sample_clip_frames(1, 3, 10) == [0, 0, 0]


def test_pseudo_clip_from_one_image(synthetic_root):
    cfg = small_cfg(
        DATASETS__TRAIN=("test_synth_coco", "test_synth_train"),
        INPUT__SAMPLING_FRAME_NUM=4,
        INPUT__PSEUDO__CROP__ENABLED=True,
        INPUT__PSEUDO__CROP__SIZE=(60, 90),
    )
    mapper = CocoClipDatasetMapper(cfg, is_train=True, is_tgt=False, src_dataset_name="test_synth_coco")
    record = DatasetCatalog.get("test_synth_coco")[2]
    with _seeded_global_rngs(1):
        out = mapper(record)
    _check_clip(out, 4)
    num = len([a for a in record["annotations"] if not a.get("iscrowd", 0)])
    ids = torch.stack([inst.gt_ids for inst in out["instances"]], 1)
    assert ids.shape[0] == num
    assert set(ids[ids != -1].tolist()) <= set(range(num))
    # the clip moves: a smooth rotation makes the frames differ
    assert not torch.equal(out["image"][0], out["image"][-1])
    assert out["file_names"] == [record["file_name"]] * 4 and 16 <= out["video_len"] <= 48
    # same categories in source and target: classes are kept
    classes = {a["category_id"] for a in record["annotations"]}
    assert set(out["instances"][0].gt_classes[ids[:, 0] != -1].tolist()) <= classes


def test_coco_classes_map_onto_the_target_dataset():
    src2tgt = source_to_target_classes("coco2ovis_train", "ytvis_ovis_train")
    coco = MetadataCatalog.get("coco2ovis_train").thing_dataset_id_to_contiguous_id
    assert src2tgt[coco[3]] == 24  # car -> Vehical
    assert coco[16] not in src2tgt  # bird: no entry, as released
    assert source_to_target_classes("test_synth_coco", "test_synth_train") is None
    # the map is the source's registered metadata: a target without those ids, or a COCO set registered
    # without a map, is an error naming both datasets
    with pytest.raises(ValueError, match=r"'coco2ovis_train'.*ids .* 'test_synth_train' does not have"):
        source_to_target_classes("coco2ovis_train", "test_synth_train")
    with pytest.raises(ValueError, match=r"no category map from 'coco_2017_train' .* 'ytvis_ovis_train'"):
        source_to_target_classes("coco_2017_train", "ytvis_ovis_train")


def test_image_datasets_are_told_by_their_metadata_not_their_name():
    name = f"not_coco_named_{uuid.uuid4().hex}"
    MetadataCatalog.get(name).set(evaluator_type="coco")
    assert is_image_dataset(name) and is_image_dataset("coco2ovis_val")
    assert not is_image_dataset("ytvis_ovis_val") and not is_image_dataset("coco_named_but_unregistered")


def test_test_mapper_returns_every_frame_resized(synthetic_root):
    cfg = small_cfg(INPUT__MIN_SIZE_TEST=64)
    record = DatasetCatalog.get("test_synth_val")[0]
    out = YTVISDatasetMapper(cfg, is_train=False)(record)
    assert out["frame_idx"] == list(range(record["length"])) and out["instances"] == []
    assert all(min(im.shape[1:]) == 64 for im in out["image"])
    assert (out["height"], out["width"]) == (record["height"], record["width"])


def _reference_instances(objs, slots, tfms, image_shape):
    """detectron2's per-object path, which `_frame_instances` must reproduce."""
    rows = [{"bbox": np.zeros(4), "bbox_mode": BoxMode.XYXY_ABS, "category_id": -1,
             "segmentation": np.zeros(image_shape, np.uint8)} for _ in slots]  # fmt: skip
    for obj in objs:
        rows[slots.index(obj["id"])] = utils.transform_instance_annotations(dict(obj), tfms, image_shape)
    return utils.annotations_to_instances(rows, image_shape, mask_format="bitmask")


def _random_objects(rng, height: int, width: int) -> list[dict]:
    objs = []
    for i in range(4):
        mask = np.zeros((height, width), np.uint8)
        y, x = rng.integers(0, height - 10), rng.integers(0, width - 10)
        mask[y : y + rng.integers(3, 20), x : x + rng.integers(3, 25)] = 1
        rle = mask_util.encode(np.asfortranarray(mask))
        objs.append({"id": 10 + i, "category_id": i, "bbox": [x + 0.5, y + 0.25, 8.0, 6.0],
                     "bbox_mode": BoxMode.XYWH_ABS, "segmentation": rle})  # fmt: skip
    return objs


def _augmented(seed: int, frame: np.ndarray):
    augs = [ResizeShortestEdgeClip((37, 61), 200), RandomCropClip("relative_range", (0.6, 0.6))]
    augs += [RandomFlipClip(0.5)] + ([T.RandomRotation([-15, 15], expand=False)] if seed % 2 else [])
    with _seeded_global_rngs(seed):
        (out,), (tfms,) = apply_clip_augmentations(augs, [frame])
    return out, tfms


@pytest.mark.parametrize("seed", range(8))
def test_batched_mask_warping_equals_detectron2s_per_object_path(seed):
    objs = _random_objects(np.random.default_rng(seed), 50, 70)
    slots = [10, 11, 12, 13, 99]  # 99: absent from this frame
    out, tfms = _augmented(seed, np.zeros((50, 70, 3), np.uint8))
    ours = _frame_instances(objs, slots, tfms, (50, 70), out.shape[:2], None)
    ref = _reference_instances(objs, slots, tfms, out.shape[:2])
    ref.gt_ids = torch.tensor([10, 11, 12, 13, -1])
    ref = filter_empty_instances(ref)
    assert torch.equal(ours.gt_masks.tensor, ref.gt_masks.tensor)
    assert torch.allclose(ours.gt_boxes.tensor, ref.gt_boxes.tensor)
    assert torch.equal(ours.gt_ids, ref.gt_ids) and torch.equal(ours.gt_classes, ref.gt_classes)


def test_polygons_are_warped_like_their_rasterisation():
    polygon = [[5.0, 4.0, 30.5, 6.0, 12.2, 27.7]]
    rle = mask_util.merge(mask_util.frPyObjects(polygon, 50, 70))
    out, tfms = _augmented(1, np.zeros((50, 70, 3), np.uint8))
    obj = {"id": 1, "category_id": 0, "bbox": [5, 4, 25.5, 23.7], "bbox_mode": BoxMode.XYWH_ABS}
    from_polygon = _frame_instances(
        [{**obj, "segmentation": polygon}], [1], tfms, (50, 70), out.shape[:2], None
    )
    from_rle = _frame_instances([{**obj, "segmentation": rle}], [1], tfms, (50, 70), out.shape[:2], None)
    assert from_polygon.gt_masks.tensor.any() and torch.equal(
        from_polygon.gt_masks.tensor, from_rle.gt_masks.tensor
    )


def test_an_object_without_polygons_is_marked_absent():
    out, tfms = _augmented(0, np.zeros((50, 70, 3), np.uint8))
    obj = {
        "id": 4,
        "category_id": 1,
        "bbox": [5.0, 4.0, 9.0, 9.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": [],
    }
    inst = _frame_instances([obj], [4], tfms, (50, 70), out.shape[:2], None)
    assert inst.gt_ids.tolist() == [-1] and not inst.gt_masks.tensor.any()
