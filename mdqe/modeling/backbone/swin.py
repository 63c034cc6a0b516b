"""Swin Transformer V2 as a detectron2 backbone (`build_swinv2_backbone`), as MDQE's Swin-L configs use it.

The variant is the one of the original MDQE code, which differs from the ImageNet Swin V2 in a few ways
that matter for checkpoint compatibility and numerics:
- any input size: the image is padded to a multiple of the patch size and every stage's feature map to a
  multiple of its window; blocks with odd index always use shifted windows (shift = window // 2), with
  the attention mask of the padded map (the window is never shrunk to the feature map);
- the last stage uses half the window size of the other stages (12 -> 6 for Swin-L);
- the relative-coordinate table is normalised by each stage's own window (no pretrained window sizes);
- every output feature `stage{i + 2}` is normalised by its own LayerNorm named `norm{i}`.

Parameter and buffer names follow the original exactly (`layers.{i}.blocks.{j}.attn.cpb_mlp.0` ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from torch import nn
from torchvision.ops import StochasticDepth

__all__ = [
    "SwinTransformerV2",
    "build_swinv2_backbone",
    "relative_coords_table",
    "relative_position_index",
    "shifted_window_mask",
]

# Hidden width of the continuous position bias MLP and bounds of Swin V2's attention logits.
_CPB_HIDDEN_DIM = 512
_MAX_LOGIT_SCALE = math.log(1.0 / 0.01)
_MASKED_LOGIT = -100.0


def relative_coords_table(window_size: int) -> torch.Tensor:
    """Log-spaced relative coordinates fed to the continuous position bias MLP.

    Offsets d in [-(w-1), w-1] along each axis are normalised to [-8, 8] by 8 * d / (w - 1) and mapped
    to sign(d) * log2(1 + |d|) / log2(8).

    Returns:
        (1, 2w-1, 2w-1, 2) float32, [..., 0] the vertical and [..., 1] the horizontal coordinate.
    """
    offsets = torch.arange(-(window_size - 1), window_size, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)
    table = table / (window_size - 1) * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.unsqueeze(0)


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the flattened (2w-1, 2w-1) bias table for every pair of tokens of a window.

    Returns:
        (w*w, w*w) int64: for tokens i = (yi, xi), j = (yj, xj) in row-major order,
        (yi - yj + w - 1) * (2w - 1) + (xi - xj + w - 1).
    """
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window_size - 1
    dx = xs[:, None] - xs[None, :] + window_size - 1
    return dy * (2 * window_size - 1) + dx


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Split a feature map into non-overlapping windows.

    Args:
        x: (B, H, W, C) with H and W multiples of `window_size`.
    Returns:
        (B * nW, w*w, C), windows in row-major order per image, tokens row-major inside a window.
    """
    b, h, w, c = x.shape
    x = x.reshape(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_merge(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `window_partition`.

    Args:
        windows: (B * nW, w*w, C).
    Returns:
        (B, height, width, C).
    """
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window_size, width // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def shifted_window_mask(
    height: int, width: int, window_size: int, shift_size: int, device: torch.device | None = None
) -> torch.Tensor:
    """Additive attention mask of shifted windows on a padded (height, width) map.

    After the cyclic shift by `shift_size`, a window may hold tokens from up to 3 x 3 regions that were
    not adjacent before the shift: [0, H - w), [H - w, H - s), [H - s, H) per axis. Tokens of different
    regions must not attend to each other.

    Returns:
        (nW, w*w, w*w) float32: 0 between tokens of the same region, -100 otherwise.
    """
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    row_region = (rows >= height - window_size).long() + (rows >= height - shift_size).long()
    col_region = (cols >= width - window_size).long() + (cols >= width - shift_size).long()
    region = (row_region[:, None] * 3 + col_region[None, :]).to(torch.float32)
    region = window_partition(region[None, :, :, None], window_size).squeeze(-1)
    same = region[:, :, None] == region[:, None, :]
    return torch.zeros_like(same, dtype=torch.float32).masked_fill(~same, _MASKED_LOGIT)


