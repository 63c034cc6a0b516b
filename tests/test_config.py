"""add_mdqe_config and configs/: every YAML loads, and the original configs hold the original values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from detectron2.config import CfgNode, get_cfg

from mdqe.config import add_mdqe_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ALL_CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))

# The defaults of the original's add_mdqe_config, plus add_swinl_config, which its train_net.py applied
# to every config. SOLVER.OPTIMIZER is the one exception: add_swinl_config overwrote it with "AdamW",
# a spelling its own optimizer builder rejects; every original YAML sets "ADAMW" back.
ORIGINAL_DEFAULTS: dict[str, Any] = {
    "DATASETS.DATASET_RATIO": [],
    "MODEL.MDQE.NUM_CLASSES": 80,
    "INPUT.PRETRAIN_FRAME_NUM": 1,
    "INPUT.SAMPLING_FRAME_NUM": 3,
    "INPUT.SAMPLING_FRAME_RANGE": 10,
    "INPUT.SAMPLING_FRAME_SHUFFLE": False,
    "INPUT.AUGMENTATIONS": [],
    "INPUT.PSEUDO.AUGMENTATIONS": ["rotation"],
    "INPUT.PSEUDO.MIN_SIZE_TRAIN": (480, 512, 544, 576, 608, 640, 672, 704, 736, 768),
    "INPUT.PSEUDO.MAX_SIZE_TRAIN": 768,
    "INPUT.PSEUDO.MIN_SIZE_TRAIN_SAMPLING": "choice_by_clip",
    "INPUT.PSEUDO.CROP.ENABLED": False,
    "INPUT.PSEUDO.CROP.TYPE": "absolute_range",
    "INPUT.PSEUDO.CROP.SIZE": (384, 600),
    "INPUT.LSJ_AUG.ENABLED": False,
    "INPUT.LSJ_AUG.IMAGE_SIZE": 1024,
    "INPUT.LSJ_AUG.MIN_SCALE": 0.1,
    "INPUT.LSJ_AUG.MAX_SCALE": 2.0,
    "MODEL.MDQE.BOX_WEIGHT": 2.0,
    "MODEL.MDQE.MASK_WEIGHT": 4.0,
    "MODEL.MDQE.DICE_WEIGHT": 4.0,
    "MODEL.MDQE.DEEP_SUPERVISION": True,
    "MODEL.MDQE.NO_OBJECT_WEIGHT": 1,
    "MODEL.MDQE.MASK_STRIDE": 4,
    "MODEL.MDQE.MATCH_STRIDE": 4,
    "MODEL.MDQE.MASK_DIM": 32,
    "MODEL.MDQE.NUM_MASK_LAYERS": 1,
    "MODEL.MDQE.NHEADS": 8,
    "MODEL.MDQE.DROPOUT": 0.1,
    "MODEL.MDQE.MLP_RATIO": 4,
    "MODEL.MDQE.ENC_LAYERS": 6,
    "MODEL.MDQE.DEC_LAYERS": 6,
    "MODEL.MDQE.PRE_NORM": False,
    "MODEL.MDQE.HIDDEN_DIM": 256,
    "MODEL.MDQE.NUM_OBJECT_QUERIES": 200,
    "MODEL.MDQE.NUM_FEATURE_LEVELS": 4,
    "MODEL.MDQE.ENC_NUM_POINTS": 4,
    "MODEL.MDQE.DEC_NUM_POINTS": 4,
    "MODEL.MDQE.DEC_TEMPORAL": True,
    "MODEL.MDQE.QUERY_EMBED_DIM": 64,
    "MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION": 5,
    "MODEL.MDQE.INTERINST_MASK_LOSS_ENABLED": True,
    "MODEL.MDQE.INTERINST_MASK_THRESHOLD": 0.1,
    "MODEL.MDQE.CLIP_STRIDE": 1,
    "MODEL.MDQE.SAMPLING_FRAME_NUM_TEST": 5,
    "MODEL.MDQE.WINDOW_FRAME_NUM_TEST": 20,
    "MODEL.MDQE.MAX_NUM_INSTANCES": 50,
    "MODEL.MDQE.MERGE_ON_CPU": False,
    "MODEL.MDQE.MULTI_CLS_ON": True,
    "MODEL.MDQE.APPLY_CLS_THRES": 0.05,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.BACKBONE_MULTIPLIER": 0.1,
    "SOLVER.NUM_PRETRAIN_FRAMES": 1,
    "MODEL.SWIN.EMBED_DIM": 192,
    "MODEL.SWIN.OUT_FEATURES": ["stage3", "stage4", "stage5"],
    "MODEL.SWIN.DEPTHS": [2, 2, 18, 2],
    "MODEL.SWIN.NUM_HEADS": [6, 12, 24, 48],
    "MODEL.SWIN.WINDOW_SIZE": 24,
    "MODEL.SWIN.MLP_RATIO": 4,
    "MODEL.SWIN.DROP_PATH_RATE": 0.2,
    "MODEL.SWIN.APE": False,
    "MODEL.FPN.TOP_LEVELS": 2,
    "MODEL.BACKBONE.FREEZE_AT": -1,
}


def _sizes(first: int, last: int) -> list[int]:
    return list(range(first, last + 1, 32))


# Values after _BASE_ inheritance, from the digest's per-config tables (shared/reference/mdqe_digest.md §2.3).
_R50_SHARED = {
    "MODEL.META_ARCHITECTURE": "MDQE",
    "MODEL.MASK_ON": True,
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
    "INPUT.FORMAT": "RGB",
    "MODEL.RESNETS.OUT_FEATURES": ["res3", "res4", "res5"],
    "MODEL.MDQE.NUM_OBJECT_QUERIES": 200,
    "MODEL.MDQE.HIDDEN_DIM": 256,
    "MODEL.MDQE.QUERY_EMBED_DIM": 64,
    "SOLVER.WARMUP_FACTOR": 1.0,
    "SOLVER.WARMUP_ITERS": 10,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.01,
    "INPUT.RANDOM_FLIP": "flip_by_clip",
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice_by_clip",
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": True,
    "MODEL.BACKBONE.FREEZE_AT": -1,
}
_SWINL_SHARED = {
    "MODEL.META_ARCHITECTURE": "MDQE",
    "MODEL.BACKBONE.NAME": "build_swinv2_backbone",
    "MODEL.SWIN.EMBED_DIM": 192,
    "MODEL.SWIN.DEPTHS": [2, 2, 18, 2],
    "MODEL.SWIN.NUM_HEADS": [6, 12, 24, 48],
    "MODEL.SWIN.WINDOW_SIZE": 12,
    "MODEL.SWIN.DROP_PATH_RATE": 0.2,
    "MODEL.MDQE.HIDDEN_DIM": 192,
    "MODEL.MDQE.NUM_OBJECT_QUERIES": 200,
    "SOLVER.IMS_PER_BATCH": 8,
    "SOLVER.BASE_LR": 5e-5,
    "SOLVER.WEIGHT_DECAY": 0.05,
    "SOLVER.OPTIMIZER": "ADAMW",
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": False,
}
_VIDEO_R50 = {
    "DATASETS.DATASET_RATIO": [0.75, 1.0],
    "SOLVER.STEPS": [10000],
    "SOLVER.MAX_ITER": 12000,
    "SOLVER.WEIGHT_DECAY": 1e-4,
    "SOLVER.CHECKPOINT_PERIOD": 2000,
    "TEST.EVAL_PERIOD": 2000,
    "INPUT.SAMPLING_FRAME_NUM": 4,
    "INPUT.SAMPLING_FRAME_RANGE": 10,
    "INPUT.PRETRAIN_FRAME_NUM": 4,
    "INPUT.CROP.TYPE": "relative_range",
    "INPUT.CROP.SIZE": [0.8, 0.8],
    "INPUT.PSEUDO.AUGMENTATIONS": ["rotation"],
    "INPUT.PSEUDO.CROP.ENABLED": True,
    "INPUT.PSEUDO.CROP.TYPE": "absolute_range",
    "INPUT.PSEUDO.CROP.SIZE": [384, 600],
    "MODEL.MDQE.SAMPLING_FRAME_NUM_TEST": 4,
    "MODEL.MDQE.CLIP_STRIDE": 1,
    "MODEL.WEIGHTS": "pretrained/coco/mdqe_r50_coco_bs16_3x_f4_ft.pth",
}
_R50_YTVIS = {
    **_VIDEO_R50,
    "MODEL.MDQE.NUM_CLASSES": 40,
    "MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION": 7,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BASE_LR": 1e-4,
    "INPUT.MIN_SIZE_TRAIN": _sizes(320, 512),
    "INPUT.MAX_SIZE_TRAIN": 800,
    "INPUT.MIN_SIZE_TEST": 360,
    "INPUT.PSEUDO.MIN_SIZE_TRAIN": _sizes(320, 512),
    "INPUT.PSEUDO.MAX_SIZE_TRAIN": 800,
    "MODEL.MDQE.WINDOW_FRAME_NUM_TEST": 30,
    "MODEL.MDQE.MAX_NUM_INSTANCES": 70,
    "MODEL.MDQE.MERGE_ON_CPU": False,
    "MODEL.MDQE.APPLY_CLS_THRES": 0.1,
    "TEST.DETECTIONS_PER_IMAGE": 10,
}
_COCO_R = {
    "MODEL.MDQE.NUM_CLASSES": 80,
    "MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION": 5,
    "DATASETS.TRAIN": ["coco_2017_train"],
    "DATASETS.TEST": ["coco_2017_val"],
    "DATASETS.DATASET_RATIO": [],
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BASE_LR": 1e-4,
    "SOLVER.STEPS": [236000],
    "SOLVER.MAX_ITER": 267000,
    "SOLVER.WEIGHT_DECAY": 0.05,
    "SOLVER.CHECKPOINT_PERIOD": 5000,
    "INPUT.SAMPLING_FRAME_NUM": 1,
    "INPUT.SAMPLING_FRAME_RANGE": 10,
    "INPUT.PRETRAIN_FRAME_NUM": 1,
    "INPUT.MIN_SIZE_TRAIN": _sizes(320, 672),
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.CROP.TYPE": "absolute_range",
    "INPUT.CROP.SIZE": [384, 600],
    "MODEL.MDQE.SAMPLING_FRAME_NUM_TEST": 5,
    "MODEL.MDQE.WINDOW_FRAME_NUM_TEST": 20,
    "MODEL.MDQE.MAX_NUM_INSTANCES": 50,
    "MODEL.MDQE.MERGE_ON_CPU": False,
    "MODEL.MDQE.APPLY_CLS_THRES": 0.05,
    "TEST.DETECTIONS_PER_IMAGE": 100,
    "TEST.EVAL_PERIOD": 5000,
}
_SWINL_YTVIS = {
    **_SWINL_SHARED,
    "MODEL.WEIGHTS": "pretrained/mdqe_swinl_patch4_window24_384_22k_coco_bs8_3x_f1.pth",
    "MODEL.MDQE.NUM_CLASSES": 40,
    "MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION": 7,
    "DATASETS.DATASET_RATIO": [0.75, 1.0],
    "SOLVER.STEPS": [20000],
    "SOLVER.MAX_ITER": 24000,
    "INPUT.SAMPLING_FRAME_NUM": 3,
    "INPUT.SAMPLING_FRAME_RANGE": 10,
    "INPUT.PRETRAIN_FRAME_NUM": 4,
    "INPUT.MIN_SIZE_TRAIN": _sizes(320, 544),
    "INPUT.MAX_SIZE_TRAIN": 1024,
    "INPUT.MIN_SIZE_TEST": 360,
    "INPUT.CROP.TYPE": "relative_range",
    "INPUT.CROP.SIZE": [0.7, 0.7],
    "INPUT.PSEUDO.MIN_SIZE_TRAIN": _sizes(320, 544),
    "INPUT.PSEUDO.MAX_SIZE_TRAIN": 1024,
    "INPUT.PSEUDO.CROP.TYPE": "absolute_range",
    "INPUT.PSEUDO.CROP.SIZE": [384, 600],
    "MODEL.MDQE.SAMPLING_FRAME_NUM_TEST": 4,
    "MODEL.MDQE.WINDOW_FRAME_NUM_TEST": 20,
    "MODEL.MDQE.MAX_NUM_INSTANCES": 70,
    "MODEL.MDQE.MERGE_ON_CPU": False,
    "MODEL.MDQE.APPLY_CLS_THRES": 0.1,
    "TEST.DETECTIONS_PER_IMAGE": 10,
    "TEST.EVAL_PERIOD": 5000,
}

EXPECTED: dict[str, dict[str, Any]] = {
    "R50_coco": {
        **_R50_SHARED,
        **_COCO_R,
        "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/torchvision/R-50.pkl",
        "MODEL.RESNETS.DEPTH": 50,
        "MODEL.RESNETS.STRIDE_IN_1X1": False,
        "OUTPUT_DIR": "output/coco/mdqe_r50_coco_bs16_3x_f1/",
    },
    "R101_coco": {
        **_R50_SHARED,
        **_COCO_R,
        "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-101.pkl",
        "MODEL.RESNETS.DEPTH": 101,
        "MODEL.RESNETS.STRIDE_IN_1X1": True,
        "OUTPUT_DIR": "output/coco/mdqe_r101_coco_bs16_3x_f1/",
    },
    "R50_ovis_360": {
        **_R50_SHARED,
        **_VIDEO_R50,
        "MODEL.MDQE.NUM_CLASSES": 25,
        "MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION": 5,
        "DATASETS.TRAIN": ["coco2ovis_train", "ytvis_ovis_train"],
        "DATASETS.TEST": ["ytvis_ovis_val"],
        "SOLVER.IMS_PER_BATCH": 16,
        "SOLVER.BASE_LR": 1e-4,
        "INPUT.MIN_SIZE_TRAIN": _sizes(320, 512),
        "INPUT.MAX_SIZE_TRAIN": 800,
        "INPUT.MIN_SIZE_TEST": 360,
        "INPUT.PSEUDO.MIN_SIZE_TRAIN": _sizes(320, 512),
        "INPUT.PSEUDO.MAX_SIZE_TRAIN": 800,
        "MODEL.MDQE.WINDOW_FRAME_NUM_TEST": 30,
        "MODEL.MDQE.MAX_NUM_INSTANCES": 120,
        "MODEL.MDQE.MERGE_ON_CPU": False,
        "MODEL.MDQE.APPLY_CLS_THRES": 0.1,
        "TEST.DETECTIONS_PER_IMAGE": 15,
        "OUTPUT_DIR": "output/ovis/mdqe_r50_ovis_bs16_360p_f4/",
    },
    "R50_ovis_720": {
        **_R50_SHARED,
        **_VIDEO_R50,
        "MODEL.MDQE.NUM_CLASSES": 25,
        "MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION": 5,
        "DATASETS.TRAIN": ["coco2ovis_train", "ytvis_ovis_train"],
        "DATASETS.TEST": ["ytvis_ovis_val"],
        "SOLVER.IMS_PER_BATCH": 8,
        "SOLVER.BASE_LR": 5e-5,
        "INPUT.MIN_SIZE_TRAIN": _sizes(480, 800),
        "INPUT.MAX_SIZE_TRAIN": 1333,
        "INPUT.MIN_SIZE_TEST": 640,
        "INPUT.PSEUDO.MIN_SIZE_TRAIN": _sizes(480, 800),
        "INPUT.PSEUDO.MAX_SIZE_TRAIN": 1333,
        "MODEL.MDQE.WINDOW_FRAME_NUM_TEST": 20,
        "MODEL.MDQE.MAX_NUM_INSTANCES": 120,
        "MODEL.MDQE.MERGE_ON_CPU": True,
        "MODEL.MDQE.APPLY_CLS_THRES": 0.2,
        "TEST.DETECTIONS_PER_IMAGE": 15,
        "OUTPUT_DIR": "output/ovis/mdqe_r50_ovis_bs8_720p_f4/",
    },
    "R50_ytvis21": {
        **_R50_SHARED,
        **_R50_YTVIS,
        "DATASETS.TRAIN": ["coco2ytvis2021_train", "ytvis_2021_train"],
        "DATASETS.TEST": ["ytvis_2021_val"],
        "OUTPUT_DIR": "output/ytvis/mdqe_r50_ytvis21_bs16_360p_f4/",
    },
    "R50_ytvis19": {
        **_R50_SHARED,
        **_R50_YTVIS,
        "DATASETS.TRAIN": ["coco2ytvis2019_train", "ytvis_2019_train"],
        "DATASETS.TEST": ["ytvis_2019_val"],
        "OUTPUT_DIR": "output/ytvis/mdqe_r50_ytvis19_bs16_360p_f4/",
    },
    "R101_ytvis19": {
        **_R50_SHARED,
        **_R50_YTVIS,
        "MODEL.WEIGHTS": "pretrained/coco/mdqe_r101_coco_bs16_3x_f1.pth",
        "MODEL.RESNETS.DEPTH": 101,
        "MODEL.RESNETS.STRIDE_IN_1X1": True,
        "DATASETS.TRAIN": ["coco2ytvis2019_train", "ytvis_2019_train"],
        "DATASETS.TEST": ["ytvis_2019_val"],
        "OUTPUT_DIR": "output/ytvis/mdqe_r101_ytvis19_bs16_360p_f4/",
    },
    "swinl_coco": {
        **_SWINL_SHARED,
        "MODEL.WEIGHTS": "pretrained/imagenet/swinv2_large_patch4_window12_192_22k_d2.pth",
        "MODEL.MDQE.NUM_CLASSES": 80,
        "MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION": 5,
        "DATASETS.TRAIN": ["coco_2017_train"],
        "DATASETS.TEST": ["coco_2017_val"],
        "SOLVER.STEPS": [472000],
        "SOLVER.MAX_ITER": 534000,
        "INPUT.SAMPLING_FRAME_NUM": 1,
        "INPUT.PRETRAIN_FRAME_NUM": 1,
        "INPUT.MIN_SIZE_TRAIN": _sizes(352, 800),
        "INPUT.MAX_SIZE_TRAIN": 1333,
        "INPUT.MIN_SIZE_TEST": 800,
        "INPUT.CROP.TYPE": "absolute_range",
        "MODEL.MDQE.SAMPLING_FRAME_NUM_TEST": 5,
        "MODEL.MDQE.MAX_NUM_INSTANCES": 50,
        "MODEL.MDQE.APPLY_CLS_THRES": 0.05,
        "TEST.DETECTIONS_PER_IMAGE": 100,
        "OUTPUT_DIR": "output/coco/mdqe_swinl_patch4_window24_384_22k_coco_bs8_3x_f1/",
    },
    "swinl_ovis": {
        **_SWINL_SHARED,
        "MODEL.WEIGHTS": "pretrained/mdqe_swinl_patch4_window24_384_22k_coco_bs8_3x_f1.pth",
        "MODEL.MDQE.NUM_CLASSES": 25,
        "MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION": 5,
        "DATASETS.TRAIN": ["coco2ovis_train", "ytvis_ovis_train"],
        "DATASETS.TEST": ["ytvis_ovis_val"],
        "DATASETS.DATASET_RATIO": [0.75, 1.0],
        "SOLVER.STEPS": [20000],
        "SOLVER.MAX_ITER": 24000,
        "INPUT.SAMPLING_FRAME_NUM": 2,
        "INPUT.SAMPLING_FRAME_RANGE": 7,
        "INPUT.PRETRAIN_FRAME_NUM": 1,
        "INPUT.MIN_SIZE_TRAIN": _sizes(480, 736),
        "INPUT.MAX_SIZE_TRAIN": 1024,
        "INPUT.MIN_SIZE_TEST": 480,
        "INPUT.CROP.TYPE": "relative_range",
        "INPUT.CROP.SIZE": [0.8, 0.8],
        "INPUT.PSEUDO.MIN_SIZE_TRAIN": _sizes(480, 736),
        "INPUT.PSEUDO.MAX_SIZE_TRAIN": 1024,
        "MODEL.MDQE.SAMPLING_FRAME_NUM_TEST": 2,
        "MODEL.MDQE.WINDOW_FRAME_NUM_TEST": 20,
        "MODEL.MDQE.MAX_NUM_INSTANCES": 120,
        "MODEL.MDQE.MERGE_ON_CPU": True,
        "MODEL.MDQE.APPLY_CLS_THRES": 0.1,
        "TEST.DETECTIONS_PER_IMAGE": 15,
        "TEST.EVAL_PERIOD": 5000,
        "OUTPUT_DIR": "output/ovis/mdqe_swinl_ovis_bs8_f2/",
    },
    "swinl_ytvis21": {
        **_SWINL_YTVIS,
        "DATASETS.TRAIN": ["coco2ytvis2021_train", "ytvis_2021_train"],
        "DATASETS.TEST": ["ytvis_2021_val"],
        "OUTPUT_DIR": "output/ytvis/mdqe_swinl_ytvis21_bs8_f3/",
    },
    "swinl_ytvis19": {
        **_SWINL_YTVIS,
        "DATASETS.TRAIN": ["coco2ytvis2019_train", "ytvis_2019_train"],
        "DATASETS.TEST": ["ytvis_2019_val"],
        "OUTPUT_DIR": "output/ytvis/mdqe_r50_ytvis19_bs8_f3/",
    },
}


def _mdqe_cfg() -> CfgNode:
    cfg = get_cfg()
    add_mdqe_config(cfg)
    return cfg


def _load(path: Path) -> CfgNode:
    cfg = _mdqe_cfg()
    cfg.merge_from_file(str(path))
    return cfg


def _lookup(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _flatten(node: CfgNode, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in node.items():
        if isinstance(value, CfgNode):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _as_plain(value: Any) -> Any:
    # yacs keeps a tuple default as a tuple when a YAML gives a list; the values are what matter here.
    return list(value) if isinstance(value, tuple) else value


def _mismatches(cfg: CfgNode, expected: dict[str, Any]) -> list[str]:
    return [
        f"{key}: expected {value!r}, found {_lookup(cfg, key)!r}"
        for key, value in expected.items()
        if _as_plain(_lookup(cfg, key)) != _as_plain(value)
    ]


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_config_loads(path: Path) -> None:
    cfg = _load(path)
    assert cfg.MODEL.META_ARCHITECTURE == "MDQE", path


def test_original_configs_are_all_present() -> None:
    present = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert set(EXPECTED) <= present, sorted(set(EXPECTED) - present)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_original_config_values(name: str) -> None:
    cfg = _load(CONFIG_DIR / f"{name}.yaml")
    assert _mismatches(cfg, EXPECTED[name]) == []


def test_defaults_equal_the_originals() -> None:
    assert _mismatches(_mdqe_cfg(), ORIGINAL_DEFAULTS) == []


# Keys the original does not have, each with the default that reproduces the original's behaviour (the
# options of training from scratch, see mdqe/modeling/mask_head.py). Any other key is a defect.
EXTENSIONS: dict[str, Any] = {
    "MODEL.MDQE.MASK_FEAT_INIT_SCALE": 1.0,
    "MODEL.MDQE.MASK_FEAT_DIM": 0,
    # the registry names of the swappable parts and the loss list/weights (mdqe/modeling/build.py)
    "MODEL.MDQE.ENCODER_NAME": "DeformableEncoder",
    "MODEL.MDQE.DECODER_NAME": "QueryDecoder",
    "MODEL.MDQE.CRITERION_NAME": "SetCriterion",
    "MODEL.MDQE.MATCHER_NAME": "HungarianMatcher",
    "MODEL.MDQE.LOSSES": ["query_init_labels", "query_init_reid", "labels", "boxes", "masks"],
    "MODEL.MDQE.CLASS_WEIGHT": 2.0,
    "MODEL.MDQE.REID_WEIGHT": 0.5,
    "MODEL.MDQE.EXTRA_LOSS_WEIGHTS": [],
    # execution options of the network (mdqe/modeling/compile.py, meta_arch.py): eager float32 by default
    "MODEL.MDQE.COMPILE": False,
    "MODEL.MDQE.CHANNELS_LAST": False,
    "MODEL.MDQE.AUTOCAST_BF16": False,
}


def test_adds_exactly_the_original_keys_and_the_listed_extensions_and_changes_only_freeze_at() -> None:
    base = _flatten(get_cfg())
    extended = _flatten(_mdqe_cfg())
    original = set(ORIGINAL_DEFAULTS) - {"MODEL.BACKBONE.FREEZE_AT"}
    assert set(extended) - set(base) == original | set(EXTENSIONS)
    assert {key: extended[key] for key in EXTENSIONS} == EXTENSIONS
    changed = {key for key in base if base[key] != extended[key]}
    assert changed == {"MODEL.BACKBONE.FREEZE_AT"}


def test_defaults_keep_the_original_types() -> None:
    # yacs refuses an override whose type differs from the default's (e.g. int -> float), so the
    # defaults' types decide which YAML values merge.
    cfg = _mdqe_cfg()
    for key, value in ORIGINAL_DEFAULTS.items():
        assert type(_lookup(cfg, key)) is type(value), key


def test_unknown_key_in_yaml_raises(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(f'_BASE_: "{CONFIG_DIR / "R50_ovis_360.yaml"}"\nMODEL:\n  MDQE:\n    NUM_CLASS: 25\n')
    with pytest.raises(KeyError, match="NUM_CLASS"):
        _load(path)


def test_base_inheritance_overrides_only_what_the_child_sets() -> None:
    ytvis21 = _flatten(_load(CONFIG_DIR / "R50_ytvis21.yaml"))
    ytvis19 = _flatten(_load(CONFIG_DIR / "R50_ytvis19.yaml"))
    differing = {key for key in ytvis21 if ytvis21[key] != ytvis19[key]}
    assert differing == {"DATASETS.TRAIN", "DATASETS.TEST", "OUTPUT_DIR"}
