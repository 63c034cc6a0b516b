"""The model against the original's outputs on the shared fixture (R50_ovis_360, gen_weights seed 1).

One whole-video inference run of the model (module-scoped, ~1 min on CPU) records the intermediates
of the first frames and clip 0 and the heads of every clip; the tests compare them with the probes
of `fixtures/r50_ovis_seed1.pt`. The training test compares the loss dict on the fixture batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Instances
from pycocotools import mask as mask_utils

import mdqe.modeling.meta_arch as meta_arch

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-4


@pytest.fixture(scope="module")
def fixture(reference_dir):
    return torch.load(reference_dir / "fixtures" / "r50_ovis_seed1.pt", weights_only=False)


@pytest.fixture(scope="module")
def model(make_reference_model, fixture):
    return make_reference_model(fixture).eval()


@pytest.fixture(scope="module")
def video_run(model, fixture):
    """Run the model on the fixture video once, recording intermediates via hooks and wrappers."""
    inference = fixture["inference"]
    dec = model.detr.transformer_dec
    rec: dict[str, list] = {
        "backbone": [],
        "input_proj": [],
        "encode": [],
        "mask_feats": [],
        "frame_queries": [],
        "associate": [],
        "decode": [],
        "heads": {},
    }
    hooks = [
        model.detr.backbone.register_forward_hook(lambda m, i, o: rec["backbone"].append(o)),
        model.detr.transformer_enc.register_forward_hook(lambda m, i, o: rec["encode"].append(o)),
    ]
    for level, proj in enumerate(model.detr.input_proj):
        hooks.append(
            proj.register_forward_hook(lambda m, i, o, level=level: rec["input_proj"].append((level, o)))
        )

    def wrap(name, fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            rec[name].append(out)
            return out

        return wrapped

    real_infer = meta_arch.infer_video

    def recording_infer(num_frames, decode_clip, mask_features, image_size, output_size, params):
        def recording_decode(start, end):
            heads = decode_clip(start, end)
            rec["heads"][(start, end)] = heads
            return heads

        def recording_masks(start, end):
            feats = mask_features(start, end)
            rec["mask_feats"].append((start, feats))
            return feats

        return real_infer(num_frames, recording_decode, recording_masks, image_size, output_size, params)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(meta_arch, "infer_video", recording_infer)
        mp.setattr(dec, "init_frame_queries", wrap("frame_queries", dec.init_frame_queries))
        mp.setattr(dec, "associate", wrap("associate", dec.associate))
        mp.setattr(dec, "decode", wrap("decode", dec.decode))
        frames = list(inference["frames"])
        video = {
            "image": frames,
            "height": inference["height"],
            "width": inference["width"],
            "length": len(frames),
        }
        try:
            result = model([video])
        finally:
            for hook in hooks:
                hook.remove()
    return rec, result


def _assert_probe(name: str, tensor: torch.Tensor, probe) -> None:
    tensor = tensor.detach().double()
    if isinstance(probe, torch.Tensor) or "full" in probe:
        expected = probe if isinstance(probe, torch.Tensor) else probe["full"]
        torch.testing.assert_close(tensor, expected.double(), atol=ATOL, rtol=0, msg=name)
        return
    assert tuple(tensor.shape) == tuple(probe["shape"]), name
    flat = tensor.flatten()
    index = torch.arange(4096) * (flat.numel() - 1) // 4095
    torch.testing.assert_close(flat[index], probe["sample"].double(), atol=ATOL, rtol=0, msg=name)
    assert flat.abs().sum().item() == pytest.approx(probe["abs_sum"], rel=1e-5), name
    assert flat.sum().item() == pytest.approx(probe["sum"], rel=1e-4, abs=ATOL * flat.numel() ** 0.5), name


def test_backbone_masks_and_position_encodings(video_run, fixture):
    probes = fixture["inference"]["first_window"]
    rec, _ = video_run
    # frames are encoded in chunks: concatenate the chunks along the frame axis
    for level in range(3):
        feats = torch.cat([levels[level][0] for levels, _ in rec["backbone"]])
        masks = torch.cat([levels[level][1] for levels, _ in rec["backbone"]])
        pos = torch.cat([p[level] for _, p in rec["backbone"]])
        _assert_probe(f"backbone_feat{level}", feats, probes[f"backbone_feat{level}"])
        assert torch.equal(masks, probes[f"backbone_mask{level}"]["full"])
        _assert_probe(f"pos{level}", pos, probes[f"pos{level}"])


def test_input_projections(video_run, fixture):
    probes = fixture["inference"]["first_window"]
    rec, _ = video_run
    for level in range(4):
        out = torch.cat([o for lvl, o in rec["input_proj"] if lvl == level])
        _assert_probe(f"input_proj{level}", out, probes[f"input_proj{level}"])


def test_encoder_output_and_mask_features(video_run, fixture):
    probes = fixture["inference"]["first_window"]
    rec, _ = video_run
    memory = torch.cat([m for m, _, _ in rec["encode"]])
    padding = torch.cat([p for _, p, _ in rec["encode"]])
    _assert_probe("encoder_out", memory, probes["encoder_out"])
    assert padding.sum().item() == probes["encoder_padding_mask"]["sum"]
    assert torch.equal(rec["encode"][0][2], probes["spatial_shapes"])
    start, feats = rec["mask_feats"][0]
    assert start == 0
    torch.testing.assert_close(feats[:, 0], probes["mask_feats_frame0"], atol=ATOL, rtol=0)


def test_query_initialisation_of_clip0(video_run, fixture):
    probes = fixture["inference"]["first_window"]
    rec, _ = video_run
    first = rec["frame_queries"][0]
    _assert_probe("clip0_rpn_cls_logits", first.rpn_logits[:4].flatten(1, 2), probes["clip0_rpn_cls_logits"])
    _assert_probe("clip0_query_init_coords", first.coords[:4], probes["clip0_query_init_coords"])
    _assert_probe(
        "clip0_query_init_track_embed", first.track_embed[:4], probes["clip0_query_init_track_embed"]
    )
    features, coords = rec["associate"][0]
    _assert_probe("clip0_aligned_query_init", features[0], probes["clip0_aligned_query_init"])
    _assert_probe("clip0_aligned_query_coords", coords[0], probes["clip0_aligned_query_coords"])


def test_decoder_outputs_of_clip0(video_run, fixture):
    probes = fixture["inference"]["first_window"]
    rec, _ = video_run
    out = rec["decode"][0]
    _assert_probe("clip0_decoder_query", out.frame_queries, probes["clip0_decoder_query"])
    _assert_probe("clip0_decoder_clip_query", out.clip_queries, probes["clip0_decoder_clip_query"])
    _assert_probe("clip0_decoder_boxes", out.boxes, probes["clip0_decoder_boxes"])


def test_heads_of_every_clip(video_run, fixture):
    rec, _ = video_run
    expected = fixture["inference"]["heads_per_clip"]
    for k, ref in enumerate(expected):
        heads = rec["heads"][(k, min(k + 4, 7))]
        torch.testing.assert_close(heads.cls_probs, ref["cls"], atol=ATOL, rtol=0, msg=f"clip {k} cls")
        torch.testing.assert_close(
            heads.mask_coeff, ref["mask_coeff"], atol=ATOL, rtol=0, msg=f"clip {k} coeff"
        )
        torch.testing.assert_close(
            heads.query_embed, ref["query_embed"], atol=ATOL, rtol=0, msg=f"clip {k} embed"
        )
        logits = torch.logit(heads.cls_probs.double())
        torch.testing.assert_close(
            logits, ref["cls_logits"].double(), atol=1e-3, rtol=0, msg=f"clip {k} logits"
        )


def test_encoder_runs_once_per_frame(video_run):
    rec, _ = video_run
    assert sum(m.shape[0] for m, _, _ in rec["encode"]) == 7


def _sorted_results(result: dict) -> list[tuple[float, int, list]]:
    items = list(zip(result["pred_scores"], result["pred_labels"], result["pred_masks"]))
    return sorted(items, key=lambda item: (-item[0], item[1]))


def test_final_results_match(video_run, fixture):
    _, result = video_run
    inference = fixture["inference"]
    assert len(result["pred_scores"]) == inference["num_instances"]
    items = _sorted_results(result)
    scores = torch.tensor([s for s, _, _ in items])
    labels = torch.tensor([label for _, label, _ in items])
    torch.testing.assert_close(scores, inference["all_scores_sorted"], atol=ATOL, rtol=0)
    assert torch.equal(labels, inference["all_labels_sorted"])
    height, width = inference["height"], inference["width"]
    for i, (_, _, masks) in enumerate(items[: len(inference["pred_masks_rle"])]):
        for t, (mine, ref) in enumerate(zip(masks, inference["pred_masks_rle"][i])):
            mine_px = (
                np.zeros((height, width), bool) if mine is None else mask_utils.decode(mine).astype(bool)
            )
            ref_px = mask_utils.decode(ref).astype(bool)
            # identical except at most 0.1% of the pixels (boundary flips from float rounding)
            assert (mine_px != ref_px).sum() <= 0.001 * height * width, f"instance {i} frame {t}"


def _train_batch(train: dict) -> list[dict]:
    # as the fixture's README says: instance 2 is absent from the last frame (mask zeroed, gt_id -1)
    assert train["absent"].startswith("instance 2 ")
    height, width = train["image_size"]
    num_frames = train["frames"].shape[0]
    masks = torch.stack(train["masks"], dim=1).clone()  # (T, N, H, W)
    masks[num_frames - 1, 2] = False
    instances = []
    for t in range(num_frames):
        inst = Instances((height, width))
        inst.gt_classes = train["classes"].clone()
        present = masks[t].flatten(1).any(1)
        inst.gt_ids = torch.where(
            present, torch.arange(len(present)), torch.full_like(present, -1, dtype=torch.long)
        )
        inst.gt_masks = BitMasks(masks[t])
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        instances.append(inst)
    return [{"image": list(train["frames"]), "instances": instances, "height": height, "width": width}]


def test_training_losses_and_gradients_match(model, fixture):
    train = fixture["train"]
    model.train()
    model.criterion.deterministic_sampling = True
    try:
        torch.manual_seed(fixture["seed"])
        losses = model(_train_batch(train))
        expected = train["losses_arange_perm"]
        assert list(losses) == list(expected)
        for key, value in expected.items():
            assert losses[key].item() == pytest.approx(value, rel=1e-5), key
        total = sum(losses.values())
        assert total.item() == pytest.approx(train["total_loss_arange_perm"], rel=1e-5)
        total.backward()
        params = dict(model.named_parameters())
        assert set(params) == set(train["grad_norms"])
        for name, norm in train["grad_norms"].items():
            assert params[name].grad is not None, name
            assert params[name].grad.norm().item() == pytest.approx(norm, rel=1e-3, abs=1e-5), name
        for name, grad in train["grads_small"].items():
            error = (params[name].grad - grad).norm().item()
            # absolute floor: biases followed by a normalisation have ~0 gradients, pure rounding noise
            assert error <= 1e-3 * grad.norm().item() + 1e-4, f"{name}: |grad - expected| = {error}"
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
        model.criterion.deterministic_sampling = False
