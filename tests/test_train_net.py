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
    sys.path.insert(0, str(REPO_ROOT))
    try:
        import train_net
    finally:
        sys.path.remove(str(REPO_ROOT))
    cfg = train_net.load_config(str(REPO_ROOT / TINY), ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    train_net.check_run_inputs(cfg, eval_only=False, resume=False)
