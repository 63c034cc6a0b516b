#!/usr/bin/env python
"""Export an MDQE model to ONNX: a frame encoder, the clip decoders and a manifest (mdqe/deploy/).

    python tools/export_onnx.py --config-file configs/synthetic/R18_synthetic.yaml --output export/r18
    python tools/export_onnx.py --config-file configs/R50_ovis_360.yaml --output export/r50_trt \\
        --msda tensorrt MODEL.WEIGHTS mdqe_r50_ovis.pth

--msda gridsample (default) writes standard ONNX ops that onnxruntime runs (`mdqe.deploy.OnnxVideoPredictor`,
`tools/demo.py --onnx DIR`); --msda tensorrt writes one TensorRT plugin node per deformable-attention call,
for a TensorRT engine. An occupied --output is refused unless --force.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# detectron2 v0.6 scripts a few helpers at import time, which recent PyTorch flags on every run
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="folder for the graphs and manifest.json")
    parser.add_argument("--msda", choices=("gridsample", "tensorrt"), default="gridsample")
    parser.add_argument("--force", action="store_true", help="overwrite the files of an earlier export")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    from detectron2.config import get_cfg
    from detectron2.utils.logger import setup_logger

    from mdqe import add_mdqe_config
    from mdqe.deploy import DeployError, export_onnx

    setup_logger(name="mdqe")
    if not Path(args.config_file).is_file():
        print(f"error: --config-file {args.config_file} is not a file", file=sys.stderr)
        return 1
    cfg = get_cfg()
    add_mdqe_config(cfg)
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
    except (KeyError, ValueError, AssertionError) as e:
        print(f"error: {args.config_file} with {args.opts}: {e}", file=sys.stderr)
        return 1
    cfg.freeze()
    try:
        manifest = export_onnx(cfg, args.output, args.msda, args.force, config_name=args.config_file)
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    files = ", ".join(graph["file"] for graph in manifest["graphs"].values())
    print(f"wrote {args.output}: {files}, manifest.json (opset {manifest['opset']}, --msda {args.msda})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
