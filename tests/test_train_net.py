"""train_net.py refuses bad inputs with one `error:` line on stderr, before starting any process or model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT

TINY = "configs/synthetic/tiny.yaml"


def run_train_net(*argv: str, datasets_root: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root)
    return subprocess.run(
        [sys.executable, "train_net.py", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_weights_file(tmp_path):
    missing = str(tmp_path / "no_such_model.pth")
    result = run_train_net("--config-file", TINY, "MODEL.WEIGHTS", missing, datasets_root=str(tmp_path))
    assert_one_line_error(result, "MODEL.WEIGHTS", missing)


def test_unregistered_dataset(tmp_path):
    result = run_train_net(
        "--config-file", TINY, "DATASETS.TEST", '("ytvis_ovis_vall",)', datasets_root=str(tmp_path)
    )
    assert_one_line_error(result, "DATASETS.TEST", "'ytvis_ovis_vall'", "ytvis_ovis_val")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_device_without_gpu(tmp_path):
    result = run_train_net("--config-file", TINY, "MODEL.DEVICE", "cuda", datasets_root=str(tmp_path))
    assert_one_line_error(result, "MODEL.DEVICE", "cuda")


def test_missing_dataset_folder(tmp_path):
    result = run_train_net(
        "--config-file",
        TINY,
        "DATASETS.TRAIN",
        '("ytvis_ovis_train",)',
        "DATASETS.TEST",
        '("ytvis_ovis_dev",)',
        datasets_root=str(tmp_path),
    )
    assert_one_line_error(result, "ytvis_ovis_dev", str(tmp_path))


def test_unknown_config_key(tmp_path):
    result = run_train_net("--config-file", TINY, "SOLVER.NO_SUCH_KEY", "1", datasets_root=str(tmp_path))
    assert_one_line_error(result, "SOLVER.NO_SUCH_KEY")


def test_every_dataset_of_a_key_is_checked(tmp_path):
    # the missing one is not the last name of DATASETS.TEST
    result = run_train_net(
        "--config-file",
        TINY,
        "DATASETS.TEST",
        '("ytvis_ovis_dev", "synthetic_vis_val")',
        datasets_root=str(tmp_path),
    )
    assert_one_line_error(result, "ytvis_ovis_dev", str(tmp_path))


def test_empty_dataset_lists_pass_the_input_checks():
    train_net = _import_train_net()
    cfg = train_net.load_config(str(REPO_ROOT / TINY), ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    train_net.check_run_inputs(cfg, eval_only=False, resume=False)


def _tiny_state_dict(*opts) -> dict:
    from detectron2.modeling import build_model

    cfg = _import_train_net().load_config(str(REPO_ROOT / TINY), [str(o) for o in opts])
    torch.manual_seed(0)
    return build_model(cfg).state_dict()


def _import_train_net():
    import train_net  # the repository root is on pytest's pythonpath

    return train_net


SWIN = ("MODEL.BACKBONE.NAME", "build_swinv2_backbone", "MODEL.SWIN.EMBED_DIM", 16)
SWIN += (
    "MODEL.SWIN.DEPTHS",
    "[1, 1, 1, 1]",
    "MODEL.SWIN.NUM_HEADS",
    "[1, 1, 1, 1]",
    "MODEL.SWIN.WINDOW_SIZE",
    8,
)
BAD_CHECKPOINTS = {
    "classes": (
        ("MODEL.MDQE.NUM_CLASSES", 7),
        "class head has 7 classes, config MODEL.MDQE.NUM_CLASSES is 5",
    ),
    "frames": (
        ("INPUT.SAMPLING_FRAME_NUM", 3, "INPUT.PRETRAIN_FRAME_NUM", 3),
        "decoder temporal attention is for 3 frames, config INPUT.SAMPLING_FRAME_NUM 2: "
        "pass INPUT.PRETRAIN_FRAME_NUM 3 to inflate",
    ),
    "backbone": (SWIN, "Swin (embed dim 16) checkpoint, ResNet-18 config"),
    "truncated": ((), "it is truncated or not a PyTorch checkpoint"),
}


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_eval_only_refuses_a_checkpoint_that_does_not_fit_before_reading_data(tmp_path, kind):
    opts, message = BAD_CHECKPOINTS[kind]
    weights = tmp_path / f"{kind}.pth"
    torch.save({"model": _tiny_state_dict(*opts)}, weights)
    if kind == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    datasets, out = tmp_path / "datasets", tmp_path / "out"
    datasets.mkdir()
    result = run_train_net(
        "--config-file", TINY, "--eval-only", "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out),
        "DATASETS.TEST", '("synthetic_vis_val",)', datasets_root=str(datasets),
    )  # fmt: skip
    assert_one_line_error(result, str(weights), message)
    if kind != "truncated":
        assert f"does not fit the model of {TINY}" in result.stderr
    assert list(datasets.iterdir()) == []  # the synthetic test split was not even generated
    assert not (out / "inference").exists()


def test_eval_only_accepts_the_fitting_checkpoint_and_an_inflatable_one(tmp_path):
    train_net = _import_train_net()
    weights = tmp_path / "tiny.pth"
    torch.save({"model": _tiny_state_dict()}, weights)
    opts = ["DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", str(weights)]
    train_net.check_run_inputs(
        train_net.load_config(str(REPO_ROOT / TINY), opts), eval_only=True, resume=False
    )
    torch.save(
        {"model": _tiny_state_dict("INPUT.SAMPLING_FRAME_NUM", 3, "INPUT.PRETRAIN_FRAME_NUM", 3)}, weights
    )
    cfg = train_net.load_config(str(REPO_ROOT / TINY), [*opts, "INPUT.PRETRAIN_FRAME_NUM", "3"])
    train_net.check_run_inputs(cfg, eval_only=True, resume=False)
