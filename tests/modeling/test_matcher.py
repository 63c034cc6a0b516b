"""Box ops, mask costs, the centre prior and the one-to-many dynamic-k matcher."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou, generalized_box_iou

from mdqe.modeling.box_ops import matched_boxlist_giou, video_box_iou, video_generalized_box_iou
from mdqe.modeling.layers import pixel_centers
from mdqe.modeling.matcher import (
    HungarianMatcher,
    batch_mask_costs,
    center_prior,
    clip_peak_targets,
    dynamic_k_matching,
    match_clip,
)


def random_boxes(generator: torch.Generator, *shape: int, min_size: float = 0.05) -> torch.Tensor:
    """(*shape, 4) valid xyxy boxes inside [0, 1]."""
    xy = torch.rand(*shape, 2, generator=generator) * 0.7
    wh = min_size + torch.rand(*shape, 2, generator=generator) * 0.25
    return torch.cat([xy, xy + wh], dim=-1)


# ------------------------------------------------------------------------------------------ box ops
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_video_box_iou_equals_torchvision_per_frame(seed):
    g = torch.Generator().manual_seed(seed)
    boxes1, boxes2 = random_boxes(g, 5, 3), random_boxes(g, 4, 3)
    iou, _, _ = video_box_iou(boxes1, boxes2)
    for t in range(3):
        torch.testing.assert_close(iou[..., t], box_iou(boxes1[:, t], boxes2[:, t]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_matched_giou_is_torchvision_giou_when_boxes_intersect_else_zero(seed):
    g = torch.Generator().manual_seed(seed)
    boxes1, boxes2 = random_boxes(g, 16), random_boxes(g, 16)
    giou = matched_boxlist_giou(boxes1, boxes2)
    expected = generalized_box_iou(boxes1, boxes2).diagonal()
    intersects = box_iou(boxes1, boxes2).diagonal() > 0
    torch.testing.assert_close(giou[intersects], expected[intersects])
    assert (giou[~intersects] == 0).all()


def test_video_giou_is_mean_over_valid_frames_and_zero_without_overlap():
    box = torch.tensor([0.1, 0.1, 0.5, 0.5])
    far = torch.tensor([0.6, 0.6, 0.9, 0.9])
    pred = torch.stack([box, box, far])[None]  # (1, T=3, 4)
    gt = torch.stack([box, far, box])[None]
    assert video_generalized_box_iou(pred, gt).item() == pytest.approx(1 / 3)  # 1, 0 (disjoint), 0
    valid = torch.tensor([[True, False, False]])
    assert video_generalized_box_iou(pred, gt, valid).item() == pytest.approx(1.0)
    no_frame = torch.zeros(1, 3, dtype=torch.bool)
    assert video_generalized_box_iou(pred, gt, no_frame).item() == 0


# --------------------------------------------------------------------------------------- mask costs
def test_batch_mask_costs_equal_explicit_bce_and_dice():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, 5, 7, generator=g) * 3
    targets = torch.rand(3, 2, 5, 7, generator=g)
    bce, dice = batch_mask_costs(logits, targets)
    for q in range(6):
        for n in range(3):
            x, y = logits[q].flatten(), targets[n].flatten()
            pos = F.binary_cross_entropy_with_logits(x, torch.ones_like(x), reduction="none")
            neg = F.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction="none")
            assert bce[q, n].item() == pytest.approx(
                ((pos * y + neg * (1 - y)).sum() / x.numel()).item(), rel=1e-5
            )
            p = x.sigmoid()
            expected_dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            assert dice[q, n].item() == pytest.approx(expected_dice.item(), rel=1e-5)


def test_center_prior_box_and_centre_region():
    gt = torch.tensor([[[0.2, 0.2, 0.6, 0.6], [0.0, 0.0, 0.0, 0.0]]])  # (N=1, T=2, 4); frame 1 absent

    def pred_at(cx, cy):
        return torch.tensor([cx - 0.01, cy - 0.01, cx + 0.01, cy + 0.01])

    pred = torch.stack(
        [
            torch.stack([pred_at(0.3, 0.3), pred_at(0.5, 0.5)]),  # inside the box; far from the empty box
            torch.stack([pred_at(0.9, 0.9), pred_at(0.05, 0.05)]),  # outside; near the empty box's centre
            torch.stack([pred_at(0.6, 0.4), pred_at(0.1, 0.1)]),  # on the box edge (strict); 0.1 > 2.5/32
        ]
    )
    assert center_prior(pred, gt).tolist() == [[True, False], [False, True], [False, False]]


# --------------------------------------------------------------------------------------- dynamic k
def reference_dynamic_k(cost: torch.Tensor, ious: torch.Tensor, n_candidate_k: int = 10):
    """A plain loop transcription of the assignment rules, to check the vectorised version."""
    cost = cost.clone()
    num_queries, num_gt = cost.shape
    matching = torch.zeros(num_queries, num_gt)
    topk = ious.clamp(min=0).topk(min(n_candidate_k, num_queries), dim=0).values
    ks = topk.sum(0).int().clamp(min=2, max=num_queries)

    def resolve():
        for q in range(num_queries):
            if matching[q].sum() > 1:
                matching[q] = 0
                matching[q, int(cost[q].argmin())] = 1

    for j in range(num_gt):
        for q in cost[:, j].topk(int(ks[j]), largest=False).indices:
            matching[q, j] = 1
    resolve()
    while (matching.sum(0) == 0).any() and (matching.sum(1) == 0).any():
        cost[matching.sum(1) > 0] += 1e5
        for j in (matching.sum(0) == 0).nonzero().flatten():
            matching[int(cost[:, j].argmin()), j] = 1
        resolve()
    queries = (matching.sum(1) > 0).nonzero().flatten()
    return queries, matching[queries].argmax(1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_queries=st.integers(2, 30), num_gt=st.integers(1, 8))
def test_dynamic_k_equals_loop_reference(seed, num_queries, num_gt):
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(num_queries, num_gt, generator=g) * 10
    ious = torch.rand(num_queries, num_gt, generator=g) * 1.4 - 0.4
    query_idx, gt_idx = dynamic_k_matching(cost, ious)
    ref_query, ref_gt = reference_dynamic_k(cost, ious)
    assert query_idx.tolist() == ref_query.tolist()
    assert gt_idx.tolist() == ref_gt.tolist()
    # Invariants: queries ascending and unique; either every GT or every query is matched.
    assert (query_idx.diff() > 0).all()
    assert len(set(gt_idx.tolist())) == num_gt or len(query_idx) == num_queries


def test_dynamic_k_size_follows_the_sum_of_top_ious():
    cost = torch.arange(12.0)[:, None].repeat(1, 1)  # query q costs q
    ious = torch.zeros(12, 1)
    ious[:4, 0] = torch.tensor([0.9, 0.9, 0.9, 0.5])  # sum 3.2 -> k = 3
    query_idx, gt_idx = dynamic_k_matching(cost, ious)
    assert query_idx.tolist() == [0, 1, 2] and gt_idx.tolist() == [0, 0, 0]
    # k is at least 2 even without overlap
    assert dynamic_k_matching(cost, torch.zeros(12, 1))[0].tolist() == [0, 1]


def test_query_claimed_by_two_gts_goes_to_its_overall_cheapest_gt():
    cost = torch.tensor(
        [
            [0.01, 0.1, 0.05],  # claimed by GTs 1 and 2; its overall argmin is GT 0, which did not claim it
            [9.0, 0.2, 9.0],
            [9.0, 9.0, 0.3],
            [9.0, 9.0, 9.0],
            [0.0, 9.0, 9.0],
            [0.005, 9.0, 9.0],
        ]
    )
    query_idx, gt_idx = dynamic_k_matching(cost, torch.zeros(6, 3))  # k = 2 for every GT
    assert dict(zip(query_idx.tolist(), gt_idx.tolist())) == {0: 0, 1: 1, 2: 2, 4: 0, 5: 0}


def test_starved_gt_takes_a_free_query():
    # GT 1's two cheapest queries both prefer GT 0, so GT 1 is left without a query at first.
    cost = torch.tensor([[0.0, 0.5], [0.1, 0.6], [5.0, 3.0], [6.0, 4.0]])
    query_idx, gt_idx = dynamic_k_matching(cost, torch.zeros(4, 2))
    assert dict(zip(query_idx.tolist(), gt_idx.tolist())) == {0: 0, 1: 0, 2: 1}


# ----------------------------------------------------------------------------------------- matcher
def perfect_clip(num_queries=20, perfect=(3, 11), labels=(2, 0), num_classes=4, seed=0):
    """Random predictions except queries `perfect`, which equal GT j exactly (class, boxes, masks)."""
    g = torch.Generator().manual_seed(seed)
    num_frames, h, w = 2, 12, 16
    gt_boxes = torch.tensor(
        [[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]], [[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]]]
    )
    gt_masks = torch.zeros(2, num_frames, h, w)
    gt_masks[0, :, :6, :8] = 1
    gt_masks[1, :, 6:, 8:] = 1
    target = {"labels": torch.tensor(labels), "boxes": gt_boxes, "match_masks": gt_masks}

    logits = torch.randn(num_queries, num_classes, generator=g) - 3
    boxes = random_boxes(g, num_queries, num_frames, min_size=0.01) * 0.2 + 0.4
    masks = torch.randn(num_queries, num_frames, h, w, generator=g)
    for j, q in enumerate(perfect):
        logits[q, labels[j]] = 8.0
        boxes[q] = gt_boxes[j]
        masks[q] = (gt_masks[j] * 2 - 1) * 12
    return logits, boxes, masks, target


def test_perfect_queries_are_matched_to_their_gt():
    logits, boxes, masks, target = perfect_clip()
    query_idx, gt_idx = match_clip(logits, boxes, masks, target, 1.0, 2.0, 4.0)
    pairs = dict(zip(query_idx.tolist(), gt_idx.tolist()))
    assert pairs[3] == 0 and pairs[11] == 1
    assert sorted(gt_idx.tolist()) == [0, 0, 1, 1]  # one-to-many: k = 2 per GT here


def test_nan_boxes_fall_back_to_one_to_one_hungarian():
    logits, boxes, masks, target = perfect_clip()
    boxes[5, 0, 0] = float("nan")
    query_idx, gt_idx = match_clip(logits, boxes, masks, target, 1.0, 2.0, 4.0)
    assert dict(zip(query_idx.tolist(), gt_idx.tolist())) == {3: 0, 11: 1}


def test_clip_without_gt_matches_nothing():
    logits, boxes, masks, target = perfect_clip()
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 2, 4)}
    empty["match_masks"] = torch.zeros(0, *target["match_masks"].shape[1:])
    query_idx, gt_idx = match_clip(logits, boxes, masks, empty)
    assert query_idx.numel() == 0 and gt_idx.numel() == 0 and query_idx.dtype == torch.int64


def test_matcher_runs_per_clip():
    clip_a = perfect_clip(perfect=(3, 11), seed=1)
    clip_b = perfect_clip(perfect=(7, 0), labels=(1, 3), seed=2)
    stacked = [torch.stack([a, b]) for a, b in zip(clip_a[:3], clip_b[:3])]
    indices = HungarianMatcher(cost_class=1.0, cost_box=2.0, cost_dice=4.0)(*stacked, [clip_a[3], clip_b[3]])
    assert len(indices) == 2
    assert dict(zip(*[x.tolist() for x in indices[0]]))[3] == 0
    assert dict(zip(*[x.tolist() for x in indices[1]]))[7] == 0
    assert dict(zip(*[x.tolist() for x in indices[1]]))[0] == 1


def test_pixel_centres_of_the_clip_peak_grid():
    ref = pixel_centers(2, 4)
    assert ref.shape == (8, 2)
    torch.testing.assert_close(ref[0], torch.tensor([0.125, 0.25]))
    torch.testing.assert_close(ref[7], torch.tensor([0.875, 0.75]))


# ------------------------------------------------------------------------------- ClipPeakMatcher
def peak_target(boxes, labels, ids, masks):
    """boxes: (N, T, 4) normalised; masks: (N, T, Hp, Wp) at the padded size."""
    return {
        "labels": torch.tensor(labels),
        "ids": torch.tensor(ids),
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "masks": masks,
    }


def test_clip_peak_tiny_instance_takes_its_nearest_pixel_and_absent_frames_nothing():
    masks = torch.zeros(1, 2, 32, 32)
    masks[0, :, 12, 12] = 1  # one pixel: vanishes on the 4x4 grid
    target = peak_target([[[0.34, 0.34, 0.41, 0.42]] * 2], [2], [[4, -1]], masks)
    labels, dist, ids = clip_peak_targets(target, (4, 4), num_classes=3)
    nearest = 1 * 4 + 1  # grid pixel (1, 1), centre (0.375, 0.375)
    assert (labels[0] >= 0).nonzero().flatten().tolist() == [nearest] and labels[0, nearest] == 2
    assert ids[0, nearest] == 4 and (ids[0] >= 0).sum() == 1
    d = ((0.375 - 0.375) / 0.07) ** 2 + ((0.38 - 0.375) / 0.08) ** 2
    assert dist[0, nearest, 2].item() == pytest.approx(1 - 2 * d, abs=1e-5)
    assert (labels[1] == -1).all() and (ids[1] == -1).all()  # absent in frame 1


def test_clip_peak_larger_instance_takes_over_overlapping_pixels_with_zero_weight():
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, 0, :, :] = 1  # large, visited last
    masks[1, 0, 4:8, 4:8] = 1  # small, visited first
    boxes = [[[0.0, 0.0, 1.0, 1.0]], [[0.25, 0.25, 0.5, 0.5]]]
    target = peak_target(boxes, [0, 1], [[10], [11]], masks)
    labels, dist, ids = clip_peak_targets(target, (4, 4), num_classes=2)
    small_pixel = 1 * 4 + 1
    assert labels[0, small_pixel] == 0 and ids[0, small_pixel] == 10
    assert dist[0, small_pixel, 0] == 0  # the large instance's weight there is 0
    assert dist[0, small_pixel, 1] == 1  # the small one's weight stays (centre pixel, d = 0)
    assert (labels[0] == 0).sum() == 16


def test_clip_peak_without_masks_uses_the_centre_distance():
    target = peak_target([[[0.0, 0.0, 1.0, 1.0]]], [1], [[3]], torch.zeros(1, 1, 8, 8))
    labels, dist, _ = clip_peak_targets(target, (4, 4), num_classes=2, mask_on=False)
    ref = pixel_centers(4, 4)
    d = ((ref - 0.5) ** 2).sum(-1)
    assert torch.equal(labels[0] == 1, d < 0.5)
    torch.testing.assert_close(dist[0, :, 1], torch.where(d < 0.5, 1 - 2 * d, torch.zeros_like(d)))
