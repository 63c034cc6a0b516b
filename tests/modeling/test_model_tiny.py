"""A tiny MDQE (ResNet-18, C = 64, 16 queries, small frames) on CPU: training step, video inference,
per-frame caching, and the query-initialisation and temporal-frame helpers."""

from __future__ import annotations

import uuid

import pytest
import torch
from _model_testing import HEIGHT, WIDTH, random_frames, training_clip
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.structures import ImageList

from mdqe.config import add_mdqe_config
from mdqe.inference import ClipHeads
from mdqe.inference.frame_cache import clip_decoders
from mdqe.modeling import MDQE
from mdqe.modeling.decoder import temporal_frame_indices
from mdqe.modeling.query_init import associate_queries, grid_relative_positions, select_grid_queries


def tiny_cfg():
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "MDQE"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.MODEL.BACKBONE.FREEZE_AT = -1
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    mdqe = cfg.MODEL.MDQE
    mdqe.NUM_CLASSES = 3
    mdqe.HIDDEN_DIM = 64
    mdqe.NHEADS = 4
    mdqe.ENC_LAYERS = 1
    mdqe.DEC_LAYERS = 2
    mdqe.ENC_NUM_POINTS = 2
    mdqe.DEC_NUM_POINTS = 2
    mdqe.NUM_OBJECT_QUERIES = 16
    mdqe.QUERY_EMBED_DIM = 16
    mdqe.WINDOW_INTER_FRAME_ASSOCIATION = 2
    mdqe.SAMPLING_FRAME_NUM_TEST = 3
    mdqe.WINDOW_FRAME_NUM_TEST = 4
    mdqe.MAX_NUM_INSTANCES = 10
    mdqe.APPLY_CLS_THRES = 0.0
    cfg.INPUT.SAMPLING_FRAME_NUM = 2
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MDQE(tiny_cfg()).eval()


def test_training_step_gives_every_loss_and_a_gradient_to_every_parameter(model):
    model.train()
    try:
        losses = model([training_clip(2), training_clip(2)])
        assert len(losses) == 3 + 5 * (2 + 1)
        assert {
            "loss_sem_cls_query_init",
            "loss_reid_query_init",
            "loss_cls",
            "loss_mask_0",
            "loss_dice_1",
        } <= set(losses)
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert no_grad == []
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_training_rejects_clips_of_the_wrong_length(model):
    model.train()
    try:
        with pytest.raises(ValueError, match="SAMPLING_FRAME_NUM"):
            model([training_clip(3)])
    finally:
        model.eval()


