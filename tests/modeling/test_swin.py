"""Swin V2 backbone: checkpoint layout, buffers, windowed attention, shapes, training behaviour."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

from mdqe.config import add_mdqe_config
from mdqe.modeling.backbone.swin import (
    PatchMerging,
    SwinBlock,
    SwinTransformerV2,
    relative_coords_table,
    relative_position_index,
    shifted_window_mask,
)

BACKBONE_PREFIX = "detr.backbone.0.backbone."


def swin_opts(**swin) -> list:
    """Override list selecting the Swin V2 backbone with the given MODEL.SWIN.* keys."""
    return [
        "MODEL.BACKBONE.NAME",
        "build_swinv2_backbone",
        *(x for k, v in swin.items() for x in (f"MODEL.SWIN.{k}", v)),
    ]


# Swin-L as configs/swinl_*.yaml set it (on top of add_swinl_config's defaults).
SWINL_OPTS = swin_opts(
    EMBED_DIM=192, DEPTHS=[2, 2, 18, 2], NUM_HEADS=[6, 12, 24, 48], WINDOW_SIZE=12, MLP_RATIO=4,
    DROP_PATH_RATE=0.2, APE=False,
)  # fmt: skip


def _cfg(opts: list) -> object:
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_list(opts)
    return cfg


def _tiny(**overrides) -> SwinTransformerV2:
    kwargs = {"embed_dim": 8, "depths": (2, 2, 3, 2), "num_heads": (1, 2, 2, 4), "window_size": 4}
    kwargs["drop_path_rate"] = 0.0
    kwargs.update(overrides)
    return SwinTransformerV2(**kwargs)


def _read_backbone_layout(tsv: Path) -> list[tuple[str, tuple[int, ...], str]]:
    layout = []
    for line in tsv.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        if key.startswith(BACKBONE_PREFIX):
            dims = tuple(int(d) for d in shape.split(",")) if shape else ()
            layout.append((key[len(BACKBONE_PREFIX) :], dims, dtype))
    return layout


def test_swinl_state_dict_layout_equals_original(reference_dir: Path):
    cfg = _cfg(SWINL_OPTS)
    with torch.device("meta"):
        backbone = BACKBONE_REGISTRY.get("build_swinv2_backbone")(cfg, ShapeSpec(channels=3))
    ours = [
        (k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in backbone.state_dict().items()
    ]
    expected = _read_backbone_layout(reference_dir / "state_dict_swinl_ovis.tsv")
    assert len(expected) == 475
    assert ours == expected


def test_swinl_output_shape():
    with torch.device("meta"):
        backbone = build_backbone(_cfg(SWINL_OPTS))
    assert isinstance(backbone, SwinTransformerV2)
    shapes = backbone.output_shape()
    assert list(shapes) == ["stage3", "stage4", "stage5"]
    assert [(s.channels, s.stride) for s in shapes.values()] == [(384, 8), (768, 16), (1536, 32)]
    assert [stage.window_size for stage in backbone.layers] == [12, 12, 12, 6]
    assert [block.shift_size for block in backbone.layers[3].blocks] == [0, 3]


def test_cfg_builds_tiny_backbone_through_registry():
    opts = swin_opts(
        EMBED_DIM=8,
        DEPTHS=[1, 1, 2, 1],
        NUM_HEADS=[1, 1, 2, 2],
        WINDOW_SIZE=4,
        OUT_FEATURES=["stage4", "stage5"],
    )
    backbone = build_backbone(_cfg(opts))
    assert list(backbone.output_shape()) == ["stage4", "stage5"]
    assert [k for k in backbone.state_dict() if not k.startswith(("patch_embed", "layers"))] == [
        "norm2.weight",
        "norm2.bias",
        "norm3.weight",
        "norm3.bias",
    ]
    out = backbone(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"stage4": (1, 32, 4, 4), "stage5": (1, 64, 2, 2)}


def test_ape_is_rejected():
    with pytest.raises(ValueError, match=r"MODEL\.SWIN\.APE"):
        build_backbone(_cfg([*SWINL_OPTS, "MODEL.SWIN.APE", True]))


@pytest.mark.parametrize("height,width", [(64, 64), (70, 45), (33, 97), (5, 7)])
def test_forward_shapes_and_strides_for_any_input_size(height: int, width: int):
    backbone = _tiny().eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, height, width))
    for name, spec in backbone.output_shape().items():
        expected = (2, spec.channels, math.ceil(height / spec.stride), math.ceil(width / spec.stride))
        assert tuple(out[name].shape) == expected, name
        assert out[name].is_contiguous()
        assert torch.isfinite(out[name]).all()


def test_frames_are_encoded_independently_of_batch_companions():
    backbone = _tiny().eval()
    x = torch.randn(3, 3, 50, 38)
    with torch.no_grad():
        batched = backbone(x)
        single = backbone(x[1:2])
    for name in batched:
        torch.testing.assert_close(batched[name][1:2], single[name], rtol=1e-5, atol=1e-5)


def test_relative_position_index_equals_definition():
    for w in (12, 6, 3):
        index = relative_position_index(w)
        assert index.dtype == torch.int64 and index.shape == (w * w, w * w)
        expected = torch.empty(w * w, w * w, dtype=torch.int64)
        for i in range(w * w):
            for j in range(w * w):
                dy, dx = i // w - j // w, i % w - j % w
                expected[i, j] = (dy + w - 1) * (2 * w - 1) + (dx + w - 1)
        assert torch.equal(index, expected)


def test_relative_coords_table_equals_definition():
    for w in (12, 6):
        table = relative_coords_table(w)
        assert table.dtype == torch.float32 and table.shape == (1, 2 * w - 1, 2 * w - 1, 2)
        for a in range(2 * w - 1):
            for b in range(2 * w - 1):
                for axis, d in enumerate((a - (w - 1), b - (w - 1))):
                    t = 8.0 * d / (w - 1)
                    expected = math.copysign(math.log2(abs(t) + 1.0) / 3.0, t) if d else 0.0
                    assert table[0, a, b, axis].item() == pytest.approx(expected, abs=1e-6)
        assert table.abs().max().item() == pytest.approx(math.log2(9.0) / 3.0)


def test_attention_buffers_follow_each_stage_window():
    backbone = _tiny(window_size=6)
    for stage, w in zip(backbone.layers, (6, 6, 6, 3)):
        for block in stage.blocks:
            assert torch.equal(block.attn.relative_position_index, relative_position_index(w))
            assert torch.equal(block.attn.relative_coords_table, relative_coords_table(w))


def _global_reference_block(block: SwinBlock, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The block computed token by token on the padded map, without window partition or roll.

    Token p attends to token q of its (shifted) window; pairs from different regions of the cyclic shift
    get -100; the bias is 16 * sigmoid(cpb_mlp(log-spaced coords)) of their in-window offset.
    x: (1, height * width, C).
    """
    attn, w, s = block.attn, block.window_size, block.shift_size
    c = x.shape[-1]
    heads = attn.num_heads
    hp, wp = math.ceil(height / w) * w, math.ceil(width / w) * w
    grid = F.pad(x.reshape(1, height, width, c), (0, 0, 0, wp - width, 0, hp - height)).reshape(-1, c)
    qkv = F.linear(grid, attn.qkv.weight) + torch.cat([attn.q_bias, 0 * attn.v_bias, attn.v_bias])
    q, k, v = (t.reshape(-1, heads, c // heads).transpose(0, 1) for t in qkv.split(c, dim=-1))
    cos = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(1, 2)
    logits = cos * attn.logit_scale.clamp(max=math.log(100.0)).exp()

    ys, xs = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    ys, xs = (ys.flatten() - s) % hp, (xs.flatten() - s) % wp  # positions in the rolled map

    def region(pos: torch.Tensor, size: int) -> torch.Tensor:
        return (pos >= size - w).long() + (pos >= size - s).long() if s > 0 else torch.zeros_like(pos)

    same_window = (ys[:, None] // w == ys[None] // w) & (xs[:, None] // w == xs[None] // w)
    same_region = (region(ys, hp)[:, None] == region(ys, hp)[None]) & (
        region(xs, wp)[:, None] == region(xs, wp)[None]
    )
    dy = ys[:, None] % w - ys[None] % w
    dx = xs[:, None] % w - xs[None] % w
    table = attn.cpb_mlp(attn.relative_coords_table)[0]  # (2w-1, 2w-1, heads)
    bias = 16 * torch.sigmoid(table[dy + w - 1, dx + w - 1]).permute(2, 0, 1)
    logits = logits + bias + torch.where(same_region, 0.0, -100.0)
    logits = logits.masked_fill(~same_window, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(0, 1).reshape(hp, wp, c)[:height, :width]
    y = attn.proj(out.reshape(1, height * width, c))
    x = x + block.norm1(y)
    return x + block.norm2(block.mlp(x))


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("height,width", [(8, 8), (9, 14), (3, 5)])
def test_block_equals_global_windowed_attention(shift: int, height: int, width: int):
    torch.manual_seed(0)
    block = SwinBlock(dim=12, num_heads=3, window_size=4, shift_size=shift, mlp_ratio=2.0, drop_path=0.0)
    with torch.no_grad():
        block.attn.q_bias.normal_()
        block.attn.v_bias.normal_()
        block.attn.logit_scale.copy_(torch.tensor([0.5, 2.3, 5.0]).view(3, 1, 1))  # last one is clamped
        for norm in (block.norm1, block.norm2):
            norm.weight.normal_()
            norm.bias.normal_()
    x = torch.randn(1, height * width, 12)
    w = block.window_size
    hp, wp = math.ceil(height / w) * w, math.ceil(width / w) * w
    mask = shifted_window_mask(hp, wp, w, max(shift, w // 2))
    with torch.no_grad():
        ours = block(x, height, width, mask)
        expected = _global_reference_block(block, x, height, width)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_patch_merging_concatenation_order():
    merge = PatchMerging(dim=1)
    with torch.no_grad():
        merge.reduction.weight.copy_(torch.tensor([[1.0, 10.0, 100.0, 1000.0], [0.0, 0.0, 0.0, 0.0]]))
    height, width = 3, 5
    x = torch.arange(1.0, height * width + 1).reshape(1, height * width, 1)
    merge.norm = torch.nn.Identity()
    with torch.no_grad():
        out = merge(x, height, width)
    assert out.shape == (1, 2 * 3, 2)
    # Odd sides are zero-padded; the 2x2 cell (i, j) is ordered (y0,x0), (y1,x0), (y0,x1), (y1,x1).
    g = F.pad(x.reshape(height, width), (0, 1, 0, 1))
    expected = torch.tensor(
        [
            g[2 * i, 2 * j]
            + 10 * g[2 * i + 1, 2 * j]
            + 100 * g[2 * i, 2 * j + 1]
            + 1000 * g[2 * i + 1, 2 * j + 1]
            for i in range(2)
            for j in range(3)
        ]
    )
    torch.testing.assert_close(out[0, :, 0], expected)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    backbone = _tiny().train()
    out = backbone(torch.randn(2, 3, 40, 52))
    loss = sum((v * torch.randn_like(v)).sum() for v in out.values())
    loss.backward()
    for name, param in backbone.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_drop_path_is_active_only_in_training():
    torch.manual_seed(0)
    backbone = _tiny(drop_path_rate=0.9)
    x = torch.randn(2, 3, 32, 32)
    backbone.eval()
    with torch.no_grad():
        first = backbone(x)["stage5"]
        second = backbone(x)["stage5"]
    assert torch.equal(first, second)
    backbone.train()
    with torch.no_grad():
        torch.manual_seed(1)
        train_a = backbone(x)["stage5"]
        torch.manual_seed(2)
        train_b = backbone(x)["stage5"]
    assert not torch.allclose(train_a, train_b)
    assert not torch.allclose(train_a, first)

    no_drop = _tiny(drop_path_rate=0.0)
    no_drop.load_state_dict(backbone.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(no_drop.train()(x)["stage5"], first)


def test_drop_path_rate_grows_linearly_over_all_blocks():
    backbone = _tiny(drop_path_rate=0.2)
    rates = [block.drop_path.p for stage in backbone.layers for block in stage.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.2, 9).tolist())


def test_freeze_at_freezes_patch_embed_and_leading_stages():
    backbone = _tiny(frozen_stages=2, drop_path_rate=0.5).train()
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {
        n for n, _ in backbone.named_parameters() if n.startswith(("patch_embed.", "layers.0."))
    }
    assert not backbone.layers[0].training and backbone.layers[1].training
    assert all(p.requires_grad for p in _tiny(frozen_stages=-1).parameters())


@pytest.mark.slow
def test_swinl_forward_at_full_size():
    backbone = build_backbone(_cfg(SWINL_OPTS)).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 200, 300))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage3": (1, 384, 25, 38),
        "stage4": (1, 768, 13, 19),
        "stage5": (1, 1536, 7, 10),
    }


@pytest.mark.parametrize(
    "device,dtype",
    [("cpu", torch.bfloat16), pytest.param("cuda", torch.float16, marks=pytest.mark.gpu)],
)
def test_forward_under_autocast_stays_close_to_float32(device: str, dtype: torch.dtype):
    torch.manual_seed(0)
    backbone = _tiny().to(device).eval()
    x = torch.randn(2, 3, 70, 45, device=device)
    with torch.no_grad():
        reference = backbone(x)
        with torch.autocast(device, dtype=dtype):
            mixed = backbone(x)
    for name, ref in reference.items():
        assert mixed[name].dtype == dtype
        torch.testing.assert_close(mixed[name].float(), ref, rtol=0.0, atol=0.3)
