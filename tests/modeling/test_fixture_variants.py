"""MODEL.MDQE.COMPILE (with inductor, the default backend) and MODEL.MDQE.CHANNELS_LAST keep the
whole-video inference fixture of the original (R50_ovis_360, gen_weights seed 1): every clip's heads and
the final instances within the tolerances of tests/modeling/test_model_fixture.py.

Slow: inductor compiles the ResNet-50 model's two per-frame graphs and two per-clip graphs (4- and 3-frame
clips) in several minutes on a 2-core CPU (less with a warm inductor cache).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

import mdqe.modeling.meta_arch as meta_arch

pytestmark = pytest.mark.slow

ATOL = 1e-4


@pytest.fixture(scope="module")
def fixture(reference_dir):
    return torch.load(reference_dir / "fixtures" / "r50_ovis_seed1.pt", weights_only=False)


def _run(model, inference: dict) -> tuple[dict, dict]:
    heads = {}
    real_infer = meta_arch.infer_video

    def recording_infer(num_frames, decode_clip, mask_features, image_size, output_size, params):
        def recording_decode(start, end):
            heads[(start, end)] = decode_clip(start, end)
            return heads[(start, end)]

        return real_infer(num_frames, recording_decode, mask_features, image_size, output_size, params)

    video = {"image": list(inference["frames"]), "height": inference["height"], "width": inference["width"]}
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(meta_arch, "infer_video", recording_infer)
        result = model([video])
    return heads, result


@pytest.mark.parametrize("key", ["MODEL.MDQE.COMPILE", "MODEL.MDQE.CHANNELS_LAST"])
def test_the_variant_keeps_the_inference_fixture(key, make_reference_model, fixture):
    torch._dynamo.reset()
    model = make_reference_model({**fixture, "opts": [*fixture["opts"], key, "True"]}).eval()
    inference = fixture["inference"]
    try:
        heads, result = _run(model, inference)
    finally:
        torch._dynamo.reset()
    if key == "MODEL.MDQE.COMPILE":
        # per-frame graphs for the chunks of 4 and 3 frames (the frame count turns dynamic), one per-clip
        # graph per clip length (4, 3); one frame size: no symbolic spatial size
        assert [part.compiles for part in model.compiled_parts] == [2, 2]
    for k, ref in enumerate(inference["heads_per_clip"]):
        found = heads[(k, min(k + 4, 7))]
        torch.testing.assert_close(found.cls_probs, ref["cls"], atol=ATOL, rtol=0, msg=f"clip {k} cls")
        torch.testing.assert_close(
            found.mask_coeff, ref["mask_coeff"], atol=ATOL, rtol=0, msg=f"clip {k} coeff"
        )
        torch.testing.assert_close(
            found.query_embed, ref["query_embed"], atol=ATOL, rtol=0, msg=f"clip {k} embed"
        )
    assert len(result["pred_scores"]) == inference["num_instances"]
    items = sorted(
        zip(result["pred_scores"], result["pred_labels"], result["pred_masks"]), key=lambda i: (-i[0], i[1])
    )
    torch.testing.assert_close(
        torch.tensor([s for s, _, _ in items]), inference["all_scores_sorted"], atol=ATOL, rtol=0
    )
    assert torch.equal(torch.tensor([label for _, label, _ in items]), inference["all_labels_sorted"])
    height, width = inference["height"], inference["width"]
    for i, (_, _, masks) in enumerate(items[: len(inference["pred_masks_rle"])]):
        for t, (mine, ref) in enumerate(zip(masks, inference["pred_masks_rle"][i])):
            mine_px = (
                np.zeros((height, width), bool) if mine is None else mask_utils.decode(mine).astype(bool)
            )
            ref_px = mask_utils.decode(ref).astype(bool)
            assert (mine_px != ref_px).sum() <= 0.001 * height * width, f"instance {i} frame {t}"
