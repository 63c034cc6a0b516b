"""prepare_targets and the query-initialisation pixel targets (ClipPeakMatcher) built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Boxes, Instances

from mdqe.modeling.matcher import ClipPeakMatcher
from mdqe.modeling.targets import prepare_targets

FIXTURE = "fixtures/r50_ovis_seed1.pt"


def fixture_train_batch(reference_dir: Path) -> tuple[list[dict], dict]:
    """The training batch of the reference fixture, built as its README describes.

    Instance 2 is absent in the last frame: its mask there is zeroed and its gt_id is -1. gt_ids are
    the instance indices; boxes are the boxes of the (zeroed) masks.

    Returns:
        (batched_inputs, fixture["train"]).
    """
    train = torch.load(reference_dir / FIXTURE, weights_only=False)["train"]
    masks = torch.stack(train["masks"]).clone()  # (N, T, H, W) bool
    masks[2, 3] = False
    num_inst, num_frames, height, width = masks.shape
    frames = []
    for t in range(num_frames):
        inst = Instances((height, width))
        inst.gt_classes = train["classes"].clone()
        ids = torch.arange(num_inst)
        if t == 3:
            ids[2] = -1
        inst.gt_ids = ids
        inst.gt_masks = BitMasks(masks[:, t])
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        frames.append(inst)
    batch = [{"image": list(train["frames"]), "instances": frames, "height": height, "width": width}]
    return batch, train


def _frame(image_hw, classes, ids, masks) -> Instances:
    inst = Instances(image_hw)
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.gt_ids = torch.tensor(ids, dtype=torch.int64)
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = Boxes(inst.gt_masks.get_bounding_boxes().tensor)
    return inst


def test_fixture_batch_targets(reference_dir):
    batch, train = fixture_train_batch(reference_dir)
    (target,) = prepare_targets(batch, (320, 448), num_frames=4, num_classes=25, match_stride=4)

    assert target["labels"].tolist() == [1, 3, 3]
    assert target["ids"].tolist() == [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, -1]]
    assert target["labels"].dtype == target["ids"].dtype == torch.int64
    masks = torch.stack(train["masks"]).float()
    masks[2, 3] = 0
    assert target["masks"].dtype == torch.float32
    assert torch.equal(target["masks"], masks)
    assert target["match_masks"].shape == (3, 4, 80, 112)
    expected_match = F.interpolate(masks, size=(80, 112), mode="bilinear", align_corners=False)
    torch.testing.assert_close(target["match_masks"], expected_match, rtol=0, atol=0)
    # Boxes: boxes of the masks normalised by (W, H); the absent frame has a zero box.
    pixel_boxes = BitMasks(masks.flatten(0, 1).bool()).get_bounding_boxes().tensor.view(3, 4, 4)
    expected_boxes = pixel_boxes / torch.tensor([448.0, 320.0, 448.0, 320.0])
    torch.testing.assert_close(target["boxes"], expected_boxes, rtol=0, atol=0)
    assert target["boxes"][2, 3].abs().sum() == 0


def test_clip_peak_matcher_equals_original_on_fixture(reference_dir):
    batch, train = fixture_train_batch(reference_dir)
    targets = prepare_targets(batch, (320, 448), num_frames=4, num_classes=25)
    labels, dist, ids = ClipPeakMatcher(num_classes=25)(targets, (40, 56))

    ref = train["clip_peak_matcher"]
    assert torch.equal(labels, ref["labels"]["full"])
    assert torch.equal(ids, ref["ids"]["full"])
    probe = ref["dist"]
    assert tuple(dist.shape) == tuple(probe["shape"]) and dist.dtype == torch.float32
    flat = dist.flatten().double()
    sample = flat[torch.arange(4096) * (flat.numel() - 1) // 4095]
    torch.testing.assert_close(sample, probe["sample"].double(), rtol=0, atol=1e-6)
    for name, value in [("sum", flat.sum()), ("sq_sum", (flat**2).sum()), ("max", flat.max())]:
        assert value.item() == pytest.approx(probe[name], rel=1e-6), name


def test_pads_masks_and_normalises_boxes_by_padded_size():
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 4:12, 6:18] = True
    clip = {"instances": [_frame((20, 30), [0], [7], masks)]}
    (target,) = prepare_targets([clip], (32, 64), num_frames=1, num_classes=2, match_stride=4)

    assert target["masks"].shape == (1, 1, 32, 64)
    assert target["masks"][0, 0, :20, :30].bool().equal(masks[0])
    assert target["masks"][0, 0, 20:].sum() == 0 and target["masks"][0, 0, :, 30:].sum() == 0
    assert target["match_masks"].shape == (1, 1, 8, 16)
    torch.testing.assert_close(target["boxes"][0, 0], torch.tensor([6 / 64, 4 / 32, 18 / 64, 12 / 32]))


def test_match_masks_round_up_odd_sizes():
    masks = torch.ones(1, 30, 30, dtype=torch.bool)
    clip = {"instances": [_frame((30, 30), [0], [1], masks)]}
    (target,) = prepare_targets([clip], (30, 30), num_frames=1, num_classes=1, match_stride=4)
    assert target["match_masks"].shape == (1, 1, 8, 8)


def test_drops_never_present_and_unknown_class_instances():
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    frames = [
        _frame((16, 16), [1, 0, -1], [5, -1, 9], masks),
        _frame((16, 16), [1, 0, -1], [5, -1, 9], masks),
    ]
    (target,) = prepare_targets([{"instances": frames}], (16, 16), num_frames=2, num_classes=3)
    # instance 1 is absent everywhere; instance 2 never has a class (< K)
    assert target["labels"].tolist() == [1]
    assert target["ids"].tolist() == [[5, 5]]


def test_label_comes_from_frames_where_the_class_is_known():
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 2:6, 2:6] = True
    frames = [_frame((16, 16), [-1], [-1], masks * 0), _frame((16, 16), [2], [4], masks)]
    (target,) = prepare_targets([{"instances": frames}], (16, 16), num_frames=2, num_classes=3)
    assert target["labels"].tolist() == [2]
    assert target["ids"].tolist() == [[-1, 4]]
    assert target["boxes"][0, 0].abs().sum() == 0  # empty mask -> empty box -> zeros


def test_clip_without_instances_gives_empty_tensors():
    frames = [_frame((16, 16), [], [], torch.zeros(0, 16, 16, dtype=torch.bool)) for _ in range(3)]
    (target,) = prepare_targets([{"instances": frames}], (16, 32), num_frames=3, num_classes=3)
    assert target["labels"].shape == (0,)
    assert target["ids"].shape == (0, 3)
    assert target["masks"].shape == (0, 3, 16, 32)
    assert target["match_masks"].shape == (0, 3, 4, 8)
    assert target["boxes"].shape == (0, 3, 4)


def test_wrong_frame_count_names_the_video():
    frames = [_frame((16, 16), [0], [1], torch.ones(1, 16, 16, dtype=torch.bool))]
    with pytest.raises(ValueError, match=r"video_id 42.*1 frames.*expected 2"):
        prepare_targets([{"video_id": 42, "instances": frames}], (16, 16), num_frames=2, num_classes=1)
