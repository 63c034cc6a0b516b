"""The manifest of an ONNX export (manifest.json beside the graphs), and its checks.

    {
      "format": "mdqe-onnx/1",
      "config": "configs/synthetic/R18_synthetic.yaml",
      "weights": "pretrained/...pth", "weights_sha256": "...",
      "opset": 18, "msda": "gridsample",
      "test_resize": {"min_size": 240, "max_size": 400, "format": "RGB"},
      "inference": {...VideoInferenceParams...},
      "class_names": ["circle", ...],
      "decoder": {"num_layers": 3, "num_levels": 4},
      "graphs": {"frame_encoder": GRAPH, "clip_decoder_T2": GRAPH, "clip_decoder_T1": GRAPH}
    }

with GRAPH = {"file", "sha256", "inputs": [{"name", "shape"}], "outputs": [...]}, shapes as lists of ints
and dimension names (dynamic). Every graph also carries the weights' sha256 in its metadata
(`WEIGHTS_KEY`), so graphs of different exports cannot be mixed unnoticed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "WEIGHTS_KEY",
    "DeployError",
    "clip_decoder_name",
    "file_sha256",
    "read_manifest",
]

FORMAT = "mdqe-onnx/1"
MANIFEST_NAME = "manifest.json"
WEIGHTS_KEY = "mdqe.weights_sha256"


class DeployError(Exception):
    """An export or an exported folder that cannot be used; the message says which and why."""


def clip_decoder_name(num_frames: int) -> str:
    """The manifest's key of the clip decoder graph for clips of `num_frames` frames."""
    return f"clip_decoder_T{num_frames}"


def file_sha256(path: str | Path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


_REQUIRED = {
    "format": str,
    "config": str,
    "weights_sha256": str,
    "opset": int,
    "msda": str,
    "test_resize": dict,
    "inference": dict,
    "decoder": dict,
    "graphs": dict,
}


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of the export in `directory`, with every graph file present and unchanged.

    Raises:
        DeployError: no such folder, no manifest, a manifest that is not an export's (format, keys,
            types), or a graph file that is missing or whose sha256 differs from the manifest's.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DeployError(f"{directory} is not a folder (expected an export of tools/export_onnx.py)")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise DeployError(f"{directory} has no {MANIFEST_NAME}: it is not an export of tools/export_onnx.py")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeployError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DeployError(f"{path}: format {found!r} is not {FORMAT!r}")
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            raise DeployError(f"{path}: '{key}' must be a {kind.__name__}, found {manifest.get(key)!r}")
    clip_len = manifest["inference"].get("clip_len")
    expected = ["frame_encoder", *(clip_decoder_name(t) for t in range(1, (clip_len or 0) + 1))]
    if sorted(manifest["graphs"]) != sorted(expected):
        raise DeployError(f"{path}: graphs {sorted(manifest['graphs'])}, expected {sorted(expected)}")
    for name, graph in manifest["graphs"].items():
        file = directory / str(graph.get("file", ""))
        if not graph.get("file") or not file.is_file():
            raise DeployError(f"{path}: the file of graph {name} ({graph.get('file')!r}) is missing")
        found = file_sha256(file)
        if found != graph.get("sha256"):
            raise DeployError(
                f"{file}: sha256 {found} differs from the manifest's {graph.get('sha256')}: the folder mixes "
                "exports or a file was changed; export again"
            )
    return manifest
