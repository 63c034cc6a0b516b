"""Deployment of MDQE: ONNX export of the frame encoder and the clip decoders (`export_onnx`), and
whole-video inference on an export with onnxruntime and the project's tracker (`OnnxVideoPredictor`)."""

from .manifest import DeployError

__all__ = ["DeployError", "OnnxVideoPredictor", "export_onnx"]


def __getattr__(name: str):
    # onnx / onnxruntime are imported only by what uses them
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    if name == "OnnxVideoPredictor":
        from .predictor import OnnxVideoPredictor

        return OnnxVideoPredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
