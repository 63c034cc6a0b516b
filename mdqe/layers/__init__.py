"""mdqe.layers: the multi-scale deformable attention op (compiled kernels and PyTorch reference)."""

from .ms_deform_attn import ms_deform_attn, ms_deform_attn_pytorch

__all__ = ["ms_deform_attn", "ms_deform_attn_pytorch"]
