"""Image inference (COCO evaluation): scores of a hand-computed case, selection and the output format."""

from __future__ import annotations

import math

import pytest
import torch

from mdqe.inference import ClipHeads
from mdqe.inference.image import image_scores, infer_image

LOW = -10.0  # sigmoid ~ 4.5e-5: outside every mask


def _square_logits(value: float, cols: slice) -> torch.Tensor:
    """(4, 4) logits: `value` on rows 0-1 and `cols`, LOW elsewhere."""
    logits = torch.full((4, 4), LOW)
    logits[0:2, cols] = value
    return logits


# mask A: probability 0.75 on rows 0-1, cols 0-1 (box (0, 0, 2, 2));
# mask B: probability 0.9 on rows 0-1, cols 1-2 (box (1, 0, 3, 2)); box IoU(A, B) = 2 / 6 = 1/3
MASK_A = _square_logits(math.log(3.0), slice(0, 2))
MASK_B = _square_logits(math.log(9.0), slice(1, 3))
PROBS_A = [0.8, 0.1]
PROBS_B = [0.5, 0.2]
# A: quality 0.75 -> (0.6, 0.075), best; B: quality 0.9 -> (0.45, 0.18), then x (1 - 1/3) -> (0.3, 0.12)
EXPECTED_A = [0.6, 0.075]
EXPECTED_B = [0.3, 0.12]


def test_scores_are_mask_quality_times_class_then_decayed_by_box_overlap_with_better_ones():
    probs = torch.tensor([PROBS_B, PROBS_A])  # B first: the ranking must put A first
    scores, masks = image_scores(probs, torch.stack([MASK_B, MASK_A]))
    torch.testing.assert_close(scores, torch.tensor([EXPECTED_A, EXPECTED_B]), rtol=1e-5, atol=0)
    assert torch.equal(masks, torch.stack([MASK_A, MASK_B]))


def test_no_query_gives_no_scores():
    scores, masks = image_scores(torch.zeros(0, 2), torch.zeros(0, 4, 4))
    assert scores.shape == (0, 2) and masks.shape == (0, 4, 4)


def _heads() -> tuple[ClipHeads, torch.Tensor]:
    """Queries 0 (A), 1 (B) and 2 (a blank mask, below the threshold); mask features = the two masks."""
    heads = ClipHeads(
        cls_probs=torch.tensor([PROBS_A, PROBS_B, [0.01, 0.01]]),
        mask_coeff=torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]),
        query_embed=torch.zeros(3, 8),
    )
    return heads, torch.stack([MASK_A, MASK_B])


def test_multi_label_output_emits_every_query_class_pair_above_the_threshold():
    heads, feats = _heads()
    out = infer_image(heads, feats, (4, 4), (4, 4), match_stride=1, score_thresh=0.05, multi_cls_on=True)
    torch.testing.assert_close(out.scores, torch.tensor(EXPECTED_A + EXPECTED_B), rtol=1e-5, atol=0)
    assert out.pred_classes.tolist() == [0, 1, 0, 1]
    assert torch.equal(out.pred_masks[0], MASK_A > 0) and torch.equal(out.pred_masks[2], MASK_B > 0)
    assert out.pred_boxes.tensor.tolist() == [[0, 0, 2, 2], [0, 0, 2, 2], [1, 0, 3, 2], [1, 0, 3, 2]]


def test_single_label_output_keeps_the_best_class_and_resizes_to_the_output():
    heads, feats = _heads()
    out = infer_image(heads, feats, (4, 4), (8, 8), match_stride=1, score_thresh=0.05, multi_cls_on=False)
    torch.testing.assert_close(out.scores, torch.tensor([EXPECTED_A[0], EXPECTED_B[0]]), rtol=1e-5, atol=0)
    assert out.pred_classes.tolist() == [0, 0]
    assert out.image_size == (8, 8) and out.pred_masks.shape == (2, 8, 8)
    # bilinear x2: a 2-pixel run of positive logits next to LOW becomes 3 output pixels
    assert out.pred_masks[0].sum() == 9 and out.pred_masks[0, :3, :3].all()


def test_when_no_query_reaches_the_threshold_the_best_one_is_still_considered():
    heads, feats = _heads()
    heads.cls_probs = heads.cls_probs * 0.01  # best 0.008 < 0.05
    out = infer_image(heads, feats, (4, 4), (4, 4), match_stride=1, score_thresh=0.05, multi_cls_on=False)
    assert len(out) == 1 and out.pred_classes.tolist() == [0]
    assert out.scores.item() == pytest.approx(0.008 * 0.75, rel=1e-5)
