"""Issue 23, checkpoints: a crafted .pkl and a crafted .pth (each would create a marker file when unpickled)
passed to `train_net.py --eval-only MODEL.WEIGHTS`, `tools/demo.py` and `tools/convert_pretrained.py` end
each tool with one clear line and run nothing; a model-zoo .pkl of numpy arrays and a .pth with optimizer
and scheduler state load unchanged through the same paths."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from mdqe.checkpoint import load_for_inference
from mdqe.predictor import VideoPredictor
from tests.conftest import REPO_ROOT
from tools import convert_pretrained

TINY = "configs/synthetic/tiny.yaml"
SYSTEM = f"{os.system.__module__}.system"


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tiny_state() -> dict[str, torch.Tensor]:
    import train_net

    torch.manual_seed(0)
    return build_model(train_net.load_config(str(REPO_ROOT / TINY), [])).state_dict()


def _write_video(path: Path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 6, (64, 48))
    for t in range(4):
        writer.write(np.full((48, 64, 3), 40 * t, np.uint8))
    writer.release()


def _commands(weights: Path, tmp_path: Path) -> dict[str, list[str]]:
    return {
        "train_net.py --eval-only": [
            "train_net.py", "--config-file", TINY, "--eval-only", "MODEL.WEIGHTS", str(weights),
            "OUTPUT_DIR", str(tmp_path / f"out_{weights.suffix[1:]}"),
        ],
        "tools/demo.py": [
            "tools/demo.py", "--config-file", TINY, "--input", str(tmp_path / "in.mp4"),
            "--output", str(tmp_path / f"demo_{weights.suffix[1:]}.mp4"),
            "--opts", "MODEL.WEIGHTS", str(weights),
        ],
        "tools/convert_pretrained.py": [
            "tools/convert_pretrained.py", "release", "--src", str(weights),
            "--dst", str(tmp_path / f"release_{weights.suffix[1:]}.pth"),
        ],
    }  # fmt: skip


@pytest.mark.slow
def test_a_crafted_checkpoint_runs_nothing_in_any_tool_and_each_says_why_in_one_line(tmp_path):
    marker = tmp_path / "marker"
    state = _tiny_state()
    pkl, pth = tmp_path / "crafted.pkl", tmp_path / "crafted.pth"
    pkl.write_bytes(
        pickle.dumps({"model": {k: v.numpy() for k, v in state.items()}, "__author__": RunsACommand(marker)})
    )
    torch.save({"model": state, "trainer": RunsACommand(marker)}, pth)
    _write_video(tmp_path / "in.mp4")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    runs = {
        (tool, weights.name): command
        for weights in (pkl, pth)
        for tool, command in _commands(weights, tmp_path).items()
    }

    def run(command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *command], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(runs, pool.map(run, runs.values())))
    for (tool, name), result in results.items():
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0, (tool, name)
        assert len(lines) == 1 and "Traceback" not in result.stderr, (tool, name, result.stderr[-2000:])
        assert lines[0] == (
            f"error: refusing checkpoint {tmp_path / name}: it asks for the Python global {SYSTEM}, which a "
            "weights file never needs (loading a checkpoint never runs code from it)"
        ), (tool, name)
    assert not marker.exists()
    assert not list(tmp_path.glob("release_*")) and not list(tmp_path.glob("demo_*"))


def test_a_model_zoo_pkl_and_a_pth_with_optimizer_state_load_unchanged_through_the_same_paths(tmp_path):
    import train_net

    state = _tiny_state()
    pkl, pth = tmp_path / "model_zoo.pkl", tmp_path / "model_0000007.pth"
    pkl.write_bytes(
        pickle.dumps(
            {"model": {k: v.numpy() for k, v in state.items()}, "__author__": "Detectron2 Model Zoo"}
        )
    )
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    optimizer.param_groups[0]["params"][0].grad = torch.ones(3)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 5)
    torch.save(
        {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "iteration": 7,
        },
        pth,
    )

    def assert_unchanged(loaded: dict[str, torch.Tensor]) -> None:
        assert list(loaded) == list(state)
        assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in state.items())

    for weights in (pkl, pth):
        opts = ["MODEL.WEIGHTS", str(weights), "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path / "out")]
        cfg = train_net.load_config(str(REPO_ROOT / TINY), opts)
        train_net.check_run_inputs(cfg, eval_only=True, resume=False)  # --eval-only's early check
        model = build_model(cfg)
        load_for_inference(model, str(weights), cfg, TINY)  # what train_net.main evaluates
        assert_unchanged(model.state_dict())
        assert_unchanged(VideoPredictor(cfg, config_name=TINY).model.state_dict())  # tools/demo.py's model
        released = tmp_path / f"released_{weights.suffix[1:]}.pth"
        convert_pretrained.main(["release", "--src", str(weights), "--dst", str(released)])
        assert_unchanged(torch.load(released, weights_only=True)["model"])
