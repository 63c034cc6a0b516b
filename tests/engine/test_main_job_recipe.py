"""The synthetic main job's recipe: image pre-training (configs/synthetic/R18_synthetic_pretrain.yaml), the
shipped float16 checkpoint it produced (pretrained/synthetic/), and video fine-tuning from that checkpoint
through the original's temporal inflation (configs/synthetic/R18_synthetic.yaml), each for a few
iterations on tiny generated data."""

from __future__ import annotations

import shutil

import pytest
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog

from mdqe.checkpoint import CheckpointError, read_checkpoint, sha256_of
from mdqe.config import add_mdqe_config
from mdqe.data.datasets.builtin import register_coco_video_instances
from mdqe.data.datasets.categories import instances_meta
from mdqe.data.synthetic import SYNTHETIC_CATEGORIES, write_synthetic_coco
from mdqe.engine.trainer import Trainer
from tests.conftest import REPO_ROOT
from tests.engine.conftest import register_two_videos

CONFIGS = REPO_ROOT / "configs" / "synthetic"
SHIPPED = REPO_ROOT / "pretrained" / "synthetic" / "mdqe_r18n_synthetic_coco_f1.pth"
TEMPORAL_KEY = "detr.transformer_dec.decoder.layers.0.temp_attn_inst.attention_weights.weight"


def _cfg(config: str, output_dir, **overrides) -> CfgNode:
    """The config file as is when `output_dir` is None, else shrunk to two tiny iterations writing there."""
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    if output_dir is None:
        return cfg
    small = {
        "OUTPUT_DIR": str(output_dir),
        "DATASETS.TEST": "()",
        "DATALOADER.NUM_WORKERS": 0,
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.MAX_ITER": 2,
        "SOLVER.WARMUP_ITERS": 0,
        "SOLVER.CHECKPOINT_PERIOD": 1000,
        "INPUT.MIN_SIZE_TRAIN": "(64,)",
        "INPUT.MAX_SIZE_TRAIN": 96,
        **overrides,
    }
    cfg.merge_from_list([str(item) for pair in small.items() for item in pair])
    return cfg


def _train(cfg: CfgNode) -> tuple[Trainer, dict[str, torch.Tensor]]:
    """Train `cfg`; returns the trainer and the model's weights right after loading MODEL.WEIGHTS."""
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    loaded = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    return trainer, loaded


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory) -> str:
    name = "engine_tests_synthetic_coco_pretrain"
    if name not in DatasetCatalog.list():
        root = tmp_path_factory.mktemp("synthetic_coco")
        write_synthetic_coco(str(root), {"train": 6}, seed=5)
        meta = instances_meta(SYNTHETIC_CATEGORIES)
        register_coco_video_instances(name, meta, str(root / "train.json"), str(root / "train"))
    return name


def test_the_pretraining_recipe_trains_on_images(tiny_coco, tmp_path):
    cfg = _cfg("R18_synthetic_pretrain.yaml", tmp_path, **{"DATASETS.TRAIN": f"('{tiny_coco}',)"})
    assert cfg.INPUT.SAMPLING_FRAME_NUM == 1 and cfg.MODEL.WEIGHTS == ""
    trainer, initial = _train(cfg)
    assert trainer.iter == 2  # MAX_ITER iterations ran
    assert torch.isfinite(torch.tensor(trainer.storage.history("total_loss").latest()))
    final = trainer.model.state_dict()
    assert not torch.equal(
        initial["detr.backbone.0.backbone.stem.conv1.weight"],
        final["detr.backbone.0.backbone.stem.conv1.weight"],
    )


def test_the_second_pretraining_stage_continues_the_first(tiny_coco, tmp_path):
    stage1, stage2 = (
        _cfg("R18_synthetic_pretrain.yaml", None),
        _cfg("R18_synthetic_pretrain_stage2.yaml", None),
    )
    # The same model and data, started from the first stage's final weights (its default path).
    expected_weights = f"{stage1.OUTPUT_DIR}/model_final.pth"
    assert expected_weights == stage2.MODEL.WEIGHTS
    stage1.MODEL.WEIGHTS = expected_weights
    assert (stage1.MODEL, stage1.INPUT, stage1.DATASETS.TRAIN) == (
        stage2.MODEL, stage2.INPUT, stage2.DATASETS.TRAIN
    )  # fmt: skip
    assert stage2.SEED != stage1.SEED and stage2.SOLVER.MAX_ITER > stage1.SOLVER.MAX_ITER

    data = {"DATASETS.TRAIN": f"('{tiny_coco}',)"}
    first, _ = _train(_cfg("R18_synthetic_pretrain.yaml", tmp_path / "stage1", **data))
    finished = {k: v.detach().clone() for k, v in first.model.state_dict().items()}
    weights = str(tmp_path / "stage1" / "model_final.pth")
    second, loaded = _train(
        _cfg("R18_synthetic_pretrain_stage2.yaml", tmp_path / "stage2", **data, **{"MODEL.WEIGHTS": weights})
    )
    assert all(torch.equal(loaded[k], v) for k, v in finished.items())
    assert second.iter == 2


def test_the_shipped_checkpoint_is_small_float16_and_matches_its_sha256():
    assert SHIPPED.stat().st_size < 10 * 2**20
    state = read_checkpoint(str(SHIPPED))["model"]  # verifies the .sha256 beside it
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert state[TEMPORAL_KEY].shape[0] == 4 * 1 * 4  # heads x frames (1: image pre-training) x points


def test_the_shipped_checkpoint_with_a_wrong_sha256_is_refused(tmp_path):
    copy = tmp_path / SHIPPED.name
    shutil.copy(SHIPPED, copy)
    wrong = "0" * 64
    (tmp_path / f"{SHIPPED.name}.sha256").write_text(f"{wrong}  {SHIPPED.name}\n")
    cfg = _cfg("R18_synthetic.yaml", tmp_path / "out", **{"MODEL.WEIGHTS": str(copy)})
    with pytest.raises(CheckpointError) as info:
        Trainer(cfg).resume_or_load(resume=False)
    message = str(info.value)
    assert str(copy) in message and wrong in message and sha256_of(str(copy)) in message


def test_fine_tuning_starts_from_the_inflated_shipped_checkpoint(tmp_path):
    videos = register_two_videos("engine_tests_recipe_2_videos", tmp_path / "videos", 64)
    cfg = _cfg("R18_synthetic.yaml", tmp_path / "out", **{"DATASETS.TRAIN": f"('{videos}',)"})
    assert cfg.INPUT.PRETRAIN_FRAME_NUM == 1 and cfg.INPUT.SAMPLING_FRAME_NUM == 2
    shipped = read_checkpoint(str(SHIPPED))["model"]
    trainer, loaded = _train(cfg)
    # every weight comes from the checkpoint (float16 -> float32), the temporal attention inflated 1 -> 2
    # frames: each frame's slice is the single pre-training frame's
    assert set(shipped) == set(loaded)
    per_frame = loaded[TEMPORAL_KEY].reshape(4, 2, 4, -1)
    for t in range(2):
        assert torch.equal(per_frame[:, t], shipped[TEMPORAL_KEY].float().reshape(4, 4, -1))
    for key, value in shipped.items():
        if ".temp_attn_inst." not in key or key.endswith(("value_proj.weight", "output_proj.weight")):
            assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key
    assert trainer.iter == 2
    final = trainer.model.state_dict()
    assert not torch.equal(final[TEMPORAL_KEY], loaded[TEMPORAL_KEY])
