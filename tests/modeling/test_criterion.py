"""SetCriterion: every loss term on small hand-made inputs, and the original's loss dict on the fixture."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from test_targets import FIXTURE, fixture_train_batch
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from mdqe.config import add_mdqe_config
from mdqe.modeling import criterion as crit
from mdqe.modeling.criterion import SetCriterion
from mdqe.modeling.matcher import HungarianMatcher

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = {
    "loss_sem_cls_query_init": 2.0,
    "loss_cls": 2.0,
    "loss_bbox": 2.0,
    "loss_giou": 2.0,
    "loss_mask": 4.0,
    "loss_dice": 4.0,
    "loss_reid_query_init": 0.5,
    "loss_reid_query_init_aux": 0.5,
}
LAYER_KEYS = ["loss_cls", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"]
QUERY_INIT_KEYS = ["loss_sem_cls_query_init", "loss_reid_query_init", "loss_reid_query_init_aux"]
K, T, Q, M, E = 4, 2, 16, 4, 8  # classes, frames, queries (4x4 grid), mask channels, embedding dim
MASK_HW, GRID_HW = (16, 16), (8, 8)


def make_criterion(num_layers: int = 3, **kwargs) -> SetCriterion:
    args = {
        "num_classes": K,
        "matcher": HungarianMatcher(cost_class=1.0, cost_box=2.0, cost_dice=4.0),
        "weight_dict": WEIGHTS,
        "eos_coef": 1.0,
        "num_queries": Q,
        "num_layers": num_layers,
        "window_inter_frame_asso": 1,
        "deterministic_sampling": True,
    }
    args.update(kwargs)
    return SetCriterion(**args)


def make_target(boxes: list[list[float]], labels: list[int], ids: list[int] | None = None) -> dict:
    """Instances whose masks fill their (static, 1/16-aligned) boxes in every frame."""
    h, w = MASK_HW
    box_t = torch.tensor(boxes, dtype=torch.float32).view(-1, 1, 4).repeat(1, T, 1)
    masks = torch.zeros(len(boxes), T, h, w)
    for n, (x0, y0, x1, y1) in enumerate(boxes):
        masks[n, :, round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = 1
    ids = ids if ids is not None else list(range(len(boxes)))
    return {
        "labels": torch.tensor(labels, dtype=torch.int64),
        "ids": torch.tensor(ids, dtype=torch.int64).view(-1, 1).repeat(1, T),
        "masks": masks,
        "match_masks": masks.clone(),
        "boxes": box_t,
    }


def empty_target() -> dict:
    return {
        "labels": torch.zeros(0, dtype=torch.int64),
        "ids": torch.zeros(0, T, dtype=torch.int64),
        "masks": torch.zeros(0, T, *MASK_HW),
        "match_masks": torch.zeros(0, T, *MASK_HW),
        "boxes": torch.zeros(0, T, 4),
    }


def make_outputs(targets: list[dict], num_layers: int = 3, perfect: bool = True, seed: int = 0) -> dict:
    """Random outputs; if `perfect`, queries 2j and 2j+1 of each clip predict GT j exactly.

    Mask features: channel 0 is all ones, channel 1 + j is GT j's mask (of clip 0 / the clip itself),
    so a perfect query's mask logits are -15 + 30 * mask_j.
    """
    g = torch.Generator().manual_seed(seed)
    batch = len(targets)
    logits = torch.randn(num_layers, batch, Q, K, generator=g) - 4
    centre = 0.02 + 0.06 * torch.rand(num_layers, batch, Q, T, 2, generator=g)  # far from every GT
    boxes = torch.cat([centre - 0.01, centre + 0.01], dim=-1)
    coeff = torch.randn(num_layers, batch, Q, M, generator=g).tanh()
    feats = torch.zeros(batch, M, T, *MASK_HW)
    feats[:, 0] = 1
    for b, target in enumerate(targets):
        feats[b, 1 : 1 + len(target["labels"])] = target["match_masks"]
        if not perfect:
            continue
        for j, label in enumerate(target["labels"].tolist()):
            for q in (2 * j, 2 * j + 1):
                logits[:, b, q] = -8
                logits[:, b, q, label] = 8
                boxes[:, b, q] = target["boxes"][j]
                coeff[:, b, q] = 0
                coeff[:, b, q, 0] = -15
                coeff[:, b, q, 1 + j] = 30
    return {
        "pred_logits": logits.requires_grad_(),
        "pred_boxes": boxes.requires_grad_(),
        "pred_mask_coeff": coeff.requires_grad_(),
        "mask_feats": feats.requires_grad_(),
        "rpn_sem_cls": torch.randn(batch, T, *GRID_HW, K, generator=g).requires_grad_(),
        "query_init_embed": torch.randn(batch, T, Q, E, generator=g).requires_grad_(),
        "query_init_coords": torch.rand(batch, T, Q, 2, generator=g),
    }


# ----------------------------------------------------------------------------------- construction
def test_relpos_buffer_equals_the_original(reference_dir):
    int_buffers = torch.load(reference_dir / FIXTURE, weights_only=False)["int_buffers"]
    criterion = make_criterion(num_queries=196)
    expected = int_buffers["criterion.query_relpos_grid"]
    assert criterion.query_relpos_grid.dtype == torch.int64
    assert torch.equal(criterion.query_relpos_grid, expected)
    assert list(criterion.state_dict()) == ["query_relpos_grid"]


def test_from_config_reads_the_original_keys():
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "R50_ovis_360.yaml"))
    cfg.merge_from_list(["MODEL.MDQE.NUM_OBJECT_QUERIES", 200, "MODEL.MDQE.BOX_WEIGHT", 3.0])
    cfg.merge_from_list(["MODEL.MDQE.DEC_LAYERS", 2, "MODEL.MDQE.INTERINST_MASK_THRESHOLD", 0.3])
    criterion = SetCriterion(cfg)
    assert criterion.num_classes == 25 and criterion.num_queries == 196
    assert criterion.num_layers == 3 and criterion.deep_supervision
    assert criterion.weight_dict == {**WEIGHTS, "loss_bbox": 3.0, "loss_giou": 3.0}
    assert (criterion.matcher.cost_class, criterion.matcher.cost_box, criterion.matcher.cost_dice) == (
        1,
        3,
        4,
    )
    assert criterion.eos_coef == 1.0 and criterion.window_inter_frame_asso == 5
    assert criterion.interinst_mask_loss_enabled and criterion.interinst_mask_threshold == 0.3
    assert criterion.query_relpos_grid.shape == (196, 196, 2)


def test_rejects_wrong_number_of_decoder_outputs():
    targets = [make_target([[0.25, 0.25, 0.75, 0.75]], [1])]
    with pytest.raises(ValueError, match="DEC_LAYERS"):
        make_criterion(num_layers=7)(make_outputs(targets, num_layers=3), targets)


# ---------------------------------------------------------------------------------- loss dict shape
def test_loss_keys_order_and_deep_supervision():
    targets = [make_target([[0.25, 0.25, 0.75, 0.75]], [1])]
    losses = make_criterion(num_layers=7)(make_outputs(targets, num_layers=7), targets)
    expected = QUERY_INIT_KEYS + LAYER_KEYS + [f"{k}_{i}" for i in range(6) for k in LAYER_KEYS]
    assert list(losses) == expected and len(losses) == 38
    shallow = make_criterion(num_layers=7, deep_supervision=False)(
        make_outputs(targets, num_layers=7), targets
    )
    assert list(shallow) == QUERY_INIT_KEYS + LAYER_KEYS


def test_losses_are_weighted_as_the_original():
    targets = [make_target([[0.25, 0.25, 0.75, 0.5], [0.5, 0.5, 1.0, 1.0]], [1, 3])]
    outputs = make_outputs(targets, perfect=False)
    weighted = make_criterion()(outputs, targets)
    unit = make_criterion(weight_dict=dict.fromkeys(WEIGHTS, 1.0))(outputs, targets)
    for key, value in weighted.items():
        factor = WEIGHTS[re.sub(r"_\d$", "", key)]  # aux layers as their base
        torch.testing.assert_close(value, unit[key] * factor, msg=key)


# -------------------------------------------------------------------------------- Hungarian terms
def test_perfect_predictions_give_zero_box_and_mask_losses():
    targets = [
        make_target([[0.25, 0.25, 0.5, 0.75], [0.625, 0.125, 1.0, 0.5]], [1, 3]),
        make_target([[0.5, 0.5, 0.875, 0.875]], [2]),
    ]
    matched = []
    criterion = make_criterion()
    matcher_forward = criterion.matcher.forward
    criterion.matcher.forward = lambda *args: matched.append(matcher_forward(*args)) or matched[-1]
    losses = criterion(make_outputs(targets), targets)

    for key, value in losses.items():
        if key.startswith(("loss_bbox", "loss_giou")):
            assert value.item() == 0, key
        if key.startswith(("loss_mask", "loss_dice")):
            assert value.item() < 1e-5, key
    for indices in matched:  # every layer picks the two perfect queries of each GT
        assert [q.tolist() for q, _ in indices] == [[0, 1, 2, 3], [0, 1]]
        assert [g.tolist() for _, g in indices] == [[0, 0, 1, 1], [0, 0]]


def test_clips_without_gt_give_finite_zero_losses_and_gradients():
    targets = [empty_target(), empty_target()]
    outputs = make_outputs(targets, perfect=False)
    losses = make_criterion()(outputs, targets)
    for key, value in losses.items():
        assert torch.isfinite(value), key
        if not key.startswith(("loss_cls", "loss_sem_cls")):
            assert value.item() == 0, key
    assert losses["loss_cls"] > 0 and losses["loss_sem_cls_query_init"] > 0
    sum(losses.values()).backward()
    for name in ["pred_logits", "rpn_sem_cls", "query_init_embed", "pred_mask_coeff", "pred_boxes"]:
        assert outputs[name].grad is not None and torch.isfinite(outputs[name].grad).all(), name


def test_class_loss_is_the_focal_loss_averaged_over_queries():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, K, generator=g)
    targets = torch.zeros(10, K)
    targets[[1, 4], [2, 0]] = 1
    expected = tv_sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2, reduction="sum") / 10
    torch.testing.assert_close(crit.sigmoid_focal_loss(logits, targets, no_obj_weight=1.0), expected)
    # unmatched queries weighted by eos_coef
    per_query = tv_sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2, reduction="none").sum(-1)
    weight = torch.full((10,), 0.1)
    weight[[1, 4]] = 1
    expected = (per_query * weight).sum() / weight.sum()
    torch.testing.assert_close(crit.sigmoid_focal_loss(logits, targets, no_obj_weight=0.1), expected)


# ----------------------------------------------------------------------- inter-instance repulsion
def test_union_masks_join_near_instances_of_the_same_clip_only():
    masks = torch.zeros(4, 1, 8, 8)
    masks[0, 0, :4, :4] = 1
    masks[1, 0, 2:6, 2:6] = 1
    masks[2, 0, 2:6, 2:6] = 1
    masks[3, 0, 7, 7] = 1
    boxes = torch.tensor(
        [[0.0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.25, 0.25, 0.75, 0.75], [0.9, 0.9, 0.9, 0.9]]
    )
    clip_idx = torch.tensor([0, 0, 1, 0])
    union = crit.interinst_union_masks(masks, boxes[:, None], clip_idx, iou_threshold=0.1)
    # 0 and 1: IoU 1/7 > 0.1, same clip; 2 is in another clip; 3 is a degenerate box widened to 0.05
    assert torch.equal(union[0], ((masks[0] + masks[1]) > 0).float())
    assert torch.equal(union[1], ((masks[0] + masks[1]) > 0).float())
    assert torch.equal(union[2], masks[2])
    assert torch.equal(union[3], masks[3])
    higher = crit.interinst_union_masks(masks, boxes[:, None], clip_idx, iou_threshold=0.2)
    assert torch.equal(higher[0], masks[0])


def test_repulsion_dice_equals_dice_without_neighbours_and_differs_with_them():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 8, 8, generator=g) * 2
    targets = (torch.rand(3, 2, 8, 8, generator=g) > 0.6).float()
    plain = crit.dice_loss(logits, targets, 2.0)
    torch.testing.assert_close(crit.interinst_dice_loss(logits, targets, targets, 2.0), plain)
    neighbours = ((targets + torch.roll(targets, 1, dims=0)) > 0).float()
    assert not torch.allclose(crit.interinst_dice_loss(logits, targets, neighbours, 2.0), plain)


def test_repulsion_bce_weights_target_and_neighbour_pixels_twice():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 2, 8, 8, generator=g) * 2
    targets = torch.rand(3, 2, 8, 8, generator=g)
    union = (torch.rand(3, 2, 8, 8, generator=g) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1)
    weight = 1 + union.flatten(1)
    expected = ((bce * weight).sum(1) / weight.sum(1)).sum() / 3.0
    torch.testing.assert_close(crit.interinst_sigmoid_ce_loss(logits, targets, union, 3.0), expected)
    # no union at all: the plain mean BCE
    torch.testing.assert_close(
        crit.interinst_sigmoid_ce_loss(logits, targets, torch.zeros_like(union), 3.0),
        crit.sigmoid_ce_loss(logits, targets, 3.0),
    )


@pytest.mark.parametrize("overlap", [False, True])
def test_criterion_mask_terms_with_and_without_neighbours(overlap):
    second = [0.25, 0.25, 0.625, 0.625] if overlap else [0.75, 0.75, 1.0, 1.0]  # IoU 0.29 or 0
    targets = [make_target([[0.125, 0.125, 0.5, 0.5], second], [1, 3])]
    outputs = make_outputs(targets, perfect=False, seed=3)
    repulsion = make_criterion()(outputs, targets)
    plain = make_criterion(interinst_mask_loss_enabled=False)(outputs, targets)
    if overlap:
        assert repulsion["loss_dice"].item() != plain["loss_dice"].item()
    else:
        torch.testing.assert_close(repulsion["loss_dice"], plain["loss_dice"])
    assert repulsion["loss_mask"].item() != plain["loss_mask"].item()  # weights 1 + U even alone


# ------------------------------------------------------------------------------ query initialisation
def test_uncertain_points_are_the_top_k():
    g = torch.Generator().manual_seed(0)
    uncertainty = torch.rand(3, 1, 5, 6, generator=g)
    idx = crit.get_uncertain_point_indices_on_grid(uncertainty, 7)
    assert idx.shape == (3, 7)
    for r in range(3):
        assert set(idx[r].tolist()) == set(uncertainty[r].flatten().argsort(descending=True)[:7].tolist())
    assert crit.get_uncertain_point_indices_on_grid(uncertainty, 100).shape == (3, 30)


def explicit_query_init_loss(logits, labels, dist, keep=None):
    """The weighted focal formula written out per frame; `keep`: (BT, P) bool points used."""
    bt_logits = logits.flatten(0, 1).flatten(1, 2)
    one_hot = F.one_hot(labels.flatten(0, 1).clamp(min=0), K).float() * (labels.flatten(0, 1) >= 0)[..., None]
    dist = dist.flatten(0, 1)
    terms = []
    for r in range(bt_logits.shape[0]):
        sel = keep[r] if keep is not None else slice(None)
        x, y, d = bt_logits[r][sel], one_hot[r][sel], dist[r][sel]
        p = x.sigmoid()
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        loss = ce * ((1 - p) * y + p * (1 - y)) ** 2 * (d * y + (1 - d) * (1 - y)) ** 2
        terms.append(loss.sum() / y.any(-1).sum().clamp(min=1))
    return torch.stack(terms).mean()


def test_query_init_class_loss_on_all_points_and_on_uncertain_points():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, T, *GRID_HW, K, generator=g)
    labels = torch.randint(-1, K, (2, T, GRID_HW[0] * GRID_HW[1]), generator=g)
    dist = torch.rand(2, T, GRID_HW[0] * GRID_HW[1], K, generator=g) * F.one_hot(labels.clamp(min=0), K)
    full = crit.query_init_class_loss(logits, labels, dist, num_points=1000)
    torch.testing.assert_close(full, explicit_query_init_loss(logits, labels, dist))

    prob = logits.flatten(0, 1).flatten(1, 2).sigmoid()
    one_hot = F.one_hot(labels.flatten(0, 1).clamp(min=0), K) * (labels.flatten(0, 1) >= 0)[..., None]
    uncertainty = (K * (1 - prob) * one_hot + prob * (1 - one_hot)).sum(-1)
    keep = torch.zeros_like(uncertainty, dtype=torch.bool)
    keep.scatter_(1, uncertainty.topk(20, dim=1).indices, True)
    partial = crit.query_init_class_loss(logits, labels, dist, num_points=20)
    torch.testing.assert_close(partial, explicit_query_init_loss(logits, labels, dist, keep))


def test_query_ids_are_read_at_the_nearest_pixel_with_border_padding():
    pixel_ids = torch.arange(6).view(1, 1, 6) * 10  # 2 x 3 grid
    coords = torch.tensor([[[[0.1, 0.2], [0.9, 0.8], [0.5, 0.3], [1.5, -0.5]]]])  # (1, 1, 4, 2)
    ids = crit.query_instance_ids(pixel_ids, (2, 3), coords)
    assert ids.tolist() == [[[0, 50, 10, 20]]]


def test_reid_losses_by_hand():
    criterion = make_criterion(num_queries=4, window_inter_frame_asso=2)  # 2x2 grid: every cell is near
    embeds = torch.tensor([[1.0, 0.0], [0.8, 0.3], [0.0, 1.0], [-0.5, 0.4]]).view(1, 1, 4, 2)
    ids = torch.tensor([0, 0, -1, 1]).view(1, 1, 4)
    reid, aux = criterion.reid_losses(embeds, ids)

    e = embeds.view(4, 2)

    def terms(anchor, pos, neg):
        s_pos, s_neg = e[pos] @ e[anchor], e[neg] @ e[anchor]
        ctt = torch.log(1 + (s_neg[:, None] - s_pos[None]).exp().sum(0).clamp(max=1e3)).mean()
        cos = F.normalize(e[pos + neg], dim=-1) @ F.normalize(e[anchor], dim=0)
        label = torch.tensor([1.0] * len(pos) + [0.0] * len(neg))
        return ctt, ((cos - label) ** 2).mean()

    ctt0, aux0 = terms(0, [0, 1], [2, 3])  # id 0: anchor query 0, 2 negatives -> 2 positives
    ctt1, aux1 = terms(3, [3], [0, 1, 2])  # id 1: anchor query 3, only itself as positive
    torch.testing.assert_close(reid, (ctt0 + ctt1) / 2)
    torch.testing.assert_close(aux, (aux0 + aux1) / 2)


def test_reid_losses_vanish_for_separated_embeddings():
    criterion = make_criterion(num_queries=4, window_inter_frame_asso=2)
    embeds = torch.tensor([[20.0, 0, 0], [20.0, 0, 0], [0, 20.0, 0], [0, 0, 20.0]]).view(1, 1, 4, 3)
    ids = torch.tensor([5, 5, 7, -1]).view(1, 1, 4)
    reid, aux = criterion.reid_losses(embeds, ids)
    assert reid.item() < 1e-6 and aux.item() < 1e-6


def test_reid_random_draws_and_candidate_area(monkeypatch):
    draws = []
    randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda n: draws.append(n) or randperm(n))
    criterion = make_criterion(deterministic_sampling=False)  # 4x4 grid, window max(1, 2) = 2
    ids = torch.full((1, 1, 4, 4), -1)
    ids[0, 0, :3, :3] = 0  # fills the anchor's whole candidate area (cells within 2 of (0, 0))
    ids[0, 0, 3, 3] = 1
    embeds = torch.randn(1, 1, Q, E)
    torch.manual_seed(0)
    first = criterion.reid_losses(embeds, ids.view(1, 1, Q))
    # Per anchor: positives, negatives, then the aux order (drawn only to follow the original's stream).
    # Anchor of id 0: candidates all share its id -> every query is a candidate (9 pos, 7 neg).
    # Anchor of id 1 at cell (3, 3): candidates are cells within 2 -> 9 cells, 1 pos, 8 neg.
    assert draws == [9, 7, 2 + 7, 1, 8, 1 + 8]
    torch.manual_seed(0)
    second = criterion.reid_losses(embeds, ids.view(1, 1, Q))
    torch.testing.assert_close(first, second)


def test_num_masks_is_all_reduced_when_distributed(tmp_path):
    targets = [make_target([[0.25, 0.25, 0.5, 0.75], [0.625, 0.125, 1.0, 0.5]], [1, 3])]
    outputs = make_outputs(targets, perfect=False)
    local = make_criterion()(outputs, targets)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
    )
    try:
        distributed = make_criterion()(outputs, targets)
    finally:
        torch.distributed.destroy_process_group()
    for key in local:
        torch.testing.assert_close(distributed[key], local[key])


@pytest.mark.gpu
def test_cuda_losses_equal_cpu_losses():
    targets = [
        make_target([[0.25, 0.25, 0.5, 0.75], [0.375, 0.125, 0.75, 0.5]], [1, 3]),
        make_target([[0.5, 0.5, 0.875, 0.875]], [2]),
    ]
    outputs = make_outputs(targets, perfect=False, seed=5)
    cpu = make_criterion()(outputs, targets)
    to_cuda = lambda d: {k: v.detach().cuda() for k, v in d.items()}
    cuda = make_criterion().cuda()(to_cuda(outputs), [to_cuda(t) for t in targets])
    for key, value in cpu.items():
        torch.testing.assert_close(cuda[key].cpu(), value.detach(), rtol=1e-4, atol=1e-6, msg=key)


# ------------------------------------------------------------------- the original's loss dict (model)
@pytest.fixture(scope="module")
def reference_model(reference_dir, make_reference_model):
    """The R50_ovis_360 model with the fixture's generated weights, in train mode, and the fixture's seed."""
    fixture = torch.load(reference_dir / FIXTURE, weights_only=False)
    model = make_reference_model(fixture).train()
    return model, fixture["seed"]


def _run_recording_matches(model, batch, seed):
    calls = []
    matcher = model.criterion.matcher
    forward = matcher.forward
    matcher.forward = lambda *args: calls.append(forward(*args)) or calls[-1]
    try:
        torch.manual_seed(seed)
        with torch.no_grad():
            losses = model(batch)
    finally:
        del matcher.forward
    return losses, calls


def _run_fixture(reference_dir, reference_model, deterministic: bool) -> tuple[dict, list, dict]:
    """(losses, matcher calls, fixture["train"]) of the reference model on the fixture's batch."""
    model, seed = reference_model
    batch, train = fixture_train_batch(reference_dir)
    model.criterion.deterministic_sampling = deterministic
    return (*_run_recording_matches(model, batch, seed), train)


@pytest.mark.slow
def test_loss_dict_equals_the_original(reference_dir, reference_model):
    losses, calls, train = _run_fixture(reference_dir, reference_model, deterministic=True)
    expected = train["losses_arange_perm"]
    assert list(losses) == list(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-4), key
    assert sum(v.item() for v in losses.values()) == pytest.approx(train["total_loss_arange_perm"], rel=1e-4)
    assert len(calls) == len(train["matcher_indices"])
    for stage, (got, want) in enumerate(zip(calls, train["matcher_indices"])):
        for (q, g), (q_ref, g_ref) in zip(got, want):
            assert q.tolist() == q_ref.tolist() and g.tolist() == g_ref.tolist(), f"stage {stage}"


@pytest.mark.slow
def test_seeded_random_draws_reproduce_the_original(reference_dir, reference_model):
    losses, _, train = _run_fixture(reference_dir, reference_model, deterministic=False)
    for key, value in train["losses"].items():
        assert losses[key].item() == pytest.approx(value, rel=1e-4), key
    assert math.isfinite(sum(v.item() for v in losses.values()))
