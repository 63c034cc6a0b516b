"""Dataset mappers: a video dict -> a training clip or a whole test video; a COCO image -> a pseudo-clip.

Output of a training call (what `MDQE.forward` consumes), for a clip of T frames:
    "image":      list of T uint8 tensors (3, H_t, W_t) in INPUT.FORMAT channel order;
    "instances":  list of T `Instances` with the same N rows in every frame, one per instance of the clip:
                  gt_ids (N,) int64 annotation id, or -1 where the instance is absent or empty in that frame;
                  gt_classes (N,) int64 contiguous class (-1 where absent or without a target class);
                  gt_boxes `Boxes` (N, 4) XYXY absolute; gt_masks `BitMasks` (N, H_t, W_t);
    "file_names": the T frame paths; "frame_idx": the T frame indices; "video_len": frames in the video;
    "height", "width": original frame size; "video_id", "length" (videos) or "image_id" (COCO).
Test calls return every frame (videos) or T copies (COCO) and an empty "instances" list.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances

from .augmentation import apply_clip_augmentations, build_augmentation, build_pseudo_augmentation, warp_masks
from .datasets.metadata import is_image_dataset, source_to_target_classes
from .frames import read_frame

__all__ = [
    "CocoClipDatasetMapper",
    "YTVISDatasetMapper",
    "filter_empty_instances",
    "is_image_dataset",
    "sample_clip_frames",
    "source_to_target_classes",
]

logger = logging.getLogger(__name__)


def sample_clip_frames(
    video_length: int, num_frames: int, frame_range: int, shuffle: bool = False
) -> list[int]:
    """The original's training sampling: a reference frame uniform in [0, L), and `num_frames - 1` others
    drawn with replacement from the frames within `frame_range` of it (the reference excluded), sorted.
    A single-frame video repeats its frame."""
    ref = random.randrange(video_length)
    lo, hi = max(0, ref - frame_range), min(video_length, ref + frame_range + 1)
    candidates = [i for i in range(lo, hi) if i != ref] or [ref]
    selected = sorted([*np.random.choice(candidates, num_frames - 1).tolist(), ref])
    if shuffle:
        random.shuffle(selected)
    return selected


def filter_empty_instances(instances: Instances, box_threshold: float = 1e-5) -> Instances:
    """Mark rows with an empty box, an empty mask or no class as absent (gt_ids = -1), in place."""
    keep = instances.gt_boxes.nonempty(threshold=box_threshold) & (instances.gt_classes != -1)
    keep &= instances.gt_masks.nonempty()
    instances.gt_ids[~keep] = -1
    return instances


def _frame_instances(
    objs: list[dict],
    slots: Sequence[int],
    tfms: T.TransformList,
    src_size: tuple[int, int],
    image_shape: tuple[int, int],
    src2tgt: dict[int, int] | None,
) -> Instances:
    """Instances of one augmented frame, one row per slot (annotation id); slots without an object in
    `objs` get an empty row (class -1, zero box and mask).

    `src_size` is the (height, width) of the frame before augmentation, `image_shape` after. For RLE
    masks, the same result as detectron2's transform_instance_annotations + annotations_to_instances
    (bitmask), with the masks of all objects decoded and warped together instead of one by one.
    """
    height, width = image_shape
    num = len(slots)
    row_of = {obj_id: i for i, obj_id in enumerate(slots)}
    boxes = np.zeros((num, 4), np.float64)
    classes = np.full(num, -1, np.int64)
    masks = np.zeros((num, height, width), bool)
    rle_rows, rles = [], []
    for obj in objs:
        row = row_of[obj["id"]]
        classes[row] = obj["category_id"]
        box = BoxMode.convert(obj["bbox"], obj["bbox_mode"], BoxMode.XYXY_ABS)
        boxes[row] = tfms.apply_box(np.array([box], np.float64))[0]
        segm = obj["segmentation"]
        if not isinstance(segm, dict):
            if not segm:  # no polygon left: an empty mask, filtered out below
                continue
            # polygons are rasterised at the source size and warped like masks; detectron2 transforms the
            # polygons instead, which for crops needs shapely, and differs only along the edges
            segm = mask_util.merge(mask_util.frPyObjects(segm, *src_size))
        rle_rows.append(row)
        rles.append(segm)
    if rles:
        masks[rle_rows] = warp_masks(mask_util.decode(rles), tfms).transpose(2, 0, 1).astype(bool)
    boxes = np.minimum(boxes.clip(min=0), [width, height, width, height])

    instances = Instances(image_shape)
    instances.gt_boxes = Boxes(torch.from_numpy(boxes).float())
    if src2tgt is not None:
        classes = np.array([src2tgt.get(c, -1) for c in classes.tolist()], np.int64)
    instances.gt_classes = torch.from_numpy(classes)
    instances.gt_masks = BitMasks(torch.from_numpy(masks))
    present = {obj["id"] for obj in objs}
    instances.gt_ids = torch.tensor([i if i in present else -1 for i in slots], dtype=torch.int64)
    return filter_empty_instances(instances)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class _ClipMapper:
    """What both mappers share: the arguments, the class map of non-target datasets and the logging."""

    @configurable
    def __init__(
        self,
        is_train: bool,
        is_tgt: bool = True,
        *,
        augmentations: list[T.Augmentation],
        image_format: str,
        sampling_frame_num: int = 2,
        sampling_frame_range: int = 10,
        src2tgt: dict[int, int] | None = None,
    ):
        """
        Args:
            is_train: sample a clip and build instances (else: all frames, no annotations).
            is_tgt: whether this dataset is the target (last) training dataset; if not, classes go through
                `src2tgt`.
            augmentations: applied clip-wise (see `apply_clip_augmentations`).
            image_format: "RGB" or "BGR".
            sampling_frame_num, sampling_frame_range: see `sample_clip_frames`.
            src2tgt: contiguous source class -> contiguous target class (None: identity).
        """
        self.is_train = is_train
        self.is_tgt = is_tgt
        self.augmentations = list(augmentations)
        self.image_format = image_format
        self.sampling_frame_num = sampling_frame_num
        self.sampling_frame_range = sampling_frame_range
        self.src2tgt = src2tgt
        mode = "training" if is_train else "inference"
        logger.info(f"[{type(self).__name__}] Augmentations used in {mode}: {self.augmentations}")

    @classmethod
    def from_config(
        cls, cfg: CfgNode, is_train: bool = True, is_tgt: bool = True, src_dataset_name: str = ""
    ) -> dict:
        src2tgt = None
        if is_train and not is_tgt:
            src2tgt = source_to_target_classes(src_dataset_name, cfg.DATASETS.TRAIN[-1])
        return {
            "is_train": is_train,
            "is_tgt": is_tgt,
            "augmentations": cls.build_augmentations(cfg, is_train, is_tgt),
            "image_format": cfg.INPUT.FORMAT,
            "sampling_frame_num": cfg.INPUT.SAMPLING_FRAME_NUM,
            "sampling_frame_range": cfg.INPUT.SAMPLING_FRAME_RANGE,
            "src2tgt": src2tgt,
        }

    @classmethod
    def build_augmentations(cls, cfg: CfgNode, is_train: bool, is_tgt: bool) -> list[T.Augmentation]:
        return build_augmentation(cfg, is_train)


class YTVISDatasetMapper(_ClipMapper):
    """Video dict (from `load_ytvis_json`) -> a training clip of `sampling_frame_num` frames, or (test)
    all frames of the video. See the module docstring for the output."""

    @configurable
    def __init__(
        self, is_train: bool, is_tgt: bool = True, *, sampling_frame_shuffle: bool = False, **kwargs
    ):
        """Arguments as `_ClipMapper`, and `sampling_frame_shuffle` (see `sample_clip_frames`)."""
        super().__init__(is_train, is_tgt, **kwargs)
        self.sampling_frame_shuffle = sampling_frame_shuffle

    @classmethod
    def from_config(
        cls, cfg: CfgNode, is_train: bool = True, is_tgt: bool = True, src_dataset_name: str = ""
    ) -> dict:
        args = super().from_config(cfg, is_train, is_tgt, src_dataset_name)
        return {**args, "sampling_frame_shuffle": cfg.INPUT.SAMPLING_FRAME_SHUFFLE}

    def __call__(self, dataset_dict: dict) -> dict:
        length = dataset_dict["length"]
        if self.is_train:
            selected = sample_clip_frames(
                length, self.sampling_frame_num, self.sampling_frame_range, self.sampling_frame_shuffle
            )
        else:
            selected = list(range(length))
        file_names = dataset_dict["file_names"]
        video_annos = dataset_dict.get("annotations")
        out = {k: v for k, v in dataset_dict.items() if k not in ("annotations", "file_names")}
        out.update(video_len=length, frame_idx=selected, file_names=[file_names[i] for i in selected])

        size = (dataset_dict["height"], dataset_dict["width"])
        frames = [
            read_frame(file_names[i], self.image_format, video_id=dataset_dict.get("video_id"), frame_idx=i,
                       expected_size=size)
            for i in selected
        ]  # fmt: skip
        frames, tfms = apply_clip_augmentations(self.augmentations, frames)
        out["image"] = [_to_tensor(f) for f in frames]
        out["instances"] = []
        if not self.is_train or video_annos is None:
            return out

        frame_objs = [[obj for obj in video_annos[i] if not obj.get("iscrowd", 0)] for i in selected]
        slots = list(dict.fromkeys(obj["id"] for objs in frame_objs for obj in objs))
        out["instances"] = [
            _frame_instances(objs, slots, t, size, f.shape[:2], self.src2tgt)
            for objs, t, f in zip(frame_objs, tfms, frames)
        ]
        return out


class CocoClipDatasetMapper(_ClipMapper):
    """COCO image dict -> a pseudo-clip: `sampling_frame_num` differently augmented copies of the image
    (a moving crop and a smooth rotation when configured), instances numbered 0..n-1 in every frame.

    Arguments as `_ClipMapper`; `sampling_frame_range` only shapes the `frame_idx` metadata of the pseudo
    video (a random length in [16, 48], as the original)."""

    @classmethod
    def build_augmentations(cls, cfg: CfgNode, is_train: bool, is_tgt: bool) -> list[T.Augmentation]:
        # COCO as the only/last dataset (image pre-training) uses the video augmentations, as the original
        return (build_augmentation if is_tgt else build_pseudo_augmentation)(cfg, is_train)

    def __call__(self, dataset_dict: dict) -> dict:
        num_frames = self.sampling_frame_num
        if self.is_train:
            video_len = random.randrange(16, 49)
            selected = sample_clip_frames(video_len, num_frames, self.sampling_frame_range)
        else:
            video_len, selected = num_frames, list(range(num_frames))
        file_name = dataset_dict["file_name"]
        out = {k: v for k, v in dataset_dict.items() if k not in ("annotations", "file_name")}
        out.update(video_len=video_len, frame_idx=selected, file_names=[file_name] * num_frames)

        image = read_frame(file_name, self.image_format, video_id=dataset_dict.get("image_id"),
                           expected_size=(dataset_dict["height"], dataset_dict["width"]))  # fmt: skip
        frames, tfms = apply_clip_augmentations(self.augmentations, [image] * num_frames)
        out["image"] = [_to_tensor(f) for f in frames]
        out["instances"] = []
        annos = dataset_dict.get("annotations")
        if not self.is_train or annos is None:
            return out

        objs = [{**obj, "id": i} for i, obj in enumerate(a for a in annos if not a.get("iscrowd", 0))]
        slots = list(range(len(objs)))
        size = image.shape[:2]
        out["instances"] = [
            _frame_instances(objs, slots, t, size, f.shape[:2], self.src2tgt) for t, f in zip(tfms, frames)
        ]
        return out
