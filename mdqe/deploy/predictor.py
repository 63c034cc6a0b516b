"""`OnnxVideoPredictor`: whole-video inference on an ONNX export with onnxruntime.

The two graphs replace the network; everything around it is the project's own code, the same as
`mdqe.predictor.VideoPredictor` runs: the frame checks and test resize (`mdqe.predictor`), the per-frame
cache and clip decoding (`mdqe.inference.frame_cache`), and the clip post-processing, tracker and video
assembly (`mdqe.inference.infer_video`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from detectron2.data import transforms as T

from mdqe.inference import ClipHeads, VideoInferenceParams, infer_video
from mdqe.inference.frame_cache import FrameFeatures, clip_decoders
from mdqe.predictor import check_frames, prepare_frames

from .graphs import HEAD_NAMES, features_from_named, features_to_named
from .manifest import WEIGHTS_KEY, DeployError, clip_decoder_name, read_manifest

__all__ = ["OnnxVideoPredictor", "default_providers"]

# preferred first; onnxruntime runs a graph on the first provider that takes each node
_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def default_providers() -> list[str]:
    """The installed onnxruntime providers among TensorRT, CUDA and CPU, in that order."""
    available = set(ort.get_available_providers())
    return [p for p in _PROVIDERS if p in available]


class OnnxVideoPredictor:
    """Segment videos with the graphs of an export of tools/export_onnx.py.

    Loading checks the export (`mdqe.deploy.manifest.read_manifest`: files and their sha256) and that
    every graph was exported from the weights the manifest names; a folder exported with
    `--msda tensorrt` is refused (its plugin nodes run in TensorRT, not onnxruntime).
    """

    def __init__(self, directory: str | Path, providers: Sequence[str] | None = None):
        """
        Args:
            directory: the export's folder (manifest.json and the .onnx graphs).
            providers: onnxruntime execution providers; default: `default_providers()`.
        """
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        if self.manifest["msda"] != "gridsample":
            raise DeployError(
                f"{self.directory} was exported with --msda {self.manifest['msda']}: its deformable "
                "attention is TensorRT's plugin, which onnxruntime cannot run; build a TensorRT engine "
                "from it, or export with --msda gridsample for onnxruntime"
            )
        self.params = VideoInferenceParams(**self.manifest["inference"])
        resize = self.manifest["test_resize"]
        self.resize = T.ResizeShortestEdge(resize["min_size"], resize["max_size"])
        self.input_format = resize["format"]
        self.num_layers = self.manifest["decoder"]["num_layers"]
        self.num_levels = self.manifest["decoder"]["num_levels"]
        providers = list(providers) if providers is not None else default_providers()
        self.sessions = {name: self._session(name, providers) for name in self.manifest["graphs"]}

    @property
    def class_names(self) -> list[str]:
        """Category names of the exported config's first test dataset (empty if it had none)."""
        return list(self.manifest.get("class_names", []))

    def _session(self, name: str, providers: list[str]) -> ort.InferenceSession:
        path = self.directory / self.manifest["graphs"][name]["file"]
        metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if metadata.get(WEIGHTS_KEY) != self.manifest["weights_sha256"]:
            raise DeployError(
                f"{path} was exported from weights with sha256 {metadata.get(WEIGHTS_KEY)}, but the manifest "
                f"names {self.manifest['weights_sha256']} ({self.manifest.get('weights')}): export again"
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's warnings about unused initializers are noise here
        return ort.InferenceSession(str(path), options, providers=providers)

    def _frame_features(self, images: list[torch.Tensor]) -> FrameFeatures:
        session = self.sessions["frame_encoder"]
        frames = torch.stack(images).float().numpy()
        outputs = session.run(None, {"frames": frames})
        named = {o.name: torch.from_numpy(v) for o, v in zip(session.get_outputs(), outputs)}
        return features_from_named(named, self.num_layers, self.num_levels)

    def _decode_clip(self, features: FrameFeatures) -> ClipHeads:
        session = self.sessions[clip_decoder_name(len(features))]
        named = features_to_named(features)
        feeds = {i.name: named[i.name].contiguous().numpy() for i in session.get_inputs()}
        heads = dict(zip(HEAD_NAMES, session.run(list(HEAD_NAMES), feeds)))
        return ClipHeads(
            cls_probs=torch.from_numpy(heads["pred_logits"]).sigmoid(),
            mask_coeff=torch.from_numpy(heads["pred_mask_coeff"]),
            query_embed=torch.from_numpy(heads["query_embed"]),
        )

    def __call__(self, frames: Sequence[np.ndarray], video_id: int = 0) -> dict[str, Any]:
        """Segment a video.

        Args:
            frames: T frames, (H, W, 3) uint8 RGB, all the same size.
            video_id: unused; the signature of `VideoPredictor`.
        Returns:
            {"image_size", "pred_scores", "pred_labels", "pred_masks"}, as `VideoPredictor`.
        """
        check_frames(frames, type(self).__name__)
        images = prepare_frames(frames, self.resize, self.input_format)
        decode_clip, mask_features = clip_decoders(
            lambda start, end: self._frame_features(images[start:end]),
            self._decode_clip,
            len(images),
            chunk=self.params.clip_len,
        )
        image_size = tuple(images[0].shape[-2:])
        output_size = tuple(frames[0].shape[:2])
        return infer_video(len(images), decode_clip, mask_features, image_size, output_size, self.params)