def _encoder_memory(batch: int, dim: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Random encoder output (batch, sum(H_l W_l), dim) of four levels (stride 8 = 8 x 12) and the
    four level sizes."""
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2)]
    return torch.randn(batch, sum(h * w for h, w in sizes), dim), sizes


def test_mask_feature_init_scale_scales_only_the_initial_mask_features():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    default = MDQE(cfg).eval()
    cfg.MODEL.MDQE.MASK_FEAT_INIT_SCALE = 8.0
    torch.manual_seed(0)
    scaled = MDQE(cfg).eval()
    head, scaled_head = default.detr.transformer_dec.mask_head, scaled.detr.transformer_dec.mask_head
    # the original's init (PyTorch's GroupNorm default) unless asked otherwise
    assert torch.equal(head.out_lay2.gn.weight, torch.ones(head.mask_dim))
    assert torch.equal(scaled_head.out_lay2.gn.weight, torch.full((head.mask_dim,), 8.0))
    # same checkpoint layout and, apart from that weight, the same initial parameters
    scaled_state = scaled.state_dict()
    gn_keys = [k for k in scaled_state if k.endswith("mask_head.out_lay2.gn.weight")]
    assert gn_keys and default.state_dict().keys() == scaled_state.keys()
    for key, value in default.state_dict().items():
        if key not in gn_keys:
            assert torch.equal(value, scaled_state[key]), key
    # ReLU(8 x) = 8 ReLU(x): the mask features are exactly 8 times larger
    memory, shapes = _encoder_memory(2, 64)
    with torch.no_grad():
        feats = default.detr.transformer_dec.mask_features(memory, shapes)
        scaled_feats = scaled.detr.transformer_dec.mask_features(memory, shapes)
    assert feats.abs().sum() > 0
    torch.testing.assert_close(scaled_feats, 8 * feats)


def test_mask_feature_dim_sets_the_prototypes_and_coefficients_and_trains(model):
    cfg = tiny_cfg()
    hidden = cfg.MODEL.MDQE.HIDDEN_DIM
    assert model.detr.transformer_dec.mask_dim == hidden // 8  # 0: the original's HIDDEN_DIM // 8
    cfg.MODEL.MDQE.MASK_FEAT_DIM = 24
    torch.manual_seed(0)
    wide = MDQE(cfg)
    decoder = wide.detr.transformer_dec
    assert decoder.mask_dim == 24 and decoder.mask_embed.layers[-1].out_features == 24
    memory, shapes = _encoder_memory(1, hidden)
    with torch.no_grad():
        assert decoder.mask_features(memory, shapes).shape == (1, 24, 16, 24)
    losses = wide([training_clip(cfg.INPUT.SAMPLING_FRAME_NUM)])
    assert all(torch.isfinite(v) for v in losses.values())
    cfg.MODEL.MDQE.MASK_FEAT_DIM = -1
    with pytest.raises(ValueError, match=r"MODEL\.MDQE\.MASK_FEAT_DIM"):
        MDQE(cfg)


def test_video_inference_returns_the_per_video_output_dict(model):
    out = model([{"image": random_frames(7), "height": 2 * HEIGHT, "width": 2 * WIDTH}])
    assert out["image_size"] == (2 * HEIGHT, 2 * WIDTH)
    assert len(out["pred_scores"]) == len(out["pred_labels"]) == len(out["pred_masks"]) > 0
    assert all(0 <= label < 3 for label in out["pred_labels"])
    for per_frame in out["pred_masks"]:
        assert len(per_frame) == 7
        for rle in per_frame:
            assert rle is None or rle["size"] == [2 * HEIGHT, 2 * WIDTH]


def test_image_inference_returns_instances_for_the_coco_evaluator(model):
    model.is_image = True
    try:
        frame = random_frames(1, seed=4)[0]
        (out,) = model([{"image": [frame, frame], "height": 2 * HEIGHT, "width": 2 * WIDTH}])
    finally:
        model.is_image = False
    inst = out["instances"]
    assert inst.image_size == (2 * HEIGHT, 2 * WIDTH)
    assert len(inst) > 0  # APPLY_CLS_THRES 0: every (query, class) with a non-empty mask is emitted
    assert inst.pred_masks.shape == (len(inst), 2 * HEIGHT, 2 * WIDTH) and inst.pred_masks.dtype == torch.bool
    assert inst.scores.shape == inst.pred_classes.shape == (len(inst),)
    assert inst.pred_boxes.tensor.shape == (len(inst), 4)


def test_a_test_set_registered_as_coco_gets_image_inference_whatever_its_name():
    name = f"my_images_{uuid.uuid4().hex}"
    MetadataCatalog.get(name).set(evaluator_type="coco")
    cfg = tiny_cfg()
    cfg.DATASETS.TEST = (name,)
    assert MDQE(cfg).is_image
    cfg.DATASETS.TEST = ("coco_named_video_set_unregistered",)
    assert not MDQE(cfg).is_image


def test_cached_per_frame_features_give_the_heads_of_clips_decoded_from_scratch(model):
    frames = random_frames(6, seed=3)
    encoded = []
    hook = model.detr.transformer_enc.register_forward_hook(lambda m, i, o: encoded.append(o[0].shape[0]))
    try:
        with torch.no_grad():
            decode_clip, mask_features = clip_decoders(
                lambda start, end: model.frame_features(frames[start:end]), model.decode_clip, 6, chunk=3
            )
            cached = [decode_clip(s, min(s + 3, 6)) for s in range(4)]
            feats = mask_features(3, 6)
    finally:
        hook.remove()
    assert sum(encoded) == 6  # every frame encoded exactly once
    assert feats.shape == (8, 3, HEIGHT // 4, WIDTH // 4)
    dec = model.detr.transformer_dec
    for s, heads in enumerate(cached):
        with torch.no_grad():
            clip = frames[s : min(s + 3, 6)]
            images = ImageList.from_tensors([model.normalize(f) for f in clip], 32)
            image_sizes = torch.tensor(images.image_sizes)
            memory, padding, shapes, sizes = model.detr.encode(images.tensor, image_sizes)
            queries = dec.init_frame_queries(memory, sizes).per_clip(len(clip))
            out = dec.decode_clips(queries, dec.project_values(memory, padding, sizes), shapes)
            logits, mask_coeff = dec.heads(out.clip_queries[-1, 0])
            fresh = ClipHeads(logits.sigmoid(), mask_coeff, out.clip_queries[-1, 0])
        torch.testing.assert_close(heads.cls_probs, fresh.cls_probs, atol=1e-5, rtol=0)
        torch.testing.assert_close(heads.mask_coeff, fresh.mask_coeff, atol=1e-5, rtol=0)
        torch.testing.assert_close(heads.query_embed, fresh.query_embed, atol=1e-5, rtol=0)


def test_grid_selection_picks_the_peak_of_each_cell():
    logits = torch.full((1, 8, 8, 2), -10.0)
    logits[0, 1, 6, 1] = 10.0  # top-right cell of a 2 x 2 grid
    coords = select_grid_queries(logits, 2)
    assert coords.shape == (1, 4, 2)
    # the peak of the upsampled (20 x 20) map lies around pixel (6.5 / 8) * 20, (1.5 / 8) * 20
    x, y = coords[0, 1].tolist()
    assert abs(x - 6.5 / 8) < 0.1 and abs(y - 1.5 / 8) < 0.1


def test_association_keeps_the_key_frame_and_follows_the_embeddings():
    grid = grid_relative_positions(3)
    embed = torch.eye(9).repeat(1, 3, 1, 1)  # orthonormal embeddings: a query's best match is itself
    embed[0, 2] = embed[0, 1][torch.tensor([1, 0, 2, 3, 4, 5, 6, 7, 8])]  # frame 2: cells 0, 1 swapped
    index = associate_queries(embed, grid, window=2)
    assert index[0, 1].tolist() == list(range(9))  # key frame ct = 1 keeps its order
    assert index[0, 2, :2].tolist() == [1, 0]


def test_association_resolves_near_ties_exactly():
    """Frame 2 offers two candidates whose dot products with the key differ by ~3e-9 (far below float32's
    rounding of a sum of 64 products); the larger one must win for both key queries."""
    key = torch.full((64,), 0.1)
    a = torch.full((64,), 0.3)
    b = a.clone()
    b[-1] = torch.nextafter(b[-1], torch.tensor(1.0))
    embed = torch.stack([key, key, key, key, a, b]).view(1, 3, 2, 64)  # (B, T, Q, E), key frame 1
    index = associate_queries(embed, torch.zeros(2, 2, 2, dtype=torch.long), window=1)
    assert index[0, 2].tolist() == [1, 1]


def test_temporal_frames_subsample_long_clips_and_pad_short_ones():
    assert temporal_frame_indices(4, 4) == [0, 1, 2, 3]
    assert temporal_frame_indices(3, 4) == [0, 1, 2, 2]
    assert temporal_frame_indices(4, 3) == [0, 1, 2]
    assert temporal_frame_indices(8, 2) == [3, 7]
    assert temporal_frame_indices(1, 2) == [0, 0]