class WindowAttention(nn.Module):
    """Swin V2 window attention: scaled cosine attention plus a continuous relative position bias.

    logits = cos(q, k) * exp(min(logit_scale, log 100)) + 16 * sigmoid(cpb_mlp(coords)), per head.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int):
        """
        Args:
            dim: channels of the tokens.
            window_size: side of the square window; at least 2.
            num_heads: attention heads; must divide `dim`.
        """
        super().__init__()
        if window_size < 2:
            raise ValueError(f"Swin V2 window size must be at least 2, got {window_size}")
        if dim % num_heads != 0:
            raise ValueError(f"Swin attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size = window_size
        self.num_heads = num_heads

        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("relative_coords_table", relative_coords_table(window_size))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, _CPB_HIDDEN_DIM),
            nn.ReLU(inplace=True),
            nn.Linear(_CPB_HIDDEN_DIM, num_heads, bias=False),
        )
        # Swin V2 has no key bias: q and v biases are separate parameters, k's is a constant zero.
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self) -> torch.Tensor:
        """Returns: (num_heads, w*w, w*w) bias in (0, 16)."""
        table = self.cpb_mlp(self.relative_coords_table).reshape(-1, self.num_heads)
        bias = table[self.relative_position_index.flatten()]
        n = self.window_size * self.window_size
        return 16 * torch.sigmoid(bias.reshape(n, n, self.num_heads).permute(2, 0, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: (B * nW, N, C) tokens of windows, N = w*w, windows of one image consecutive.
            mask: (nW, N, N) additive mask of shifted windows, or None.
        Returns:
            (B * nW, N, C).
        """
        num_windows, n, c = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias)
        q, k, v = qkv.reshape(num_windows, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

        scale = torch.clamp(self.logit_scale, max=_MAX_LOGIT_SCALE).exp()
        q = F.normalize(q, dim=-1) * scale.to(q.dtype)
        k = F.normalize(k, dim=-1)
        bias = self.relative_position_bias()
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
        else:
            # Fold the windows of an image into the head axis so that the (nW, heads, N, N) mask
            # broadcasts over images in a 4-D call.
            nw = mask.shape[0]
            attn_mask = (mask[:, None] + bias[None]).reshape(nw * self.num_heads, n, n).to(q.dtype)
            fold = (num_windows // nw, nw * self.num_heads, n, -1)
            out = F.scaled_dot_product_attention(
                q.reshape(fold), k.reshape(fold), v.reshape(fold), attn_mask=attn_mask, scale=1.0
            )
            out = out.reshape(num_windows, self.num_heads, n, -1)
        return self.proj(out.transpose(1, 2).reshape(num_windows, n, c))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim) -> (..., dim)."""
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Swin V2 block with res-post-norm: x + norm1(attn(x)), then x + norm2(mlp(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        drop_path: float,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"Swin block: shift {shift_size} must be in [0, window {window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, height: int, width: int, shift_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, height * width, C) tokens, row-major.
            shift_mask: (nW, w*w, w*w) mask of the padded map; used only by shifted blocks.
        Returns:
            (B, height * width, C).
        """
        b, _, c = x.shape
        w = self.window_size
        y = x.reshape(b, height, width, c)
        pad_h, pad_w = (-height) % w, (-width) % w
        y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        padded_h, padded_w = height + pad_h, width + pad_w

        if self.shift_size > 0:
            y = torch.roll(y, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        y = self.attn(window_partition(y, w), shift_mask if self.shift_size > 0 else None)
        y = window_merge(y, w, padded_h, padded_w)
        if self.shift_size > 0:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        y = y[:, :height, :width].reshape(b, height * width, c)

        x = x + self.drop_path(self.norm1(y))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concatenation (4C) -> linear reduction to 2C -> LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """
        Args:
            x: (B, height * width, C); odd sides are zero-padded by one.
        Returns:
            (B, ceil(height / 2) * ceil(width / 2), 2C).
        """
        b, _, c = x.shape
        x = F.pad(x.reshape(b, height, width, c), (0, 0, 0, width % 2, 0, height % 2))
        # Concatenation order of the original (and of the pretrained `reduction` weights):
        # (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col).
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.norm(self.reduction(x.reshape(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """`depth` blocks alternating regular and shifted windows, then optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: list[float],
        downsample: bool,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                shift_size=0 if i % 2 == 0 else self.shift_size,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (B, height * width, C).
        Returns:
            out: (B, height * width, C), the stage's output before merging;
            down: (B, ceil(height/2) * ceil(width/2), 2C) merged tokens for the next stage (`out` itself
                when the stage has no merging).
        """
        w = self.window_size
        padded_h, padded_w = math.ceil(height / w) * w, math.ceil(width / w) * w
        shift_mask = shifted_window_mask(padded_h, padded_w, w, self.shift_size, device=x.device)
        for block in self.blocks:
            x = block(x, height, width, shift_mask)
        if self.downsample is None:
            return x, x
        return x, self.downsample(x, height, width)


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution (input zero-padded to a multiple), then LayerNorm."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_chans, H, W) -> (B, embed_dim, ceil(H / patch), ceil(W / patch))."""
        p = self.patch_size
        x = self.proj(F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p)))
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


class SwinTransformerV2(Backbone):
    """Swin Transformer V2 returning the normalised outputs of the stages named in `out_features`.

    Stage i (0-based) is called `stage{i + 2}`: stride 4 * 2**i, embed_dim * 2**i channels. Weights keep
    PyTorch's default initialisation (the original's builder never calls its `init_weights`); MDQE always
    starts from a pretrained checkpoint.
    """

    @configurable
    def __init__(
        self,
        *,
        in_chans: int = 3,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
        frozen_stages: int = -1,
        out_features: tuple[str, ...] = ("stage3", "stage4", "stage5"),
    ):
        """
        Args:
            in_chans: input channels.
            patch_size: side of the patches of the embedding (stride of the first stage).
            embed_dim: channels of the first stage; doubled by each patch merging.
            depths, num_heads: blocks and attention heads per stage.
            window_size: window of every stage but the last, which uses window_size // 2.
            mlp_ratio: hidden width of the MLPs relative to their input.
            drop_path_rate: stochastic depth of the last block; it grows linearly from 0 over all blocks.
            patch_norm: LayerNorm after the patch embedding.
            frozen_stages: as the original: >= 0 freezes the patch embedding, >= 2 also stages
                0 .. frozen_stages - 2; -1 freezes nothing.
            out_features: stage names to return, among stage2 .. stage{len(depths) + 1}.
        """
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"Swin: DEPTHS {list(depths)} and NUM_HEADS {list(num_heads)} differ in length")
        num_stages = len(depths)
        stage_names = [f"stage{i + 2}" for i in range(num_stages)]
        unknown = [name for name in out_features if name not in stage_names]
        if unknown:
            raise ValueError(f"Swin: OUT_FEATURES {unknown} not among the stages {stage_names}")

        self.frozen_stages = frozen_stages
        self._out_features = [name for name in stage_names if name in out_features]
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)

        block_rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.num_features = [embed_dim * 2**i for i in range(num_stages)]
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            first = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    self.num_features[i],
                    depths[i],
                    num_heads[i],
                    window_size // 2 if i == num_stages - 1 else window_size,
                    mlp_ratio,
                    drop_path=block_rates[first : first + depths[i]],
                    downsample=i < num_stages - 1,
                )
            )
        self._out_feature_channels = {}
        self._out_feature_strides = {}
        for i, name in enumerate(stage_names):
            if name in self._out_features:
                self._out_feature_channels[name] = self.num_features[i]
                self._out_feature_strides[name] = patch_size * 2**i
                self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self._freeze_stages()

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict:
        swin = cfg.MODEL.SWIN
        if swin.APE:
            # The original adds a (1, num_patches, C) embedding to a (B, C, H, W) map, which cannot run.
            raise ValueError("MODEL.SWIN.APE=True is not supported by build_swinv2_backbone")
        return {
            "in_chans": input_shape.channels,
            "patch_size": 4,
            "embed_dim": swin.EMBED_DIM,
            "depths": tuple(swin.DEPTHS),
            "num_heads": tuple(swin.NUM_HEADS),
            "window_size": swin.WINDOW_SIZE,
            "mlp_ratio": swin.MLP_RATIO,
            "drop_path_rate": swin.DROP_PATH_RATE,
            "patch_norm": True,
            "frozen_stages": cfg.MODEL.BACKBONE.FREEZE_AT,
            "out_features": tuple(swin.OUT_FEATURES),
        }

    def _freeze_stages(self) -> None:
        frozen: list[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        if self.frozen_stages >= 2:
            frozen.extend(self.layers[: self.frozen_stages - 1])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> SwinTransformerV2:
        """Switch mode, keeping frozen stages in eval mode (no stochastic depth there)."""
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: (B, in_chans, H, W) normalised images, any H and W.
        Returns:
            {name: (B, C_i, H_i, W_i)} for each out feature `stage{i + 2}`: C_i = embed_dim * 2**i and
            H_i = ceil(H / (patch_size * 2**i)) (likewise W_i).
        """
        x = self.patch_embed(x)
        height, width = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        outputs = {}
        for i, stage in enumerate(self.layers):
            out, x = stage(x, height, width)
            name = f"stage{i + 2}"
            if name in self._out_features:
                out = getattr(self, f"norm{i}")(out)
                out = out.reshape(-1, height, width, self.num_features[i]).permute(0, 3, 1, 2)
                outputs[name] = out.contiguous()
            height, width = (height + 1) // 2, (width + 1) // 2
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_swinv2_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> SwinTransformerV2:
    """MDQE's Swin V2 backbone from `cfg.MODEL.SWIN.*` and `cfg.MODEL.BACKBONE.FREEZE_AT`."""
    return SwinTransformerV2(cfg, input_shape)
