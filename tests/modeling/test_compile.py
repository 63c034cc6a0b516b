"""MODEL.MDQE.COMPILE: the per-frame and per-clip parts under torch.compile, on the tiny config.

These tests compile with the "aot_eager" backend: dynamo captures and AOTAutograd partitions exactly the
graphs that inductor would get (so graph breaks and recompilations are the same), without the minutes of
C++ code generation that inductor takes on a 2-core CPU. Inductor's numerics are checked on the model
fixture (tests/modeling/test_fixture_variants.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import BitMasks, Instances
from torch._dynamo.utils import counters

from mdqe.config import add_mdqe_config
from mdqe.modeling import MDQE

ROOT = Path(__file__).resolve().parents[2]
# frame sizes of the three videos / batches: none is 0 or 1 in any feature level, and no level is square
SIZES = [(256, 352), (288, 416), (320, 448)]


def tiny_model(compile: bool, seed: int = 0) -> MDQE:
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(ROOT / "configs" / "synthetic" / "tiny.yaml"))
    cfg.MODEL.MDQE.COMPILE = compile
    torch.manual_seed(seed)
    model = MDQE(cfg)
    for part in model.compiled_parts:
        part.backend = "aot_eager"
    return model


def video(height: int, width: int, num_frames: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (num_frames, 3, height, width), dtype=torch.uint8, generator=g)
    return {"image": list(frames)}


def training_clip(height: int, width: int, seed: int = 0) -> dict:
    """A 2-frame clip of noise with two moving rectangles of classes 0 and 2."""
    g = torch.Generator().manual_seed(seed)
    frames = list(torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=g))
    instances = []
    for t in range(2):
        masks = torch.zeros(2, height, width, dtype=torch.bool)
        masks[0, 20 + 8 * t : height // 2, 16 : width // 3] = True
        masks[1, height // 3 : height - 10, width // 2 + 8 * t : width - 12] = True
        inst = Instances((height, width))
        inst.gt_classes = torch.tensor([0, 2])
        inst.gt_ids = torch.tensor([0, 1])
        inst.gt_masks = BitMasks(masks)
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        instances.append(inst)
    return {"image": frames, "instances": instances, "height": height, "width": width}


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def runs():
    """The same inputs through an eager and a compiled tiny model of equal weights: three 4-frame videos
    of three sizes, then three training batches of three sizes (each with two clips of different sizes,
    so that the frames of a batch are padded), recording outputs, gradients and compile counts.

    Compiling is what takes the time here (dynamo traces each graph in ~10-30 s on this CPU), so all
    tests share this one sequence."""
    torch._dynamo.reset()  # compiled code lives on the parts' code objects: start from none
    counters.clear()
    handler = _Messages()
    logger = logging.getLogger("mdqe.modeling.compile")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    record = {}
    try:
        for name in ("eager", "compiled"):
            model = tiny_model(compile=name == "compiled").eval()
            videos, batches, compiles = [], [], []
            with torch.no_grad():
                for i, (height, width) in enumerate(SIZES):
                    videos.append(model([video(height, width, seed=i)]))
                    compiles.append([part.compiles for part in model.compiled_parts])
            model.train()
            for i, (height, width) in enumerate(SIZES):
                batch = [
                    training_clip(height, width, seed=i),
                    training_clip(height - 32, width - 64, seed=i + 9),
                ]
                model.zero_grad(set_to_none=True)
                torch.manual_seed(i)
                losses = model(batch)
                sum(losses.values()).backward()
                grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
                batches.append(({k: v.detach() for k, v in losses.items()}, grads))
                compiles.append([part.compiles for part in model.compiled_parts])
            record[name] = {"videos": videos, "batches": batches, "compiles": compiles}
        record["graph_breaks"] = dict(counters["graph_break"])
        record["log"] = handler.messages
    finally:
        logger.removeHandler(handler)
        torch._dynamo.reset()
    return record


def test_compiled_parts_have_no_graph_break_in_inference_or_training(runs):
    assert runs["graph_breaks"] == {}
    # every graph handed to the backend is logged: a graph break would add graphs to a part
    graphs = [m for m in runs["log"] if m.startswith("torch.compile: ")]
    assert len(graphs) == sum(runs["compiled"]["compiles"][-1])


def test_new_frame_sizes_do_not_recompile_either_part(runs):
    eval_compiles, train_compiles = runs["compiled"]["compiles"][:3], runs["compiled"]["compiles"][3:]
    # first video: static graphs, one of the per-frame part, and of the per-clip part one per clip length
    # (the video's 1-frame clip at its end); second size: the sizes turn dynamic: one graph of the
    # per-frame part, of the per-clip part one per clip length and one that dynamo splits off on a view's
    # stride; the third size reuses them
    assert eval_compiles == [[1, 2], [2, 5], [2, 5]]
    # training: one more graph per part (training mode, already dynamic) for the first batch, none after
    assert train_compiles == [[3, 6]] * 3
    assert "torch.compile: the per-clip part, graph 2 (" in " ".join(runs["log"])
    assert runs["eager"]["compiles"][-1] == [0, 0]  # COMPILE False never calls torch.compile


def test_compiled_inference_equals_eager(runs):
    for eager, compiled in zip(runs["eager"]["videos"], runs["compiled"]["videos"]):
        assert compiled["pred_labels"] == eager["pred_labels"]
        torch.testing.assert_close(torch.tensor(compiled["pred_scores"]), torch.tensor(eager["pred_scores"]))
        assert compiled["pred_masks"] == eager["pred_masks"]


def test_compiled_training_losses_and_gradients_equal_eager(runs):
    pairs = zip(runs["eager"]["batches"], runs["compiled"]["batches"])
    for (losses_e, grads_e), (losses_c, grads_c) in pairs:
        assert list(losses_c) == list(losses_e)
        for key in losses_e:
            torch.testing.assert_close(losses_c[key], losses_e[key], rtol=1e-5, atol=1e-6, msg=key)
        assert grads_c.keys() == grads_e.keys() and len(grads_e) > 0
        for name, grad in grads_e.items():
            error = (grads_c[name] - grad).norm().item()
            # absolute floor: biases followed by a GroupNorm have ~0 gradients, pure rounding noise
            assert error <= 1e-4 * grad.norm().item() + 1e-5, f"{name}: |grad - eager| = {error}"
