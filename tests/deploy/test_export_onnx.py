"""ONNX export of the synthetic main job's model (the shipped checkpoint through
configs/synthetic/R18_synthetic.yaml) in both --msda modes, and `OnnxVideoPredictor` against
`VideoPredictor` on held-out synthetic videos.

Each export takes ~40 s on a 2-core CPU (torch.export and the ONNX translation of three graphs); the
module exports each mode once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from detectron2.config import get_cfg
from pycocotools import mask as mask_utils

import mdqe.modeling.deform_attn as deform_attn
import tools.export_onnx as export_tool
from mdqe.config import add_mdqe_config
from mdqe.data.synthetic import split_video
from mdqe.deploy import DeployError, OnnxVideoPredictor, export_onnx
from mdqe.deploy.export import _build_model
from mdqe.deploy.graphs import ClipDecoder, FrameEncoder
from mdqe.deploy.manifest import MANIFEST_NAME
from mdqe.deploy.msda_onnx import TRT_PLUGIN_DOMAIN, TRT_PLUGIN_NAME
from mdqe.predictor import VideoPredictor

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/synthetic/R18_synthetic.yaml"


def main_job_cfg():
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(ROOT / CONFIG))
    cfg.MODEL.WEIGHTS = str(ROOT / cfg.MODEL.WEIGHTS)
    return cfg


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for mode in ("gridsample", "tensorrt"):
        directory = tmp_path_factory.mktemp(mode)
        export_onnx(main_job_cfg(), directory, msda=mode, force=True, config_name=CONFIG)
        out[mode] = directory
    return out


@pytest.fixture(scope="module")
def predictors(exports):
    return VideoPredictor(main_job_cfg(), CONFIG), OnnxVideoPredictor(exports["gridsample"])


def _decode(rle, shape) -> np.ndarray:
    return np.zeros(shape, bool) if rle is None else mask_utils.decode(rle).astype(bool)


@pytest.mark.parametrize("mode", ["gridsample", "tensorrt"])
def test_every_exported_graph_passes_the_onnx_checker(exports, mode):
    manifest = json.loads((exports[mode] / MANIFEST_NAME).read_text())
    assert sorted(manifest["graphs"]) == ["clip_decoder_T1", "clip_decoder_T2", "frame_encoder"]
    for graph in manifest["graphs"].values():
        onnx.checker.check_model(str(exports[mode] / graph["file"]), full_check=mode == "gridsample")
    frame_encoder = manifest["graphs"]["frame_encoder"]
    assert frame_encoder["inputs"] == [{"name": "frames", "shape": ["frames", 3, "height", "width"]}]
    assert manifest["opset"] == 18 and manifest["test_resize"]["min_size"] == 240
    assert len(manifest["weights_sha256"]) == 64


def _attention_calls(module: torch.nn.Module, args: tuple) -> int:
    calls = []
    real = deform_attn.ms_deform_attn
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(deform_attn, "ms_deform_attn", lambda *a: calls.append(1) or real(*a))
        module(*args)
    return len(calls)


def test_the_tensorrt_graphs_hold_one_plugin_node_per_attention_call_with_its_five_inputs(exports):
    model = _build_model(main_job_cfg(), CONFIG)
    frames = torch.rand(2, 3, 240, 320) * 255
    with torch.no_grad():
        named = dict(zip(_output_names(exports["tensorrt"]), FrameEncoder(model)(frames)))
    expected = {"frame_encoder": _attention_calls(FrameEncoder(model), (frames,))}
    for t in (1, 2):
        inputs = [named["spatial_shapes"]] + [named[n][:t] for n in _input_names(exports["tensorrt"], t)[1:]]
        expected[f"clip_decoder_T{t}"] = _attention_calls(ClipDecoder(model, t), tuple(inputs))
    # 2 encoder layers; 3 decoder layers of 1 spatial + 4 temporal (one per feature level) calls
    assert expected == {"frame_encoder": 2, "clip_decoder_T1": 15, "clip_decoder_T2": 15}
    for name, count in expected.items():
        graph = onnx.load(str(exports["tensorrt"] / f"{name}.onnx"))
        producers = {out: node for node in graph.graph.node for out in node.output}
        plugins = [n for n in graph.graph.node if n.op_type == TRT_PLUGIN_NAME]
        assert len(plugins) == count, name
        for node in plugins:
            assert node.domain == TRT_PLUGIN_DOMAIN and len(node.input) == 5
            # spatial_shapes and level_start_index as int32, the plugin's index type
            for index_input in node.input[1:3]:
                cast = producers[index_input]
                assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.INT32
        # the standard-op decomposition is gone: the only GridSample left is the query selection's
        grid_samples = [n for n in graph.graph.node if n.op_type == "GridSample"]
        assert len(grid_samples) == (4 if name == "frame_encoder" else 0), name


def _output_names(directory: Path) -> list[str]:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    return [o["name"] for o in manifest["graphs"]["frame_encoder"]["outputs"]]


def _input_names(directory: Path, num_frames: int) -> list[str]:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    return [i["name"] for i in manifest["graphs"][f"clip_decoder_T{num_frames}"]["inputs"]]


@pytest.mark.parametrize("video_index", [5, 17])
def test_onnx_predictor_gives_the_instances_of_the_video_predictor_on_a_held_out_video(
    predictors, video_index
):
    torch_predictor, onnx_predictor = predictors
    frames = list(split_video("valid", video_index).frames)
    expected, found = torch_predictor(frames), onnx_predictor(frames)
    assert found["image_size"] == expected["image_size"] == frames[0].shape[:2]
    assert len(found["pred_scores"]) == len(expected["pred_scores"]) > 0
    assert found["pred_labels"] == expected["pred_labels"]
    np.testing.assert_allclose(found["pred_scores"], expected["pred_scores"], atol=1e-3, rtol=0)
    shape = frames[0].shape[:2]
    for i, (mine, ref) in enumerate(zip(found["pred_masks"], expected["pred_masks"])):
        for t, (a, b) in enumerate(zip(mine, ref)):
            differ = (_decode(a, shape) != _decode(b, shape)).sum()
            assert differ <= 0.005 * shape[0] * shape[1], f"instance {i} frame {t}: {differ} pixels differ"
    assert onnx_predictor.class_names == torch_predictor.class_names


def test_frames_of_the_wrong_type_are_one_clear_error(predictors):
    _, onnx_predictor = predictors
    frame = split_video("valid", 5).frames[0]
    with pytest.raises(TypeError, match="frame 1 is a Tensor"):
        onnx_predictor([frame, torch.from_numpy(frame)])
    with pytest.raises(ValueError, match=r"frame 0 is float32 of shape \(224, 160, 3\), expected"):
        onnx_predictor([frame.astype(np.float32)])
    with pytest.raises(ValueError, match="same size"):
        onnx_predictor([frame, frame[:100]])
    with pytest.raises(TypeError, match="list of"):
        onnx_predictor(frame)


def test_a_folder_without_manifest_or_with_a_foreign_weights_hash_is_refused(exports, tmp_path):
    with pytest.raises(DeployError, match=r"has no manifest\.json"):
        OnnxVideoPredictor(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(exports["gridsample"], copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["weights_sha256"] = "0" * 64
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(
        DeployError, match=r"exported from weights with sha256 .* but the manifest names 0000"
    ):
        OnnxVideoPredictor(copy)
    with open(copy / "clip_decoder_T1.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DeployError, match=r"clip_decoder_T1\.onnx: sha256 .* differs from the manifest"):
        OnnxVideoPredictor(copy)
    with pytest.raises(DeployError, match=r"--msda tensorrt: .* onnxruntime cannot run"):
        OnnxVideoPredictor(exports["tensorrt"])


def test_the_tool_refuses_an_occupied_folder_and_an_unexportable_config_in_one_line(
    exports, capsys, tmp_path
):
    before = {p.name: p.stat().st_mtime_ns for p in exports["gridsample"].iterdir()}
    assert (
        export_tool.main(["--config-file", str(ROOT / CONFIG), "--output", str(exports["gridsample"])]) == 1
    )
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --output {exports['gridsample']} is not empty; pass --force to overwrite its files"
    ]
    assert {p.name: p.stat().st_mtime_ns for p in exports["gridsample"].iterdir()} == before
    args = ["--config-file", str(ROOT / CONFIG), "--output", str(tmp_path / "img")]
    assert export_tool.main([*args, "DATASETS.TEST", "('synthetic_coco_val',)"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "image test set" in line
    assert export_tool.main([*args, "MODEL.WEIGHTS", str(tmp_path / "missing.pth")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "MODEL.WEIGHTS" in line and "is not a file" in line


def test_demo_runs_an_export_with_onnx(exports, tmp_path, capsys):
    from PIL import Image

    import tools.demo as demo

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for t, frame in enumerate(split_video("valid", 5).frames[:4]):
        Image.fromarray(frame).save(frames_dir / f"{t:03d}.png")
    out = tmp_path / "out.gif"
    demo.main(["--onnx", str(exports["gridsample"]), "--input", str(frames_dir), "--output", str(out)])
    assert out.is_file() and "instances; wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="has no manifest"):
        demo.main(["--onnx", str(tmp_path), "--input", str(frames_dir), "--output", str(out)])
