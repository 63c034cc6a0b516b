"""Per-clip post-processing against the original's `inference_clip` and on small designed cases."""

from __future__ import annotations

import pytest
import torch
from _inference_testing import POSTPROC_PARAMS, designed_heads

from mdqe.inference import ClipHeads
from mdqe.inference.clip import mask_quality_scores, mask_suppression, postprocess_clip, select_queries

THRESH = POSTPROC_PARAMS["apply_cls_thres"]
MAX_CANDIDATES = 10 * POSTPROC_PARAMS["detections_per_image"]


def test_clip_results_match_original_on_designed_heads(postproc):
    feats = postproc["design"]["mask_feats"]
    run = postproc["runs"]["default"]
    for frames, expected in zip(run["heads_calls"], run["clip_results"]):
        start, end = frames[0], frames[-1] + 1
        got = postprocess_clip(
            designed_heads(postproc, start, end), feats[:, start:end], THRESH, MAX_CANDIDATES
        )
        assert got.candidate_idx.tolist() == expected["valid_idx"].tolist(), frames
        assert got.labels.tolist() == expected["pred_classes"].tolist(), frames
        torch.testing.assert_close(got.scores, expected["scores"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(got.cls_probs, expected["cls_probs"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(got.query_embeds, expected["query_embeds"], rtol=0, atol=0)
        torch.testing.assert_close(got.mask_logits, expected["pred_masks"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("which", ["r50_ovis", "r50_ovis_long"])
def test_query_selection_matches_original_on_model_heads(which, request):
    inference = request.getfixturevalue(which)
    inference = inference["inference"] if "inference" in inference else inference["default"]
    for heads, expected in zip(inference["heads_per_clip"], inference["clip_results"]):
        got = select_queries(heads["cls"], heads["query_embed"], THRESH, MAX_CANDIDATES)
        assert got.tolist() == expected["valid_idx"].tolist()


def test_clip_mask_logits_match_original_on_model_frame0(r50_ovis):
    inference = r50_ovis["inference"]
    heads, expected = inference["heads_per_clip"][0], inference["clip_results"][0]
    feats0 = inference["first_window"]["mask_feats_frame0"]  # (M, Hf, Wf)
    # The kept instances are re-sorted by score: find their queries by their embeddings.
    kept = expected["query_embeds"][:8]
    queries = (kept[:, None] == heads["query_embed"][None]).all(-1).int().argmax(1)
    assert torch.equal(heads["query_embed"][queries], kept)
    logits = torch.einsum("qm,mthw->qthw", heads["mask_coeff"][queries], feats0[:, None])
    torch.testing.assert_close(logits[:, 0], expected["pred_masks_first8"][:, 0], rtol=1e-5, atol=1e-5)


def test_threshold_keeps_the_top_query_when_none_pass():
    cls = torch.tensor([[0.01, 0.02], [0.03, 0.001], [0.002, 0.004]])
    embeds = torch.eye(3)
    assert select_queries(cls, embeds, 0.1, 10).tolist() == [1]


def test_query_dedup_compares_with_every_higher_scored_candidate():
    cls = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    e = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [1.0, 0.02]])
    # 1 and 3 duplicate 0 (cosine > 0.99); 2 is distinct.
    assert select_queries(cls, e, 0.1, 10).tolist() == [0, 2]
    assert select_queries(cls, e, 0.1, 1).tolist() == [0]


def test_mask_suppression_flags_a_repeated_mask_and_spares_a_disjoint_one():
    logits = torch.full((3, 2, 8, 8), -8.0)
    logits[0, :, :4, :4] = 8.0
    logits[1, :, :4, :4] = 8.0  # same mask, lower rank
    logits[2, :, 4:, 4:] = 8.0
    max_iou = mask_suppression(logits)
    assert max_iou[0] == 0
    assert max_iou[1] > 0.5
    assert max_iou[2] < 1e-3


def test_mask_quality_is_the_mean_foreground_probability():
    logits = torch.full((2, 1, 4, 4), -10.0)
    logits[0, 0, :2] = torch.logit(torch.tensor(0.8))
    logits[0, 0, 2, 0] = torch.logit(torch.tensor(0.6))
    torch.testing.assert_close(
        mask_quality_scores(logits), torch.tensor([(8 * 0.8 + 0.6) / 9, 0.0]), atol=1e-5, rtol=0
    )


def test_duplicate_mask_is_removed_and_scores_are_mask_aware():
    # Query 1 repeats query 0's mask with another embedding: removed by the mask suppression.
    feats = torch.zeros(2, 4, 8, 8)
    feats[0, :, :4, :4] = 1.0
    feats[1, :, 4:, 4:] = 1.0
    feats -= 0.5
    cls = torch.tensor([[0.9, 0.1], [0.85, 0.1], [0.1, 0.7], [0.01, 0.02]])
    coeff = torch.tensor([[10.0, 0.0], [10.0, 0.0], [0.0, 10.0], [0.0, 10.0]])
    embeds = torch.eye(4)
    got = postprocess_clip(ClipHeads(cls, coeff, embeds), feats, 0.1, 100)
    assert got.candidate_idx.tolist() == [0, 1, 2]
    assert got.labels.tolist() == [0, 1]
    quality = torch.sigmoid(torch.tensor(5.0))
    torch.testing.assert_close(got.scores[0], 0.9 * quality)
    # The disjoint mask pays a small soft-IoU penalty (the soft mask of query 0 leaks sigmoid(-5)).
    assert 0.7 * quality * 0.99 < got.scores[1] < 0.7 * quality
