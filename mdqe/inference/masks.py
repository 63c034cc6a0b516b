"""From low-resolution mask logits to per-frame RLE at the original video size (digest §5.1, §5.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mdqe.utils.rle import encode_masks

__all__ = ["aligned_bilinear", "encode_frame_masks", "mask_logits_to_probs"]


def aligned_bilinear(tensor: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample by an integer factor so that input pixel centres stay aligned with output pixels.

    Bilinear interpolation with aligned corners on the input padded by one replicated row/column at the
    bottom/right, then shifted by factor // 2 (replicate padding at the top/left).

    Args:
        tensor: (N, C, h, w).
        factor: integer >= 1.

    Returns:
        (N, C, factor * h, factor * w).
    """
    if tensor.dim() != 4 or factor < 1 or int(factor) != factor:
        raise ValueError(
            "aligned_bilinear: expected a 4-D tensor and an integer factor >= 1, "
            f"got shape {tuple(tensor.shape)} and factor {factor}"
        )
    if factor == 1:
        return tensor
    height, width = tensor.shape[-2:]
    out_h, out_w = factor * height + 1, factor * width + 1
    tensor = F.pad(tensor, pad=(0, 1, 0, 1), mode="replicate")
    tensor = F.interpolate(tensor, size=(out_h, out_w), mode="bilinear", align_corners=True)
    tensor = F.pad(tensor, pad=(factor // 2, 0, factor // 2, 0), mode="replicate")
    return tensor[:, :, : out_h - 1, : out_w - 1]


def mask_logits_to_probs(mask_logits: torch.Tensor, factor: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Mask probabilities at the network-input size.

    Args:
        mask_logits: (N, C, Hf, Wf) logits at stride `factor` of the padded input (C: frames).
        factor: MATCH_STRIDE.
        image_size: (h, w) unpadded input size.

    Returns:
        (N, C, h, w) sigmoid of the aligned-bilinear upsampled logits, cropped to `image_size`.
    """
    probs = aligned_bilinear(mask_logits, factor).sigmoid()
    return probs[..., : image_size[0], : image_size[1]]


def encode_frame_masks(
    mask_logits: torch.Tensor, factor: int, image_size: tuple[int, int], output_size: tuple[int, int]
) -> list[dict | None]:
    """Binary masks of one frame at the original size, as RLE.

    Args:
        mask_logits: (n, Hf, Wf) logits of n instances in one frame.
        factor: MATCH_STRIDE.
        image_size: (h, w) unpadded network-input size.
        output_size: (H, W) original frame size.

    Returns:
        n pycocotools RLE dicts ({"size": [H, W], "counts": bytes}); None for an empty mask.
    """
    probs = mask_logits_to_probs(mask_logits[None], factor, image_size)
    # Nearest resizing selects pixels, so thresholding first gives the same masks at a fraction of the cost.
    foreground = F.interpolate((probs > 0.5).to(torch.uint8), size=tuple(output_size), mode="nearest")[0]
    return encode_masks(foreground.cpu().numpy())
