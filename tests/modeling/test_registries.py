"""The model's parts by registry: a custom encoder and loss chosen by config keys alone train a step on
configs/synthetic/tiny.yaml; wrong strides, unweighted or unknown losses and a bad MATCH_STRIDE fail at
build time; the matching diagnostics reach EventStorage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _model_testing import training_clip
from detectron2.config import CfgNode, configurable, get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, build_model
from detectron2.utils.events import EventStorage
from torch import nn

from mdqe.config import add_mdqe_config
from mdqe.modeling import (
    CRITERION_REGISTRY,
    PIXEL_ENCODER_REGISTRY,
    DeformableEncoder,
    HungarianMatcher,
    QueryDecoder,
    SetCriterion,
    loss,
)
from mdqe.modeling.criterion import LayerMatch, query_init_recall
from mdqe.modeling.encoder import flatten_levels
from mdqe.modeling.query_init import query_grid_size

TINY = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "tiny.yaml"


@PIXEL_ENCODER_REGISTRY.register()
class _TestLinearEncoder(nn.Module):
    """Tokens through one Linear: no attention at all."""

    @configurable
    def __init__(self, *, dim: int):
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return {"dim": cfg.MODEL.MDQE.HIDDEN_DIM}

    def forward(self, srcs, masks, pos):
        tokens, padding_mask, pos_flat, shapes = flatten_levels(srcs, masks, pos)
        return self.proj(tokens + pos_flat), padding_mask, shapes


@CRITERION_REGISTRY.register()
class _TestCriterionWithMeanLogit(SetCriterion):
    """MDQE's losses plus the mean class logit of every decoder output."""

    @loss("mean_logit", "loss_mean_logit")
    def loss_mean_logit(self, match: LayerMatch) -> dict[str, torch.Tensor]:
        return {"loss_mean_logit": match.pred_logits.mean()}


@BACKBONE_REGISTRY.register()
class _TestStride4Backbone(Backbone):
    """Levels at strides 4, 8, 16: not what the pixel encoder takes."""

    def __init__(self, cfg: CfgNode, input_shape: ShapeSpec):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3, 8, kernel_size=s, stride=s) for s in (4, 8, 16))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"s{i}": conv(x) for i, conv in enumerate(self.convs)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f"s{i}": ShapeSpec(channels=8, stride=s) for i, s in enumerate((4, 8, 16))}


def tiny_cfg(*opts) -> CfgNode:
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(TINY))
    cfg.DATASETS.TEST = ()
    cfg.merge_from_list(list(opts))
    return cfg


def test_default_names_build_the_original_parts():
    model = build_model(tiny_cfg())
    assert type(model.detr.transformer_enc) is DeformableEncoder
    assert type(model.detr.transformer_dec) is QueryDecoder
    assert type(model.criterion) is SetCriterion and type(model.criterion.matcher) is HungarianMatcher
    assert model.criterion.losses == ("query_init_labels", "query_init_reid", "labels", "boxes", "masks")


def test_a_custom_encoder_and_loss_chosen_by_config_keys_train_one_step():
    losses = ["query_init_labels", "query_init_reid", "labels", "boxes", "masks", "mean_logit"]
    cfg = tiny_cfg(
        "MODEL.MDQE.ENCODER_NAME", "_TestLinearEncoder",
        "MODEL.MDQE.CRITERION_NAME", "_TestCriterionWithMeanLogit",
        "MODEL.MDQE.LOSSES", losses,
        "MODEL.MDQE.EXTRA_LOSS_WEIGHTS", [["loss_mean_logit", 0.25]],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert isinstance(model.detr.transformer_enc, _TestLinearEncoder)
    before = model.detr.transformer_enc.proj.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with EventStorage():
        losses = model([training_clip(cfg.INPUT.SAMPLING_FRAME_NUM)] * 2)
    assert "loss_mean_logit" in losses and "loss_mean_logit_0" in losses
    assert len(losses) == 3 + 6 * (cfg.MODEL.MDQE.DEC_LAYERS + 1)
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(model.detr.transformer_enc.proj.weight, before)


def test_a_backbone_at_other_strides_fails_at_build_time_naming_backbone_and_strides():
    cfg = tiny_cfg("MODEL.BACKBONE.NAME", "_TestStride4Backbone")
    with pytest.raises(ValueError) as error:
        build_model(cfg)
    message = str(error.value)
    assert message == (
        "backbone _TestStride4Backbone (MODEL.BACKBONE.NAME) outputs ['s0', 's1', 's2'] at strides "
        "[4, 8, 16], but the pixel encoder expects strides [8, 16, 32]"
    )


def test_a_loss_without_weight_fails_at_build_time():
    cfg = tiny_cfg(
        "MODEL.MDQE.CRITERION_NAME", "_TestCriterionWithMeanLogit",
        "MODEL.MDQE.LOSSES", ["labels", "mean_logit"],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"loss 'mean_logit' returns \['loss_mean_logit'\] without a weight"):
        build_model(cfg)


def test_unknown_losses_and_malformed_extra_weights_fail_at_build_time():
    with pytest.raises(ValueError, match=r"unknown losses \['labelz'\] in MODEL.MDQE.LOSSES"):
        build_model(tiny_cfg("MODEL.MDQE.LOSSES", ["labelz"]))
    with pytest.raises(ValueError, match="'loss_cls' is weighted by its own config key"):
        build_model(tiny_cfg("MODEL.MDQE.EXTRA_LOSS_WEIGHTS", [["loss_cls", 1.0]]))


def test_every_default_term_is_weighted_by_a_config_key():
    criterion = build_model(
        tiny_cfg("MODEL.MDQE.REID_WEIGHT", 0.75, "MODEL.MDQE.CLASS_WEIGHT", 3.0)
    ).criterion
    assert criterion.weight_dict == {
        "loss_sem_cls_query_init": 3.0,
        "loss_reid_query_init": 0.75,
        "loss_reid_query_init_aux": 0.75,
        "loss_cls": 3.0,
        "loss_bbox": 2.0,
        "loss_giou": 2.0,
        "loss_mask": 4.0,
        "loss_dice": 4.0,
    }


def test_match_stride_and_query_grid_are_checked_at_build_time():
    with pytest.raises(
        ValueError, match=r"MODEL.MDQE.MATCH_STRIDE=8 must equal the stride of the mask features \(4"
    ):
        build_model(tiny_cfg("MODEL.MDQE.MATCH_STRIDE", 8))
    assert query_grid_size(49) == 7
    with pytest.raises(ValueError, match="perfect square"):
        query_grid_size(50)


def test_query_init_recall_counts_frame_instance_pairs_hit_by_a_query():
    # frame 0 holds ids 3 and 5, frame 1 holds id 3; the queries hit 3 in frame 0 and 5 in frame 1 (absent)
    pixel_ids = torch.tensor([[[3, 3, 5, -1], [-1, 3, -1, -1]]])
    query_ids = torch.tensor([[[3, -1], [5, -1]]])
    assert query_init_recall(query_ids, pixel_ids) == pytest.approx(1 / 3)


def test_matching_diagnostics_reach_event_storage():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    with EventStorage() as storage:
        model([training_clip(2)])
        latest = storage.latest()
    matched, _ = latest["mdqe/matched_queries_per_target"]
    recall, _ = latest["mdqe/query_init_recall"]
    assert matched >= 1  # dynamic-k gives every target at least one query
    assert 0 <= recall <= 1
