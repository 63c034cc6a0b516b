"""docs/extending.md: its examples (backbone, pixel encoder, loss, dataset) register and train one step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from detectron2.config import CfgNode, get_cfg

from mdqe.config import add_mdqe_config
from mdqe.data.datasets.metadata import is_image_dataset, source_to_target_classes
from mdqe.data.synthetic import SplitSpec, write_synthetic_vis
from mdqe.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "extending.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.DOTALL)


@pytest.fixture(scope="module")
def documented(tmp_path_factory) -> tuple[dict, CfgNode]:
    """(namespace of the page's Python blocks, tiny config with the page's YAML blocks merged in)."""
    root = tmp_path_factory.mktemp("my_vis")
    spec = SplitSpec(num_videos=2, min_length=4, max_length=4, frame_sizes=((64, 64),), max_instances=2)
    write_synthetic_vis(str(root), {"train": spec}, num_coco_images=2, seed=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MY_VIS_ROOT", str(root))
        namespace: dict = {}
        exec(compile("\n".join(_blocks("python")), "docs/extending.md", "exec"), namespace)
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "synthetic" / "tiny.yaml"))
    for block in _blocks("yaml"):
        cfg.merge_from_other_cfg(CfgNode(yaml.safe_load(block)))
    return namespace, cfg


def test_the_page_has_the_four_examples():
    assert len(_blocks("python")) == 4 and len(_blocks("yaml")) == 4


def test_the_documented_dataset_is_one_register_call_each_and_told_apart_by_metadata(documented):
    assert is_image_dataset("my_coco_train") and not is_image_dataset("my_vis_train")
    assert source_to_target_classes("my_coco_train", "my_vis_train") is None  # same category table


def test_the_documented_parts_train_one_step(documented, tmp_path):
    _, cfg = documented
    cfg.SOLVER.MAX_ITER = 1
    cfg.OUTPUT_DIR = str(tmp_path)
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    model = trainer.model
    assert type(model.detr.backbone[0].backbone).__name__ == "TinyConvBackbone"
    assert type(model.detr.transformer_enc).__name__ == "ConvPixelEncoder"
    assert type(model.criterion).__name__ == "CriterionWithBoxSize"
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer.train()
    latest = trainer.storage.latest()
    assert "loss_box_size" in latest and "loss_box_size_0" in latest
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("detr.transformer_enc.convs") for k in changed)
    assert any(k.startswith("detr.backbone.0.backbone.stem") for k in changed)
