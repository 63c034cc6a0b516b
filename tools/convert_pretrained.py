#!/usr/bin/env python
"""Convert pretrained weights into the layouts MDQE loads.

    # ImageNet ResNet-50/101 from torchvision's layout -> detectron2 .pkl (for configs/R50_coco.yaml)
    python tools/convert_pretrained.py resnet --src resnet50.pth --dst pretrained/R-50.pkl
    # Swin(V2) ImageNet weights in the official layout -> MDQE's backbone keys (for configs/swinl_coco.yaml)
    python tools/convert_pretrained.py swin --src swinv2_large_patch4_window12_192_22k.pth \
        --dst pretrained/imagenet/swinv2_large_patch4_window12_192_22k_d2.pth
    # COCO-pretrained MDQE (clip length F) -> inflated to the video clip length T, as the original
    python tools/convert_pretrained.py inflate --src coco_f1.pth --num-frames 4 --num-pretrain-frames 1
    # a trained MDQE -> a release file: weights only (no optimizer/scheduler state), floating-point
    # entries in float16, and a `<dst>.sha256` beside it that loading verifies
    python tools/convert_pretrained.py release --src output/.../model_final.pth --dst pretrained/x.pth --half

`train_net.py` inflates automatically when INPUT.PRETRAIN_FRAME_NUM != INPUT.SAMPLING_FRAME_NUM; the
`inflate` command is for preparing a checkpoint ahead of time.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings

import numpy as np
import torch

# detectron2 v0.6 (imported with mdqe) scripts a few helpers at import time, which PyTorch flags each run
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

SWIN_PREFIX = "detr.backbone.0.backbone."

# torchvision ResNet name -> detectron2 ResNet name, applied in order.
_RESNET_RULES = [
    (r"^conv1\.", "stem.conv1."),
    (r"^bn1\.", "stem.conv1.norm."),
    (r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}."),
    (r"\.downsample\.0\.", ".shortcut."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
    (r"\.bn(\d)\.", lambda m: f".conv{m.group(1)}.norm."),
]


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The state dict in `path` (bare, or under "model" / "state_dict"), loaded without running code from
    the file (`mdqe.checkpoint_io`); a bad file ends the tool with one line."""
    from mdqe.checkpoint_io import CheckpointError, load_checkpoint_file

    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint not found: {path}")
    try:
        obj = load_checkpoint_file(path)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    except Exception as e:  # a truncated or foreign file
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SystemExit(f"error: cannot read {path} as a PyTorch checkpoint: {message}") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if isinstance(obj, dict):
        obj = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in obj.items()}
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SystemExit(f"error: {path} does not hold a state dict of tensors")
    return obj


def resnet_torchvision_to_d2(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict to detectron2's ResNet names; drops `fc.*` and BN counters."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        name = key
        for pattern, repl in _RESNET_RULES:
            name = re.sub(pattern, repl, name)
        out[name] = value
    if "stem.conv1.weight" not in out:
        raise SystemExit("error: the source is not a torchvision ResNet state dict (no conv1.weight)")
    return out


def swin_official_to_mdqe(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prefix official Swin keys with MDQE's backbone path, as the original's convert_to_d2 (head dropped)."""
    if "patch_embed.proj.weight" not in state_dict:
        raise SystemExit("error: the source is not an official Swin state dict (no patch_embed.proj.weight)")
    return {SWIN_PREFIX + k: v for k, v in state_dict.items() if not k.startswith("head.")}


def _save(obj: dict, dst: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    if dst.endswith(".pkl"):
        with open(tmp, "wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, tmp)
    os.replace(tmp, dst)
    print(f"wrote {dst}")


def release_checkpoint(src: str, dst: str, half: bool) -> str:
    """Write the weights of `src` (floating-point entries in float16 with `half`) to `dst` and the sha256
    of `dst` to `dst.sha256` (sha256sum format); returns the digest."""
    from mdqe.checkpoint import sha256_of

    sd = _load_state_dict(src)
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    _save({"model": {k: v.contiguous().clone() for k, v in sd.items()}}, dst)
    digest = sha256_of(dst)
    with open(dst + ".sha256", "w") as f:
        f.write(f"{digest}  {os.path.basename(dst)}\n")
    print(f"wrote {dst}.sha256: {digest}")
    return digest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("resnet", help="torchvision ResNet -> detectron2 .pkl")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True, help="output .pkl")
    p = sub.add_parser("swin", help="official Swin -> MDQE backbone keys (.pth)")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p = sub.add_parser("inflate", help="inflate MDQE temporal attention to another clip length")
    p.add_argument("--src", required=True)
    p.add_argument("--num-frames", type=int, required=True, help="clip length T to train with")
    p.add_argument("--num-pretrain-frames", type=int, default=1, help="clip length of the source")
    p.add_argument("--heads", type=int, default=8, help="MODEL.MDQE.NHEADS")
    p.add_argument("--points", type=int, default=4, help="MODEL.MDQE.DEC_NUM_POINTS")
    p.add_argument("--output-dir", default=None, help="default: the source's folder")
    p = sub.add_parser("release", help="trained MDQE -> weights-only release file with a .sha256 beside it")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--half", action="store_true", help="store floating-point weights in float16")
    args = parser.parse_args(argv)

    if args.command == "resnet":
        sd = resnet_torchvision_to_d2(_load_state_dict(args.src))
        _save(
            {
                "model": {k: v.numpy() for k, v in sd.items()},
                "__author__": "torchvision",
                "matching_heuristics": True,
            },
            args.dst,
        )
    elif args.command == "swin":
        _save({"model": swin_official_to_mdqe(_load_state_dict(args.src))}, args.dst)
    elif args.command == "release":
        release_checkpoint(args.src, args.dst, args.half)
    else:
        from mdqe.checkpoint import inflate_checkpoint_file

        _load_state_dict(args.src)  # validates the file before converting
        out_dir = args.output_dir or os.path.dirname(os.path.abspath(args.src))
        path = inflate_checkpoint_file(
            args.src, args.num_frames, args.num_pretrain_frames, out_dir, args.heads, args.points
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
